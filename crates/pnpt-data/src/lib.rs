//! pnpt-data: MVTec-layout datasets, decoding and preprocessing, synthetic defects, `.npy` I/O.
//!
//! The first stage of the pnpt data flow (it depends on no other pnpt crate):
//!
//! * [`Dataset::open`] discovers categories and samples in MVTec AD, MVTec 3D-AD (RGB),
//!   MVTec LOCO and VisA-in-MVTec layouts, in sorted order;
//! * [`decode_rgb`], [`to_chw`], [`load_image`], [`load_mask`] turn files into normalised CHW
//!   floats and 0/1 masks at the model's input size ([`Preprocess`]);
//! * [`load_images`] and [`BatchIter`] build NCHW Burn tensors, decoding in parallel;
//! * [`synthetic`] generates a deterministic defect dataset, cached by [`synthetic::ensure_synthetic`].
//!
//! Every failure is a [`DataError`] naming the path and the reason; nothing panics on bad data.
//!
//! ```
//! use pnpt_data::synthetic::{generate, SyntheticConfig};
//! let dir = tempfile::tempdir().unwrap();
//! let cfg = SyntheticConfig { size: 32, train_good: 2, test_good: 1, test_defective: 2, ..Default::default() };
//! generate(dir.path(), &cfg).unwrap();
//! let ds = pnpt_data::Dataset::open(dir.path(), None).unwrap();
//! let pre = pnpt_data::Preprocess::imagenet(64);
//! let bottle = ds.category("bottle").unwrap();
//! let x = pnpt_data::load_image(&bottle.train[0].path, &pre).unwrap();
//! assert_eq!(x.len(), 3 * 64 * 64);
//! let m = pnpt_data::load_mask(&bottle.test[0], 64).unwrap(); // first test defect is "good"
//! assert_eq!(m.len(), 64 * 64);
//! ```
pub mod atomic;
pub mod dataset;
mod error;
pub mod fingerprint;
pub mod image_io;
pub mod loader;
pub mod npy;
pub mod pseudo_anomaly;
mod rnd;
pub mod synthetic;

use std::path::PathBuf;

pub use dataset::{Audit, Category, Dataset, GOOD, IMAGE_EXTENSIONS, Sample};
pub use error::DataError;
pub use image_io::{
    Preprocess, decode, decode_mask, decode_rgb, image_size, load_image, load_mask, resize_nearest, rgb_to_chw, to_chw,
};
pub use loader::{BatchIter, labels, load_chw, load_images, load_masks};
pub use synthetic::{SyntheticConfig, ensure_synthetic};

/// Re-exported so callers use the same `image` version as [`to_chw`] and [`decode_rgb`].
pub use image;

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
