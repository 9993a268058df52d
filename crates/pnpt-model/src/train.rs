//! Training (PNPT.md §6): AdamW on the dual-stream loss, on backbone features computed once.
//!
//! * The backbone is frozen, so its features are computed once on `B::InnerBackend` (no
//!   autodiff graph) and cached for the whole run ([`FeatureSet`]); the prompt pool is built
//!   from the same cache, and every image's prior is *retrieved* (not looked up by label), as
//!   at test time (§3, §8).
//! * Everything random comes from one ChaCha8 stream seeded by `train.seed`: the backend seed
//!   used for initialisation, each epoch's shuffle, the jitter noise and the per-epoch backend
//!   seed (dropout). Its position is saved in every checkpoint, so a resumed run continues to
//!   the same result as an uninterrupted one.
//! * A checkpoint (`checkpoint.bin`: model record, AdamW record, epoch, RNG position, loss
//!   history, configuration) is written atomically after every epoch.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
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
    /// True category of each image (for reporting; never used by the model).
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

fn bar(len: usize, show: bool, what: &str) -> ProgressBar {
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
    /// Continue from the checkpoint in `checkpoint_dir` if there is one.
    pub resume: bool,
    /// Show progress bars on stderr.
    pub progress: bool,
    /// Stop after this many epochs in total (simulates an interruption; tests).
    pub stop_after_epoch: Option<usize>,
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
}

/// What [`train_model`] returns.
#[derive(Debug, Clone)]
pub struct TrainOutput<B: Backend> {
    /// The trained model (inference backend).
    pub model: Pnpt<B>,
    /// One entry per epoch, resumed epochs included.
    pub history: Vec<EpochStats>,
    /// Seconds spent training in this call.
    pub seconds: f64,
    /// Whether all `train.epochs` epochs are done (false after `stop_after_epoch`).
    pub completed: bool,
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

    let ckpt_path = options.checkpoint_dir.as_ref().map(|d| d.join(CHECKPOINT_FILE));
    if let (true, Some(path)) = (options.resume, &ckpt_path) {
        if path.exists() {
            let (header, blobs): (CheckpointHeader, Vec<Vec<u8>>) = read_container(path, CHECKPOINT_MAGIC)?;
            resumable(&header.config, config).map_err(|d| Error::Mismatch { path: path.clone(), reason: format!("differs in {d}") })?;
            let bad = |reason: String| Error::Artefact { path: path.clone(), reason };
            if blobs.len() != 2 {
                return Err(bad(format!("expected 2 records, found {}", blobs.len())));
            }
            let record = Recorder::<B>::load(&recorder(), blobs[0].clone(), device).map_err(|e| bad(format!("model record: {e}")))?;
            model = load_record_checked(model, record, header.num_params, path)?;
            optim = load_optimizer(optim, blobs[1].clone(), device).map_err(|e| bad(format!("optimizer record: {e}")))?;
            let pos: u128 = header.rng_word_pos.parse().map_err(|_| bad("rng position".into()))?;
            if header.rng_seed != t.seed {
                return Err(Error::Mismatch { path: path.clone(), reason: format!("seed {} vs {}", header.rng_seed, t.seed) });
            }
            rng.set_word_pos(pos);
            start_epoch = header.epoch;
            history = header.history;
        }
    }

    let started = Instant::now();
    let n = set.len();
    let steps = n.div_ceil(t.batch_size);
    let mut completed = true;
    for epoch in start_epoch..t.epochs {
        if options.stop_after_epoch.is_some_and(|stop| epoch >= stop) {
            completed = false;
            break;
        }
        let epoch_start = Instant::now();
        B::seed(device, rng.next_u64());
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rng);
        let pb = bar(steps, options.progress, &format!("epoch {}/{}", epoch + 1, t.epochs));
        let mut total = 0.0f64;
        for (step, batch) in order.chunks(t.batch_size).enumerate() {
            let input = set.select(batch).map(Tensor::<B, 4>::from_inner);
            let prior = if config.model.use_prior {
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
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(t.lr, model, grads);
            let secs = epoch_start.elapsed().as_secs_f64().max(1e-9);
            pb.set_message(format!("loss {:.4} {:.1} img/s", total / (step + 1) as f64, ((step * t.batch_size + batch.len()) as f64) / secs));
            pb.inc(1);
        }
        pb.finish_and_clear();
        let seconds = epoch_start.elapsed().as_secs_f64();
        history.push(EpochStats { epoch: epoch + 1, loss: total / steps as f64, seconds, images_per_second: n as f64 / seconds.max(1e-9) });
        if options.progress {
            // A plain line per epoch (the bar is cleared, and invisible when stderr is not a
            // terminal, e.g. in logs and CI).
            let e = &history[history.len() - 1];
            eprintln!("epoch {}/{}: loss {:.5}, {:.1} s, {:.2} img/s", e.epoch, t.epochs, e.loss, e.seconds, e.images_per_second);
        }
        if let Some(path) = &ckpt_path {
            save_checkpoint(path, config, &model, &optim, epoch + 1, &rng, &history)?;
        }
    }
    Ok(TrainOutput { model: model.valid(), history, seconds: started.elapsed().as_secs_f64(), completed })
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
    let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.load_record(record)))
        .map_err(|_| Error::Mismatch { path: path.to_path_buf(), reason: "the saved weights have another structure than the configured model".into() })?;
    let got = loaded.num_params();
    if got != expected_params {
        return Err(Error::Mismatch {
            path: path.to_path_buf(),
            reason: format!("the saved weights hold {got} parameters, the configuration expects {expected_params}"),
        });
    }
    Ok(loaded)
}

fn save_checkpoint<B: AutodiffBackend, O: Optimizer<Pnpt<B>, B>>(
    path: &Path,
    config: &PnptConfig,
    model: &Pnpt<B>,
    optim: &O,
    epoch: usize,
    rng: &ChaCha8Rng,
    history: &[EpochStats],
) -> Result<()> {
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
    };
    write_container(path, CHECKPOINT_MAGIC, &header, &[&model_bytes, &optim_bytes])?;
    Ok(())
}
