//! # pnpt-cli — the `pnpt` command
//!
//! ```text
//! cargo install --path crates/pnpt-cli
//! pnpt predict pnpt-out/detector images/ --out predictions/   # predictions.jsonl + overlays + masks
//! pnpt serve pnpt-out/detector --addr 127.0.0.1:8080          # HTTP service and web page
//! pnpt info pnpt-out/detector                                 # categories, thresholds, config
//! pnpt train --epochs 3 --out pnpt-out                        # train, evaluate (job)
//! pnpt eval pnpt-out/detector --data /data/mvtec_ad           # evaluate a saved detector
//! pnpt upgrade old-detector detector                          # convert an earlier format
//! ```
//!
//! The last crate of the data flow: it uses the facade `pnpt` and no library crate uses it (the
//! root package's examples and tests do, as a dev-dependency). It holds the application code:
//! argument parsing, the training job ([`job`]: output folder, checkpoints, run record),
//! `report.html` ([`html`]), progress bars and the stderr logger ([`logging`]). The subcommands
//! are library functions too ([`predict::run_predict`], [`serve::Server`],
//! [`info::detector_info`], [`job::run_job`]), which is how the tests drive them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, CommandFactory, Parser, Subcommand};
use pnpt::backend::{Cpu, DeviceSpec};
use pnpt::model::{Detector, ScoringMethod};

use crate::job::JobOptions;

mod error;
pub mod html;
pub mod info;
pub mod job;
pub mod logging;
pub mod multipart;
pub mod predict;
pub mod render;
pub mod serve;

pub use error::{CliError, Result};
/// `pnpt train`: the options of `examples/train_mvtec.rs`.
pub use job::TrainArgs;

/// Unified multi-class industrial anomaly detection: one detector for every product type.
#[derive(Debug, Parser)]
#[command(name = "pnpt", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Score unlabelled images (files and folders, searched recursively for PNG/JPEG/BMP):
    /// writes predictions.jsonl, heat-map overlays and defect masks.
    Predict(PredictArgs),
    /// Run the HTTP inference service (POST /v1/predict, GET /v1/info, /healthz, /metrics, and a
    /// web page at /).
    Serve(ServeArgs),
    /// Show a detector's categories, thresholds, configuration, backbone and sizes.
    Info(InfoArgs),
    /// Evaluate a saved detector on a labelled dataset: report.json/md/html and heat maps.
    Eval(EvalArgs),
    /// Train one detector on every category of a dataset, save it and evaluate it.
    // Boxed: its many options would make every `Command` as large as it.
    Train(Box<TrainArgs>),
    /// Convert a detector folder saved by an earlier version to the current format (OLD is only
    /// read; NEW is written whole or not at all).
    Upgrade(UpgradeArgs),
}

/// `pnpt upgrade`.
#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// The detector folder of an earlier format.
    pub old: PathBuf,
    /// Where to write the converted detector (replaced if it exists).
    pub new: PathBuf,
}

/// `pnpt predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The detector folder (as written by `pnpt train`).
    pub detector: PathBuf,
    /// Image files and folders.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "pnpt-predictions")]
    pub out: PathBuf,
    /// Write no overlays and masks, only predictions.jsonl.
    #[arg(long)]
    pub no_maps: bool,
    /// Judge every image as this category (skips retrieval).
    #[arg(long)]
    pub category: Option<String>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub batch: u16,
    /// Device: cpu, wgpu, wgpu:N, cuda or cuda:N (GPU backends need the matching cargo feature).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Replace the results of an earlier run in --out (predictions.jsonl, maps/).
    #[arg(long)]
    pub overwrite: bool,
    /// Most images one run scores (more is an error before any is scored).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub max_inputs: u64,
}

/// `pnpt serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The detector folder.
    pub detector: PathBuf,
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Inferences running at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
    /// Requests that may wait for a worker; beyond that the answer is 503 with Retry-After.
    #[arg(long, default_value_t = 32)]
    pub queue: u16,
    /// Largest request body, in MiB.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_body_mib: u32,
    /// Largest image width and height, in pixels (checked in the header before decoding).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub max_side: u32,
    /// Seconds a connection has to send a request head (from connecting or from its previous
    /// answer); then it is closed, idle keep-alive connections too.
    #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
    pub header_timeout: f64,
    /// Seconds a request has to send its whole body; then 408 and the connection is closed.
    #[arg(long, default_value_t = 60.0, value_parser = parse_seconds)]
    pub body_timeout: f64,
    /// Connections open at once; a new one beyond closes the one idle longest (503 when none is idle).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_connections: u32,
    /// Request bodies held at once (uploads and queued requests), in MiB; beyond it 503.
    /// At least --max-body-mib.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_buffered_mib: u32,
}

/// A positive number of seconds (`--header-timeout`, `--body-timeout`).
fn parse_seconds(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(s),
        _ => Err(format!("`{text}`: expected a positive number of seconds")),
    }
}

