//! Every choice the paper leaves open as a documented field, with the `paper` and `cpu` presets.
//!
//! A configuration is JSON (serde); fields missing from a file take the value of the `cpu`
//! preset, unknown fields are rejected (so a typo is an error, not a silent default).
//!
//! ```
//! use pnpt_model::PnptConfig;
//! let cfg: PnptConfig = serde_json::from_str(r#"{"model": {"layers": 1}, "train": {"epochs": 1}}"#).unwrap();
//! assert_eq!(cfg.model.layers, 1);
//! assert_eq!(cfg.model.hidden, PnptConfig::cpu().model.hidden);
//! cfg.validate().unwrap();
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use pnpt_backbone::BackboneKind;
use pnpt_memory::MemoryConfig;
use pnpt_prompt::Distance;
use serde::{Deserialize, Serialize};

use crate::hpe::FeatureSpec;
use crate::{Error, Result};

/// How HPE joins the three scales into one token sequence (the paper leaves it open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConcatMode {
    /// Concatenate the per-scale embeddings along channels, then `Linear(3C -> C)`:
    /// `L = grid` tokens (the reference run's choice).
    #[default]
    Channels,
    /// Concatenate along the token axis: `L = 3 * grid` tokens, about 3× the attention cost.
    Tokens,
}

/// How an image score is derived from its anomaly map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreMode {
    /// Maximum of the (smoothed) map — the common practice the paper follows.
    #[default]
    Max,
    /// Mean of the `k` largest map values (more robust to single hot pixels).
    TopKMean(usize),
}

impl fmt::Display for ScoreMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScoreMode::Max => f.write_str("max"),
            ScoreMode::TopKMean(k) => write!(f, "top{k}"),
        }
    }
}

/// The model variants of the paper's ablation (its Table 6): the full model, and the model
/// with one component removed. One enum rather than three switches, so that a combination the
/// paper never defines (CSCD without semantic tokens to decode against) cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// HPE, the CS-NPP prior stream, SACE with semantic tokens, and CSCD.
    #[default]
    Full,
    /// No CS-NPP prior: the self stream only (no SACE (b) fusion, nothing to fuse in Eq. 8).
    SingleStream,
    /// No semantic tokens: no `E_S`, so no SACE (b) and no CSCD; SACE (a) sees patches only.
    NoSemanticTokens,
    /// No CSCD: the patch tokens leave each layer as SACE (a) returns them.
    NoCscd,
}

impl Variant {
    /// Every variant, the full model first.
    pub const ALL: [Variant; 4] = [Variant::Full, Variant::SingleStream, Variant::NoSemanticTokens, Variant::NoCscd];

    /// Whether the model has the prior stream (CS-NPP).
    pub fn has_prior(self) -> bool {
        self != Variant::SingleStream
    }

    /// Whether the model has learned semantic tokens `E_S(0)`.
    pub fn has_semantic_tokens(self) -> bool {
        self != Variant::NoSemanticTokens
    }

    /// Whether each layer ends with CSCD (which needs semantic tokens).
    pub fn has_cscd(self) -> bool {
        matches!(self, Variant::Full | Variant::SingleStream)
    }

    /// Whether SACE (b) fuses the two streams' semantics (needs both).
    pub fn has_fusion(self) -> bool {
        self.has_prior() && self.has_semantic_tokens()
    }
}

/// The transformer's architecture: everything that changes the weights.
// `remote = "Self"`: the derived code becomes inherent functions, wrapped by the impls below
// so that files written before `variant` existed still read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Hidden size `C` of every token (paper 760, reference run 256).
    pub hidden: usize,
    /// Number `N` of learned semantic tokens `E_S(0)` (paper 40, reference run 16).
    pub semantic_tokens: usize,
    /// Attention heads (8); must divide `hidden`.
    pub heads: usize,
    /// Number `M` of SACE+CSCD layer pairs (paper 4, reference run 2).
    pub layers: usize,
    /// FFN expansion: `Linear(C -> ratio*C) - ReLU - Linear(ratio*C -> C)` (4, as the reference run).
    pub ffn_ratio: usize,
    /// Dropout after attention and inside/after the FFN, as in PyTorch's transformer layers.
    /// 0 by default: the reference run does not use it and training stays bit-reproducible without it.
    pub dropout: f64,
    /// LayerNorm epsilon (PyTorch's 1e-5).
    pub layer_norm_eps: f64,
    /// How HPE concatenates the scales.
    pub concat: ConcatMode,
    /// Whether the prior and self streams share SACE/CSCD weights (the natural reading of the paper's SACE; the reference run shares them).
    pub shared_streams: bool,
    /// The full model or one of the paper's ablations.
    pub variant: Variant,
}

