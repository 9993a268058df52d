//! Training (PNPT.md §6): AdamW on the dual-stream loss, on backbone features computed once.
//!
//! * The backbone is frozen, so its features are computed once on `B::InnerBackend` (no
//!   autodiff graph) and cached for the whole run ([`FeatureSet`]); the prompt pool is built
//!   from the same cache, and every image's prior is *retrieved* (not looked up by label), as
//!   at test time (§3, §8).
//! * Everything random comes from one ChaCha8 stream seeded by `train.seed`: the backend seed
//!   used for initialisation, each epoch's order ([`epoch_order`]), the jitter noise and the
//!   per-epoch backend seed (dropout). Its position is saved in every checkpoint, so a resumed
//!   run continues to the same result as an uninterrupted one.
//! * The recipe options of [`TrainConfig`] (learning-rate schedule [`learning_rate`],
//!   class-balanced epochs, global-norm gradient clipping, a wall-clock budget) are all off by
//!   default, and then draw nothing from the stream and leave every bit of a run as before.
//! * A checkpoint (`checkpoint.bin`: model record, AdamW record, epoch, RNG position, loss
//!   history, configuration, the run's planned epoch count, the dataset fingerprint of
//!   [`TrainOptions::dataset`]) is written atomically after every epoch. Resuming refuses a
//!   checkpoint of another model configuration or seed ([`Error::Mismatch`]), of other data
//!   ([`Error::DatasetChanged`], naming what differs) or with more epochs done than
//!   `train.epochs` ([`Error::EpochsTooFew`]); a larger `train.epochs` extends the run (a
//!   budgeted run keeps the epoch count it planned).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use pnpt_backbone::Backbone;
use pnpt_data::{BatchIter, Dataset, Preprocess, Sample};
use pnpt_prompt::io::{read_container, write_container};
use pnpt_prompt::{PoolBuilder, PromptPool};
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::config::{LrSchedule, TrainConfig};
use crate::loss::pnpt_loss;
use crate::pnpt::Pnpt;
use crate::{Error, PnptConfig, Result};

/// File name of the training checkpoint inside the checkpoint folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.bin";
const CHECKPOINT_MAGIC: &[u8; 8] = b"PNPTCKPT";

/// Frozen-backbone features of the training images, cached for the run.
#[derive(Debug, Clone)]
pub struct FeatureSet<B: Backend> {
    /// `[N, C_i, H_i, W_i]` ×3.
    pub feats: [Tensor<B, 4>; 3],
    /// True category of each image (for reporting and class-balanced sampling; never seen by
    /// the model).
    pub categories: Vec<String>,
    /// Index into the pool of each image's *retrieved* class.
    pub prior_index: Vec<usize>,
}

impl<B: Backend> FeatureSet<B> {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.categories.len()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.categories.is_empty()
    }

    /// Rows `indices` of the cached features.
    pub fn select(&self, indices: &[usize]) -> [Tensor<B, 4>; 3] {
        let device = self.feats[0].device();
        let idx = index_tensor::<B>(indices, &device);
        [0, 1, 2].map(|s| self.feats[s].clone().select(0, idx.clone()))
    }
}

pub(crate) fn index_tensor<B: Backend>(indices: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let v: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(v, [indices.len()]), device)
}

/// The held-out calibration split: per category, `ceil(fraction * n)` images of `train/good`
/// chosen by a seeded shuffle (at least one image always stays for training). Returns
/// `(train, holdout)`, both in dataset order.
pub fn split_holdout(dataset: &Dataset, fraction: f64, seed: u64) -> (Vec<Sample>, Vec<Sample>) {
    let mut train = Vec::new();
    let mut holdout = Vec::new();
    for (ci, cat) in dataset.categories.iter().enumerate() {
        let n = cat.train.len();
        let k = if fraction > 0.0 { ((n as f64 * fraction).ceil() as usize).min(n.saturating_sub(1)) } else { 0 };
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(ci as u64 + 1))));
        let mut held = vec![false; n];
        for &i in &order[..k] {
            held[i] = true;
        }
        for (i, s) in cat.train.iter().enumerate() {
            if held[i] { holdout.push(s.clone()) } else { train.push(s.clone()) }
        }
    }
    (train, holdout)
}

