//! The main job as a library call: train one detector on every category of a dataset (or load
//! a saved one), save it, evaluate it and write the reports and heat maps — what
//! `examples/train_mvtec.rs` and `pnpt train` / `pnpt eval` run.
//!
//! ```no_run
//! use pnpt::job::{run_job, ConfigChoice, JobOptions};
//!
//! let config = ConfigChoice { preset: "cpu".into(), epochs: Some(1), ..Default::default() }.build()?;
//! let out = run_job(JobOptions { data: None, ..JobOptions::new(config) })?; // synthetic data
//! println!("{}", out.report.to_markdown());
//! # Ok::<(), pnpt::Error>(())
//! ```
//!
//! Without [`JobOptions::data`] the synthetic dataset is generated once into the cache folder,
//! so the job works offline. Training validates every scoring candidate on pseudo-anomalies
//! (unless [`JobOptions::method`] fixes the method), writes per-epoch checkpoints under
//! `out/checkpoint` (continued by [`JobOptions::resume`]) and the detector to `out/detector`.
//! [`JobOptions::evaluate`] skips training and evaluates a saved detector instead; with
//! `method` it switches that detector's method and recalibrates its thresholds on the held-out
//! split of the data.

use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use pnpt_data::{Dataset, synthetic::SyntheticConfig};
use pnpt_model::train::split_holdout;
use pnpt_model::{Detector, PnptConfig, ScoringMethod, TrainOptions};
use serde_json::{Map, json};

use crate::Result;
use crate::backend::{BackendTask, DeviceSpec, run_on};
use crate::evaluate::{EvaluateOptions, Report, evaluate};
use crate::train::train;
use crate::validation::ValidationOptions;

/// Where the configuration comes from and what overrides it (the job's command-line options).
#[derive(Debug, Clone, Default)]
pub struct ConfigChoice {
    /// Preset name (`cpu`, `paper`); ignored when `file` is given. Empty = `cpu`.
    pub preset: String,
    /// A JSON configuration file (fields it leaves out take the `cpu` preset's values).
    pub file: Option<PathBuf>,
    /// Epochs.
    pub epochs: Option<usize>,
    /// Seed of initialisation, data order, hold-out split and pseudo-anomalies.
    pub seed: Option<u64>,
    /// Backbone checkpoint (ResNet backbones).
    pub backbone_weights: Option<PathBuf>,
    /// Fixed scoring method.
    pub method: Option<ScoringMethod>,
    /// Time budget of the training loop in seconds.
    pub time_budget_seconds: Option<f64>,
}

/// Input size of the job on the embedded synthetic set (its images are 128 px): 192 instead of
/// the `cpu` preset's 256 keeps the default job within 5 minutes on 2 cores (3.0 min measured;
/// 6.7 min at 256 with the machine shared). Validation on pseudo-anomalies preferred 256
/// slightly (fused image / pixel AUROC 0.998 / 0.988 vs 0.993 / 0.977).
pub const SYNTHETIC_INPUT_SIZE: u32 = 192;
/// Epochs of the job on the synthetic set (its defects are plain; the patch memory does most).
pub const SYNTHETIC_EPOCHS: usize = 1;

impl ConfigChoice {
    /// [`build`](Self::build) for a job on `data`; without data (the synthetic set) and without
    /// a configuration file or another preset, the synthetic defaults apply
    /// ([`SYNTHETIC_INPUT_SIZE`], and [`SYNTHETIC_EPOCHS`] unless `epochs` is given).
    pub fn build_for(&self, data: Option<&Path>) -> Result<PnptConfig> {
        let mut config = self.build()?;
        let cpu = self.preset.is_empty() || self.preset.eq_ignore_ascii_case("cpu");
        if data.is_none() && self.file.is_none() && cpu {
            config.preset = "cpu-synthetic".into();
            config.input_size = SYNTHETIC_INPUT_SIZE;
            config.train.epochs = self.epochs.unwrap_or(SYNTHETIC_EPOCHS);
            config.validate()?;
        }
        Ok(config)
    }