/// Anomaly map and decision settings (inference only; no weight depends on them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScoringConfig {
    /// Fusion weight `w` of Eq. 8: `F_fuse = w F*_prior + (1 - w) F*_self` (0.5, neutral).
    pub fusion_weight: f64,
    /// Gaussian smoothing sigma in pixels of the full-resolution map (`cpu` 1, `paper` 4; 0
    /// disables).
    pub sigma: f64,
    /// Image score from the map.
    pub score: ScoreMode,
    /// Fraction of each category's `train/good` images held out (never trained on) to
    /// calibrate the decision threshold (0.1).
    pub calibration_fraction: f64,
    /// Threshold = this quantile (linear interpolation) of the held-out normal scores of the
    /// category; 1.0 = their maximum (0.99).
    pub threshold_quantile: f64,
    /// Which map decides: PNPT's reconstruction map, the class-conditional patch memory's map,
    /// or both fused.
    pub method: ScoringMethod,
    /// Weight of the memory map in the fused map: `(1 - w) z_pnpt + w z_memory`, each map
    /// standardised by its retrieved class's held-out normal pixels (see `detector`).
    pub memory_weight: f64,
    /// Standardise PNPT's map position by position with its retrieved class's statistics over
    /// the normal training images (`fusion::PositionalStats`), so that regions that are always
    /// hard to reconstruct stop deciding the image score. Missing from a configuration file,
    /// it takes the preset's value like every field; detectors saved before it existed read
    /// `false` ([`PnptConfig::load_saved`]).
    pub positional: bool,
}

/// The scoring choices that validation picks among (`pnpt::validation`): no weight depends on
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoringRule {
    /// Which map decides.
    pub method: ScoringMethod,
    /// Memory weight of `fused`.
    pub memory_weight: f64,
    /// Image-score rule.
    pub score: ScoreMode,
    /// Per-position standardisation of PNPT's map.
    pub positional: bool,
}

impl fmt::Display for ScoringRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.method)?;
        if self.method == ScoringMethod::Fused {
            write!(f, " w={:.2}", self.memory_weight)?;
        }
        write!(f, " {}", self.score)?;
        if self.positional && self.method.uses_pnpt() {
            f.write_str(" positional")?;
        }
        Ok(())
    }
}

impl ScoringConfig {
    /// The configured rule.
    pub fn rule(&self) -> ScoringRule {
        ScoringRule {
            method: self.method,
            memory_weight: self.memory_weight,
            score: self.score,
            positional: self.positional,
        }
    }
}

/// Which anomaly map a detector scores with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScoringMethod {
    /// PNPT's reconstruction map (Eq. 8).
    Pnpt,
    /// Nearest-neighbour distance to the retrieved class's memory bank (PatchCore), no PNPT.
    Memory,
    /// Both maps, standardised per class and summed with `memory_weight`.
    #[default]
    Fused,
}

impl ScoringMethod {
    /// All three, in report order.
    pub const ALL: [ScoringMethod; 3] = [ScoringMethod::Pnpt, ScoringMethod::Memory, ScoringMethod::Fused];

    /// Whether the PNPT transformer's map is needed.
    pub fn uses_pnpt(self) -> bool {
        self != ScoringMethod::Memory
    }
    /// Whether the patch memory's map is needed.
    pub fn uses_memory(self) -> bool {
        self != ScoringMethod::Pnpt
    }
}

impl fmt::Display for ScoringMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScoringMethod::Pnpt => "pnpt",
            ScoringMethod::Memory => "memory",
            ScoringMethod::Fused => "fused",
        })
    }
}

impl FromStr for ScoringMethod {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pnpt" => Ok(Self::Pnpt),
            "memory" => Ok(Self::Memory),
            "fused" => Ok(Self::Fused),
            other => Err(Error::Config(format!("unknown scoring method `{other}`: expected pnpt, memory or fused"))),
        }
    }
}

