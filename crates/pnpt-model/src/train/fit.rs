//! Training a whole detector: features, pool, patch memory, PNPT, positional statistics and
//! thresholds.

use std::time::Instant;

use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use pnpt_backbone::Backbone;
use pnpt_data::Dataset;
use pnpt_memory::{MemoryBuilder, PatchMemory};
use pnpt_prompt::PromptPool;

use super::{EpochStats, FeatureSet, TrainOptions, build_training_set, split_holdout, train_model_with};
use crate::config::ScoringMethod;
use crate::detector::{Detector, Thresholds};
use crate::pnpt::Pnpt;
use crate::progress::Progress;
use crate::{Error, PnptConfig, Result};

/// What [`fit`] returns besides the detector.
#[derive(Debug, Clone)]
pub struct FitReport {
    /// Per-epoch loss and speed.
    pub history: Vec<EpochStats>,
    /// Seconds computing backbone features and the pool.
    pub feature_seconds: f64,
    /// Seconds in the training loop.
    pub train_seconds: f64,
    /// Seconds building the patch memory (0 without one).
    pub memory_seconds: f64,
    /// Seconds computing the positional statistics of PNPT's map (0 without them).
    pub positional_seconds: f64,
    /// Training images used.
    pub train_images: usize,
    /// Held-out normal images used for thresholds.
    pub holdout_images: usize,
    /// Whether all epochs ran (false when stopped early by `stop_after_epoch`).
    pub completed: bool,
}

/// Trains a detector on every category of `dataset` at once (one model), then calibrates its
/// thresholds on the held-out normal images.
pub fn fit<B: AutodiffBackend>(
    config: &PnptConfig,
    dataset: &Dataset,
    device: &B::Device,
    options: &TrainOptions,
) -> Result<(Detector<B::InnerBackend>, FitReport)> {
    fit_with::<B>(config, dataset, device, options, &mut |_, _| Ok(None))
}

/// What [`fit_with`] calls after every epoch: an uncalibrated detector around the epoch's model
/// and whether it is the last epoch; returns validation image and pixel AUROC, or `None`.
pub type DetectorHook<'a, B> = &'a mut dyn FnMut(&Detector<B>, bool) -> Result<Option<(f64, f64)>>;

/// [`fit`], handing `on_epoch` an uncalibrated detector around every epoch's model (no memory,
/// no thresholds: PNPT's map only) and whether it is the last epoch, to validate; what it
/// returns is recorded per epoch.
pub fn fit_with<B: AutodiffBackend>(
    config: &PnptConfig,
    dataset: &Dataset,
    device: &B::Device,
    options: &TrainOptions,
    on_epoch: DetectorHook<'_, B::InnerBackend>,
) -> Result<(Detector<B::InnerBackend>, FitReport)> {
    config.validate()?;
    // Autodiff wraps the inner backend on the same device type.
    let inner = device.clone();
    let backbone = Backbone::<B::InnerBackend>::load(config.backbone, config.backbone_weights.as_deref(), &inner)?;
    let (train, holdout) = split_holdout(dataset, config.scoring.calibration_fraction, config.train.seed);
    if train.is_empty() {
        return Err(Error::Invalid(format!("{}: no normal training images (train/good)", dataset.root.display())));
    }
    let t0 = Instant::now();
    let (set, pool) = build_training_set(config, &backbone, &train, &inner, options)?;
    let feature_seconds = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    // Built before training so that a problem with it ends the run before the long part.
    let memory = if config.scoring.rule().uses_memory() {
        Some(build_memory(config, &set, &pool, &options.progress_sink)?)
    } else {
        None
    };
    let memory_seconds = t0.elapsed().as_secs_f64();
    let retrieval = crate::predict::training_retrieval_limits(&pool, &set)?;
    let mut hook = |model: &Pnpt<B::InnerBackend>, last: bool| -> Result<Option<(f64, f64)>> {
        let mut cfg = config.clone();
        cfg.scoring.method = ScoringMethod::Pnpt;
        cfg.scoring.positional = false;
        cfg.scoring.positional_map = false;
        cfg.scoring.score_from = None;
        let detector = Detector::new(cfg, backbone.clone(), pool.clone(), model.clone(), Thresholds::default())?;
        on_epoch(&detector, last)
    };
    let out = train_model_with::<B>(config, &set, &pool, device, options, &mut hook)?;
    let thresholds = Thresholds { retrieval, ..Default::default() };
    let mut detector = Detector::new(config.clone(), backbone, pool, out.model, thresholds)?;
    if let Some(memory) = memory {
        detector = detector.with_memory(memory)?;
    }
    let t0 = Instant::now();
    if config.scoring.rule().uses_positional() {
        detector.fit_positional_features(&set, config.train.feature_batch)?;
    }
    let positional_seconds = t0.elapsed().as_secs_f64();
    drop(set);
    detector.calibrate(&holdout)?;
    let report = FitReport {
        history: out.history,
        feature_seconds,
        train_seconds: out.seconds,
        memory_seconds,
        positional_seconds,
        train_images: train.len(),
        holdout_images: holdout.len(),
        completed: out.completed,
    };
    Ok((detector, report))
}

/// One coreset bank per class of the pool, from the cached training features of the images of
/// that (true) class.
pub fn build_memory<B: Backend>(
    config: &PnptConfig,
    set: &FeatureSet<B>,
    pool: &PromptPool<B>,
    progress: &Progress,
) -> Result<PatchMemory<B>> {
    let mut builder = MemoryBuilder::<B>::new(config.memory.clone())?;
    let stage = progress.stage("memory", pool.len());
    for name in pool.names() {
        let idx: Vec<usize> = (0..set.len()).filter(|&i| &set.categories[i] == name).collect();
        let batches: Vec<[Tensor<B, 4>; 3]> = idx.chunks(64).map(|chunk| set.select(chunk)).collect::<Result<_>>()?;
        builder.add_class(name, &batches)?;
        stage.advance(1, || None);
    }
    Ok(builder.build()?)
}