pub(crate) fn bar(len: usize, show: bool, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    let style = ProgressStyle::with_template(&format!(
        "{what} {{bar:30}} {{pos}}/{{len}} [{{elapsed_precise}}<{{eta_precise}}] {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}

/// Backbone features of `samples` (decoded in parallel, `batch` images per forward),
/// concatenated in sample order.
pub fn extract_features<B: Backend>(
    backbone: &Backbone<B>,
    samples: &[Sample],
    pre: &Preprocess,
    batch: usize,
    device: &B::Device,
    progress: bool,
) -> Result<[Tensor<B, 4>; 3]> {
    if samples.is_empty() {
        return Err(Error::Invalid("no images to extract features from".into()));
    }
    let pb = bar(samples.len(), progress, "features");
    let mut parts: [Vec<Tensor<B, 4>>; 3] = Default::default();
    for item in BatchIter::<B>::new(samples, pre, batch, None, device)? {
        let (images, idx) = item?;
        let maps = backbone.features(images)?.maps;
        for (s, m) in maps.into_iter().enumerate() {
            parts[s].push(m);
        }
        pb.inc(idx.len() as u64);
    }
    pb.finish_and_clear();
    Ok(parts.map(|p| Tensor::cat(p, 0)))
}

/// Extracts and caches the features of `samples`, builds the prompt pool from them (class
/// means per true category, §3) and retrieves every image's prior class.
pub fn build_training_set<B: Backend>(
    config: &PnptConfig,
    backbone: &Backbone<B>,
    samples: &[Sample],
    device: &B::Device,
    progress: bool,
) -> Result<(FeatureSet<B>, PromptPool<B>)> {
    let pre = preprocess_for(config, backbone);
    let feats = extract_features(backbone, samples, &pre, config.train.feature_batch, device, progress)?;
    let mut builder = PoolBuilder::<B>::new();
    let mut names: Vec<&str> = Vec::new();
    for s in samples {
        if !names.contains(&s.category.as_str()) {
            names.push(&s.category);
        }
    }
    for name in names {
        let idx: Vec<usize> = samples.iter().enumerate().filter(|(_, s)| s.category == name).map(|(i, _)| i).collect();
        let it = index_tensor::<B>(&idx, device);
        builder.add(name, &[0, 1, 2].map(|s| feats[s].clone().select(0, it.clone())))?;
    }
    let pool = builder.build(config.distance)?;
    let mut prior_index = Vec::with_capacity(samples.len());
    for start in (0..samples.len()).step_by(64) {
        let len = (samples.len() - start).min(64);
        let chunk = [0, 1, 2].map(|s| feats[s].clone().narrow(0, start, len));
        prior_index.extend(pool.nearest(&chunk)?.0);
    }
    let categories = samples.iter().map(|s| s.category.clone()).collect();
    Ok((FeatureSet { feats, categories, prior_index }, pool))
}

/// The preprocessing for a configuration: the backbone's normalisation at `input_size`.
pub fn preprocess_for<B: Backend>(config: &PnptConfig, backbone: &Backbone<B>) -> Preprocess {
    let p = backbone.preprocess();
    Preprocess::new(config.input_size, p.mean, p.std)
}

/// Options of a training run that are not part of the model's configuration.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Folder for `checkpoint.bin` (written after every epoch); `None` = no checkpoints.
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from the checkpoint in `checkpoint_dir` if there is one (with `progress`, says
    /// "resuming from epoch k of N").
    pub resume: bool,
    /// Show progress bars on stderr.
    pub progress: bool,
    /// Stop after this many epochs in total (simulates an interruption; tests).
    pub stop_after_epoch: Option<usize>,
    /// What the run trains on, saved in every checkpoint; on resume a checkpoint with another
    /// fingerprint is [`Error::DatasetChanged`]. `None` = not recorded, not checked.
    pub dataset: Option<pnpt_data::fingerprint::Fingerprint>,
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

#[derive(Serialize, Deserialize)]
struct CheckpointHeader {
    epoch: usize,
    rng_seed: u64,
    /// ChaCha8 word position, as a decimal string (u128).
    rng_word_pos: String,
    history: Vec<EpochStats>,
    config: PnptConfig,
    num_params: usize,
    /// The run's planned epoch count (see [`TrainOutput::planned_epochs`]); `None` in
    /// checkpoints written before it existed, or before a budgeted run chose it.
    #[serde(default)]
    planned_epochs: Option<usize>,
    /// The training data ([`TrainOptions::dataset`]); `None` in checkpoints written before it
    /// existed (they still resume, with a warning) or by runs that did not record it.
    #[serde(default)]
    dataset: Option<pnpt_data::fingerprint::Fingerprint>,
}

/// Where a run's checkpoints go and what they record besides the training state.
struct CheckpointFile {
    path: PathBuf,
    dataset: Option<pnpt_data::fingerprint::Fingerprint>,
}

fn recorder() -> NamedMpkBytesRecorder<FullPrecisionSettings> {
    NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
}

/// The AdamW of a configuration, every value set explicitly.
pub fn adamw(config: &PnptConfig) -> AdamWConfig {
    let t = &config.train;
    AdamWConfig::new()
        .with_beta_1(t.beta1 as f32)
        .with_beta_2(t.beta2 as f32)
        .with_epsilon(t.eps as f32)
        .with_weight_decay(t.weight_decay as f32)
        .with_cautious_weight_decay(false)
        .with_amsgrad(false)
        .with_grad_clipping(None)
}

/// Learning rate of the 0-based global optimizer step `step` of a run of `total_steps` steps
/// (`epochs * steps_per_epoch`, planned for the whole run, so that a resumed run follows the
/// same schedule).
///
/// * `Constant`: `lr`.
/// * `WarmupCosine` with `w = warmup_steps`, `s = step + 1`: `lr * s / w` while `s <= w`, then
///   `lr_min + (lr - lr_min) * (1 + cos(pi * p)) / 2` with `p = (s - w) / (total_steps - w)`
///   (clamped to 1) and `lr_min = lr * min_lr_ratio`: `lr` at the end of the warm-up,
///   `lr_min` at the last step.
pub fn learning_rate(config: &TrainConfig, step: usize, total_steps: usize) -> f64 {
    match config.schedule {
        LrSchedule::Constant => config.lr,
        LrSchedule::WarmupCosine => {
            let (s, w) = (step + 1, config.warmup_steps);
            if s <= w {
                return config.lr * s as f64 / w as f64;
            }
            let p = if total_steps > w { ((s - w) as f64 / (total_steps - w) as f64).min(1.0) } else { 1.0 };
            let lr_min = config.lr * config.min_lr_ratio;
            lr_min + (config.lr - lr_min) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
        }
    }
}

/// Indices of each category's images, categories in order of first appearance.
fn category_groups(categories: &[String]) -> Vec<Vec<usize>> {
    let mut names: Vec<&str> = Vec::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, c) in categories.iter().enumerate() {
        match names.iter().position(|n| *n == c.as_str()) {
            Some(g) => groups[g].push(i),
            None => {
                names.push(c);
                groups.push(vec![i]);
            }
        }
    }
    groups
}

/// Number of images an epoch visits: `n`, or balanced `k * ceil(n / k)` for `k` categories.
pub fn epoch_len(categories: &[String], balanced: bool) -> usize {
    let n = categories.len();
    if !balanced || n == 0 {
        return n;
    }
    let k = category_groups(categories).len();
    k * n.div_ceil(k)
}

/// The order of one epoch's images (indices into `categories`).
///
/// * Not balanced: a shuffled permutation of `0..n` (exactly the draws of earlier versions).
/// * Balanced: from each category (in order of first appearance) `ceil(n / k)` of its images,
///   drawn without replacement from a fresh shuffle of them, reshuffled and drawn again each
///   time a small category runs out; then all of them shuffled together. Every category
///   appears equally often; the length is [`epoch_len`].
pub fn epoch_order(categories: &[String], balanced: bool, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let n = categories.len();
    if !balanced {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(rng);
        return order;
    }
    let groups = category_groups(categories);
    let per = n.div_ceil(groups.len().max(1));
    let mut order = Vec::with_capacity(per * groups.len());
    for members in &groups {
        let mut left = per;
        while left > 0 {
            let mut cycle = members.clone();
            cycle.shuffle(rng);
            let take = left.min(cycle.len());
            order.extend_from_slice(&cycle[..take]);
            left -= take;
        }
    }
    order.shuffle(rng);
    order
}

/// Sum of squares of every parameter's gradient (each parameter once).
struct GradSquares<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    seen: HashSet<ParamId>,
    sum: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradSquares<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let sq = g.square().sum();
            self.sum = Some(match self.sum.take() {
                Some(acc) => acc + sq,
                None => sq,
            });
        }
    }
}