    /// The configuration: the file or preset with the overrides applied, validated.
    pub fn build(&self) -> Result<PnptConfig> {
        let mut config = match &self.file {
            Some(path) => PnptConfig::load(path)?,
            None => PnptConfig::preset(if self.preset.is_empty() { "cpu" } else { &self.preset })?,
        };
        if let Some(e) = self.epochs {
            config.train.epochs = e;
        }
        if let Some(s) = self.seed {
            config.train.seed = s;
        }
        if self.backbone_weights.is_some() {
            config.backbone_weights = self.backbone_weights.clone();
        }
        if let Some(m) = self.method {
            config.scoring.method = m;
        }
        if self.time_budget_seconds.is_some() {
            config.train.time_budget_seconds = self.time_budget_seconds;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Everything the job does, as plain fields an argument parser fills in.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// MVTec-layout dataset; `None` = the synthetic dataset in the cache folder.
    pub data: Option<PathBuf>,
    /// Only these categories (`None` = all).
    pub categories: Option<Vec<String>>,
    /// Device to run on.
    pub device: DeviceSpec,
    /// The configuration to train with ([`ConfigChoice::build`]).
    pub config: PnptConfig,
    /// Output folder: `detector/`, `checkpoint/`, reports, `heatmaps/`.
    pub out: PathBuf,
    /// Continue from the last checkpoint in `out/checkpoint`. It must exist
    /// ([`Error::Resume`](crate::Error::Resume), before anything is created or cleared), hold
    /// the same model configuration and seed, and have been trained on the same data
    /// (`DatasetChanged`, naming what differs); `config.train.epochs` below the epochs done is
    /// `EpochsTooFew`, above extends the run. See [`resume_folder`] for `--resume` with `--out`.
    pub resume: bool,
    /// Write heat maps.
    pub heatmaps: bool,
    /// Evaluate this saved detector instead of training.
    pub evaluate: Option<PathBuf>,
    /// Fixed scoring method (skips the choice on validation; switches a saved detector's).
    pub method: Option<ScoringMethod>,
    /// With `evaluate`: re-fit the saved detector's scoring on `data` before evaluating
    /// ([`crate::train::rescore`]: positional statistics, validation, thresholds; the weights are
    /// untouched) and save the result to `out/detector`.
    pub rescore: bool,
    /// Report progress: progress bars on stderr, progress lines and warnings as `log` events
    /// (info and warn; a program prints them by installing a logger, such as
    /// [`crate::logging::init`]).
    pub verbose: bool,
}

impl JobOptions {
    /// Defaults: synthetic data, every category, CPU, output `pnpt-out`, heat maps, verbose.
    pub fn new(config: PnptConfig) -> Self {
        Self {
            data: None,
            categories: None,
            device: DeviceSpec::Cpu,
            config,
            out: PathBuf::from("pnpt-out"),
            resume: false,
            heatmaps: true,
            evaluate: None,
            method: None,
            rescore: false,
            verbose: true,
        }
    }
}

/// What [`run_job`] produced.
#[derive(Debug, Clone)]
pub struct JobOutput {
    /// The evaluation (also written to `out/report.*`).
    pub report: Report,
    /// Where the trained detector was saved (`None` when a saved one was evaluated).
    pub detector_dir: Option<PathBuf>,
}

/// Runs the job on the device of `options` (see the module documentation).
pub fn run_job(options: JobOptions) -> Result<JobOutput> {
    let device = options.device;
    run_on(&device, Job(options))?
}

/// Evaluates the saved detector in `detector` on `data`'s test split, writing the reports to
/// `out` ([`run_job`] with [`JobOptions::evaluate`] set).
pub fn evaluate_saved(detector: &Path, data: &Path, out: &Path, device: DeviceSpec) -> Result<JobOutput> {
    let mut options = JobOptions::new(PnptConfig::cpu());
    options.data = Some(data.to_path_buf());
    options.evaluate = Some(detector.to_path_buf());
    options.out = out.to_path_buf();
    options.device = device;
    run_job(options)
}

/// `90s`, `15m`, `1.5h` or plain seconds, as `--time-budget` takes it.
pub fn parse_duration(text: &str) -> Result<f64> {
    let t = text.trim();
    let (number, unit) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1.0),
        Some((i, 'm')) => (&t[..i], 60.0),
        Some((i, 'h')) => (&t[..i], 3600.0),
        _ => (t, 1.0),
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v * unit),
        _ => Err(pnpt_model::Error::Config(format!(
            "time budget `{text}`: expected a positive duration such as 900s, 15m or 1h"
        ))
        .into()),
    }
}

