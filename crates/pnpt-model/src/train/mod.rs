//! Training (the paper's training setup): AdamW on the dual-stream loss, on backbone features computed once.
//!
//! * The backbone is frozen, so its features are computed once on `B::InnerBackend` (no
//!   autodiff graph) and kept for the whole run, in memory or past a memory budget on disk
//!   ([`FeatureSet`], [`FeatureStorage`]); the prompt pool is built
//!   from the same cache, and every image's prior is *retrieved* (not looked up by label), as
//!   at test time (as CS-NPP does, and as the reference run did).
//! * Everything random comes from one ChaCha8 stream seeded by `train.seed`: the backend seed
//!   used for initialisation, each epoch's order ([`epoch_order`]), the jitter noise and the
//!   per-epoch backend seed (dropout). Its position is saved in every checkpoint, so a resumed
//!   run continues to the same result as an uninterrupted one.
//! * The recipe options of [`TrainConfig`](crate::TrainConfig) (learning-rate schedule [`learning_rate`],
//!   class-balanced epochs, global-norm gradient clipping, a wall-clock budget) are all off by
//!   default, and then draw nothing from the stream and leave every bit of a run as before.
//! * Data-parallel runs ([`TrainOptions::devices`], [`TrainOptions::nodes`]) split every batch
//!   between devices and sum their gradients in rank order; they end where the one-device run
//!   ends up to rounding, with the same bits on every run of the same device count
//!   (`parallel.rs`, docs/data-parallel.md).
//! * A checkpoint (`checkpoint.bin`, a safetensors file: model weights, AdamW record, epoch, RNG position, loss
//!   history, configuration, the run's planned epoch count, the dataset fingerprint of
//!   [`TrainOptions::dataset`]) is written atomically after every epoch. Resuming refuses a
//!   checkpoint of another model configuration or seed ([`Error::Mismatch`]), of other data
//!   ([`Error::DatasetChanged`], naming what differs) or with more epochs done than
//!   `train.epochs` ([`Error::EpochsTooFew`]); a larger `train.epochs` extends the run (a
//!   budgeted run keeps the epoch count it planned).

mod checkpoint;
mod epochs;
mod feature_store;
mod features;
mod memory;
mod parallel;
mod schedule;

use std::path::PathBuf;

use burn::tensor::backend::{AutodiffBackend, Backend, DeviceId};
use pnpt_prompt::PromptPool;
use serde::{Deserialize, Serialize};

use crate::pnpt::Pnpt;
use crate::progress::Progress;
use crate::{Error, PnptConfig, Result};

pub use checkpoint::CHECKPOINT_FILE;
pub(crate) use checkpoint::{MODEL_KIND, apply_model_tensors, load_record_checked, model_entries};
pub use epochs::untrained_model;
pub use feature_store::{FeatureStorage, parse_size};
pub use features::{FeatureSet, build_training_set, extract_features, preprocess_for, split_holdout};
pub use memory::build_memory;
pub use parallel::NodeOptions;
pub use schedule::{adamw, clip_grad_norm, epoch_len, epoch_order, learning_rate};