/// Multiplies every parameter's gradient (each once) by `coef` (shape `[1]`).
struct GradScale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    seen: HashSet<ParamId>,
    coef: Tensor<B::InnerBackend, 1>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradScale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let coef: Tensor<B::InnerBackend, D> = self.coef.clone().unsqueeze();
            self.grads.register(param.id, g.mul(coef));
        }
    }
}

/// Scales the gradients so that their global L2 norm over all parameters is at most
/// `max_norm`, as PyTorch's `clip_grad_norm_`: `g *= min(1, max_norm / (norm + 1e-6))`.
///
/// Burn's `GradientClippingConfig::Norm` (AdamW's `with_grad_clipping`) clips each parameter
/// tensor by its *own* norm, which changes the direction of the update; this keeps it. It
/// stays on the device (no read-back).
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: GradientsParams,
    max_norm: f64,
) -> GradientsParams {
    let mut squares = GradSquares::<B> { grads: &grads, seen: HashSet::new(), sum: None };
    model.visit(&mut squares);
    let Some(sum) = squares.sum else { return grads };
    let coef = sum.sqrt().add_scalar(1e-6).recip().mul_scalar(max_norm).clamp_max(1.0);
    let mut grads = grads;
    let mut scale = GradScale::<B> { grads: &mut grads, seen: HashSet::new(), coef };
    model.visit(&mut scale);
    grads
}

