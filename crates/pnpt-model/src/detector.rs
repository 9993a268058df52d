//! The trained artefact: backbone + prompt pool + PNPT + per-category thresholds.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use pnpt_model::detector::Detector;
//!
//! let detector = Detector::<Flex>::load("pnpt-out/detector", &Default::default())?;
//! let image = pnpt_data::image::open("bottle.png").unwrap();
//! let p = detector.predict(&image)?;
//! println!("{}: score {:.3}, anomalous: {}", p.category, p.score, p.is_anomalous);
//! # Ok::<(), pnpt_model::Error>(())
//! ```
//!
//! **Thresholds.** Per category, the decision threshold is the `scoring.threshold_quantile`
//! quantile (linear interpolation; 0.99 by default, 1.0 = the maximum) of the image scores of
//! that category's held-out normal training images (`scoring.calibration_fraction` of
//! `train/good`, never trained on). At prediction time the threshold of the *retrieved*
//! category is used; a category without held-out images uses the quantile over all held-out
//! scores. Without any held-out image no image is flagged (`threshold = None`). The same
//! calibration sets each category's pixel threshold (defect masks) and raises its
//! retrieval-distance limit (unknown products), see [`crate::predict`].
//!
//! **Artefact folder** (each file written via temp + rename): `config.json`, `model.mpk`
//! (Burn named MessagePack, full precision), `prompt_pool.bin`, `thresholds.json`, and
//! `manifest.json` (architecture and parameter count the weights were saved with, and the
//! SHA-256 of every other file; loading verifies every checksum before it parses anything, then
//! compares the architecture with `config.json` and errors on any difference), and — when the scoring method
//! uses it — `patch_memory.bin` (one coreset bank per class, `pnpt-memory`) with
//! `normalization.json` (per-class map statistics for fusion, [`crate::fusion`]); and when it
//! has them, `positional.npy` (PNPT's per-position map statistics, classes listed in
//! `normalization.json`, [`crate::fusion::PositionalStats`]).
//!
//! **Scoring methods** (`scoring.method`): `pnpt` scores with PNPT's reconstruction map, `memory`
//! with the distance of each patch to the retrieved class's bank of normal patches (PatchCore),
//! `fused` with both maps standardised per class and summed (see [`crate::fusion`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use image::DynamicImage;
use pnpt_backbone::{Backbone, BackboneKind};
use pnpt_data::{BatchIter, Dataset, Preprocess, Sample};
use pnpt_memory::{MemoryBuilder, PatchMemory};
use pnpt_prompt::PromptPool;
use pnpt_prompt::io::{read_verified, sha256_hex, write_atomic};
use serde::{Deserialize, Serialize};

use crate::anomaly_map::{anomaly_map, gaussian_blur, host_image_score};
use crate::config::{ScoreMode, ScoringMethod, ScoringRule};
use crate::fusion::{MapStats, Normalization, PositionalStats, combine_maps};
use crate::hpe::FeatureSpec;
use crate::pnpt::{InferencePlan, Pnpt};
use crate::train::{
    EpochStats, FeatureSet, TrainOptions, build_training_set, load_record_checked, preprocess_for, split_holdout,
    train_model_with,
};
use crate::{Error, ModelConfig, PnptConfig, Result};

/// File names inside a detector folder.
pub mod files {
    /// The full configuration.
    pub const CONFIG: &str = "config.json";
    /// Model weights.
    pub const MODEL: &str = "model.mpk";
    /// The CS-NPP prompt pool.
    pub const POOL: &str = "prompt_pool.bin";
    /// Per-category thresholds.
    pub const THRESHOLDS: &str = "thresholds.json";
    /// What the weights were saved with.
    pub const MANIFEST: &str = "manifest.json";
    /// The class-conditional patch memory (only when the detector has one).
    pub const MEMORY: &str = "patch_memory.bin";
    /// Per-class map statistics for fusion.
    pub const NORMALIZATION: &str = "normalization.json";
    /// Per-class, per-position statistics of PNPT's map (`classes × 2 × size × size` float32:
    /// mean, std), classes in the order of `normalization.json`'s `positional_classes`.
    pub const POSITIONAL: &str = "positional.npy";
}

/// Per-category decision thresholds calibrated on held-out normal images.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// The quantile used.
    pub quantile: f64,
    /// Threshold per category.
    pub per_category: BTreeMap<String, f32>,
    /// Number of held-out normal images per category.
    pub counts: BTreeMap<String, usize>,
    /// Quantile over all held-out scores (fallback for categories without their own).
    pub global: Option<f32>,
    /// Pixel threshold per category ([`crate::predict::PIXEL_QUANTILE`] of the held-out normal
    /// pixels); empty in detectors saved before it existed.
    #[serde(default)]
    pub pixel: BTreeMap<String, f32>,
    /// Median held-out normal pixel per category (the bottom of a heat map's colour scale).
    #[serde(default)]
    pub pixel_median: BTreeMap<String, f32>,
    /// Retrieval-distance limit per class (see [`crate::predict`]); empty in older detectors.
    #[serde(default)]
    pub retrieval: BTreeMap<String, f32>,
}