/// Options of a training run that are not part of the model's configuration.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TrainOptions {
    /// Folder for `checkpoint.bin` (written after every epoch); `None` = no checkpoints.
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from the checkpoint in `checkpoint_dir` if there is one (with `progress`, says
    /// "resuming from epoch k of N").
    pub resume: bool,
    /// Send a `log` event per epoch (info) and on resuming (info; a warning for a checkpoint
    /// without a dataset fingerprint).
    pub progress: bool,
    /// Where the stages' progress goes (features, memory, every epoch): nowhere by default; a
    /// program that shows bars passes a callback (`pnpt_cli::logging::progress_bars`).
    pub progress_sink: Progress,
    /// Stop after this many epochs in total (simulates an interruption; tests). Only with
    /// the `testing` feature: not an option for users (the workspace's tests turn it on).
    #[cfg(feature = "testing")]
    pub stop_after_epoch: Option<usize>,
    /// Stop after this many optimizer steps in this call (a partial epoch, not recorded in the
    /// history; the memory demonstration of `examples/feature_memory.rs`). `testing` only.
    #[cfg(feature = "testing")]
    pub stop_after_steps: Option<usize>,
    /// What the run trains on, saved in every checkpoint; on resume a checkpoint with another
    /// fingerprint is [`Error::DatasetChanged`]. `None` = not recorded, not checked.
    pub dataset: Option<pnpt_data::fingerprint::Fingerprint>,
    /// Where the training features are kept: by default ([`FeatureStorage::Auto`]) in memory
    /// when they fit in [`feature_memory`](Self::feature_memory), else on disk.
    pub feature_storage: FeatureStorage,
    /// The memory the training features may take, in bytes; `None` = the memory available
    /// (`MemAvailable`) less the model's own estimate (weights, optimizer, one batch).
    pub feature_memory: Option<u64>,
    /// Folder for the on-disk features (a subfolder is created and removed after the run);
    /// `None` = the system's temporary folder.
    pub feature_dir: Option<PathBuf>,
    /// Data-parallel training on these devices of this process (ids of the training backend's
    /// devices, `Device::to_id`; the same id twice runs two replicas on one device): every
    /// batch is split between them and their gradients are summed (all-reduce). Empty = the
    /// device given to [`train_transformer`] alone.
    pub devices: Vec<DeviceId>,
    /// This process's place among several (on one or several machines, one device each) whose
    /// gradients are summed at node 0; `None` = this process alone.
    pub nodes: Option<NodeOptions>,
    /// Wall-clock seconds this call's training loop may take (the pipeline's share of
    /// `train.run_budget_seconds`): the loop stops when they are spent, mid-epoch if need be,
    /// after at least one step. Unlike `train.time_budget_seconds` it plans no epoch count, so
    /// a run that fits is the same run as without it; with both, the loop stops at the smaller.
    pub time_limit: Option<f64>,
    /// Seconds the caller expects to need after the loop: with a time limit, the progress
    /// shows the time left to the end of the whole run.
    pub seconds_after: f64,
}

// `#[non_exhaustive]`: code outside the crate builds it with these setters (struct literals,
// even with `..Default::default()`, are refused there), so adding an option breaks no caller.
impl TrainOptions {
    /// The simulated interruption, if any.
    #[cfg(feature = "testing")]
    fn stop_after(&self) -> Option<usize> {
        self.stop_after_epoch
    }

    /// Without the `testing` feature there is no simulated interruption.
    #[cfg(not(feature = "testing"))]
    fn stop_after(&self) -> Option<usize> {
        None
    }

    /// The step limit, if any.
    #[cfg(feature = "testing")]
    fn step_limit(&self) -> Option<usize> {
        self.stop_after_steps
    }

    /// Without the `testing` feature there is no step limit.
    #[cfg(not(feature = "testing"))]
    fn step_limit(&self) -> Option<usize> {
        None
    }

    /// Sets [`checkpoint_dir`](Self::checkpoint_dir).
    pub fn with_checkpoint_dir(mut self, checkpoint_dir: Option<PathBuf>) -> Self {
        self.checkpoint_dir = checkpoint_dir;
        self
    }

    /// Sets [`resume`](Self::resume).
    pub fn with_resume(mut self, resume: bool) -> Self {
        self.resume = resume;
        self
    }

    /// Sets [`progress`](Self::progress).
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// Sets [`progress_sink`](Self::progress_sink).
    pub fn with_progress_sink(mut self, progress_sink: Progress) -> Self {
        self.progress_sink = progress_sink;
        self
    }