/// How the learning rate changes over a training run (see `train::learning_rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// `lr` at every step (the paper gives a single learning rate; the default keeps old runs exact).
    #[default]
    Constant,
    /// Linear warm-up from `lr / warmup_steps` (first step) to `lr` (step `warmup_steps`),
    /// then a half cosine down to `lr * min_lr_ratio` at the run's last step. Large early
    /// steps on freshly initialised attention are what warm-up avoids; the cosine tail lets a
    /// short (CPU-budget) run settle instead of stopping mid-stride at the peak rate.
    WarmupCosine,
}

/// Optimisation settings. AdamW's values are all set explicitly: Burn's defaults (eps 1e-5)
/// differ from PyTorch's (1e-8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// AdamW (peak) learning rate (1e-4); constant unless `schedule` says otherwise.
    pub lr: f64,
    /// Learning-rate schedule (`constant`, the paper's setting; `warmup_cosine` converges better
    /// in the few epochs a CPU budget allows).
    pub schedule: LrSchedule,
    /// Optimizer steps of linear warm-up for `warmup_cosine` (100). With
    /// `time_budget_seconds` they must fit in the first epoch, so that the warm-up does not
    /// depend on the number of epochs, which is only known after it.
    pub warmup_steps: usize,
    /// Final learning rate of `warmup_cosine` as a fraction of `lr` (0.01): not 0, so the
    /// last steps still move, but small enough to settle.
    pub min_lr_ratio: f64,
    /// Draw every epoch the same number of images, `ceil(n / categories)`, from each category
    /// (cycling through a small category's images) instead of one pass over all images
    /// (false). In a multi-class model a category with few images is otherwise seen
    /// rarely and reconstructed worst. Only the sampling uses the true category.
    pub class_balanced: bool,
    /// Clip the gradient to this global L2 norm over all parameters before each AdamW step,
    /// as PyTorch's `clip_grad_norm_` (None = off). Guards the early, high-lr steps against
    /// the occasional spike of the cosine loss.
    pub grad_clip_norm: Option<f64>,
    /// Wall-clock seconds for the training loop (None = run all `epochs`). After the first
    /// epoch the run sets its epoch count to `max(1, floor(budget / first epoch's time))`,
    /// at most `epochs`, and plans the schedule for it, so that the cosine ends when the
    /// time does; the choice is saved in the checkpoint and kept on resume.
    pub time_budget_seconds: Option<f64>,
    /// AdamW decoupled weight decay (1e-4).
    pub weight_decay: f64,
    /// AdamW beta 1 (0.9).
    pub beta1: f64,
    /// AdamW beta 2 (0.999).
    pub beta2: f64,
    /// AdamW epsilon (1e-8, PyTorch's).
    pub eps: f64,
    /// Images per step (8).
    pub batch_size: usize,
    /// Passes over the training images (the maximum when `time_budget_seconds` is set).
    pub epochs: usize,
    /// Seed of everything random: initialisation, shuffling, jitter, calibration split.
    pub seed: u64,
    /// Feature jitter in training (as UniAD): token += N(0,1) * ||token|| / C * scale; 0 = off.
    pub jitter_scale: f64,
    /// Probability that a batch gets jitter (1.0 = always, as the reference run).
    pub jitter_prob: f64,
    /// Images per backbone forward when caching features (memory only; no effect on results).
    pub feature_batch: usize,
}

/// The whole configuration of a PNPT detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PnptConfig {
    /// Name of the preset this configuration started from (informational).
    pub preset: String,
    /// Frozen encoder (paper: wide_resnet50_2; reference run: EfficientNet-Lite0).
    pub backbone: BackboneKind,
    /// Weights of the backbone (`None`: EfficientNet's bundled ones; required for ResNets).
    pub backbone_weights: Option<PathBuf>,
    /// Square input side in pixels (256); a multiple of 16.
    pub input_size: u32,
    /// CS-NPP retrieval distance on the global coding (Euclidean, as the reference run).
    pub distance: Distance,
    /// Transformer architecture.
    pub model: ModelConfig,
    /// Anomaly map, score and threshold.
    pub scoring: ScoringConfig,
    /// The class-conditional patch memory (built when `scoring.method` uses it).
    pub memory: MemoryConfig,
    /// Optimisation.
    pub train: TrainConfig,
}

impl Serialize for ModelConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        ModelConfig::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let mut value = serde_json::Value::deserialize(deserializer)?;
        upgrade_ablation_switches(&mut value).map_err(serde::de::Error::custom)?;
        ModelConfig::deserialize(value).map_err(serde::de::Error::custom)
    }
}