impl Thresholds {
    /// Calibrates from `(category, score)` pairs of normal images.
    pub fn calibrate(quantile: f64, scores: &[(String, f32)]) -> Self {
        let mut by_cat: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        for (c, s) in scores {
            by_cat.entry(c.clone()).or_default().push(*s);
        }
        let all: Vec<f32> = scores.iter().map(|(_, s)| *s).collect();
        Self {
            quantile,
            counts: by_cat.iter().map(|(c, v)| (c.clone(), v.len())).collect(),
            per_category: by_cat.into_iter().filter_map(|(c, v)| quantile_of(v, quantile).map(|q| (c, q))).collect(),
            global: quantile_of(all, quantile),
            ..Default::default()
        }
    }

    /// The threshold for `category` (its own, else the global one).
    pub fn for_category(&self, category: &str) -> Option<f32> {
        self.per_category.get(category).copied().or(self.global)
    }
}

/// Quantile with linear interpolation between order statistics (numpy's default); `None` for
/// no values.
pub fn quantile_of(mut values: Vec<f32>, q: f64) -> Option<f32> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f32::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(values.len() - 1);
    let frac = (pos - lo as f64) as f32;
    Some(values[lo] + (values[hi] - values[lo]) * frac)
}

/// One image's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Image anomaly score (max or top-k mean of the smoothed map).
    pub score: f32,
    /// Anomaly map, row-major `height × width` at the model's input size.
    pub anomaly_map: Vec<f32>,
    /// Map height (= `input_size`).
    pub height: usize,
    /// Map width (= `input_size`).
    pub width: usize,
    /// The retrieved (inferred) category.
    pub category: String,
    /// `score > threshold` of the retrieved category.
    pub is_anomalous: bool,
    /// The threshold used, if any was calibrated.
    pub threshold: Option<f32>,
    /// `score / threshold` (above 1 = anomalous) when the threshold is positive.
    pub normalized_score: Option<f32>,
    /// The category's pixel threshold ([`Prediction::defect_mask`]), if calibrated.
    pub pixel_threshold: Option<f32>,
    /// Retrieval distance from the image to its category's coding.
    pub retrieval_distance: f32,
    /// The distance exceeds what the category's normal images reach: probably a product the
    /// detector never saw (see [`crate::predict`]).
    pub unknown_category: bool,
}

/// Raw results of a batch: what evaluation needs, without per-image allocation.
#[derive(Debug, Clone)]
pub struct BatchOutput {
    /// `n × size × size` anomaly maps, row-major per image.
    pub maps: Vec<f32>,
    /// `n` image scores.
    pub scores: Vec<f32>,
    /// `n` retrieved pool indices.
    pub categories: Vec<usize>,
    /// `n` retrieval distances (to the retrieved or given class).
    pub distances: Vec<f32>,
    /// Map side.
    pub size: usize,
}

/// The component maps of a batch (smoothed, at the input size, on the host), before they are
/// combined into the final map of a [`ScoringMethod`]. Maps that were not asked for are `None`.
#[derive(Debug, Clone, Default)]
pub struct Components {
    /// PNPT's reconstruction maps, `n × size × size`.
    pub pnpt: Option<Vec<f32>>,
    /// The patch memory's maps, `n × size × size`.
    pub memory: Option<Vec<f32>>,
    /// `n` retrieved pool indices.
    pub categories: Vec<usize>,
    /// `n` retrieval distances (to the retrieved or given class).
    pub distances: Vec<f32>,
    /// Map side.
    pub size: usize,
}

