//! pnpt-data: MVTec-layout datasets, decoding and preprocessing, loading, dataset fingerprints.
//!
//! The first stage of the pnpt data flow (of the pnpt crates it imports only `pnpt-io`, for the
//! SHA-256 of its fingerprints):
//!
//! * [`Dataset::open`] discovers categories and samples in MVTec AD, MVTec 3D-AD (RGB),
//!   MVTec LOCO and VisA-in-MVTec layouts, in sorted order;
//! * [`decode_rgb`], [`to_chw`], [`load_image`], [`load_mask`] turn files into normalised CHW
//!   floats and 0/1 masks at the model's input size ([`Preprocess`]);
//! * [`load_images`] and [`BatchIter`] build NCHW Burn tensors, decoding in parallel;
//! * [`fingerprint`] records what a training run was trained on, so a resumed run refuses other
//!   data.
//!
//! Generated data (the synthetic defect dataset, pseudo-anomalies for validation) is the
//! business of `pnpt-synth`, which builds on this crate.
//!
//! Every failure is a [`DataError`] naming the path and the reason; nothing panics on bad data.
//!
//! ```
//! let dir = tempfile::tempdir().unwrap();
//! # let png = |rel: &str, v: u8| {
//! #     let p = dir.path().join(rel);
//! #     std::fs::create_dir_all(p.parent().unwrap()).unwrap();
//! #     pnpt_data::image::RgbImage::from_pixel(32, 32, pnpt_data::image::Rgb([v, v, v])).save(p).unwrap();
//! # };
//! # png("bottle/train/good/000.png", 100);
//! # png("bottle/train/good/001.png", 110);
//! # png("bottle/test/good/000.png", 105);
//! # png("bottle/test/broken/000.png", 200);
//! # png("bottle/ground_truth/broken/000_mask.png", 255);
//! // dir: bottle/{train/good, test/good, test/broken, ground_truth/broken}/*.png
//! let ds = pnpt_data::Dataset::open(dir.path(), None).unwrap();
//! let pre = pnpt_data::Preprocess::imagenet(64);
//! let bottle = ds.category("bottle").unwrap();
//! let x = pnpt_data::load_image(&bottle.train[0].path, &pre).unwrap();
//! assert_eq!(x.len(), 3 * 64 * 64);
//! let m = pnpt_data::load_mask(&bottle.test[0], 64).unwrap(); // "broken" sorts before "good"
//! assert_eq!(m.len(), 64 * 64);
//! ```
pub mod dataset;
mod error;
pub mod fingerprint;
pub mod image_io;
pub mod loader;

pub use dataset::{Audit, Category, Dataset, GOOD, IMAGE_EXTENSIONS, Sample};
pub use error::DataError;
pub use image_io::{
    Preprocess, decode, decode_mask, decode_rgb, image_size, load_image, load_mask, resize_nearest, rgb_to_chw, to_chw,
};
pub use loader::{BatchIter, labels, load_chw, load_images, load_masks};

/// Re-exported so callers use the same `image` version as [`to_chw`] and [`decode_rgb`].
pub use image;
