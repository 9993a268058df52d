//! # pnpt — Prior Normality Prompt Transformer on Burn
//!
//! Unified multi-class industrial anomaly detection: one model, trained on normal images of every
//! product type at once, scores each image and each pixel of any of them.
//!
//! This facade re-exports the member crates in data-flow order (io → data → synth → backbone →
//! prompt pool → patch memory → model → metrics) and adds training with the choice of the scoring method on
//! a validation set of pseudo-anomalies ([`train`], [`validation`]), evaluation and its reports
//! ([`evaluate`]: `report.json`, `report.md`, heat maps from [`heatmap`]), run-time backend
//! selection ([`backend`]) and a backend-equivalence harness (`equivalence`, with the test-only
//! feature `testing`).
//!
//! It is a library only: it prints nothing (progress and warnings are `log` events and
//! [`model::ProgressEvent`]s) and parses no command line. The `pnpt` command, its training
//! job, `report.html`, progress bars and logger are the `pnpt-cli` crate.

pub use burn;
pub use pnpt_backbone as backbone;
pub use pnpt_data as data;
pub use pnpt_io as io;
pub use pnpt_memory as memory;
pub use pnpt_metrics as metrics;
pub use pnpt_model as model;
pub use pnpt_prompt as prompt;
pub use pnpt_synth as synth;

pub mod backend;
#[cfg(feature = "testing")]
pub mod equivalence;
mod error;
pub mod evaluate;
pub mod heatmap;
pub mod train;
pub mod validation;

pub use error::{Error, Result};

/// What most programs need, in one line: load or train a detector, judge images, evaluate.
///
/// ```no_run
/// use pnpt::prelude::*;
///
/// let detector = Detector::<Cpu>::load("pnpt-out/detector", &Default::default())?;
/// for p in detector.predict(&[decode("part.png")?])? {
///     println!("{}: {:.3}, {}", p.category, p.score, p.verdict());
/// }
/// # Ok::<(), pnpt::Error>(())
/// ```
pub mod prelude {
    pub use crate::backend::Cpu;
    pub use crate::data::{Dataset, decode};
    pub use crate::evaluate::{EvaluateOptions, Report, evaluate};
    pub use crate::model::{Detector, PnptConfig, Prediction, ScoringMethod, TrainOptions};
    pub use crate::train::train;
    pub use crate::validation::ValidationOptions;
    pub use crate::{Error, Result};
    pub use burn::backend::Autodiff;
}

// The README's Rust snippets are compiled as doc tests so they cannot go stale.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