impl Components {
    pub(crate) fn extend(&mut self, other: Components) {
        let join = |a: &mut Option<Vec<f32>>, b: Option<Vec<f32>>| match (a.as_mut(), b) {
            (Some(a), Some(b)) => a.extend(b),
            (None, b) => *a = b,
            (Some(_), None) => {}
        };
        join(&mut self.pnpt, other.pnpt);
        join(&mut self.memory, other.memory);
        self.categories.extend(other.categories);
        self.distances.extend(other.distances);
        self.size = other.size;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    backbone: BackboneKind,
    input_size: u32,
    feature_spec: FeatureSpec,
    model: ModelConfig,
    num_params: usize,
    categories: Vec<String>,
    /// SHA-256 (hex) of every other file of the folder, by file name (format 3).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    checksums: BTreeMap<String, String>,
}

/// 4: per-position statistics of PNPT's map (`positional.npy`, `scoring.positional`); 3: a
/// SHA-256 per file in the manifest, verified before anything is parsed; 2: scoring
/// methods and the patch memory; 1: PNPT-only detectors. 1 and 2 still load, without the
/// integrity check (their configuration of format 1 predates `scoring.method`, read as `pnpt`).
const FORMAT: u32 = 4;

/// A trained PNPT anomaly detector. On the CPU backend it is `Send + Sync`: one detector
/// serves many threads (every method takes `&self`).
#[derive(Debug)]
pub struct Detector<B: Backend> {
    config: PnptConfig,
    backbone: Backbone<B>,
    pool: PromptPool<B>,
    model: Pnpt<B>,
    /// Folded HPE / HPE⁻¹ and the pool's embedded priors, built once from `model` and `pool`.
    plan: InferencePlan<B>,
    memory: Option<PatchMemory<B>>,
    normalization: Normalization,
    positional: PositionalStats,
    pub(crate) thresholds: Thresholds,
    pub(crate) device: B::Device,
}

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
    let (set, pool) = build_training_set(config, &backbone, &train, &inner, options.progress)?;
    let feature_seconds = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    // Built before training so that a problem with it ends the run before the long part.
    let memory = if config.scoring.method.uses_memory() {
        Some(build_memory(config, &set, &pool, options.progress)?)
    } else {
        None
    };
    let memory_seconds = t0.elapsed().as_secs_f64();
    let retrieval = crate::predict::training_retrieval_limits(&pool, &set.feats, &set.categories)?;
    let mut hook = |model: &Pnpt<B::InnerBackend>, last: bool| -> Result<Option<(f64, f64)>> {
        let mut cfg = config.clone();
        cfg.scoring.method = ScoringMethod::Pnpt;
        cfg.scoring.positional = false;
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
    if config.scoring.positional && config.scoring.method.uses_pnpt() {
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
    progress: bool,
) -> Result<PatchMemory<B>> {
    let mut builder = MemoryBuilder::<B>::new(config.memory.clone())?;
    let pb = crate::train::bar(pool.len(), progress, "memory");
    for name in pool.names() {
        let idx: Vec<usize> = (0..set.len()).filter(|&i| &set.categories[i] == name).collect();
        let batches: Vec<[Tensor<B, 4>; 3]> = idx.chunks(64).map(|chunk| set.select(chunk)).collect();
        builder.add_class(name, &batches)?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(builder.build()?)
}

impl<B: Backend> Detector<B> {
    /// Assembles a detector, checking that its parts fit together.
    pub fn new(
        config: PnptConfig,
        backbone: Backbone<B>,
        pool: PromptPool<B>,
        model: Pnpt<B>,
        thresholds: Thresholds,
    ) -> Result<Self> {
        config.validate()?;
        let spec = config.feature_spec();
        let mismatch = |reason: String| Err(Error::Config(reason));
        if backbone.kind() != config.backbone {
            return mismatch(format!("backbone is {} but the configuration says {}", backbone.kind(), config.backbone));
        }
        if model.spec != spec || model.config != config.model {
            return mismatch(
                "the model was built for another architecture or feature shape than the configuration".into(),
            );
        }
        let shapes = pool.shapes();
        for (i, shape) in shapes.iter().enumerate() {
            if *shape != [spec.channels[i], spec.sizes[i][0], spec.sizes[i][1]] {
                return mismatch(format!("prompt pool scale {i} is {shape:?}, the configuration gives {spec:?}"));
            }
        }
        let device = pool.codes().device();
        let plan = model.plan(pool.priors())?;
        Ok(Self {
            config,
            backbone,
            pool,
            model,
            plan,
            memory: None,
            normalization: Normalization::default(),
            positional: PositionalStats::default(),
            thresholds,
            device,
        })
    }

    /// Adds a patch memory; its classes must be the pool's, in the same order, and its patch
    /// width the backbone's. Call [`calibrate`](Self::calibrate) afterwards.
    pub fn with_memory(mut self, memory: PatchMemory<B>) -> Result<Self> {
        if memory.names() != self.pool.names() {
            return Err(Error::Config(format!(
                "patch memory classes {:?} differ from the prompt pool's {:?}",
                memory.names(),
                self.pool.names()
            )));
        }
        let want = pnpt_memory::patch_dim(self.config.backbone.channels(), memory.config().max_dim);
        if memory.dim() != want {
            return Err(Error::Config(format!(
                "patch memory holds {}-d patches, the backbone gives {want}-d",
                memory.dim()
            )));
        }
        self.memory = Some(memory);
        Ok(self)
    }

    /// The patch memory, if the detector has one.
    pub fn memory(&self) -> Option<&PatchMemory<B>> {
        self.memory.as_ref()
    }
    /// The per-class map statistics used by `fused` scoring.
    pub fn normalization(&self) -> &Normalization {
        &self.normalization
    }

    /// Switches the scoring method (and the memory weight of `fused`). The thresholds belong to
    /// the previous method: [`calibrate`](Self::calibrate) again before trusting decisions.
    pub fn set_scoring(&mut self, method: ScoringMethod, memory_weight: f64) -> Result<()> {
        self.set_scoring_rule(method, memory_weight, self.config.scoring.score)
    }

    /// [`set_scoring`](Self::set_scoring) with the image-score rule too. Per-position
    /// standardisation stays as configured where the detector has its statistics, and is off
    /// where it has none (it could not apply).
    pub fn set_scoring_rule(&mut self, method: ScoringMethod, memory_weight: f64, score: ScoreMode) -> Result<()> {
        let positional = self.config.scoring.positional && !self.positional.is_empty();
        self.set_rule(ScoringRule { method, memory_weight, score, positional })
    }

    /// Switches every scoring choice at once (thresholds: see [`set_scoring`](Self::set_scoring)).
    /// Per-position standardisation needs the statistics [`fit_positional`](Self::fit_positional)
    /// computes.
    pub fn set_rule(&mut self, rule: ScoringRule) -> Result<()> {
        let ScoringRule { method, memory_weight, score, positional } = rule;
        if positional && method.uses_pnpt() && self.positional.is_empty() {
            return Err(Error::Config("per-position standardisation needs the detector's positional statistics, and it has none (fit them on its training images first)".into()));
        }
        if score == ScoreMode::TopKMean(0) {
            return Err(Error::Config("scoring.score top_k_mean needs k >= 1".into()));
        }
        self.check_method(method)?;
        if !(0.0..=1.0).contains(&memory_weight) {
            return Err(Error::Config(format!("scoring.memory_weight ({memory_weight}) must be in [0, 1]")));
        }
        self.config.scoring.method = method;
        self.config.scoring.memory_weight = memory_weight;
        self.config.scoring.score = score;
        self.config.scoring.positional = positional;
        Ok(())
    }

    /// The per-position statistics of PNPT's map (empty when never fitted).
    pub fn positional(&self) -> &PositionalStats {
        &self.positional
    }

    /// Fits the per-position statistics of PNPT's map from the maps of normal training images
    /// (`parts.pnpt`), each grouped by the class its map was computed with.
    pub fn fit_positional(&mut self, parts: &Components) -> Result<()> {
        let maps =
            parts.pnpt.as_deref().ok_or_else(|| Error::Invalid("positional statistics need PNPT maps".into()))?;
        let names: Vec<String> = parts.categories.iter().map(|&c| self.pool.names()[c].clone()).collect();
        self.positional = PositionalStats::fit(&names, maps, parts.size * parts.size);
        Ok(())
    }

    /// [`fit_positional`](Self::fit_positional) from cached backbone features (no decoding, no
    /// backbone pass), `batch` images at a time.
    pub fn fit_positional_features(&mut self, set: &FeatureSet<B>, batch: usize) -> Result<()> {
        let mut all = Components { size: self.config.input_size as usize, ..Default::default() };
        let idx: Vec<usize> = (0..set.len()).collect();
        for chunk in idx.chunks(batch.max(1)) {
            all.extend(self.components_of_features(set.select(chunk), true, false, None)?);
        }
        self.fit_positional(&all)
    }

    fn check_method(&self, method: ScoringMethod) -> Result<()> {
        if method.uses_memory() && self.memory.is_none() {
            return Err(Error::Config(format!(
                "scoring method `{method}` needs a patch memory, and this detector has none (it was trained with `pnpt` scoring)"
            )));
        }
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &PnptConfig {
        &self.config
    }
    /// The frozen backbone.
    pub fn backbone(&self) -> &Backbone<B> {
        &self.backbone
    }
    /// The prompt pool.
    pub fn pool(&self) -> &PromptPool<B> {
        &self.pool
    }
    /// The transformer.
    pub fn model(&self) -> &Pnpt<B> {
        &self.model
    }
    /// The calibrated thresholds.
    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }
    /// Category names the detector knows (pool order).
    pub fn categories(&self) -> &[String] {
        self.pool.names()
    }
    /// The input preprocessing (resize to `input_size`, backbone normalisation).
    pub fn preprocess(&self) -> Preprocess {
        preprocess_for(&self.config, &self.backbone)
    }

    /// Scores a preprocessed batch `[n, 3, size, size]` with the configured method.
    pub fn infer(&self, images: Tensor<B, 4>) -> Result<BatchOutput> {
        let method = self.config.scoring.method;
        let parts = self.components(images, method.uses_pnpt(), method.uses_memory())?;
        self.combine(&parts, method, self.config.scoring.memory_weight)
    }

    /// The component maps of a preprocessed batch `[n, 3, size, size]`: PNPT's (when `pnpt`) and
    /// the patch memory's (when `memory`), each smoothed by the same Gaussian.
    pub fn components(&self, images: Tensor<B, 4>, pnpt: bool, memory: bool) -> Result<Components> {
        self.components_as(images, pnpt, memory, None)
    }

    /// [`components`](Self::components) with the class `category` (pool index) instead of the
    /// retrieved one when given.
    pub fn components_as(
        &self,
        images: Tensor<B, 4>,
        pnpt: bool,
        memory: bool,
        category: Option<usize>,
    ) -> Result<Components> {
        let size = self.config.input_size as usize;
        let [n, c, h, w] = images.dims();
        if c != 3 || h != size || w != size || n == 0 {
            return Err(Error::Shape(format!("images [{n}, {c}, {h}, {w}]: expected [n >= 1, 3, {size}, {size}]")));
        }
        if memory {
            self.check_method(ScoringMethod::Memory)?;
        }
        let feats = self.backbone.features(images)?.maps;
        self.components_of_features(feats, pnpt, memory, category)
    }

    /// [`components_as`](Self::components_as) from backbone features.
    fn components_of_features(
        &self,
        feats: [Tensor<B, 4>; 3],
        pnpt: bool,
        memory: bool,
        category: Option<usize>,
    ) -> Result<Components> {
        let size = self.config.input_size as usize;
        let (categories, distances) = crate::predict::retrieve(&self.pool, &feats, category)?;
        let sigma = self.config.scoring.sigma;
        let to_host = |t: Tensor<B, 3>| -> Result<Vec<f32>> {
            let v: Vec<f32> = t.into_data().iter::<f32>().collect();
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::Invalid("non-finite anomaly map (NaN features?)".into()));
            }
            Ok(v)
        };
        let pnpt_map = if pnpt {
            let recon = self.model.forward_planned(&self.plan, &feats, &categories)?;
            let fused = recon.fused(self.config.scoring.fusion_weight);
            Some(to_host(anomaly_map(&feats, &fused, [size, size], sigma))?)
        } else {
            None
        };
        let memory_map = match (&self.memory, memory) {
            (Some(bank), true) => {
                let d = bank.score(&feats, &categories)?;
                let [n, gh, gw] = d.dims();
                let d = d.reshape([n, 1, gh, gw]);
                let up = interpolate(
                    d,
                    [size, size],
                    InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false),
                );
                Some(to_host(gaussian_blur(up.reshape([n, size, size]), sigma))?)
            }
            _ => None,
        };
        Ok(Components { pnpt: pnpt_map, memory: memory_map, categories, distances, size })
    }

