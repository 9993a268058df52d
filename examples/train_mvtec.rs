//! Train one PNPT model on every category of an MVTec-layout dataset, save the detector and
//! evaluate it (report.json, report.md, heat maps).
//!
//! ```text
//! cargo run --release --example train_mvtec -- [--data DIR] [--categories a,b] [--device cpu|wgpu|cuda[:N]]
//!     [--preset cpu|paper] [--config FILE] [--epochs N] [--seed N] [--out DIR] [--resume DIR]
//!     [--backbone-weights PATH] [--no-heatmaps] [--evaluate DETECTOR_DIR]
//! ```
//! Without `--data` it trains on the synthetic dataset (generated once into the cache folder),
//! so it works offline on a fresh clone. `--config FILE` is JSON (see `PnptConfig`); fields it
//! leaves out take the `cpu` preset's values; `--epochs`, `--seed` and `--backbone-weights`
//! override it. `--resume DIR` continues the run whose output folder is `DIR` from its last
//! checkpoint (and writes there unless `--out` is given). `--evaluate DETECTOR_DIR` skips
//! training: it loads a saved detector and writes the report and heat maps for `--data`.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::backend::AutodiffBackend;
use pnpt::backend::{run_on, BackendTask, DeviceSpec};
use pnpt::data::{synthetic::SyntheticConfig, Dataset};
use pnpt::evaluate::{evaluate, EvaluateOptions};
use pnpt::model::{fit, Detector, PnptConfig, TrainOptions};

const USAGE: &str = "usage: train_mvtec [--data DIR] [--categories a,b] [--device cpu|wgpu|cuda[:N]] \
[--preset cpu|paper] [--config FILE] [--epochs N] [--seed N] [--out DIR] [--resume DIR] \
[--backbone-weights PATH] [--no-heatmaps] [--evaluate DETECTOR_DIR]";

#[derive(Debug)]
struct Args {
    data: Option<PathBuf>,
    categories: Option<Vec<String>>,
    device: DeviceSpec,
    config: PnptConfig,
    out: PathBuf,
    resume: bool,
    heatmaps: bool,
    evaluate: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut data = None;
    let mut categories = None;
    let mut device = "cpu".to_string();
    let mut preset = "cpu".to_string();
    let mut config_file: Option<PathBuf> = None;
    let mut epochs: Option<usize> = None;
    let mut seed: Option<u64> = None;
    let mut out: Option<PathBuf> = None;
    let mut resume: Option<PathBuf> = None;
    let mut weights: Option<PathBuf> = None;
    let mut heatmaps = true;
    let mut evaluate_dir: Option<PathBuf> = None;
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--data" => data = Some(PathBuf::from(value("--data")?)),
            "--categories" => {
                categories = Some(value("--categories")?.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            }
            "--device" => device = value("--device")?,
            "--preset" => preset = value("--preset")?,
            "--config" => config_file = Some(PathBuf::from(value("--config")?)),
            "--epochs" => epochs = Some(value("--epochs")?.parse().map_err(|_| "--epochs needs a whole number".to_string())?),
            "--seed" => seed = Some(value("--seed")?.parse().map_err(|_| "--seed needs a whole number".to_string())?),
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--resume" => resume = Some(PathBuf::from(value("--resume")?)),
            "--backbone-weights" => weights = Some(PathBuf::from(value("--backbone-weights")?)),
            "--no-heatmaps" => heatmaps = false,
            "--evaluate" => evaluate_dir = Some(PathBuf::from(value("--evaluate")?)),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    let device: DeviceSpec = device.parse().map_err(|e: pnpt::Error| e.to_string())?;
    let mut config = match &config_file {
        Some(path) => PnptConfig::load(path).map_err(|e| e.to_string())?,
        None => PnptConfig::preset(&preset).map_err(|e| e.to_string())?,
    };
    if let Some(e) = epochs {
        config.train.epochs = e;
    }
    if let Some(s) = seed {
        config.train.seed = s;
    }
    if weights.is_some() {
        config.backbone_weights = weights;
    }
    config.validate().map_err(|e| e.to_string())?;
    let out = out.or_else(|| resume.clone()).unwrap_or_else(|| PathBuf::from("pnpt-out"));
    Ok(Args { data, categories, device, config, out, resume: resume.is_some(), heatmaps, evaluate: evaluate_dir })
}

struct Run(Args);

impl BackendTask for Run {
    type Output = Result<(), String>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<(), String> {
        let args = self.0;
        let root = match &args.data {
            Some(dir) => dir.clone(),
            None => {
                let cache = pnpt::data::default_cache_dir();
                eprintln!("no --data: using the synthetic dataset (cache {})", cache.display());
                pnpt::data::ensure_synthetic(&cache, &SyntheticConfig::default()).map_err(|e| e.to_string())?
            }
        };
        let dataset = Dataset::open(&root, args.categories.as_deref()).map_err(|e| e.to_string())?;
        if dataset.categories.is_empty() {
            return Err(format!("{}: no category found", root.display()));
        }
        eprintln!(
            "{} categories, {} training images, {} test images; preset {}, {} epochs, device {}",
            dataset.categories.len(),
            dataset.num_train(),
            dataset.num_test(),
            args.config.preset,
            args.config.train.epochs,
            args.device
        );
        let (detector, train_seconds) = match &args.evaluate {
            Some(dir) => {
                let detector = Detector::<B::InnerBackend>::load(dir, &device).map_err(|e| e.to_string())?;
                eprintln!("evaluating the saved detector {}", dir.display());
                (detector, 0.0)
            }
            None => {
                let options = TrainOptions {
                    checkpoint_dir: Some(args.out.join("checkpoint")),
                    resume: args.resume,
                    progress: true,
                    stop_after_epoch: None,
                };
                let (detector, report) = fit::<B>(&args.config, &dataset, &device, &options).map_err(|e| e.to_string())?;
                for e in &report.history {
                    eprintln!("epoch {:>3}: loss {:.5}  {:.1} s  {:.2} img/s", e.epoch, e.loss, e.seconds, e.images_per_second);
                }
                eprintln!(
                    "features {:.1} s, training {:.1} s ({} train, {} held-out images)",
                    report.feature_seconds, report.train_seconds, report.train_images, report.holdout_images
                );
                let detector_dir = args.out.join("detector");
                detector.save(&detector_dir).map_err(|e| e.to_string())?;
                eprintln!("detector saved to {}", detector_dir.display());
                (detector, report.feature_seconds + report.train_seconds)
            }
        };
        let config = detector.config().clone();
        let eval = EvaluateOptions {
            batch_size: config.train.batch_size,
            out_dir: Some(args.out.clone()),
            heatmaps: args.heatmaps,
            preset: config.preset.clone(),
            seed: config.train.seed,
            device: args.device.to_string(),
            train_seconds,
        };
        let result = evaluate(&detector, &dataset, &eval).map_err(|e| e.to_string())?;
        println!("{}", result.to_markdown());
        eprintln!("report written to {}", args.out.join("report.md").display());
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let spec = args.device;
    match run_on(&spec, Run(args)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