/// A whole number for the command-line option `flag`, at most `max`: too large is
/// [`Error::OutOfRange`](crate::Error::OutOfRange), anything else that is not a whole number
/// [`Error::NotANumber`](crate::Error::NotANumber).
pub fn parse_whole(flag: &str, text: &str, max: u64) -> Result<u64> {
    use std::num::IntErrorKind;
    let v = text.trim();
    match v.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        Ok(_) => Err(crate::Error::OutOfRange { flag: flag.into(), value: v.into(), max }),
        // Only digits but too many of them: out of range, not "not a number".
        Err(e) if *e.kind() == IntErrorKind::PosOverflow => {
            Err(crate::Error::OutOfRange { flag: flag.into(), value: v.into(), max })
        }
        Err(_) => Err(crate::Error::NotANumber { flag: flag.into(), value: v.into() }),
    }
}

/// The comma-separated names of `--categories` (blanks trimmed, empty items dropped); no name
/// at all is [`Error::EmptyList`](crate::Error::EmptyList).
pub fn parse_categories(text: &str) -> Result<Vec<String>> {
    let list: Vec<String> = text.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    if list.is_empty() {
        return Err(crate::Error::EmptyList { flag: "--categories".into() });
    }
    Ok(list)
}

/// The output folder and whether to resume, from `--resume DIR` and `--out`: a run resumes in
/// its own folder, so `--out` may be left out or must name the same folder as `DIR`
/// (compared after resolving `.`, `..` and links); another `--out` is
/// [`Error::Resume`](crate::Error::Resume) (nothing is created or cleared). Without either the
/// folder is `pnpt-out`.
pub fn resume_folder(resume: Option<&Path>, out: Option<&Path>) -> Result<(PathBuf, bool)> {
    match (resume, out) {
        (Some(r), Some(o)) => {
            let same = match (r.canonicalize(), o.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => r == o,
            };
            if !same {
                return Err(crate::Error::Resume {
                    path: r.to_path_buf(),
                    reason: format!(
                        "a run resumes in its own folder, not in --out {} (leave --out out, or copy the folder first)",
                        o.display()
                    ),
                });
            }
            Ok((r.to_path_buf(), true))
        }
        (Some(r), None) => Ok((r.to_path_buf(), true)),
        (None, o) => Ok((o.map_or_else(|| PathBuf::from("pnpt-out"), Path::to_path_buf), false)),
    }
}