    /// Combines component maps into the final maps and image scores of `method`.
    pub fn combine(&self, parts: &Components, method: ScoringMethod, memory_weight: f64) -> Result<BatchOutput> {
        self.combine_scored(parts, method, memory_weight, self.config.scoring.score)
    }

    /// [`combine`](Self::combine) with another image-score rule than the configured one.
    pub fn combine_scored(
        &self,
        parts: &Components,
        method: ScoringMethod,
        memory_weight: f64,
        score: ScoreMode,
    ) -> Result<BatchOutput> {
        self.combine_with(
            parts,
            &ScoringRule { method, memory_weight, score, positional: self.config.scoring.positional },
        )
    }

    /// Combines component maps by any scoring rule. With `positional`, PNPT's map of a class
    /// that has positional statistics is standardised position by position (floored by the
    /// class's held-out deviation) instead of by the class's one mean and deviation.
    pub fn combine_with(&self, parts: &Components, rule: &ScoringRule) -> Result<BatchOutput> {
        let ScoringRule { method, memory_weight, score, positional } = *rule;
        let size = parts.size;
        let px = size * size;
        let n = parts.categories.len();
        fn pick<'a>(
            v: &'a Option<Vec<f32>>,
            wanted: bool,
            len: usize,
            what: &str,
            method: ScoringMethod,
        ) -> Result<Option<&'a [f32]>> {
            match (v, wanted) {
                (_, false) => Ok(None),
                (Some(v), true) if v.len() == len => Ok(Some(v.as_slice())),
                _ => Err(Error::Invalid(format!("scoring method `{method}` needs the {what} maps of every image"))),
            }
        }
        let pnpt = pick(&parts.pnpt, method.uses_pnpt(), n * px, "PNPT", method)?;
        let memory = pick(&parts.memory, method.uses_memory(), n * px, "patch memory", method)?;
        let mut maps = Vec::with_capacity(n * px);
        let mut scores = Vec::with_capacity(n);
        for i in 0..n {
            let name = &self.pool.names()[parts.categories[i]];
            let (sp, sm) = self.normalization.for_category(name);
            let own = pnpt.map(|m| &m[i * px..(i + 1) * px]);
            let mem = memory.map(|m| &m[i * px..(i + 1) * px]);
            let z = own.filter(|_| positional).and_then(|p| self.positional.standardise(name, p, sp.std));
            let map = match &z {
                Some(z) => combine_maps(Some(z), mem, (MapStats::IDENTITY, sm), memory_weight),
                None => combine_maps(own, mem, (sp, sm), memory_weight),
            };
            scores.push(host_image_score(&map, score));
            maps.extend(map);
        }
        if scores.iter().any(|s| !s.is_finite()) {
            return Err(Error::Invalid("non-finite anomaly score (NaN features?)".into()));
        }
        // Outputs built by hand (tests) may carry no distances: read as 0, never unknown.
        let mut distances = parts.distances.clone();
        distances.resize(n, 0.0);
        Ok(BatchOutput { maps, scores, categories: parts.categories.clone(), distances, size })
    }

    /// Scores images already decoded (any size; resized to `input_size`).
    pub fn predict_batch(&self, images: &[DynamicImage]) -> Result<Vec<Prediction>> {
        self.predict_batch_as(images, None)
    }

    /// Scores one image.
    pub fn predict(&self, image: &DynamicImage) -> Result<Prediction> {
        Ok(self.predict_batch(std::slice::from_ref(image))?.remove(0))
    }

    /// Splits a batch result into per-image predictions with decisions.
    pub fn to_predictions(&self, out: BatchOutput) -> Vec<Prediction> {
        let px = out.size * out.size;
        (0..out.scores.len())
            .map(|i| {
                let category = self.pool.names()[out.categories[i]].clone();
                let threshold = self.thresholds.for_category(&category);
                let distance = out.distances.get(i).copied().unwrap_or(0.0);
                Prediction {
                    score: out.scores[i],
                    anomaly_map: out.maps[i * px..(i + 1) * px].to_vec(),
                    height: out.size,
                    width: out.size,
                    is_anomalous: threshold.is_some_and(|t| out.scores[i] > t),
                    threshold,
                    normalized_score: threshold.filter(|t| *t > 0.0).map(|t| out.scores[i] / t),
                    pixel_threshold: self.thresholds.pixel.get(&category).copied(),
                    retrieval_distance: distance,
                    unknown_category: self.thresholds.retrieval.get(&category).is_some_and(|&l| distance > l),
                    category,
                }
            })
            .collect()
    }

    /// Scores dataset samples in batches (parallel decoding ahead of the model).
    pub fn infer_samples(&self, samples: &[Sample], batch: usize) -> Result<BatchOutput> {
        let method = self.config.scoring.method;
        let parts = self.sample_components(samples, batch, method.uses_pnpt(), method.uses_memory())?;
        self.combine(&parts, method, self.config.scoring.memory_weight)
    }

    /// [`components`](Self::components) of dataset samples, in batches.
    pub fn sample_components(&self, samples: &[Sample], batch: usize, pnpt: bool, memory: bool) -> Result<Components> {
        let mut all = Components { size: self.config.input_size as usize, ..Default::default() };
        if samples.is_empty() {
            return Ok(all);
        }
        for item in BatchIter::<B>::new(samples, &self.preprocess(), batch.max(1), None, &self.device)? {
            let (images, _) = item?;
            all.extend(self.components(images, pnpt, memory)?);
        }
        Ok(all)
    }

    /// [`components`](Self::components) of decoded images (any size; resized to `input_size`),
    /// `batch` at a time.
    pub fn image_components(
        &self,
        images: &[DynamicImage],
        batch: usize,
        pnpt: bool,
        memory: bool,
    ) -> Result<Components> {
        self.image_components_as(images, batch, pnpt, memory, None)
    }

    /// Calibrates on normal images (their `category` field groups them): the per-class map
    /// statistics of every map the detector has, then the image and pixel thresholds of the
    /// configured method; the retrieval limits only grow (they also hold the training images').
    pub fn calibrate(&mut self, normal: &[Sample]) -> Result<()> {
        let parts = self.sample_components(normal, self.config.train.feature_batch, true, self.memory.is_some())?;
        let truth: Vec<String> = normal.iter().map(|s| s.category.clone()).collect();
        self.calibrate_components(&parts, &truth)
    }

    /// [`calibrate`](Self::calibrate) from component maps already computed (`truth`: the true
    /// category of each image).
    pub fn calibrate_components(&mut self, parts: &Components, truth: &[String]) -> Result<()> {
        let px = parts.size * parts.size;
        self.normalization = Normalization::fit(truth, parts.pnpt.as_deref(), parts.memory.as_deref(), px);
        let method = self.config.scoring.method;
        let out = if truth.is_empty() {
            BatchOutput { maps: vec![], scores: vec![], categories: vec![], distances: vec![], size: parts.size }
        } else {
            self.combine(parts, method, self.config.scoring.memory_weight)?
        };
        let mut retrieval = std::mem::take(&mut self.thresholds.retrieval);
        crate::predict::raise_retrieval_limits(&mut retrieval, self.pool.names(), &parts.categories, &parts.distances);
        let (pixel, pixel_median) = crate::predict::pixel_statistics(&out.maps, truth, px);
        let pairs: Vec<(String, f32)> = truth.iter().cloned().zip(out.scores).collect();
        self.thresholds = Thresholds {
            pixel,
            pixel_median,
            retrieval,
            ..Thresholds::calibrate(self.config.scoring.threshold_quantile, &pairs)
        };
        Ok(())
    }

    fn manifest(&self, checksums: BTreeMap<String, String>) -> Manifest {
        Manifest {
            format: FORMAT,
            backbone: self.config.backbone,
            input_size: self.config.input_size,
            feature_spec: self.config.feature_spec(),
            model: self.config.model.clone(),
            num_params: self.model.num_params(),
            categories: self.pool.names().to_vec(),
            checksums,
        }
    }

    /// Writes the artefact folder. The files are written into a staging folder beside `dir`,
    /// which then replaces `dir` by renames, so an interrupted save never leaves a mix of old
    /// and new files, and an existing detector survives until the new one is complete.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let name = dir
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{}: not a folder name to save a detector to", dir.display())))?
            .to_string_lossy()
            .into_owned();
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
        let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
        let previous = parent.join(format!(".{name}.previous-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(Error::io(&staging))?;
        let written = self.write_files(&staging);
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        pnpt_data::atomic::replace_dir(&staging, dir, &previous).map_err(|(path, e)| {
            let _ = std::fs::remove_dir_all(&staging);
            Error::io(&path)(e)
        })
    }

    fn write_files(&self, dir: &Path) -> Result<()> {
        let model_bytes = Recorder::<B>::record(
            &NamedMpkBytesRecorder::<FullPrecisionSettings>::default(),
            self.model.clone().into_record(),
            (),
        )
        .map_err(|e| Error::Artefact { path: dir.join(files::MODEL), reason: e.to_string() })?;
        write_atomic(&dir.join(files::MODEL), &model_bytes)?;
        self.pool.save(&dir.join(files::POOL))?;
        write_atomic(&dir.join(files::THRESHOLDS), &to_json(&self.thresholds)?)?;
        let mut written = vec![files::MODEL, files::POOL, files::THRESHOLDS, files::CONFIG];
        if let Some(memory) = &self.memory {
            memory.save(&dir.join(files::MEMORY))?;
            written.push(files::MEMORY);
        }
        if self.memory.is_some() || !self.positional.is_empty() {
            let mut normalization = self.normalization.clone();
            normalization.positional_classes = self.positional.classes.keys().cloned().collect();
            write_atomic(&dir.join(files::NORMALIZATION), &to_json(&normalization)?)?;
            written.push(files::NORMALIZATION);
        }
        if !self.positional.is_empty() {
            let px = self.positional.px;
            let mut data = Vec::with_capacity(self.positional.classes.len() * 2 * px);
            for (mean, std) in self.positional.classes.values() {
                data.extend_from_slice(mean);
                data.extend_from_slice(std);
            }
            let side = (px as f64).sqrt() as usize;
            let path = dir.join(files::POSITIONAL);
            pnpt_data::npy::write(&path, &[self.positional.classes.len(), 2, side, side], &data)
                .map_err(|e| Error::Artefact { path: path.clone(), reason: e.to_string() })?;
            written.push(files::POSITIONAL);
        }
        self.config.save(&dir.join(files::CONFIG))?;
        // Checksums of the bytes as they are on disk, so the manifest vouches for what a reader
        // will find; the manifest is written last.
        let mut checksums = BTreeMap::new();
        for name in written {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
            checksums.insert(name.to_string(), sha256_hex(&bytes));
        }
        write_atomic(&dir.join(files::MANIFEST), &to_json(&self.manifest(checksums))?)?;
        Ok(())
    }

    /// Loads an artefact folder written by [`Detector::save`]; the backbone weights come from
    /// the saved configuration (bundled for EfficientNet-Lite0).
    pub fn load(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        Self::load_with_backbone_weights(dir.as_ref(), None, device)
    }

    /// Loads an artefact folder, taking the backbone weights from `weights` when given (e.g.
    /// the `.pth` moved since training).
    pub fn load_with_backbone_weights(dir: &Path, weights: Option<&Path>, device: &B::Device) -> Result<Self> {
        warn_if_unoptimised();
        let manifest_path = dir.join(files::MANIFEST);
        let manifest: Manifest = read_json(&manifest_path)?;
        if manifest.format >= 3 {
            verify_checksums(dir, &manifest.checksums)?;
        }
        let mut config = PnptConfig::load(&dir.join(files::CONFIG))?;
        if let Some(w) = weights {
            config.backbone_weights = Some(w.to_path_buf());
        }
        let mut diffs = Vec::new();
        if manifest.format == 1 {
            config.scoring.method = ScoringMethod::Pnpt;
        } else if !(2..=FORMAT).contains(&manifest.format) {
            diffs.push(format!("format {} (this build reads 1 to {FORMAT})", manifest.format));
        }
        if manifest.backbone != config.backbone {
            diffs.push(format!("backbone {} vs {}", manifest.backbone, config.backbone));
        }
        if manifest.input_size != config.input_size {
            diffs.push(format!("input_size {} vs {}", manifest.input_size, config.input_size));
        }
        let (a, b) = (&manifest.model, &config.model);
        for (name, x, y) in [
            ("hidden", a.hidden, b.hidden),
            ("semantic_tokens", a.semantic_tokens, b.semantic_tokens),
            ("heads", a.heads, b.heads),
            ("layers", a.layers, b.layers),
            ("ffn_ratio", a.ffn_ratio, b.ffn_ratio),
        ] {
            if x != y {
                diffs.push(format!("model.{name} {x} vs {y}"));
            }
        }
        if a != b && diffs.is_empty() {
            diffs.push(format!("model {a:?} vs {b:?}"));
        }
        if !diffs.is_empty() {
            return Err(Error::Mismatch {
                path: dir.join(files::CONFIG),
                reason: format!("weights were saved with (manifest.json vs config.json): {}", diffs.join("; ")),
            });
        }
        let model_path = dir.join(files::MODEL);
        let bytes = std::fs::read(&model_path).map_err(Error::io(&model_path))?;
        let record = Recorder::<B>::load(&NamedMpkBytesRecorder::<FullPrecisionSettings>::default(), bytes, device)
            .map_err(|e| Error::Artefact { path: model_path.clone(), reason: format!("unreadable weights: {e}") })?;
        let fresh = Pnpt::<B>::new(&config.model, config.feature_spec(), device)?;
        let expected = fresh.num_params();
        if expected != manifest.num_params {
            return Err(Error::Mismatch {
                path: model_path,
                reason: format!(
                    "manifest says {} parameters, the configuration builds {expected}",
                    manifest.num_params
                ),
            });
        }
        let model = load_record_checked(fresh, record, expected, &model_path)?;
        let mut pool = PromptPool::<B>::load(&dir.join(files::POOL), device)?;
        pool.set_distance(config.distance);
        if pool.names() != manifest.categories.as_slice() {
            return Err(Error::Mismatch {
                path: dir.join(files::POOL),
                reason: "categories differ from manifest.json".into(),
            });
        }
        let thresholds: Thresholds = read_json(&dir.join(files::THRESHOLDS))?;
        let backbone = Backbone::<B>::load(config.backbone, config.backbone_weights.as_deref(), device)?;
        let mut detector = Self::new(config, backbone, pool, model, thresholds)?;
        let memory_path = dir.join(files::MEMORY);
        if memory_path.exists() {
            let memory = PatchMemory::<B>::load(&memory_path, device)?;
            detector = detector
                .with_memory(memory)
                .map_err(|e| Error::Mismatch { path: memory_path.clone(), reason: e.to_string() })?;
        }
        let normalization_path = dir.join(files::NORMALIZATION);
        if normalization_path.exists() {
            detector.normalization = read_json(&normalization_path)?;
        }
        let positional_path = dir.join(files::POSITIONAL);
        if positional_path.exists() || !detector.normalization.positional_classes.is_empty() {
            detector.positional = read_positional(
                &positional_path,
                &detector.normalization.positional_classes,
                detector.config.input_size as usize,
            )?;
        }
        if detector.config.scoring.positional
            && detector.config.scoring.method.uses_pnpt()
            && detector.positional.is_empty()
        {
            return Err(Error::Mismatch {
                path: dir.join(files::CONFIG),
                reason: format!("scoring.positional is set but the folder has no {}", files::POSITIONAL),
            });
        }
        detector
            .check_method(detector.config.scoring.method)
            .map_err(|e| Error::Mismatch { path: dir.join(files::CONFIG), reason: e.to_string() })?;
        Ok(detector)
    }
}