/// Replaces the three ablation booleans of earlier versions (`use_prior`, `use_semantic_tokens`,
/// `use_cscd`) by the [`Variant`] they describe; refuses combinations no variant matches.
fn upgrade_ablation_switches(value: &mut serde_json::Value) -> std::result::Result<(), String> {
    let Some(map) = value.as_object_mut() else { return Ok(()) };
    let mut switch = |key: &str| match map.remove(key) {
        None => Ok(true),
        Some(serde_json::Value::Bool(b)) => Ok(b),
        Some(other) => Err(format!("{key} must be a boolean, got {other}")),
    };
    let (prior, semantic, cscd) = (switch("use_prior")?, switch("use_semantic_tokens")?, switch("use_cscd")?);
    let variant = match (prior, semantic, cscd) {
        (true, true, true) => return Ok(()),
        (false, true, true) => Variant::SingleStream,
        // Without semantic tokens CSCD was skipped whatever `use_cscd` said.
        (true, false, _) => Variant::NoSemanticTokens,
        (true, true, false) => Variant::NoCscd,
        _ => {
            return Err(format!(
                "use_prior = {prior}, use_semantic_tokens = {semantic}, use_cscd = {cscd} is not one of the paper's variants"
            ));
        }
    };
    if map.contains_key("variant") {
        return Err("both `variant` and the older use_* switches are set".into());
    }
    map.insert("variant".into(), serde_json::to_value(variant).map_err(|e| e.to_string())?);
    Ok(())
}

impl Default for ModelConfig {
    fn default() -> Self {
        PnptConfig::cpu().model
    }
}
impl Default for ScoringConfig {
    fn default() -> Self {
        PnptConfig::cpu().scoring
    }
}
impl Default for TrainConfig {
    fn default() -> Self {
        PnptConfig::cpu().train
    }
}
impl Default for PnptConfig {
    fn default() -> Self {
        PnptConfig::cpu()
    }
}

impl PnptConfig {
    /// The reference run's configuration: EfficientNet-Lite0 features, C = 256, N = 16,
    /// 8 heads, M = 2 (6.07 M parameters), channel concat, shared streams, Euclidean
    /// retrieval, w = 0.5, AdamW(1e-4, wd 1e-4, (0.9, 0.999), 1e-8), batch 8, 3 epochs.
    /// Two scoring choices differ from the reference run:
    /// * the map is smoothed with sigma 1 instead of 4: on the pseudo-anomaly validation set
    ///   (which has small defects as well as large ones) the best candidate's mean of image
    ///   AUROC, pixel AUROC and AUPRO was 0.963 with sigma 4 and 0.970 with sigma 2, 1 and 0
    ///   (ad13, seed 0): a sigma-4 blur smears defects of a few dozen pixels away;
    /// * the image score defaults to the mean of the 100 highest map values instead of the reference run's
    ///   max, so that a single hot pixel on a normal image does not decide its score.
    ///
    /// `pnpt::train` chooses the image-score rule, the method, the memory weight and
    /// per-position standardisation on that validation set, never on test labels. (The top-100
    /// rule was first picked on ad13's test split; validation later agreed with it for the
    /// class-standardised map.)
    pub fn cpu() -> Self {
        Self {
            preset: "cpu".into(),
            backbone: BackboneKind::EfficientNetLite0,
            backbone_weights: None,
            input_size: 256,
            distance: Distance::Euclidean,
            model: ModelConfig {
                hidden: 256,
                semantic_tokens: 16,
                heads: 8,
                layers: 2,
                ffn_ratio: 4,
                dropout: 0.0,
                layer_norm_eps: 1e-5,
                concat: ConcatMode::Channels,
                shared_streams: true,
                variant: Variant::Full,
            },
            scoring: ScoringConfig {
                fusion_weight: 0.5,
                // Chosen on the validation set of `pnpt::validation` (see the rustdoc above).
                sigma: 1.0,
                score: ScoreMode::TopKMean(100),
                calibration_fraction: 0.1,
                threshold_quantile: 0.99,
                // Chosen on the pseudo-anomaly validation set (held-out ad13 training images,
                // never the test split): `fused` with w = 0.1, per-position standardisation of
                // PNPT's map and the top-100 mean won on seeds 0, 1 and 2 (see README, *How a
                // detector scores*). `pnpt::train` chooses again for every dataset; these
                // values matter with `--method`, which skips the choice.
                method: ScoringMethod::Fused,
                memory_weight: 0.1,
                positional: true,
            },
            memory: MemoryConfig::default(),
            train: TrainConfig {
                lr: 1e-4,
                weight_decay: 1e-4,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                batch_size: 8,
                epochs: 3,
                seed: 0,
                jitter_scale: 20.0,
                jitter_prob: 1.0,
                feature_batch: 16,
                schedule: LrSchedule::Constant,
                warmup_steps: 100,
                min_lr_ratio: 0.01,
                class_balanced: false,
                grad_clip_norm: None,
                time_budget_seconds: None,
            },
        }
    }

