//! The error type of `pnpt-cli`.

use std::path::PathBuf;

/// Everything that can stop a `pnpt` command (a single unreadable image does not: it becomes
/// an error line of `predictions.jsonl`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// From the library (device selection, training, evaluation).
    #[error(transparent)]
    Pnpt(#[from] pnpt::Error),
    /// From the detector (loading, scoring).
    #[error(transparent)]
    Model(#[from] pnpt::model::Error),
    /// From writing an output file.
    #[error(transparent)]
    Write(#[from] pnpt::io::Error),
    /// Reading a file or folder failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Bad input that is not a single image (nothing to score, an unknown category...).
    #[error("{0}")]
    Input(String),
    /// The service could not start or stopped with an error.
    #[error("service on {addr}: {reason}")]
    Service {
        /// The address it was to listen on.
        addr: String,
        /// What went wrong.
        reason: String,
    },
}

/// Result with [`CliError`].
pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CliError {
        let path = path.into();
        move |source| CliError::Io { path, source }
    }
}