/// Every file a detector of format 3 must vouch for; the memory's two only when present.
fn verify_checksums(dir: &Path, checksums: &BTreeMap<String, String>) -> Result<()> {
    let mut required = vec![files::CONFIG, files::MODEL, files::POOL, files::THRESHOLDS];
    if dir.join(files::MEMORY).exists() {
        required.extend([files::MEMORY, files::NORMALIZATION]);
    }
    for optional in [files::NORMALIZATION, files::POSITIONAL] {
        if dir.join(optional).exists() {
            required.push(optional);
        }
    }
    for name in required {
        if !checksums.contains_key(name) {
            return Err(Error::Artefact {
                path: dir.join(files::MANIFEST),
                reason: format!("no checksum for {name}: the manifest was edited or comes from another detector"),
            });
        }
    }
    for (name, sha) in checksums {
        // Names are plain file names: a manifest must not point outside its folder.
        if Path::new(name).file_name().map(|f| f != name.as_str()).unwrap_or(true) {
            return Err(Error::Artefact {
                path: dir.join(files::MANIFEST),
                reason: format!("checksum entry `{name}` is not a file name"),
            });
        }
        read_verified(&dir.join(name), sha)?;
    }
    Ok(())
}

/// `positional.npy`: one `(mean, std)` pair of `size × size` maps per class of `classes`.
fn read_positional(path: &Path, classes: &[String], size: usize) -> Result<PositionalStats> {
    let bad = |reason: String| Error::Artefact { path: path.to_path_buf(), reason };
    let (shape, data) = pnpt_data::npy::read::<f32>(path).map_err(|e| bad(e.to_string()))?;
    let px = size * size;
    if shape != [classes.len(), 2, size, size] {
        return Err(bad(format!(
            "shape {shape:?}, expected [{}, 2, {size}, {size}] (classes of normalization.json, input_size)",
            classes.len()
        )));
    }
    if data.iter().any(|v| !v.is_finite()) || data.chunks(px).skip(1).step_by(2).flatten().any(|&v| v < 0.0) {
        return Err(bad("non-finite values or a negative deviation".into()));
    }
    let classes = classes
        .iter()
        .zip(data.chunks(2 * px))
        .map(|(c, d)| (c.clone(), (d[..px].to_vec(), d[px..].to_vec())))
        .collect();
    Ok(PositionalStats { px, classes })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &PathBuf) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    serde_json::from_str(&text).map_err(|e| Error::Artefact { path: path.clone(), reason: e.to_string() })
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::Invalid(e.to_string()))
}

/// Whether this crate was compiled without optimisation (see `build.rs`).
pub const UNOPTIMISED: bool = cfg!(pnpt_unoptimised);

/// Warns once per process when the model code was compiled without optimisation: profiles are
/// not inherited by dependents, and a plain `cargo run` of a program that depends on pnpt runs
/// the model unoptimised, seconds per image instead of a tenth of a second.
fn warn_if_unoptimised() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if UNOPTIMISED {
        ONCE.call_once(|| {
            eprintln!(
                "warning: pnpt-model was compiled without optimisation (opt-level 0): inference runs some 30-60x slower. \
                 Add `[profile.dev.package.\"*\"] opt-level = 3` to your Cargo.toml, or build with --release."
            )
        });
    }
}
