//! The training job of `pnpt train` / `pnpt eval` and `examples/train_mvtec.rs`: train one
//! detector on every category of a dataset (or load a saved one), save it, evaluate it and
//! write the reports (`report.html` too) and heat maps into an output folder it prepares, with
//! checkpoints, `--resume` and the run record of `report.json`.
//!
//! Application code, not the library's: a program embedding `pnpt` calls
//! [`pnpt::train::train`] and [`pnpt::evaluate::evaluate`] itself and owns its folders.
//!
//! ```no_run
//! use pnpt_cli::job::{run_job, ConfigChoice, JobOptions};
//!
//! let config = ConfigChoice { preset: "cpu".into(), epochs: Some(1), ..Default::default() }.build()?;
//! let out = run_job(JobOptions::new(config).with_data(None))?; // synthetic data
//! println!("{}", out.report.to_markdown());
//! # Ok::<(), pnpt_cli::CliError>(())
//! ```
//!
//! Without [`JobOptions::data`] the synthetic dataset is generated once into the cache folder,
//! so the job works offline. Training validates every scoring candidate on pseudo-anomalies
//! (unless [`JobOptions::method`] fixes the method), writes per-epoch checkpoints under
//! `out/checkpoint` (continued with [`JobKind::Train`]'s `resume`) and the detector to
//! `out/detector`. [`JobKind::Evaluate`] skips training and evaluates a saved detector instead;
//! with `method` it switches that detector's method and recalibrates its thresholds on the
//! held-out split of the data.

mod args;
mod config;
mod out_dir;
mod record;
mod run;

use std::path::{Path, PathBuf};

use pnpt::backend::{DeviceSpec, device_ids, run_on};
use pnpt::burn::config::Config;
use pnpt::evaluate::Report;
use pnpt::model::train::{FeatureStorage, NodeOptions};
use pnpt::model::{PnptConfig, ScoringMethod};

use serde::{Deserialize, Serialize};

use crate::Result;

pub use args::{
    TimeBudget, TrainArgs, parse_categories, parse_devices, parse_duration, parse_time_budget, parse_whole,
    resume_folder,
};
pub use config::{ConfigChoice, SYNTHETIC_INPUT_SIZE};

/// What the job does with its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Train a detector, save it to `out/detector` and evaluate it. With `resume`, continue from
    /// the last checkpoint in `out/checkpoint`: it must exist
    /// ([`CliError::Resume`](crate::CliError::Resume), before anything is created or cleared),
    /// hold the same model configuration and seed, and have been trained on the same data
    /// (`DatasetChanged`, naming what differs); `config.train.epochs` below the epochs done is
    /// `EpochsTooFew`, above extends the run. See [`resume_folder`] for `--resume` with `--out`.
    Train {
        /// Continue from the last checkpoint.
        resume: bool,
    },
    /// Evaluate the saved detector in `detector` instead of training. With `rescore`, first
    /// re-fit its scoring on the data ([`pnpt::train::rescore`]: positional statistics,
    /// validation, thresholds; the weights are untouched) and save the result to
    /// `out/detector`.
    Evaluate {
        /// The detector folder.
        detector: PathBuf,
        /// Re-fit the scoring first.
        rescore: bool,
    },
}

/// Everything the job does, as plain fields an argument parser fills in: `JobOptions::new(config)`
/// with the defaults below (synthetic data, every category, CPU, training, output `pnpt-out`,
/// heat maps, verbose), changed by the `with_*` setters Burn's `Config` derive writes (code
/// outside the crate builds it with them: `#[non_exhaustive]` refuses struct literals there).
#[derive(Config, Debug)]
#[non_exhaustive]
pub struct JobOptions {
    /// The configuration to train with ([`ConfigChoice::build`]).
    pub config: PnptConfig,
    /// MVTec-layout dataset; `None` = the synthetic dataset in the cache folder.
    pub data: Option<PathBuf>,
    /// Only these categories (`None` = all).
    pub categories: Option<Vec<String>>,
    /// Device to run on.
    #[config(default = "DeviceSpec::Cpu")]
    pub device: DeviceSpec,
    /// Output folder: `detector/`, `checkpoint/`, reports, `heatmaps/`.
    #[config(default = "PathBuf::from(\"pnpt-out\")")]
    pub out: PathBuf,
    /// Train (or continue training), or evaluate a saved detector.
    #[config(default = "JobKind::Train { resume: false }")]
    pub kind: JobKind,
    /// Write heat maps.
    #[config(default = true)]
    pub heatmaps: bool,
    /// Write into an `out` that holds an earlier run (its `report.json`, `detector/`,
    /// `checkpoint/`): its reports are removed first, the rest replaced as the run writes.
    /// Without it such a folder is [`CliError::Output`](crate::CliError::Output) before
    /// anything runs, except when resuming ([`JobKind::Train`] with `resume`).
    #[config(default = false)]
    pub overwrite: bool,
    /// Fixed scoring method (skips the choice on validation; switches a saved detector's).
    pub method: Option<ScoringMethod>,
    /// Report progress: progress bars on stderr, progress lines and warnings as `log` events
    /// (info and warn; a program prints them by installing a logger, such as
    /// [`crate::logging::init`]).
    #[config(default = true)]
    pub verbose: bool,
    /// Data-parallel training on these devices of one backend (`device` is ignored then;
    /// `cpu,cpu` runs two replicas on the CPU); empty = `device` alone.
    #[config(default = "Vec::new()")]
    pub devices: Vec<DeviceSpec>,
    /// This process's place in a training run over several processes or machines.
    pub nodes: Option<NodeOptions>,
    /// Where the training features are kept (in memory or on disk).
    #[config(default = "FeatureStorage::Auto")]
    pub feature_storage: FeatureStorage,
    /// The memory the training features may take in bytes (`None`: what is available).
    pub feature_memory: Option<u64>,
}

/// What [`run_job`] produced.
#[derive(Debug, Clone)]
pub struct JobOutput {
    /// The evaluation (also written to `out/report.json`, `.md` and `.html`).
    pub report: Report,
    /// Where the trained detector was saved (`None` when a saved one was evaluated).
    pub detector_dir: Option<PathBuf>,
}

/// Runs the job on the device of `options` (see the module documentation).
pub fn run_job(options: JobOptions) -> Result<JobOutput> {
    let device = options.devices.first().copied().unwrap_or(options.device);
    let ids = if options.devices.is_empty() { Vec::new() } else { device_ids(&options.devices)? };
    run_on(&device, run::Job(options, ids))?
}

/// Evaluates the saved detector in `detector` on `data`'s test split, writing the reports to
/// `out` ([`run_job`] with [`JobKind::Evaluate`]).
pub fn evaluate_saved(
    detector: impl AsRef<Path>,
    data: impl AsRef<Path>,
    out: impl AsRef<Path>,
    device: DeviceSpec,
) -> Result<JobOutput> {
    let options = JobOptions::new(PnptConfig::cpu())
        .with_data(Some(data.as_ref().to_path_buf()))
        .with_kind(JobKind::Evaluate { detector: detector.as_ref().to_path_buf(), rescore: false })
        .with_out(out.as_ref().to_path_buf())
        .with_device(device);
    run_job(options)
}