    /// The paper's setting: wide_resnet50_2 (needs its torchvision weights), C = 760,
    /// N = 40, 8 heads, M = 4, AdamW lr 1e-4, batch 8, 300 epochs. Choices the paper leaves
    /// open keep the `cpu` values (weight decay 1e-4, channel concat, shared streams...), except
    /// the image score, which is the max of the map as in the paper's common practice, and the
    /// smoothing, sigma 4 as in the paper.
    pub fn paper() -> Self {
        let mut cfg = Self::cpu();
        cfg.preset = "paper".into();
        cfg.backbone = BackboneKind::WideResNet50_2;
        cfg.model.hidden = 760;
        cfg.model.semantic_tokens = 40;
        cfg.model.heads = 8;
        cfg.model.layers = 4;
        cfg.train.epochs = 300;
        cfg.scoring.score = ScoreMode::Max;
        cfg.scoring.sigma = 4.0;
        // The paper scores with PNPT's own map; the patch memory is this library's addition.
        cfg.scoring.method = ScoringMethod::Pnpt;
        cfg.scoring.positional = false;
        cfg
    }

    /// A preset by name: `cpu` or `paper`.
    pub fn preset(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::cpu()),
            "paper" => Ok(Self::paper()),
            other => Err(Error::Config(format!("unknown preset `{other}`: expected cpu or paper"))),
        }
    }

    /// Reads a JSON configuration; missing fields take the `cpu` preset's values.
    pub fn load(path: &Path) -> Result<Self> {
        Self::read(path, None)
    }

    /// Reads the `config.json` of a saved detector. A field added after the detector was saved
    /// takes the value that keeps its old behaviour, not the preset's (which may have changed
    /// since): `scoring.positional` reads `false`.
    pub fn load_saved(path: &Path) -> Result<Self> {
        Self::read(
            path,
            Some(|value: &mut serde_json::Value| {
                if let Some(scoring) = value.get_mut("scoring").and_then(|s| s.as_object_mut()) {
                    scoring.entry("positional").or_insert(serde_json::Value::Bool(false));
                }
            }),
        )
    }

    fn read(path: &Path, upgrade: Option<fn(&mut serde_json::Value)>) -> Result<Self> {
        let bad = |reason: String| Error::ConfigFile { path: path.to_path_buf(), reason };
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        // Straight from the text when nothing needs upgrading: serde's messages then carry the
        // line and column.
        let cfg: Self = match upgrade {
            None => serde_json::from_str(&text),
            Some(upgrade) => serde_json::from_str(&text).and_then(|mut value: serde_json::Value| {
                upgrade(&mut value);
                serde_json::from_value(value)
            }),
        }
        .map_err(|e| bad(e.to_string()))?;
        cfg.validate().map_err(|e| bad(e.to_string()))?;
        Ok(cfg)
    }

    /// Writes the configuration as pretty JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        pnpt_prompt::io::write_atomic(path, &text)?;
        Ok(())
    }

    /// The backbone feature shapes this configuration produces (strides 4, 8, 16).
    pub fn feature_spec(&self) -> FeatureSpec {
        let s = self.input_size as usize;
        FeatureSpec { channels: self.backbone.channels(), sizes: [[s / 4, s / 4], [s / 8, s / 8], [s / 16, s / 16]] }
    }

    /// Checks every value; the message names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let m = &self.model;
        if m.hidden == 0 || m.heads == 0 || !m.hidden.is_multiple_of(m.heads) {
            return bad(format!(
                "model.hidden ({}) must be a positive multiple of model.heads ({})",
                m.hidden, m.heads
            ));
        }
        if m.layers == 0 {
            return bad("model.layers must be at least 1".into());
        }
        if m.ffn_ratio == 0 {
            return bad("model.ffn_ratio must be at least 1".into());
        }
        if m.variant.has_semantic_tokens() && m.semantic_tokens == 0 {
            return bad("model.semantic_tokens must be at least 1 (or set variant = \"no_semantic_tokens\")".into());
        }
        if !(0.0..1.0).contains(&m.dropout) {
            return bad(format!("model.dropout ({}) must be in [0, 1)", m.dropout));
        }
        if !(m.layer_norm_eps.is_finite() && m.layer_norm_eps > 0.0) {
            return bad("model.layer_norm_eps must be positive".into());
        }
        if self.input_size < 16 || !self.input_size.is_multiple_of(16) {
            return bad(format!("input_size ({}) must be a positive multiple of 16", self.input_size));
        }
        let s = &self.scoring;
        if !(0.0..=1.0).contains(&s.fusion_weight) {
            return bad(format!("scoring.fusion_weight ({}) must be in [0, 1]", s.fusion_weight));
        }
        if !(s.sigma >= 0.0 && s.sigma <= 64.0) {
            return bad(format!("scoring.sigma ({}) must be in [0, 64]", s.sigma));
        }
        if s.score == ScoreMode::TopKMean(0) {
            return bad("scoring.score top_k_mean needs k >= 1".into());
        }
        if !(0.0..1.0).contains(&s.calibration_fraction) {
            return bad(format!("scoring.calibration_fraction ({}) must be in [0, 1)", s.calibration_fraction));
        }
        if !(0.0..=1.0).contains(&s.memory_weight) {
            return bad(format!("scoring.memory_weight ({}) must be in [0, 1]", s.memory_weight));
        }
        if s.method.uses_memory() {
            self.memory.validate().map_err(|e| Error::Config(e.to_string()))?;
        }
        if !(s.threshold_quantile > 0.0 && s.threshold_quantile <= 1.0) {
            return bad(format!("scoring.threshold_quantile ({}) must be in (0, 1]", s.threshold_quantile));
        }
        let t = &self.train;
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return bad(format!("train.lr ({}) must be positive and finite", t.lr));
        }
        if !(t.weight_decay >= 0.0 && t.weight_decay.is_finite()) {
            return bad(format!("train.weight_decay ({}) must be >= 0", t.weight_decay));
        }
        if !(0.0..1.0).contains(&t.beta1) || !(0.0..1.0).contains(&t.beta2) {
            return bad(format!("train.beta1/beta2 ({}, {}) must be in [0, 1)", t.beta1, t.beta2));
        }
        if !(t.eps.is_finite() && t.eps > 0.0) {
            return bad("train.eps must be positive".into());
        }
        if t.epochs == 0 {
            return bad("train.epochs must be at least 1 (0 would save an untrained detector)".into());
        }
        if t.batch_size == 0 || t.feature_batch == 0 {
            return bad("train.batch_size and train.feature_batch must be at least 1".into());
        }
        if !(t.jitter_scale.is_finite() && t.jitter_scale >= 0.0 && (0.0..=1.0).contains(&t.jitter_prob)) {
            return bad("train.jitter_scale must be >= 0 and train.jitter_prob in [0, 1]".into());
        }
        if !(0.0..=1.0).contains(&t.min_lr_ratio) {
            return bad(format!("train.min_lr_ratio ({}) must be in [0, 1]", t.min_lr_ratio));
        }
        if t.grad_clip_norm.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
            return bad("train.grad_clip_norm must be positive and finite (or null)".into());
        }
        if t.time_budget_seconds.is_some_and(|b| !(b > 0.0 && b.is_finite())) {
            return bad("train.time_budget_seconds must be positive and finite (or null)".into());
        }
        if self.input_size > MAX_INPUT_SIZE {
            return bad(format!(
                "input_size ({}) is above {MAX_INPUT_SIZE}: the backbone's maps and PNPT's attention grow with its square",
                self.input_size
            ));
        }
        Ok(())
    }

    /// A rough upper estimate of what training this configuration on `images` images holds in
    /// memory: parameters, their gradients and AdamW moments, one batch's activations (both
    /// streams, every layer, the attention scores) and the cache of frozen backbone features.
    pub fn estimate_memory(&self, images: usize) -> MemoryEstimate {
        let m = &self.model;
        let spec = self.feature_spec();
        let (h, f) = (m.hidden as f64, (m.hidden * m.ffn_ratio) as f64);
        let tokens = crate::hpe::sequence_length(&spec, m.concat) as f64 + m.semantic_tokens as f64;
        // Per layer three attention blocks (SACE a, SACE b, CSCD), each 4h² + 2hf; HPE and
        // HPE⁻¹ map every scale's patches to h and back; 25 % slack for norms, biases, tokens.
        let hpe: f64 = spec.patch_dims().iter().map(|&d| 2.0 * d as f64 * h).sum::<f64>() + 3.0 * h * h;
        let params = 1.25 * (m.layers as f64 * 3.0 * (4.0 * h * h + 2.0 * h * f) + hpe);
        let batch = 2.0 * self.train.batch_size.max(self.train.feature_batch) as f64;
        let per_block = tokens * (8.0 * h + 2.0 * f) + m.heads as f64 * tokens * tokens;
        let activations = batch * m.layers as f64 * 3.0 * per_block;
        let feature = spec.channels.iter().zip(spec.sizes).map(|(&c, [a, b])| (c * a * b) as f64).sum::<f64>();
        let bytes = |floats: f64| (4.0 * floats).min(u64::MAX as f64) as u64;
        MemoryEstimate {
            parameters: bytes(params),
            optimizer: bytes(3.0 * params),
            activations: bytes(activations),
            feature_cache: bytes(images as f64 * feature),
        }
    }

    /// Refuses, before anything is allocated, a run whose [`estimate_memory`](Self::estimate_memory)
    /// exceeds `available` bytes (`None`: unknown, nothing is refused).
    pub fn check_memory(&self, images: usize, available: Option<u64>) -> Result<()> {
        let estimate = self.estimate_memory(images);
        match available {
            Some(limit) if estimate.total() > limit => Err(Error::OutOfMemory { estimate, available: limit }),
            _ => Ok(()),
        }
    }
}

