//! The error type of `pnpt-memory`.

use std::path::PathBuf;

/// Everything that can go wrong while building, querying, saving or loading a patch memory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range; the message names the field.
    #[error("patch memory configuration: {0}")]
    Config(String),
    /// Features of the wrong shape, an empty category, a class index out of range.
    #[error("patch memory: {0}")]
    InvalidInput(String),
    /// A saved memory file is not readable as a patch memory, or does not fit the detector.
    #[error("{path}: not a valid patch memory file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading or writing the memory's file failed: I/O, a damaged file, or a checksum that
    /// does not match (`pnpt_io::Error::Checksum`).
    #[error(transparent)]
    File(#[from] pnpt_io::Error),
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
