//! The error type of `pnpt-cli`: what the library returns, plus the errors of the command line,
//! the output folder and the service, which no library call can produce.

use std::path::PathBuf;

/// Everything that can stop a `pnpt` command or the training job (a single unreadable image
/// does not: it becomes an error line of `predictions.jsonl`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// From the library (device selection, data, the detector, training, evaluation, writing
    /// its files); every member crate's error arrives here, inside [`pnpt::Error`].
    #[error(transparent)]
    Pnpt(#[from] pnpt::Error),
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
    /// The output folder cannot be used (a file, read-only, not creatable): found before the run.
    #[error("output folder {path}: {reason}")]
    Output {
        /// The `--out` folder.
        path: PathBuf,
        /// Why it cannot be written.
        reason: String,
    },
    /// `--resume` cannot continue this run.
    #[error("cannot resume from {path}: {reason}")]
    Resume {
        /// The checkpoint (or folder) asked for.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// A command-line number that is not a whole number (`--seed abc`, `--epochs -1`).
    #[error("{flag} needs a whole number, got `{value}`")]
    NotANumber {
        /// The option.
        flag: String,
        /// What was given.
        value: String,
    },
    /// A command-line number too large for its option (`--seed` of 2^70).
    #[error("{flag} {value} is out of range: at most {max}")]
    OutOfRange {
        /// The option.
        flag: String,
        /// What was given.
        value: String,
        /// The largest accepted value.
        max: u64,
    },
    /// Command-line options that do not go together (`--rescore` without `--evaluate`).
    #[error("{0}")]
    Arguments(String),
    /// A command-line list with no element (`--categories ""`).
    #[error("{flag}: the list is empty (give at least one name, comma-separated)")]
    EmptyList {
        /// The option.
        flag: String,
    },
}

/// Result with [`CliError`].
pub type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CliError {
        let path = path.into();
        move |source| CliError::Io { path, source }
    }

    /// The library's error, when this is one (to match its variants).
    pub fn library(&self) -> Option<&pnpt::Error> {
        match self {
            CliError::Pnpt(e) => Some(e),
            _ => None,
        }
    }
}

// The member crates' errors through the facade's, so each has one place in `CliError`
// (`CliError::Pnpt(pnpt::Error::Model(..))`, whichever call returned it).
macro_rules! through_facade {
    ($($t:ty),*) => {$(
        impl From<$t> for CliError {
            fn from(e: $t) -> Self {
                CliError::Pnpt(e.into())
            }
        }
    )*};
}

through_facade!(pnpt::data::DataError, pnpt::model::Error, pnpt::prompt::Error, pnpt::io::Error);