/// Whether two configurations train the same model (everything but the epoch count and
/// inference-only settings must match to resume).
fn resumable(a: &PnptConfig, b: &PnptConfig) -> std::result::Result<(), String> {
    let mut diffs = Vec::new();
    if a.model != b.model {
        diffs.push("model");
    }
    if a.backbone != b.backbone || a.input_size != b.input_size {
        diffs.push("backbone/input_size");
    }
    if a.distance != b.distance {
        diffs.push("distance");
    }
    let (mut ta, mut tb) = (a.train.clone(), b.train.clone());
    ta.epochs = 0;
    tb.epochs = 0;
    ta.feature_batch = 0;
    tb.feature_batch = 0;
    if ta != tb {
        diffs.push("train (other than epochs)");
    }
    if diffs.is_empty() { Ok(()) } else { Err(diffs.join(", ")) }
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
        let (header, blobs): (CheckpointHeader, Vec<Vec<u8>>) = read_container(path, CHECKPOINT_MAGIC)?;
        resumable(&header.config, config)
            .map_err(|d| Error::Mismatch { path: path.clone(), reason: format!("differs in {d}") })?;
        same_dataset(path, header.dataset.as_ref(), options.dataset.as_ref(), options.progress)?;
        // Fewer epochs than done would keep the longer run's weights under a smaller count.
        if header.epoch > t.epochs {
            return Err(Error::EpochsTooFew { path: path.clone(), requested: t.epochs, done: header.epoch });
        }
        let bad = |reason: String| Error::Artefact { path: path.clone(), reason };
        if blobs.len() != 2 {
            return Err(bad(format!("expected 2 records, found {}", blobs.len())));
        }
        let record = Recorder::<B>::load(&recorder(), blobs[0].clone(), device)
            .map_err(|e| bad(format!("model record: {e}")))?;
        model = load_record_checked(model, record, header.num_params, path)?;
        optim = load_optimizer(optim, blobs[1].clone(), device).map_err(|e| bad(format!("optimizer record: {e}")))?;
        let pos: u128 = header.rng_word_pos.parse().map_err(|_| bad("rng position".into()))?;
        if header.rng_seed != t.seed {
            return Err(Error::Mismatch {
                path: path.clone(),
                reason: format!("seed {} vs {}", header.rng_seed, t.seed),
            });
        }
        rng.set_word_pos(pos);
        start_epoch = header.epoch;
        history = header.history;
        if t.time_budget_seconds.is_some() {
            // Keep the plan chosen from the first epoch's time (without a budget the plan
            // is the configuration's `epochs`, which may be raised to extend a run).
            planned = header.planned_epochs;
        }
        if options.progress {
            eprintln!("{}", resume_note(start_epoch, planned.unwrap_or(t.epochs).min(t.epochs), path));
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
        if options.stop_after_epoch.is_some_and(|stop| epoch >= stop) {
            completed = false;
            break;
        }
        let total_steps = run_epochs * steps;
        let epoch_start = Instant::now();
        B::seed(device, rng.next_u64());
        let order = epoch_order(&set.categories, t.class_balanced, &mut rng);
        let pb = bar(steps, options.progress, &format!("epoch {}/{}", epoch + 1, run_epochs));
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
            pb.set_message(format!(
                "loss {:.4} {:.1} img/s",
                total / (step + 1) as f64,
                ((step * t.batch_size + batch.len()) as f64) / secs
            ));
            pb.inc(1);
        }
        pb.finish_and_clear();
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
            // terminal, e.g. in logs and CI).
            let e = &history[history.len() - 1];
            let v = e.validation.map(|(i, p)| format!(", validation {i:.4} / {p:.4}")).unwrap_or_default();
            eprintln!(
                "epoch {}/{}: loss {:.5}, lr {:.3e}, {:.1} s, {:.2} img/s{v}",
                e.epoch, run_epochs, e.loss, e.lr, e.seconds, e.images_per_second
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

fn load_optimizer<B: AutodiffBackend, O: Optimizer<Pnpt<B>, B>>(
    optim: O,
    bytes: Vec<u8>,
    device: &B::Device,
) -> std::result::Result<O, burn::record::RecorderError> {
    let record: O::Record = Recorder::<B>::load(&recorder(), bytes, device)?;
    Ok(optim.load_record(record))
}

/// Loads `record` into `model`, turning Burn's structural panics into an error and checking
/// the parameter count against the saved one.
pub(crate) fn load_record_checked<B: Backend>(
    model: Pnpt<B>,
    record: <Pnpt<B> as Module<B>>::Record,
    expected_params: usize,
    path: &Path,
) -> Result<Pnpt<B>> {
    let loaded =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.load_record(record))).map_err(|_| {
            Error::Mismatch {
                path: path.to_path_buf(),
                reason: "the saved weights have another structure than the configured model".into(),
            }
        })?;
    let got = loaded.num_params();
    if got != expected_params {
        return Err(Error::Mismatch {
            path: path.to_path_buf(),
            reason: format!("the saved weights hold {got} parameters, the configuration expects {expected_params}"),
        });
    }
    Ok(loaded)
}

