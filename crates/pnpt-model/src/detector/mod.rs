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
//! **Artefact folder** (each file written via temp + rename): `config.json`, `model.safetensors`
//! (float32, one tensor per parameter named by module path), `prompt_pool.safetensors`,
//! `thresholds.json`, and
//! `manifest.json` (architecture and parameter count the weights were saved with, and the
//! SHA-256 of every other file; loading verifies every checksum before it parses anything, then
//! compares the architecture with `config.json` and errors on any difference), and — when the scoring method
//! uses it — `patch_memory.safetensors` (one coreset bank per class, `pnpt-memory`) with
//! `normalization.json` (per-class map statistics for fusion, [`crate::fusion`]); and when it
//! has them, `positional.npy` (PNPT's per-position map statistics, classes listed in
//! `normalization.json`, [`crate::fusion::PositionalStats`]).
//!
//! **Scoring methods** (`scoring.method`): `pnpt` scores with PNPT's reconstruction map, `memory`
//! with the distance of each patch to the retrieved class's bank of normal patches (PatchCore),
//! `fused` with both maps standardised per class and summed (see [`crate::fusion`]).

mod inference;
mod persistence;
mod thresholds;

use burn::tensor::backend::Backend;
use pnpt_backbone::Backbone;
use pnpt_data::Preprocess;
use pnpt_memory::PatchMemory;
use pnpt_prompt::PromptPool;

use crate::config::{ScoreMode, ScoreSource, ScoringMethod, ScoringRule};
use crate::fusion::{Normalization, PositionalStats};
use crate::pnpt::{InferencePlan, Pnpt};
use crate::train::{FeatureSet, preprocess_for};
use crate::{Error, PnptConfig, Result};

pub use inference::{BatchOutput, Components, Prediction};
pub use persistence::UNOPTIMISED;
pub use thresholds::{Thresholds, quantile_of};
// `fit` belongs with training; its old paths here keep working.
pub use crate::train::{DetectorHook, FitReport, build_memory, fit, fit_with};

/// File names inside a detector folder.
pub mod files {
    /// The full configuration.
    pub const CONFIG: &str = "config.json";
    /// Model weights: safetensors, one float32 tensor per parameter named by module path.
    pub const MODEL: &str = "model.safetensors";
    /// The CS-NPP prompt pool (safetensors, `pnpt_prompt::PromptPool::save`).
    pub const POOL: &str = "prompt_pool.safetensors";
    /// Per-category thresholds.
    pub const THRESHOLDS: &str = "thresholds.json";
    /// What the weights were saved with.
    pub const MANIFEST: &str = "manifest.json";
    /// The class-conditional patch memory (only when the detector has one; safetensors,
    /// `pnpt_memory::PatchMemory::save`).
    pub const MEMORY: &str = "patch_memory.safetensors";
    /// Per-class map statistics for fusion.
    pub const NORMALIZATION: &str = "normalization.json";
    /// Per-class, per-position statistics of PNPT's map (`classes × 2 × size × size` float32:
    /// mean, std), classes in the order of `normalization.json`'s `positional_classes`.
    pub const POSITIONAL: &str = "positional.npy";

    /// The names of detectors saved before manifest format 5, still loaded: a folder uses
    /// these where the current names are absent.
    pub mod legacy {
        /// Model weights as a Burn named MessagePack record (full precision).
        pub const MODEL: &str = "model.mpk";
        /// The prompt pool in the pnpt container (`PNPTPOOL`).
        pub const POOL: &str = "prompt_pool.bin";
        /// The patch memory in the pnpt container (`PNPTMEM1`).
        pub const MEMORY: &str = "patch_memory.bin";
    }
}

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
        let positional_map = positional && self.config.scoring.positional_map;
        self.set_rule(ScoringRule { method, memory_weight, score, positional, positional_map, score_from: None })
    }

    /// Switches every scoring choice at once (thresholds: see [`set_scoring`](Self::set_scoring)).
    /// Per-position standardisation needs the statistics [`fit_positional`](Self::fit_positional)
    /// computes.
    pub fn set_rule(&mut self, rule: ScoringRule) -> Result<()> {
        if rule.uses_positional() && self.positional.is_empty() {
            return Err(Error::Config("per-position standardisation needs the detector's positional statistics, and it has none (fit them on its training images first)".into()));
        }
        if rule.score == ScoreMode::TopKMean(0) {
            return Err(Error::Config("scoring.score top_k_mean needs k >= 1".into()));
        }
        for ScoreSource { method, memory_weight } in
            [rule.score_source(), ScoreSource { method: rule.method, memory_weight: rule.memory_weight }]
        {
            self.check_method(method)?;
            if !(0.0..=1.0).contains(&memory_weight) {
                return Err(Error::Config(format!("scoring.memory_weight ({memory_weight}) must be in [0, 1]")));
            }
        }
        let s = &mut self.config.scoring;
        s.method = rule.method;
        s.memory_weight = rule.memory_weight;
        s.score = rule.score;
        s.positional = rule.positional;
        s.positional_map = rule.positional && rule.positional_map;
        s.score_from = rule.score_from;
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
            all.extend(self.components_of_features(set.select(chunk)?, true, false, None)?);
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
}
