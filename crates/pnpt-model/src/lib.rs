//! # pnpt-model — the Prior Normality Prompt Transformer
//!
//! One file per module of the method, named as in the paper:
//!
//! | file | paper | what |
//! |---|---|---|
//! | [`hpe`] | HPE | HPE / HPE⁻¹: scale-dependent patches → one token grid, learnable positions, jitter |
//! | [`sace`] | SACE | SACE (a) self-attention over `[patches; semantic tokens]`, (b) second-order cross-attention fusion |
//! | [`cscd`] | CSCD | CSCD: patch tokens attend to the fused semantics |
//! | [`pnpt`] | Algorithm 1 | the model: `E_S(0)`, `M` layers, both streams, `F*_prior`, `F*_self` |
//! | [`loss`] | Eq. 6–7 | dual-stream global cosine loss |
//! | [`anomaly_map`] | Eq. 8 | fused reconstruction → per-pixel map → smoothed → image score |
//! | [`config`] | all | every open choice, `paper()` and `cpu()` presets, the ablation [`Variant`]s |
//! | [`train`] | training setup | features, prompt pool, patch memory, AdamW training of PNPT on cached frozen features, checkpoints, resume |
//! | [`detector`] | — | the trained artefact: an [`AnomalyModel`] (raw maps) and a [`PostProcessor`] (scores, thresholds, verdicts, masks); load, save, predict |
//! | [`fusion`] | — | per-class standardisation and fusion of the PNPT and patch-memory maps |
//! | [`macs`] | — | multiply-accumulates of a forward pass, per module |
//!
//! The CS-NPP prompt pool is the `pnpt-prompt` crate.
//!
//! The paper is cited by its modules' names (CS-NPP, HPE, SACE, CSCD), its equation numbers
//! (Eq. 6–8) and Algorithm 1. "The reference run" is a PyTorch implementation of the method
//! trained once on the ad13 categories with EfficientNet-Lite0 features (C = 256, N = 16, M = 2):
//! the `cpu` preset starts from its choices where the paper leaves them open.

// The host attention core (raw pointers, AVX2) lives in pnpt-kernels.
#![forbid(unsafe_code)]

pub mod anomaly_map;
pub mod attention;
pub mod block;
pub mod config;
pub mod cscd;
pub mod detector;
mod error;
pub mod fusion;
pub mod hpe;
pub mod loss;
pub mod macs;
pub mod pnpt;
pub mod progress;
pub mod sace;
pub mod train;

pub use config::{
    ConcatMode, ModelConfig, PnptConfig, ScoreMode, ScoreSource, ScoringConfig, ScoringMethod, ScoringRule,
    TrainConfig, Variant,
};
pub use detector::{AnomalyModel, Components, Detector, Maps, PostProcessor, Prediction, Thresholds};
pub use error::{Error, Result};
pub use hpe::FeatureSpec;
pub use pnpt::{InferencePlan, Pnpt, Reconstruction, Streams};
pub use pnpt_memory::{MemoryConfig, PatchMemory};
pub use progress::{Progress, ProgressEvent};
pub use train::{TrainOptions, train_transformer};