/// The job's command line, shared by `pnpt train` and `examples/train_mvtec.rs` (each
/// flattens it into its parser with `#[command(flatten)]`); [`job_options`](Self::job_options)
/// turns it into [`JobOptions`].
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// MVTec-layout dataset (default: the synthetic dataset, generated once into the cache).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Only these categories (comma-separated).
    #[arg(long, value_parser = |s: &str| parse_categories(s).map_err(|e| e.to_string()))]
    pub categories: Option<::std::vec::Vec<String>>, // the full path: one value, parsed whole
    /// Device: cpu, wgpu[:N], cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: DeviceSpec,
    /// Configuration preset: cpu or paper.
    #[arg(long, default_value = "cpu")]
    pub preset: String,
    /// JSON configuration file (fields it leaves out take the cpu preset's values).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Epochs (on --resume: at least the epochs done; more extends the run).
    #[arg(long, value_parser = |s: &str| parse_whole("--epochs", s, usize::MAX as u64).map(|n| n as usize).map_err(|e| e.to_string()))]
    pub epochs: Option<usize>,
    /// Seed.
    #[arg(long, value_parser = |s: &str| parse_whole("--seed", s, u64::MAX).map_err(|e| e.to_string()))]
    pub seed: Option<u64>,
    /// Output folder (default pnpt-out, or the --resume folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run whose output folder is DIR from its last checkpoint (same data and
    /// configuration; --out, if given, must be DIR).
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Backbone checkpoint (.pth or .safetensors; ResNet backbones).
    #[arg(long)]
    pub backbone_weights: Option<PathBuf>,
    /// Write no heat maps.
    #[arg(long)]
    pub no_heatmaps: bool,
    /// Fix the scoring method instead of choosing it on validation (with --evaluate: switch the
    /// saved detector's method, thresholds recalibrated on the held-out split of --data).
    #[arg(long)]
    pub method: Option<ScoringMethod>,
    /// Train as many epochs as fit in this time (at most --epochs): 900s, 15m, 1h.
    #[arg(long, value_parser = |s: &str| parse_duration(s).map_err(|e| e.to_string()))]
    pub time_budget: Option<f64>,
    /// Skip training: load this saved detector and evaluate it on --data (as `pnpt eval`).
    #[arg(long, value_name = "DETECTOR_DIR")]
    pub evaluate: Option<PathBuf>,
    /// With --evaluate: re-fit the detector's scoring on --data first (positional statistics,
    /// validation, thresholds; the weights stay) and save it to OUT/detector.
    #[arg(long)]
    pub rescore: bool,
}

impl TrainArgs {
    /// The job these options ask for: the configuration from [`ConfigChoice::build_for`], the
    /// output folder and resumption from [`resume_folder`]. `--rescore` without `--evaluate` is
    /// [`Error::Arguments`](crate::Error::Arguments).
    pub fn job_options(self) -> Result<JobOptions> {
        if self.rescore && self.evaluate.is_none() {
            return Err(crate::Error::Arguments(
                "--rescore re-fits a saved detector: it needs --evaluate DETECTOR_DIR".into(),
            ));
        }
        let config = ConfigChoice {
            preset: self.preset,
            file: self.config,
            epochs: self.epochs,
            seed: self.seed,
            backbone_weights: self.backbone_weights,
            method: self.method,
            time_budget_seconds: self.time_budget,
        }
        .build_for(self.data.as_deref())?;
        let (out, resume) = resume_folder(self.resume.as_deref(), self.out.as_deref())?;
        Ok(JobOptions {
            data: self.data,
            categories: self.categories,
            device: self.device,
            out,
            resume,
            heatmaps: !self.no_heatmaps,
            evaluate: self.evaluate,
            method: self.method,
            rescore: self.rescore,
            ..JobOptions::new(config)
        })
    }
}

/// Prints every validation candidate, marking the chosen one.
fn log_validation(log: &impl Fn(String), v: &crate::validation::Validation) {
    log(format!(
        "validation on {} held-out normal and {} pseudo-anomalous images (image AUROC / pixel AUROC / AUPRO):",
        v.normal_images, v.anomalous_images
    ));
    for (i, c) in v.candidates.iter().enumerate() {
        let mark = if i == v.chosen { "  <- chosen" } else { "" };
        log(format!(
            "  {:<7} w={:.2} {:<6}{:<11}: {:.4} / {:.4} / {:.4}{mark}",
            c.method.to_string(),
            c.memory_weight,
            c.score.to_string(),
            if c.positional { " positional" } else { "" },
            c.image_auroc,
            c.pixel_auroc,
            c.aupro
        ));
    }
}

/// Makes `out` a writable folder before anything runs, removes temporaries that killed runs
/// left behind (their process is gone) and the heat maps of an earlier run, so the folder holds
/// this run's outputs only.
fn prepare_out(out: &Path) -> Result<()> {
    let io = |e: std::io::Error| crate::Error::Output { path: out.to_path_buf(), reason: e.to_string() };
    if out.exists() && !out.is_dir() {
        return Err(crate::Error::Output { path: out.to_path_buf(), reason: "exists and is not a folder".into() });
    }
    std::fs::create_dir_all(out).map_err(io)?;
    let probe = out.join(format!(".pnpt-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(io)?;
    let _ = std::fs::remove_file(&probe);
    for dir in [out.to_path_buf(), out.join("checkpoint")] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = stale_pid(&name)
                && pid != std::process::id()
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let path = entry.path();
                let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            }
        }
    }
    let heatmaps = out.join("heatmaps");
    if heatmaps.is_dir() {
        std::fs::remove_dir_all(&heatmaps).map_err(io)?;
    }
    Ok(())
}

