//! The error type of `pnpt-model`.

use std::path::PathBuf;

/// Everything that can go wrong building, training, saving, loading or running a PNPT model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A configuration whose training would not fit in memory, refused before allocating.
    #[error("configuration needs about {estimate}, more than the {:.2} GiB available (set PNPT_MAX_MEMORY=<bytes> to change the limit; reduce model.hidden, input_size or train.batch_size)", *available as f64 / (1u64 << 30) as f64)]
    OutOfMemory {
        /// What the run would hold.
        estimate: crate::config::MemoryEstimate,
        /// Bytes available.
        available: u64,
    },
    /// A configuration file could not be parsed.
    #[error("{path}: invalid configuration file: {reason}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// Parser message (names the field).
        reason: String,
    },
    /// Features or images of the wrong shape were given to the model.
    #[error("input shape: {0}")]
    Shape(String),
    /// Bad input that is not a shape problem (empty batch, no training images...).
    #[error("{0}")]
    Invalid(String),
    /// The loss became NaN or infinite.
    #[error("training diverged: loss is {value} at epoch {epoch}, step {step} (try a lower learning rate)")]
    NonFinite {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// The offending value.
        value: f32,
    },
    /// A saved artefact (detector, checkpoint) does not match the configuration.
    #[error("{path}: does not match the configuration: {reason}")]
    Mismatch {
        /// The artefact.
        path: PathBuf,
        /// Which fields differ.
        reason: String,
    },
    /// A checkpoint was trained on other data than the run that resumes it (see
    /// `pnpt_data::fingerprint`).
    #[error("{path}: the checkpoint was trained on other data: {}{}", differences.iter().take(10).cloned().collect::<Vec<_>>().join("; "), if differences.len() > 10 { format!("; and {} more", differences.len() - 10) } else { String::new() })]
    DatasetChanged {
        /// The checkpoint.
        path: PathBuf,
        /// What differs, one entry per category or file ("category carpet added",
        /// "bottle/train/good/003.png changed size (…)").
        differences: Vec<String>,
    },
    /// A resumed run asked for fewer epochs than its checkpoint has already done.
    #[error(
        "{path}: {done} epochs are already done, more than the {requested} asked for (give --epochs {done} or more to resume, or start a new run)"
    )]
    EpochsTooFew {
        /// The checkpoint.
        path: PathBuf,
        /// Epochs asked for (`train.epochs`).
        requested: usize,
        /// Epochs the checkpoint holds.
        done: usize,
    },
    /// A saved artefact is unreadable.
    #[error("{path}: {reason}")]
    Artefact {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A saved file could not be read or written (pnpt-io): I/O, a damaged, truncated or
    /// foreign artefact, a checksum that does not match. The file errors of the prompt pool and
    /// the patch memory land here too, so one match finds a damaged file whichever part of a
    /// detector or checkpoint it is.
    #[error(transparent)]
    File(#[from] pnpt_io::Error),
    /// From the data crate (image decoding, dataset layout).
    #[error(transparent)]
    Data(#[from] pnpt_data::DataError),
    /// From the backbone crate.
    #[error(transparent)]
    Backbone(#[from] pnpt_backbone::BackboneError),
    /// From the prompt pool (its file errors are [`Error::File`]).
    #[error(transparent)]
    Prompt(pnpt_prompt::Error),
    /// From the patch memory (its file errors are [`Error::File`]).
    #[error(transparent)]
    Memory(pnpt_memory::Error),
}

impl From<pnpt_prompt::Error> for Error {
    fn from(e: pnpt_prompt::Error) -> Self {
        match e {
            pnpt_prompt::Error::File(e) => Error::File(e),
            e => Error::Prompt(e),
        }
    }
}

impl From<pnpt_memory::Error> for Error {
    fn from(e: pnpt_memory::Error) -> Self {
        match e {
            pnpt_memory::Error::File(e) => Error::File(e),
            e => Error::Memory(e),
        }
    }
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