/// Refuses a checkpoint of other data (both fingerprints known); a checkpoint written before
/// fingerprints existed resumes with a warning, as does a run that records none.
fn same_dataset(
    path: &Path,
    saved: Option<&pnpt_data::fingerprint::Fingerprint>,
    now: Option<&pnpt_data::fingerprint::Fingerprint>,
    progress: bool,
) -> Result<()> {
    match (saved, now) {
        (Some(saved), Some(now)) => {
            let differences = saved.differences(now);
            if differences.is_empty() {
                Ok(())
            } else {
                Err(Error::DatasetChanged { path: path.to_path_buf(), differences })
            }
        }
        (None, Some(_)) => {
            if progress {
                eprintln!(
                    "warning: {} records no dataset fingerprint (an older checkpoint): resuming without checking that the data is the same",
                    path.display()
                );
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The line a resumed run prints: `done` epochs of `total` are in the checkpoint.
fn resume_note(done: usize, total: usize, path: &Path) -> String {
    if done >= total {
        format!("resuming from {}: all {total} epochs are done, nothing left to train", path.display())
    } else {
        format!("resuming from epoch {} of {total} ({done} done, {})", done + 1, path.display())
    }
}

#[allow(clippy::too_many_arguments)]
fn save_checkpoint<B: AutodiffBackend, O: Optimizer<Pnpt<B>, B>>(
    target: &CheckpointFile,
    config: &PnptConfig,
    model: &Pnpt<B>,
    optim: &O,
    epoch: usize,
    rng: &ChaCha8Rng,
    history: &[EpochStats],
    planned_epochs: Option<usize>,
) -> Result<()> {
    let path = target.path.as_path();
    let bad = |e: burn::record::RecorderError| Error::Artefact { path: path.to_path_buf(), reason: e.to_string() };
    let model_bytes = Recorder::<B>::record(&recorder(), model.clone().into_record(), ()).map_err(bad)?;
    let optim_bytes = Recorder::<B>::record(&recorder(), optim.to_record(), ()).map_err(bad)?;
    let header = CheckpointHeader {
        epoch,
        rng_seed: config.train.seed,
        rng_word_pos: rng.get_word_pos().to_string(),
        history: history.to_vec(),
        config: config.clone(),
        num_params: model.num_params(),
        planned_epochs,
        dataset: target.dataset.clone(),
    };
    write_container(path, CHECKPOINT_MAGIC, &header, &[&model_bytes, &optim_bytes])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    fn cosine(lr: f64, warmup_steps: usize, min_lr_ratio: f64) -> TrainConfig {
        TrainConfig { lr, schedule: LrSchedule::WarmupCosine, warmup_steps, min_lr_ratio, ..PnptConfig::cpu().train }
    }

    #[test]
    fn warmup_cosine_by_hand() {
        // lr 1e-3, 4 warm-up steps, 14 steps in all, floor 1e-4: decay over steps 5..=14
        // (1-based), p = (s - 4) / 10.
        let c = cosine(1e-3, 4, 0.1);
        let lr = |step| learning_rate(&c, step, 14);
        assert!(close(lr(0), 2.5e-4), "first step: lr / warmup = {}", lr(0));
        assert!(close(lr(1), 5e-4));
        assert!(close(lr(3), 1e-3), "end of warm-up: the peak, {}", lr(3));
        // s = 6: p = 0.2, cos(0.2 pi) = 0.80901699...: 1e-4 + 9e-4 * 0.5 * 1.80901699
        assert!(close(lr(5), 1e-4 + 9e-4 * 0.5 * (1.0 + 0.8090169943749475)), "{}", lr(5));
        // s = 9: p = 0.5, halfway between peak and floor.
        assert!(close(lr(8), 5.5e-4), "middle of the cosine: {}", lr(8));
        assert!(close(lr(13), 1e-4), "last step: the floor, {}", lr(13));
        for s in 0..13 {
            if s >= 3 {
                assert!(lr(s + 1) < lr(s), "decreasing after the warm-up at {s}");
            } else {
                assert!(lr(s + 1) > lr(s), "increasing in the warm-up at {s}");
            }
        }
        // No warm-up: the cosine starts at the first step; still the floor at the last one.
        let c0 = cosine(1e-3, 0, 0.0);
        assert!(close(learning_rate(&c0, 4, 10), 0.5e-3));
        assert!(close(learning_rate(&c0, 9, 10), 0.0));
    }

    #[test]
    fn resume_note_says_where_the_run_continues() {
        let p = Path::new("out/checkpoint/checkpoint.bin");
        assert!(resume_note(2, 5, p).starts_with("resuming from epoch 3 of 5 (2 done"), "{}", resume_note(2, 5, p));
        assert!(resume_note(5, 5, p).contains("all 5 epochs are done"), "{}", resume_note(5, 5, p));
    }

    #[test]
    fn constant_ignores_step_and_total() {
        let c = TrainConfig { lr: 3e-4, warmup_steps: 5, ..PnptConfig::cpu().train };
        assert_eq!(c.schedule, LrSchedule::Constant, "the default is constant");
        for (step, total) in [(0, 1), (4, 10), (9, 10), (1000, 10)] {
            assert_eq!(learning_rate(&c, step, total), 3e-4);
        }
    }

    fn cats(spec: &[(&str, usize)]) -> Vec<String> {
        // Interleaved, so that first appearance and position differ.
        let mut out = Vec::new();
        let mut left: Vec<usize> = spec.iter().map(|s| s.1).collect();
        while left.iter().any(|&l| l > 0) {
            for (i, (name, _)) in spec.iter().enumerate() {
                if left[i] > 0 {
                    out.push(name.to_string());
                    left[i] -= 1;
                }
            }
        }
        out
    }

    #[test]
    fn balanced_order_counts_and_cycles() {
        let c = cats(&[("big", 9), ("mid", 4), ("tiny", 1)]);
        let n = c.len(); // 14 -> ceil(14 / 3) = 5 per category
        assert_eq!(epoch_len(&c, true), 15);
        assert_eq!(epoch_len(&c, false), n);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..5 {
            let order = epoch_order(&c, true, &mut rng);
            assert_eq!(order.len(), 15);
            let mut per_image = vec![0usize; n];
            for &i in &order {
                per_image[i] += 1;
            }
            for name in ["big", "mid", "tiny"] {
                let count: usize = (0..n).filter(|&i| c[i] == name).map(|i| per_image[i]).sum();
                assert_eq!(count, 5, "{name}");
            }
            // Without replacement within a cycle: the big category's 5 are distinct, the mid
            // one's 4 images each once plus one again, the tiny one's image 5 times.
            assert!((0..n).filter(|&i| c[i] == "big").all(|i| per_image[i] <= 1));
            let mut mid: Vec<usize> = (0..n).filter(|&i| c[i] == "mid").map(|i| per_image[i]).collect();
            mid.sort();
            assert_eq!(mid, vec![1, 1, 1, 2]);
            assert!((0..n).filter(|&i| c[i] == "tiny").all(|i| per_image[i] == 5));
        }
    }

    #[test]
    fn unbalanced_order_is_the_old_shuffle() {
        let c = cats(&[("a", 6), ("b", 3)]);
        let mut r1 = ChaCha8Rng::seed_from_u64(11);
        let mut r2 = ChaCha8Rng::seed_from_u64(11);
        let order = epoch_order(&c, false, &mut r1);
        let mut old: Vec<usize> = (0..c.len()).collect();
        old.shuffle(&mut r2);
        assert_eq!(order, old);
        assert_eq!(r1.get_word_pos(), r2.get_word_pos(), "same number of draws");
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..c.len()).collect::<Vec<_>>());
    }

    #[test]
    fn global_norm_clipping_keeps_the_direction() {
        use burn::backend::{Autodiff, Flex};
        use burn::nn::LinearConfig;
        type A = Autodiff<Flex<f32>>;
        let dev = Default::default();
        let model = LinearConfig::new(3, 2).init::<A>(&dev);
        let x = Tensor::<A, 2>::from_data(TensorData::new(vec![1.0f32, -2.0, 3.0, 0.5, 4.0, -1.0], [2, 3]), &dev);
        let grads_of =
            || GradientsParams::from_grads(model.forward(x.clone()).sum().mul_scalar(10.0).backward(), &model);
        let read = |g: &GradientsParams| -> Vec<f32> {
            let w: Tensor<Flex<f32>, 2> = g.get(model.weight.id).unwrap();
            let b: Tensor<Flex<f32>, 1> = g.get(model.bias.as_ref().unwrap().id).unwrap();
            w.into_data().iter::<f32>().chain(b.into_data().iter::<f32>()).collect()
        };
        let raw = read(&grads_of());
        let norm = raw.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        assert!(norm > 1.0);
        // Above the norm: untouched.
        assert_eq!(read(&clip_grad_norm::<A, _>(&model, grads_of(), 2.0 * norm)), raw);
        // Below: scaled as a whole to the limit.
        let clipped = read(&clip_grad_norm::<A, _>(&model, grads_of(), norm / 4.0));
        let coef = (norm / 4.0) / (norm + 1e-6);
        for (c, r) in clipped.iter().zip(&raw) {
            assert!((*c as f64 - *r as f64 * coef).abs() <= 1e-5 * r.abs().max(1.0) as f64, "{c} vs {r} * {coef}");
        }
        let new_norm = clipped.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        assert!((new_norm - norm / 4.0).abs() < 1e-4 * norm, "{new_norm} vs {}", norm / 4.0);
    }
}