/// `pnpt info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The detector folder.
    pub detector: PathBuf,
    /// Print JSON (what GET /v1/info answers) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `pnpt eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The detector folder.
    pub detector: PathBuf,
    /// MVTec-layout dataset with test images and masks.
    #[arg(long)]
    pub data: PathBuf,
    /// Only these categories (comma-separated).
    #[arg(long, value_parser = parse_categories)]
    pub categories: Option<::std::vec::Vec<String>>, // the full path: one value, parsed whole
    /// Output folder for the reports and heat maps.
    #[arg(long, default_value = "pnpt-eval")]
    pub out: PathBuf,
    /// Switch the detector's scoring method (thresholds recalibrated on the held-out split of --data).
    #[arg(long)]
    pub method: Option<ScoringMethod>,
    /// Re-fit the scoring on --data first (positional statistics, validation, thresholds; the
    /// weights stay) and save the re-fitted detector to OUT/detector: for detectors saved by
    /// an older version.
    #[arg(long)]
    pub rescore: bool,
    /// Write no heat maps.
    #[arg(long)]
    pub no_heatmaps: bool,
    /// Device: cpu, wgpu, wgpu:N, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Replace an earlier run's reports in --out instead of refusing to.
    #[arg(long)]
    pub overwrite: bool,
}

/// `--categories`: clap's value parser over [`job::parse_categories`] (an empty list is an
/// error here, not an unknown category "" later).
fn parse_categories(text: &str) -> std::result::Result<Vec<String>, String> {
    job::parse_categories(text).map_err(|e| e.to_string())
}

/// Runs a parsed command line; the exit code is 1 when `predict` could not score some image.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Predict(a) => {
            let options = predict::PredictOptions::new(a.detector, a.paths, a.out.clone())
                .with_maps(!a.no_maps)
                .with_category(a.category)
                .with_batch(a.batch as usize)
                .with_device(a.device)
                .with_overwrite(a.overwrite)
                .with_max_inputs(a.max_inputs as usize);
            let s = predict::run_predict(options)?;
            eprintln!(
                "{} images: {} anomalous, {} of an unknown product, {} failed; {:.2} images/s ({:.1} s); {}",
                s.images,
                s.anomalous,
                s.unknown_category,
                s.failed,
                s.images_per_second(),
                s.seconds,
                a.out.join("predictions.jsonl").display()
            );
            Ok(if s.failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Command::Serve(a) => {
            let options = serve::ServeOptions::new()
                .with_workers(a.workers as usize)
                .with_queue(a.queue as usize)
                .with_max_body((a.max_body_mib as usize) << 20)
                .with_max_side(a.max_side)
                .with_header_timeout_s(a.header_timeout)
                .with_body_timeout_s(a.body_timeout)
                .with_max_connections(a.max_connections as usize)
                .with_max_buffered((a.max_buffered_mib as usize) << 20);
            // Before the detector loads: a bad option is said at once.
            options.check()?;
            // The service shares one detector between threads: the CPU backend, whose
            // detector is Send + Sync (GPU devices are for one thread at a time, docs/performance.md).
            let detector = Detector::<Cpu>::load(&a.detector, &Default::default())?;
            let info = info::detector_info(&detector, Some(&a.detector));
            let names = detector.categories().join(", ");
            serve::serve_until_signal(Arc::new(detector), &info, &a.addr.to_string(), options, |addr| {
                eprintln!("pnpt serve: listening on http://{addr} (categories: {names}); Ctrl-C or SIGTERM stops");
            })?;
            eprintln!("pnpt serve: stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Info(a) => {
            let detector = Detector::<Cpu>::load(&a.detector, &Default::default())?;
            let v = info::detector_info(&detector, Some(&a.detector));
            if a.json {
                println!("{}", serde_json::to_string_pretty(&render::sorted_json(&v)).unwrap_or_default());
            } else {
                print!("{}", info::info_text(&v));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(a) => {
            let options = JobOptions::new(pnpt::model::PnptConfig::cpu())
                .with_data(Some(a.data))
                .with_categories(a.categories)
                .with_device(a.device)
                .with_out(a.out)
                .with_heatmaps(!a.no_heatmaps)
                .with_kind(job::JobKind::Evaluate { detector: a.detector, rescore: a.rescore })
                .with_method(a.method)
                .with_overwrite(a.overwrite);
            let out = job::run_job(options)?;
            println!("{}", out.report.to_markdown());
            Ok(ExitCode::SUCCESS)
        }
        Command::Train(a) => {
            let out = job::run_job((*a).job_options()?)?;
            println!("{}", out.report.to_markdown());
            Ok(ExitCode::SUCCESS)
        }
        Command::Upgrade(a) => {
            if a.old == a.new {
                return Err(CliError::Input(format!(
                    "pnpt upgrade: OLD and NEW are both {}; write the converted detector to another folder",
                    a.old.display()
                )));
            }
            let was = pnpt::model::detector::upgrade::<Cpu>(&a.old, &a.new, &Default::default())?;
            eprintln!("pnpt upgrade: {} (format {was}) -> {} (current format)", a.old.display(), a.new.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Train one PNPT model on every category of a dataset, save it and evaluate it.
#[derive(Debug, Parser)]
#[command(name = "train_mvtec")]
struct TrainMvtec {
    #[command(flatten)]
    train: TrainArgs,
}

/// The whole of `examples/train_mvtec.rs`: `pnpt train`'s job under its own name, with the
/// stderr logger. Options that do not go together exit 2 with the usage line, as clap's own
/// errors do; a failed run exits 1.
pub fn train_mvtec_main() -> ExitCode {
    // The job's progress lines and warnings are `log` events: print them on stderr.
    logging::init(true);
    // Bad arguments: clap prints its message and exits 2.
    let cli = TrainMvtec::parse();
    let options = match cli.train.job_options() {
        Ok(o) => o,
        // A bad configuration, --resume with another --out, --rescore without --evaluate.
        Err(e) => TrainMvtec::command().error(clap::error::ErrorKind::ValueValidation, e).exit(),
    };
    match job::run_job(options) {
        Ok(out) => {
            println!("{}", out.report.to_markdown());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