/// The writer's process id in the name of a temporary: `.detector.partial-<pid>`,
/// `.detector.previous-<pid>` (detector saves), `.<file>.<pid>.<n>.tmp` (atomic writes).
fn stale_pid(name: &str) -> Option<u32> {
    if !name.starts_with('.') {
        return None;
    }
    for marker in [".partial-", ".previous-"] {
        if let Some(i) = name.find(marker) {
            return name[i + marker.len()..].parse().ok();
        }
    }
    let parts: Vec<&str> = name.strip_suffix(".tmp")?.rsplit('.').collect();
    parts.get(1)?.parse().ok()
}

struct Job(JobOptions);

impl BackendTask for Job {
    type Output = Result<JobOutput>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<JobOutput> {
        let args = self.0;
        // Progress lines as `log` events (the binaries print them: `crate::logging`).
        let log = |msg: String| {
            if args.verbose {
                log::info!("{msg}");
            }
        };
        let warn = |msg: String| {
            if args.verbose {
                log::warn!("{msg}");
            }
        };
        let root = match &args.data {
            Some(dir) => dir.clone(),
            None => {
                let cache = pnpt_data::default_cache_dir();
                log(format!("no data folder: using the synthetic dataset (cache {})", cache.display()));
                pnpt_data::ensure_synthetic(&cache, &SyntheticConfig::default())?
            }
        };
        let dataset = Dataset::open(&root, args.categories.as_deref())?;
        if dataset.categories.is_empty() {
            return Err(pnpt_data::DataError::EmptyDataset { path: root }.into());
        }
        // Before `prepare_out`: a misspelled --resume folder must not be created (or cleared).
        if args.resume && args.evaluate.is_none() {
            let checkpoint = args.out.join("checkpoint").join(pnpt_model::train::CHECKPOINT_FILE);
            if !checkpoint.is_file() {
                return Err(crate::Error::Resume {
                    path: checkpoint,
                    reason: "no checkpoint to resume from (start without --resume)".into(),
                });
            }
            log(format!("resuming from {}", checkpoint.display()));
        }
        prepare_out(&args.out)?;
        // Every file the run will read, before the first epoch; all problems at once.
        let t0 = std::time::Instant::now();
        let audit = dataset.audit();
        for w in &audit.warnings {
            warn(w.clone());
        }
        let mut problems = audit.problems;
        match problems.len() {
            0 => log(format!("checked every image and mask in {:.1} s", t0.elapsed().as_secs_f64())),
            1 => return Err(problems.remove(0).into()),
            _ => return Err(pnpt_data::DataError::Problems { root: dataset.root.clone(), problems }.into()),
        }
        log(format!(
            "{} categories, {} training images, {} test images; preset {}, {} epochs, device {}",
            dataset.categories.len(),
            dataset.num_train(),
            dataset.num_test(),
            args.config.preset,
            args.config.train.epochs,
            args.device
        ));
        let mut extra = Map::new();
        let (detector, train_seconds, detector_dir) = match &args.evaluate {
            Some(dir) => {
                let mut detector = Detector::<B::InnerBackend>::load(dir, &device)?;
                log(format!("evaluating the saved detector {}", dir.display()));
                let unseen: Vec<String> =
                    dataset.names().into_iter().filter(|n| !detector.categories().contains(n)).collect();
                if !unseen.is_empty() {
                    warn(format!(
                        "the detector was not trained on {}: their images are scored against the nearest trained class",
                        unseen.join(", ")
                    ));
                    extra.insert("unseen_categories".into(), json!(unseen));
                }
                if let Some(m) = args.method {
                    let c = detector.config().clone();
                    detector.set_scoring(m, c.scoring.memory_weight)?;
                    let (_, holdout) = split_holdout(&dataset, c.scoring.calibration_fraction, c.train.seed);
                    detector.calibrate(&holdout)?;
                    log(format!(
                        "scoring method {m}; thresholds recalibrated on {} held-out images of the data",
                        holdout.len()
                    ));
                }
                if args.rescore {
                    let t0 = std::time::Instant::now();
                    let validation = ValidationOptions {
                        seed: detector.config().train.seed,
                        select: args.method.is_none(),
                        ..Default::default()
                    };
                    if let Some(v) = crate::train::rescore(&mut detector, &dataset, &validation)? {
                        log_validation(&log, &v);
                        extra.insert("validation".into(), json!(v));
                    }
                    let detector_dir = args.out.join("detector");
                    detector.save(&detector_dir)?;
                    log(format!(
                        "scoring re-fitted in {:.1} s ({}); detector saved to {}",
                        t0.elapsed().as_secs_f64(),
                        detector.config().scoring.rule(),
                        detector_dir.display()
                    ));
                    (detector, 0.0, Some(detector_dir))
                } else {
                    (detector, 0.0, None)
                }
            }
            None => {
                // Recorded in every checkpoint; a resumed run on other data is refused.
                let fingerprint = pnpt_data::fingerprint::Fingerprint::of(&dataset)?;
                let options = TrainOptions {
                    checkpoint_dir: Some(args.out.join("checkpoint")),
                    resume: args.resume,
                    progress: args.verbose,
                    dataset: Some(fingerprint),
                    ..Default::default()
                };
                let validation = ValidationOptions {
                    seed: args.config.train.seed,
                    select: args.method.is_none(),
                    ..Default::default()
                };
                let (detector, report) = train::<B>(&args.config, &dataset, &device, &options, &validation)?;
                let fit = &report.fit;
                for e in &fit.history {
                    let v =
                        e.validation.map(|(i, p)| format!("  validation (pnpt) {i:.4} / {p:.4}")).unwrap_or_default();
                    log(format!(
                        "epoch {:>3}: loss {:.5}  {:.1} s  {:.2} img/s{v}",
                        e.epoch, e.loss, e.seconds, e.images_per_second
                    ));
                }
                log(format!(
                    "features {:.1} s, patch memory {:.1} s, training {:.1} s, positional statistics {:.1} s, validation {:.1} s ({} train, {} held-out images)",
                    fit.feature_seconds,
                    fit.memory_seconds,
                    fit.train_seconds,
                    fit.positional_seconds,
                    report.validation_seconds,
                    fit.train_images,
                    fit.holdout_images
                ));
                if let Some(v) = &report.validation {
                    log_validation(&log, v);
                    extra.insert("validation".into(), json!(v));
                }
                if let Some(m) = detector.memory() {
                    let banks: Map<String, serde_json::Value> = m
                        .names()
                        .iter()
                        .zip(m.sizes())
                        .zip(m.candidates())
                        .map(|((n, k), c)| (n.clone(), json!({"bank": k, "patches": c})))
                        .collect();
                    extra.insert(
                        "memory".into(),
                        json!({"dim": m.dim(), "seconds": fit.memory_seconds, "classes": banks}),
                    );
                }
                extra.insert("history".into(), json!(fit.history));
                extra.insert(
                    "seconds".into(),
                    json!({"features": fit.feature_seconds, "memory": fit.memory_seconds, "training": fit.train_seconds, "positional": fit.positional_seconds, "validation": report.validation_seconds}),
                );
                let detector_dir = args.out.join("detector");
                detector.save(&detector_dir)?;
                log(format!("detector saved to {}", detector_dir.display()));
                (
                    detector,
                    fit.feature_seconds + fit.memory_seconds + fit.train_seconds + fit.positional_seconds,
                    Some(detector_dir),
                )
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
            extra,
        };
        let report = evaluate(&detector, &dataset, &eval)?;
        log(format!("report written to {}", args.out.join("report.md").display()));
        Ok(JobOutput { report, detector_dir })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_config_overrides() {
        assert_eq!(parse_duration("15m").unwrap(), 900.0);
        assert_eq!(parse_duration("1.5h").unwrap(), 5400.0);
        assert_eq!(parse_duration(" 90 ").unwrap(), 90.0);
        for bad in ["", "m", "-1s", "0", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(stale_pid(".detector.partial-4242"), Some(4242));
        assert_eq!(stale_pid(".detector.previous-17"), Some(17));
        assert_eq!(stale_pid(".checkpoint.bin.311.0.tmp"), Some(311));
        assert_eq!(stale_pid("report.md"), None);
        assert_eq!(stale_pid(".hidden"), None);
        assert!(ConfigChoice { epochs: Some(0), ..Default::default() }.build().is_err(), "0 epochs");
        let synthetic = ConfigChoice::default().build_for(None).unwrap();
        assert_eq!((synthetic.input_size, synthetic.train.epochs), (SYNTHETIC_INPUT_SIZE, SYNTHETIC_EPOCHS));
        let real = ConfigChoice::default().build_for(Some(Path::new("data"))).unwrap();
        assert_eq!((real.input_size, real.train.epochs), (256, 3));
        assert_eq!(ConfigChoice { epochs: Some(4), ..Default::default() }.build_for(None).unwrap().train.epochs, 4);
        let c =
            ConfigChoice { epochs: Some(2), seed: Some(7), method: Some(ScoringMethod::Pnpt), ..Default::default() }
                .build()
                .unwrap();
        assert_eq!((c.train.epochs, c.train.seed, c.scoring.method), (2, 7, ScoringMethod::Pnpt));
        assert!(ConfigChoice { preset: "nope".into(), ..Default::default() }.build().is_err());
    }

    /// Every flag of `pnpt train` and `examples/train_mvtec.rs`, and the checks clap leaves to
    /// [`TrainArgs::job_options`].
    #[test]
    fn train_args_take_every_flag() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            train: TrainArgs,
        }
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("train_mvtec").chain(args.iter().copied()));
        let dir = std::env::temp_dir().join(format!("pnpt-train-args-{}", std::process::id()));
        let dir = dir.to_str().unwrap();
        let line = format!(
            "--data data --categories a,b --device cpu --preset paper --epochs 4 --seed 7 --out {dir} --resume {dir} \
             --backbone-weights w.pth --no-heatmaps --method memory --time-budget 15m --evaluate det --rescore"
        );
        let a = parse(&line.split_whitespace().collect::<Vec<_>>()).unwrap().train;
        assert_eq!(a.categories.as_deref(), Some(&["a".to_string(), "b".to_string()][..]));
        assert_eq!((a.epochs, a.seed, a.time_budget), (Some(4), Some(7), Some(900.0)));
        assert_eq!(a.method, Some(ScoringMethod::Memory));
        let o = a.job_options().unwrap();
        assert_eq!((o.config.preset.as_str(), o.config.train.epochs, o.config.train.seed), ("paper", 4, 7));
        assert_eq!(o.config.backbone_weights.as_deref(), Some(Path::new("w.pth")));
        assert_eq!(o.config.train.time_budget_seconds, Some(900.0));
        assert!(o.resume && !o.heatmaps && o.rescore && o.verbose);
        assert_eq!((o.out.to_str(), o.evaluate.as_deref()), (Some(dir), Some(Path::new("det"))));
        // Defaults: the synthetic job in pnpt-out.
        let o = parse(&[]).unwrap().train.job_options().unwrap();
        assert_eq!((o.out.to_str(), o.resume, o.heatmaps, o.data.is_none()), (Some("pnpt-out"), false, true, true));
        assert_eq!((o.config.input_size, o.config.train.epochs), (SYNTHETIC_INPUT_SIZE, SYNTHETIC_EPOCHS));
        let err = parse(&["--rescore"]).unwrap().train.job_options().unwrap_err();
        assert!(err.to_string().contains("it needs --evaluate DETECTOR_DIR"), "{err}");
        for bad in [&["--epochs", "three"][..], &["--categories", " , "], &["--device", "tpu"], &["--bogus"]] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&["--help"]).err().map(|e| e.kind()), Some(clap::error::ErrorKind::DisplayHelp));
    }
}