/// Largest `input_size` accepted (the paper uses 256; MVTec's largest images are ~1,600 px).
pub const MAX_INPUT_SIZE: u32 = 2048;

/// What [`PnptConfig::estimate_memory`] counts, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Model weights.
    pub parameters: u64,
    /// Gradients and AdamW's two moments.
    pub optimizer: u64,
    /// One training batch through every layer, both streams.
    pub activations: u64,
    /// Frozen backbone features of every training image.
    pub feature_cache: u64,
}

impl MemoryEstimate {
    /// The sum.
    pub fn total(&self) -> u64 {
        self.parameters
            .saturating_add(self.optimizer)
            .saturating_add(self.activations)
            .saturating_add(self.feature_cache)
    }
}

impl std::fmt::Display for MemoryEstimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        write!(
            f,
            "{:.2} GiB (weights {:.2}, gradients and optimizer {:.2}, one batch of activations {:.2}, feature cache {:.2})",
            gib(self.total()),
            gib(self.parameters),
            gib(self.optimizer),
            gib(self.activations),
            gib(self.feature_cache)
        )
    }
}

/// `MemAvailable` of `/proc/meminfo` (Linux), or the `PNPT_MAX_MEMORY` environment variable in
/// bytes when set (which wins); `None` where neither is known.
pub fn available_memory() -> Option<u64> {
    if let Some(limit) = std::env::var("PNPT_MAX_MEMORY").ok().and_then(|v| v.trim().parse().ok()) {
        return Some(limit);
    }
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

impl FromStr for PnptConfig {
    type Err = Error;
    /// A preset name (`cpu`, `paper`).
    fn from_str(s: &str) -> Result<Self> {
        Self::preset(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_round_trip() {
        for cfg in [PnptConfig::cpu(), PnptConfig::paper()] {
            cfg.validate().unwrap();
            let json = serde_json::to_string(&cfg).unwrap();
            let back: PnptConfig = serde_json::from_str(&json).unwrap();
            assert_eq!(back, cfg);
        }
        assert_eq!(PnptConfig::paper().model.hidden, 760);
        assert_eq!(PnptConfig::preset("PAPER").unwrap().train.epochs, 300);
        assert!(PnptConfig::preset("gpu").is_err());
    }

    #[test]
    fn a_partial_file_takes_the_preset_and_a_saved_detector_its_old_behaviour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        // A section given in part: its other fields are the `cpu` preset's, `positional` too.
        std::fs::write(&path, r#"{"scoring": {"calibration_fraction": 0.2}}"#).unwrap();
        let cfg = PnptConfig::load(&path).unwrap();
        assert_eq!(cfg.scoring.calibration_fraction, 0.2);
        assert!(PnptConfig::cpu().scoring.positional);
        assert_eq!(cfg.scoring, ScoringConfig { calibration_fraction: 0.2, ..PnptConfig::cpu().scoring });
        // A detector saved before `positional` existed scored without it.
        assert!(!PnptConfig::load_saved(&path).unwrap().scoring.positional);
        std::fs::write(&path, r#"{"scoring": {"positional": true}}"#).unwrap();
        assert!(PnptConfig::load_saved(&path).unwrap().scoring.positional);
        // Errors name the file and keep serde's position.
        std::fs::write(&path, "{\n  \"scoring\": {\"sigma\": \"x\"}}").unwrap();
        let e = PnptConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("c.json") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn the_older_ablation_switches_read_as_variants() {
        let read = |model: &str| serde_json::from_str::<PnptConfig>(&format!(r#"{{"model": {model}}}"#));
        let variant = |model: &str| read(model).unwrap().model.variant;
        assert_eq!(variant(r#"{"use_prior": true, "use_semantic_tokens": true, "use_cscd": true}"#), Variant::Full);
        assert_eq!(variant(r#"{"use_prior": false}"#), Variant::SingleStream);
        assert_eq!(variant(r#"{"use_semantic_tokens": false, "use_cscd": true}"#), Variant::NoSemanticTokens);
        assert_eq!(variant(r#"{"use_cscd": false, "layers": 3}"#), Variant::NoCscd);
        assert_eq!(read(r#"{"use_cscd": false, "layers": 3}"#).unwrap().model.layers, 3);
        assert_eq!(variant(r#"{"variant": "no_cscd"}"#), Variant::NoCscd);
        // Two components removed at once is no variant of the paper's; so is a mix of old and new.
        let two = read(r#"{"use_prior": false, "use_cscd": false}"#).unwrap_err().to_string();
        assert!(two.contains("not one of the paper's variants"), "{two}");
        assert!(read(r#"{"use_prior": false, "variant": "full"}"#).is_err());
        assert!(read(r#"{"use_prior": 0}"#).is_err());
        // What is written is the new form.
        let json = serde_json::to_value(PnptConfig::cpu()).unwrap();
        assert_eq!(json["model"]["variant"], "full");
        assert!(json["model"].get("use_prior").is_none());
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        assert!(serde_json::from_str::<PnptConfig>(r#"{"model": {"hiden": 3}}"#).is_err());
        let mut cfg = PnptConfig::cpu();
        cfg.model.heads = 7;
        assert!(cfg.validate().unwrap_err().to_string().contains("model.heads"));
        let mut cfg = PnptConfig::cpu();
        cfg.input_size = 100;
        assert!(cfg.validate().is_err());
        let mut cfg = PnptConfig::cpu();
        cfg.train.lr = f64::NAN;
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn memory_estimate_counts_parameters_and_refuses_what_cannot_fit() {
        // The cpu preset builds 6.07 M parameters (README); the estimate is within 25 %.
        let cfg = PnptConfig::cpu();
        let e = cfg.estimate_memory(0);
        let params = e.parameters as f64 / 4.0;
        assert!((params / 6.07e6 - 1.0).abs() < 0.25, "{params}");
        assert_eq!(e.optimizer, 3 * e.parameters);
        // Feature cache: 24·64² + 40·32² + 112·16² floats per image at input 256.
        assert_eq!(cfg.estimate_memory(10).feature_cache, 10 * 4 * (24 * 64 * 64 + 40 * 32 * 32 + 112 * 16 * 16));
        assert!(cfg.check_memory(500, Some(64 << 30)).is_ok());
        // The two inputs that used to abort the process: a huge hidden size, a huge input.
        let mut wide = PnptConfig::cpu();
        wide.model.hidden = 65536;
        assert!(matches!(wide.check_memory(0, Some(64 << 30)), Err(Error::OutOfMemory { .. })));
        let mut big = PnptConfig::cpu();
        big.input_size = 16384;
        assert!(big.validate().unwrap_err().to_string().contains("input_size"));
        big.input_size = 2048;
        let err = big.check_memory(0, Some(8 << 30)).unwrap_err().to_string();
        assert!(err.contains("GiB"), "{err}");
        assert!(big.check_memory(0, None).is_ok(), "unknown memory refuses nothing");
    }

    #[test]
    fn score_mode_json_forms() {
        assert_eq!(serde_json::to_string(&ScoreMode::Max).unwrap(), r#""max""#);
        assert_eq!(serde_json::to_string(&ScoreMode::TopKMean(10)).unwrap(), r#"{"top_k_mean":10}"#);
    }
}
