//! # pnpt-synth — generated data: a synthetic defect dataset and pseudo-anomalies
//!
//! * [`synthetic`] renders a deterministic MVTec-layout dataset with exact defect masks (six
//!   categories, textures and objects), cached once per configuration by [`ensure_synthetic`]
//!   under [`default_cache_dir`]: the data of the examples, the tests and a run without a
//!   dataset;
//! * [`pseudo_anomaly`] pastes plausible defects with pixel-exact masks into held-out *normal*
//!   images, so that the scoring method can be chosen on a validation set that never saw a test
//!   label.
//!
//! Both only make data; reading it (discovery, decoding, preprocessing, loading) is
//! `pnpt-data`'s, which this crate builds on. They are a crate of their own because a
//! detector that reads a real dataset never needs them, and because they are long and change
//! for reasons of their own (a new defect kind, a new rendering) that must not rebuild the
//! dataset reader. Errors are `pnpt-data`'s [`DataError`](pnpt_data::DataError), naming the
//! path or the input and the reason.
//!
//! ```
//! use pnpt_synth::synthetic::{generate, SyntheticConfig};
//! let dir = tempfile::tempdir().unwrap();
//! let cfg = SyntheticConfig { size: 32, train_good: 2, test_good: 1, test_defective: 2, ..Default::default() };
//! generate(dir.path(), &cfg).unwrap();
//! let ds = pnpt_data::Dataset::open(dir.path(), None).unwrap();
//! assert_eq!(ds.category("bottle").unwrap().train.len(), 2);
//! ```

pub mod pseudo_anomaly;
mod rnd;
pub mod synthetic;

use std::path::PathBuf;

pub use synthetic::{SyntheticConfig, ensure_synthetic};

/// Where generated data (the synthetic dataset) is cached: `$PNPT_CACHE` if set, else
/// `$XDG_CACHE_HOME/pnpt`, else `$HOME/.cache/pnpt` (`%LOCALAPPDATA%\pnpt` on Windows), else
/// `<system temp>/pnpt-cache`. Nothing is created here.
pub fn default_cache_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = var("PNPT_CACHE") {
        return p;
    }
    if let Some(p) = var("XDG_CACHE_HOME") {
        return p.join("pnpt");
    }
    if let Some(p) = var("HOME") {
        return p.join(".cache").join("pnpt");
    }
    if let Some(p) = var("LOCALAPPDATA") {
        return p.join("pnpt");
    }
    std::env::temp_dir().join("pnpt-cache")
}
