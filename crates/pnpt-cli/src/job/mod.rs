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
//! `out/checkpoint` (continued by [`JobOptions::resume`]) and the detector to `out/detector`.
//! [`JobOptions::evaluate`] skips training and evaluates a saved detector instead; with
//! `method` it switches that detector's method and recalibrates its thresholds on the held-out
//! split of the data.

mod args;
mod config;
mod out_dir;
mod record;
mod run;

use std::path::{Path, PathBuf};

use pnpt::backend::{DeviceSpec, device_ids, run_on};
use pnpt::evaluate::Report;
use pnpt::model::train::{FeatureStorage, NodeOptions};
use pnpt::model::{PnptConfig, ScoringMethod};

use crate::Result;

pub use args::{TrainArgs, parse_categories, parse_devices, parse_duration, parse_whole, resume_folder};
pub use config::{ConfigChoice, SYNTHETIC_INPUT_SIZE};

/// Everything the job does, as plain fields an argument parser fills in.
#[derive(Debug, Clone)]
#[non_exhaustive]
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
    /// ([`CliError::Resume`](crate::CliError::Resume), before anything is created or cleared), hold
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
    /// ([`pnpt::train::rescore`]: positional statistics, validation, thresholds; the weights are
    /// untouched) and save the result to `out/detector`.
    pub rescore: bool,
    /// Report progress: progress bars on stderr, progress lines and warnings as `log` events
    /// (info and warn; a program prints them by installing a logger, such as
    /// [`crate::logging::init`]).
    pub verbose: bool,
    /// Data-parallel training on these devices of one backend (`device` is ignored then;
    /// `cpu,cpu` runs two replicas on the CPU); empty = `device` alone.
    pub devices: Vec<DeviceSpec>,
    /// This process's place in a training run over several processes or machines.
    pub nodes: Option<NodeOptions>,
    /// Where the training features are kept (in memory or on disk).
    pub feature_storage: FeatureStorage,
    /// The memory the training features may take in bytes (`None`: what is available).
    pub feature_memory: Option<u64>,
}

// `#[non_exhaustive]`: code outside the crate builds it with these setters (struct literals,
// even with `..Default::default()`, are refused there), so adding an option breaks no caller.
impl JobOptions {
    /// Sets [`data`](Self::data).
    pub fn with_data(mut self, data: Option<PathBuf>) -> Self {
        self.data = data;
        self
    }

    /// Sets [`categories`](Self::categories).
    pub fn with_categories(mut self, categories: Option<Vec<String>>) -> Self {
        self.categories = categories;
        self
    }

    /// Sets [`device`](Self::device).
    pub fn with_device(mut self, device: DeviceSpec) -> Self {
        self.device = device;
        self
    }

    /// Sets [`config`](Self::config).
    pub fn with_config(mut self, config: PnptConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets [`out`](Self::out).
    pub fn with_out(mut self, out: PathBuf) -> Self {
        self.out = out;
        self
    }

    /// Sets [`resume`](Self::resume).
    pub fn with_resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// Sets [`heatmaps`](Self::heatmaps).
    pub fn with_heatmaps(mut self, heatmaps: bool) -> Self {
        self.heatmaps = heatmaps;
        self
    }

    /// Sets [`evaluate`](Self::evaluate).
    pub fn with_evaluate(mut self, evaluate: Option<PathBuf>) -> Self {
        self.evaluate = evaluate;
        self
    }

    /// Sets [`method`](Self::method).
    pub fn with_method(mut self, method: Option<ScoringMethod>) -> Self {
        self.method = method;
        self
    }

    /// Sets [`rescore`](Self::rescore).
    pub fn with_rescore(mut self, rescore: bool) -> Self {
        self.rescore = rescore;
        self
    }

    /// Sets [`verbose`](Self::verbose).
    pub fn with_verbose(mut self, verbose: bool) -> Self {
        self.verbose = verbose;
        self
    }

    /// Sets [`devices`](Self::devices).
    pub fn with_devices(mut self, devices: Vec<DeviceSpec>) -> Self {
        self.devices = devices;
        self
    }

    /// Sets [`nodes`](Self::nodes).
    pub fn with_nodes(mut self, nodes: Option<NodeOptions>) -> Self {
        self.nodes = nodes;
        self
    }

    /// Sets [`feature_storage`](Self::feature_storage).
    pub fn with_feature_storage(mut self, feature_storage: FeatureStorage) -> Self {
        self.feature_storage = feature_storage;
        self
    }

    /// Sets [`feature_memory`](Self::feature_memory).
    pub fn with_feature_memory(mut self, feature_memory: Option<u64>) -> Self {
        self.feature_memory = feature_memory;
        self
    }
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
            devices: Vec::new(),
            nodes: None,
            feature_storage: FeatureStorage::Auto,
            feature_memory: None,
        }
    }
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
/// `out` ([`run_job`] with [`JobOptions::evaluate`] set).
pub fn evaluate_saved(
    detector: impl AsRef<Path>,
    data: impl AsRef<Path>,
    out: impl AsRef<Path>,
    device: DeviceSpec,
) -> Result<JobOutput> {
    let mut options = JobOptions::new(PnptConfig::cpu());
    options.data = Some(data.as_ref().to_path_buf());
    options.evaluate = Some(detector.as_ref().to_path_buf());
    options.out = out.as_ref().to_path_buf();
    options.device = device;
    run_job(options)
}
