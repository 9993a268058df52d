//! The single error type of this crate.
use std::path::PathBuf;

/// Everything that can go wrong while discovering, decoding or generating data.
///
/// Every message names the offending path and the reason, so a user can fix the dataset without
/// a debugger. Nothing in this crate panics on bad input; it returns one of these instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The dataset root does not exist or is not a directory.
    #[error("dataset root {path}: does not exist or is not a directory")]
    MissingRoot {
        /// The root that was asked for.
        path: PathBuf,
    },
    /// A category lacks a required split folder (`train` or `test`).
    #[error("category {category:?}: required split folder {path} is missing")]
    MissingSplit {
        /// The folder that should exist.
        path: PathBuf,
        /// The category it belongs to.
        category: String,
    },
    /// A category whose training split holds no normal images.
    #[error("category {category:?}: no training images (png/jpg/bmp) under {path}")]
    NoTrainImages {
        /// The folder that was searched.
        path: PathBuf,
        /// The category.
        category: String,
    },
    /// An anomalous test image without a ground-truth mask.
    #[error("anomalous test image {path} has no ground-truth mask (looked for {expected})")]
    MissingMask {
        /// The test image.
        path: PathBuf,
        /// Where the mask was looked for (the first candidate).
        expected: PathBuf,
    },
    /// A mask whose size differs from its image's.
    #[error("mask {mask} is {}x{} but its image {path} is {}x{}", mask_size.0, mask_size.1, image_size.0, image_size.1)]
    MaskSizeMismatch {
        /// The image.
        path: PathBuf,
        /// The mask.
        mask: PathBuf,
        /// Image width and height.
        image_size: (u32, u32),
        /// Mask width and height.
        mask_size: (u32, u32),
    },
    /// A zero-byte file.
    #[error("{path}: empty (zero-byte) file")]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// A file whose bytes do not decode: corrupt or truncated.
    #[error("{path}: corrupt or truncated image: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decoder's complaint.
        reason: String,
    },
    /// A file in a format this crate does not decode (only PNG, JPEG and BMP are supported).
    #[error("{path}: unsupported image format (PNG, JPEG and BMP are supported): {reason}")]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// What was detected.
        reason: String,
    },
    /// An operating-system I/O error (permissions, disk full, ...).
    #[error("{path}: I/O error: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A root that holds no category at all.
    #[error("dataset root {path}: no categories found (expected <category>/train and <category>/test folders)")]
    EmptyDataset {
        /// The root.
        path: PathBuf,
    },
    /// A requested category that the root does not contain.
    #[error("dataset root {path}: unknown category {name:?} requested (available: {available})")]
    UnknownCategory {
        /// The root.
        path: PathBuf,
        /// The requested name.
        name: String,
        /// Comma-separated names that do exist.
        available: String,
    },
    /// A batch was requested from an empty list of samples.
    #[error("{what}: no samples to load (empty list)")]
    NoSamples {
        /// Which operation was called.
        what: &'static str,
    },
    /// A configuration value that cannot work (zero size, zero batch, ...).
    #[error("{path}: invalid configuration: {reason}")]
    InvalidConfig {
        /// The folder the configuration was for (or empty when there is none).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A pseudo-anomaly request that cannot work: output size out of range, zero anomalies per
    /// image, no normal images, or an empty (zero-pixel) input image.
    #[error("pseudo-anomaly synthesis: invalid input: {reason}")]
    InvalidPseudoAnomaly {
        /// What is wrong.
        reason: String,
    },
    /// No visible defect could be drawn on a normal image, whatever the placement and kind (an
    /// image so flat or saturated that no pixel changes by the minimum delta).
    #[error(
        "pseudo-anomaly synthesis: normal image #{index} (variant {variant}): no visible defect after {attempts} attempts with different placements and kinds"
    )]
    NoVisibleDefect {
        /// Index of the normal image in the input slice.
        index: usize,
        /// Which of its `per_image` anomalies failed.
        variant: usize,
        /// How many drawing attempts were made.
        attempts: usize,
    },
    /// An image whose header declares more pixels per side than the limit (a decompression
    /// bomb, or a file that is not an inspection image); nothing is decoded.
    #[error("{path}: image is {width}x{height}, larger than the limit of {limit}x{limit} pixels")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Declared width.
        width: u32,
        /// Declared height.
        height: u32,
        /// The side limit ([`crate::image_io::MAX_IMAGE_SIDE`]).
        limit: u32,
    },
    /// Two images in one folder share a file stem (`000.png` and `000.jpg`): they would share a
    /// mask and an output name.
    #[error(
        "{first} and {second}: two images with the same name stem in one folder (they would share a mask and a heat-map file)"
    )]
    NameCollision {
        /// The first file, in name order.
        first: PathBuf,
        /// The second.
        second: PathBuf,
    },
    /// A category or defect-type folder whose name is not UTF-8: such names label classes and
    /// report rows, so they must be text (image file names may be any bytes).
    #[error("{path}: the folder name is not valid UTF-8 (category and defect folders must be; rename it)")]
    NonUtf8Name {
        /// The folder.
        path: PathBuf,
    },
    /// Several problems found by [`crate::Dataset::check`], all reported at once.
    #[error("{root}: {} problems in the dataset:\n  {}{}", problems.len(), problems.iter().take(20).map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "), if problems.len() > 20 { format!("\n  ... and {} more", problems.len() - 20) } else { String::new() })]
    Problems {
        /// The dataset root.
        root: PathBuf,
        /// Every problem, in dataset order.
        problems: Vec<DataError>,
    },
    /// Writing an image failed (synthetic generation).
    #[error("{path}: cannot encode image: {reason}")]
    Encode {
        /// The file being written.
        path: PathBuf,
        /// The encoder's complaint.
        reason: String,
    },
}

impl DataError {
    /// Wraps an I/O error with the path it happened on (also for the generators of pnpt-synth).
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }
}
