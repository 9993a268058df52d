//! Training (the paper's training setup): AdamW on the dual-stream loss, on backbone features computed once.
//!
//! * The backbone is frozen, so its features are computed once on `B::InnerBackend` (no
//!   autodiff graph) and cached for the whole run ([`FeatureSet`]); the prompt pool is built
//!   from the same cache, and every image's prior is *retrieved* (not looked up by label), as
//!   at test time (as CS-NPP does, and as the reference run did).
//! * Everything random comes from one ChaCha8 stream seeded by `train.seed`: the backend seed
//!   used for initialisation, each epoch's order ([`epoch_order`]), the jitter noise and the
//!   per-epoch backend seed (dropout). Its position is saved in every checkpoint, so a resumed
//!   run continues to the same result as an uninterrupted one.
//! * The recipe options of [`TrainConfig`](crate::TrainConfig) (learning-rate schedule [`learning_rate`],
//!   class-balanced epochs, global-norm gradient clipping, a wall-clock budget) are all off by
//!   default, and then draw nothing from the stream and leave every bit of a run as before.
//! * A checkpoint (`checkpoint.bin`, a safetensors file: model weights, AdamW record, epoch, RNG position, loss
//!   history, configuration, the run's planned epoch count, the dataset fingerprint of
//!   [`TrainOptions::dataset`]) is written atomically after every epoch. Resuming refuses a
//!   checkpoint of another model configuration or seed ([`Error::Mismatch`]), of other data
//!   ([`Error::DatasetChanged`], naming what differs) or with more epochs done than
//!   `train.epochs` ([`Error::EpochsTooFew`]); a larger `train.epochs` extends the run (a
//!   budgeted run keeps the epoch count it planned).

mod checkpoint;
mod features;
mod fit;
mod schedule;

use std::path::PathBuf;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use pnpt_prompt::PromptPool;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::LrSchedule;
use crate::loss::pnpt_loss;
use crate::pnpt::Pnpt;
use crate::progress::Progress;
use crate::{Error, PnptConfig, Result};
use checkpoint::{CheckpointFile, read_checkpoint, resumable, resume_note, same_dataset, save_checkpoint};

pub use checkpoint::CHECKPOINT_FILE;
pub(crate) use checkpoint::{MODEL_KIND, apply_model_tensors, load_record_checked, model_entries};
pub use features::{FeatureSet, build_training_set, extract_features, preprocess_for, split_holdout};
pub use fit::{DetectorHook, FitReport, build_memory, fit, fit_with};
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
    /// program that shows bars passes a callback (`pnpt::logging::progress_bars`).
    pub progress_sink: Progress,
    /// Stop after this many epochs in total (simulates an interruption; tests). Only with
    /// the `testing` feature: not an option for users (the workspace's tests turn it on).
    #[cfg(feature = "testing")]
    pub stop_after_epoch: Option<usize>,
    /// What the run trains on, saved in every checkpoint; on resume a checkpoint with another
    /// fingerprint is [`Error::DatasetChanged`]. `None` = not recorded, not checked.
    pub dataset: Option<pnpt_data::fingerprint::Fingerprint>,
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

/// What [`train_model`] returns.
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

/// Trains a fresh (or resumed) PNPT model on cached features.
pub fn train_model<B: AutodiffBackend>(
    config: &PnptConfig,
    set: &FeatureSet<B::InnerBackend>,
    pool: &PromptPool<B::InnerBackend>,
    device: &B::Device,
    options: &TrainOptions,
) -> Result<TrainOutput<B::InnerBackend>> {
    train_model_with::<B>(config, set, pool, device, options, &mut |_, _| Ok(None))
}