    /// Sets [`stop_after_epoch`](Self::stop_after_epoch) (feature `testing`).
    #[cfg(feature = "testing")]
    pub fn with_stop_after_epoch(mut self, stop_after_epoch: Option<usize>) -> Self {
        self.stop_after_epoch = stop_after_epoch;
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

    /// Sets [`feature_dir`](Self::feature_dir).
    pub fn with_feature_dir(mut self, feature_dir: Option<PathBuf>) -> Self {
        self.feature_dir = feature_dir;
        self
    }

    /// Where a run of `config` on `images` training images keeps its features: `Auto`
    /// resolved against [`feature_memory`](Self::feature_memory) or, without one, the memory
    /// available less the model's estimate (unknown memory: in memory).
    pub fn feature_storage_for(&self, config: &PnptConfig, images: usize) -> FeatureStorage {
        let estimate = config.estimate_memory(images);
        let budget = self.feature_memory.or_else(|| {
            crate::config::available_memory()
                .map(|a| a.saturating_sub(estimate.total().saturating_sub(estimate.feature_cache)))
        });
        self.feature_storage.resolve(estimate.feature_cache, budget)
    }

    /// Sets [`devices`](Self::devices).
    pub fn with_devices(mut self, devices: Vec<DeviceId>) -> Self {
        self.devices = devices;
        self
    }

    /// Sets [`nodes`](Self::nodes).
    pub fn with_nodes(mut self, nodes: Option<NodeOptions>) -> Self {
        self.nodes = nodes;
        self
    }

    /// Sets [`stop_after_steps`](Self::stop_after_steps) (feature `testing`).
    #[cfg(feature = "testing")]
    pub fn with_stop_after_steps(mut self, stop_after_steps: Option<usize>) -> Self {
        self.stop_after_steps = stop_after_steps;
        self
    }

    /// Sets [`time_limit`](Self::time_limit) and [`seconds_after`](Self::seconds_after).
    pub fn with_time_limit(mut self, time_limit: Option<f64>, seconds_after: f64) -> Self {
        self.time_limit = time_limit;
        self.seconds_after = seconds_after;
        self
    }

    /// Sets [`dataset`](Self::dataset).
    pub fn with_dataset(mut self, dataset: Option<pnpt_data::fingerprint::Fingerprint>) -> Self {
        self.dataset = dataset;
        self
    }
}

/// Statistics of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1-based epoch.
    pub epoch: usize,
    /// Optimizer steps run in the epoch: fewer than an epoch's when a time budget ended it
    /// (0 in checkpoints written before it existed).
    #[serde(default)]
    pub steps: usize,
    /// Mean training loss over the epoch's steps.
    pub loss: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Training images per second.
    pub images_per_second: f64,
    /// Learning rate of the epoch's last step (0 in checkpoints written before it existed).
    #[serde(default)]
    pub lr: f64,
    /// The run's planned number of epochs as known at the end of this epoch: `train.epochs`,
    /// or with `train.time_budget_seconds` the count chosen after the first epoch (0 in
    /// checkpoints written before it existed).
    #[serde(default)]
    pub planned_epochs: usize,
    /// Validation image and pixel AUROC of PNPT's map after this epoch, when the run was given
    /// a per-epoch validation (`pnpt::train`); `None` otherwise.
    #[serde(default)]
    pub validation: Option<(f64, f64)>,
}

/// Called after every epoch with the epoch's model (inference backend) and whether it is the
/// run's last epoch; returns its validation image and pixel AUROC, or `None`.
pub type EpochHook<'a, B> = &'a mut dyn FnMut(&Pnpt<B>, bool) -> Result<Option<(f64, f64)>>;

/// What [`train_transformer`] returns.
#[derive(Debug, Clone)]
pub struct TrainOutput<B: Backend> {
    /// The trained model (inference backend).
    pub model: Pnpt<B>,
    /// One entry per epoch, resumed epochs included.
    pub history: Vec<EpochStats>,
    /// Seconds spent training in this call.
    pub seconds: f64,
    /// Whether all planned epochs are done (false after `stop_after_epoch`).
    pub completed: bool,
    /// The run's number of epochs: `train.epochs`, or with `train.time_budget_seconds` the
    /// count chosen after the first epoch (`train.epochs` if no epoch has ended yet).
    pub planned_epochs: usize,
}

/// Trains a fresh (or resumed) PNPT model on cached features, validating the model after
/// every epoch with `on_epoch` when given (recorded in [`EpochStats::validation`] and the
/// checkpoint's history). With [`TrainOptions::devices`] or [`TrainOptions::nodes`] the run is
/// data-parallel (`on_epoch` and the checkpoints are this process's first device's).
pub fn train_transformer<B: AutodiffBackend>(
    config: &PnptConfig,
    set: &FeatureSet<B::InnerBackend>,
    pool: &PromptPool<B::InnerBackend>,
    device: &B::Device,
    options: &TrainOptions,
    on_epoch: Option<EpochHook<'_, B::InnerBackend>>,
) -> Result<TrainOutput<B::InnerBackend>> {
    let mut none = |_: &Pnpt<B::InnerBackend>, _: bool| Ok(None);
    let on_epoch = on_epoch.unwrap_or(&mut none);
    config.validate()?;
    if set.is_empty() {
        return Err(Error::Invalid("no training images".into()));
    }
    config.feature_spec().check("cached training features", &set.rows(0, 1)?)?;
    if options.devices.len() <= 1 && options.nodes.is_none() {
        let device = options.devices.first().map_or_else(|| device.clone(), |id| parallel::device_of::<B>(*id));
        return epochs::Run::<B>::start(config, &device, options, None)?.train(set, pool, on_epoch);
    }
    parallel::train::<B>(config, set, pool, device, options, on_epoch)
}