/// [`train_model`], validating the model after every epoch with `on_epoch` (recorded in
/// [`EpochStats::validation`] and the checkpoint's history).
pub fn train_model_with<B: AutodiffBackend>(
    config: &PnptConfig,
    set: &FeatureSet<B::InnerBackend>,
    pool: &PromptPool<B::InnerBackend>,
    device: &B::Device,
    options: &TrainOptions,
    on_epoch: EpochHook<'_, B::InnerBackend>,
) -> Result<TrainOutput<B::InnerBackend>> {
    config.validate()?;
    if set.is_empty() {
        return Err(Error::Invalid("no training images".into()));
    }
    let spec = config.feature_spec();
    spec.check("cached training features", &set.feats)?;
    let t = &config.train;
    let mut rng = ChaCha8Rng::seed_from_u64(t.seed);
    B::seed(device, rng.next_u64());
    let mut model = Pnpt::<B>::new(&config.model, spec, device)?;
    let mut optim = adamw(config).init::<B, Pnpt<B>>();
    let mut history: Vec<EpochStats> = Vec::new();
    let mut start_epoch = 0;
    // The run's epoch count: `epochs`, or with a time budget unknown until the first epoch
    // has been timed (the schedule plans for `epochs` meanwhile).
    let mut planned: Option<usize> = if t.time_budget_seconds.is_some() { None } else { Some(t.epochs) };

    let ckpt_path = options
        .checkpoint_dir
        .as_ref()
        .map(|d| CheckpointFile { path: d.join(CHECKPOINT_FILE), dataset: options.dataset.clone() });
    if let (true, Some(CheckpointFile { path, .. })) = (options.resume, &ckpt_path)
        && path.exists()
    {
        let checkpoint = read_checkpoint(path)?;
        let header = &checkpoint.header;
        resumable(&header.config, config)
            .map_err(|d| Error::Mismatch { path: path.clone(), reason: format!("differs in {d}") })?;
        same_dataset(path, header.dataset.as_ref(), options.dataset.as_ref(), options.progress)?;
        // Fewer epochs than done would keep the longer run's weights under a smaller count.
        if header.epoch > t.epochs {
            return Err(Error::EpochsTooFew { path: path.clone(), requested: t.epochs, done: header.epoch });
        }
        let bad = |reason: String| Error::Artefact { path: path.clone(), reason };
        (model, optim) = checkpoint.restore(path, model, optim, device)?;
        let pos: u128 = header.rng_word_pos.parse().map_err(|_| bad("rng position".into()))?;
        if header.rng_seed != t.seed {
            return Err(Error::Mismatch {
                path: path.clone(),
                reason: format!("seed {} vs {}", header.rng_seed, t.seed),
            });
        }
        rng.set_word_pos(pos);
        start_epoch = header.epoch;
        history = header.history.clone();
        if t.time_budget_seconds.is_some() {
            // Keep the plan chosen from the first epoch's time (without a budget the plan
            // is the configuration's `epochs`, which may be raised to extend a run).
            planned = header.planned_epochs;
        }
        if options.progress {
            log::info!("{}", resume_note(start_epoch, planned.unwrap_or(t.epochs).min(t.epochs), path));
        }
    }

    let started = Instant::now();
    let epoch_images = epoch_len(&set.categories, t.class_balanced);
    let steps = epoch_images.div_ceil(t.batch_size);
    if t.time_budget_seconds.is_some() && t.schedule == LrSchedule::WarmupCosine && t.warmup_steps > steps {
        return Err(Error::Config(format!(
            "train.warmup_steps ({}) must fit in the first epoch ({steps} steps) with train.time_budget_seconds",
            t.warmup_steps
        )));
    }
    let mut completed = true;
    let mut epoch = start_epoch;
    loop {
        let run_epochs = planned.unwrap_or(t.epochs).min(t.epochs);
        if epoch >= run_epochs {
            break;
        }
        if options.stop_after().is_some_and(|stop| epoch >= stop) {
            completed = false;
            break;
        }
        let total_steps = run_epochs * steps;
        let epoch_start = Instant::now();
        B::seed(device, rng.next_u64());
        let order = epoch_order(&set.categories, t.class_balanced, &mut rng);
        let stage = options.progress_sink.stage(&format!("epoch {}/{}", epoch + 1, run_epochs), steps);
        let mut total = 0.0f64;
        let mut lr = t.lr;
        for (step, batch) in order.chunks(t.batch_size).enumerate() {
            let input = set.select(batch).map(Tensor::<B, 4>::from_inner);
            let prior = if config.model.variant.has_prior() {
                let idx: Vec<usize> = batch.iter().map(|&i| set.prior_index[i]).collect();
                Some(pool.prior_of(&idx)?.map(Tensor::<B, 4>::from_inner))
            } else {
                None
            };
            // Always draw, so the RNG stream does not depend on the outcome.
            let jitter_draw: f64 = rng.random();
            let scale = if jitter_draw < t.jitter_prob { t.jitter_scale } else { 0.0 };
            let recon = model.forward_train(&input, prior.as_ref(), scale, &mut rng)?;
            let loss = pnpt_loss(&input, &recon);
            let value: f32 = loss.clone().into_scalar().elem();
            if !value.is_finite() {
                return Err(Error::NonFinite { epoch: epoch + 1, step: step + 1, value });
            }
            total += value as f64;
            let mut grads = GradientsParams::from_grads(loss.backward(), &model);
            if let Some(max_norm) = t.grad_clip_norm {
                grads = clip_grad_norm::<B, _>(&model, grads, max_norm);
            }
            lr = learning_rate(t, epoch * steps + step, total_steps);
            model = optim.step(lr, model, grads);
            let secs = epoch_start.elapsed().as_secs_f64().max(1e-9);
            stage.advance(1, || {
                Some(format!(
                    "loss {:.4} {:.1} img/s",
                    total / (step + 1) as f64,
                    ((step * t.batch_size + batch.len()) as f64) / secs
                ))
            });
        }
        drop(stage);
        let seconds = epoch_start.elapsed().as_secs_f64();
        if planned.is_none() {
            // First timed epoch of a budgeted run: as many epochs as the budget holds.
            let budget = t.time_budget_seconds.unwrap_or(f64::INFINITY);
            let fit = (budget / seconds.max(1e-9)).floor() as usize; // saturating cast
            planned = Some(fit.max(1).min(t.epochs));
        }
        let run_epochs = planned.unwrap_or(t.epochs).min(t.epochs);
        // Timed apart from the epoch, so a time budget plans with training time only.
        let validation = on_epoch(&model.valid(), epoch + 1 == run_epochs)?;
        history.push(EpochStats {
            epoch: epoch + 1,
            loss: total / steps as f64,
            seconds,
            images_per_second: epoch_images as f64 / seconds.max(1e-9),
            lr,
            planned_epochs: run_epochs,
            validation,
        });
        if options.progress {
            // A plain line per epoch (the bar is cleared, and invisible when stderr is not a
            // terminal, e.g. in logs and CI), as a `log` event: the program's logger prints it.
            let e = &history[history.len() - 1];
            let v = e.validation.map(|(i, p)| format!(", validation {i:.4} / {p:.4}")).unwrap_or_default();
            log::info!(
                "epoch {}/{}: loss {:.5}, lr {:.3e}, {:.1} s, {:.2} img/s{v}",
                e.epoch,
                run_epochs,
                e.loss,
                e.lr,
                e.seconds,
                e.images_per_second
            );
        }
        if let Some(path) = &ckpt_path {
            save_checkpoint(path, config, &model, &optim, epoch + 1, &rng, &history, planned)?;
        }
        epoch += 1;
    }
    let planned_epochs = planned.unwrap_or(t.epochs).min(t.epochs);
    Ok(TrainOutput {
        model: model.valid(),
        history,
        seconds: started.elapsed().as_secs_f64(),
        completed,
        planned_epochs,
    })
}
