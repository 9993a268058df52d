//! The error type of `pnpt-prompt`.

use std::path::PathBuf;

/// Everything that can go wrong while building, querying, saving or loading a prompt pool.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `build` was called before any category was added.
    #[error("prompt pool: no category was added, so there is no normal prior to retrieve")]
    Empty,
    /// A batch of features does not have the shape the pool was started with.
    #[error(
        "prompt pool: category `{category}`, scale {scale}: feature shape {got:?} differs from {expected:?} (every image must give the same [C, H, W] per scale)"
    )]
    ShapeMismatch {
        /// The category being added or queried (`<query>` at retrieval time).
        category: String,
        /// Scale index 0..3.
        scale: usize,
        /// Expected `[C, H, W]`.
        expected: [usize; 3],
        /// Received `[C, H, W]`.
        got: [usize; 3],
    },
    /// A batch with zero images, or mismatched batch sizes between scales.
    #[error("prompt pool: {0}")]
    InvalidInput(String),
    /// A saved file (prompt pool, patch memory, model weights, checkpoint) is not readable as what
    /// it should be: truncated, not a safetensors file or container, another kind of artefact.
    #[error("{path}: not a valid pnpt artefact: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A saved file's bytes differ from the SHA-256 recorded when it was written (bit rot, a
    /// partial copy, an edit): nothing in it is used.
    #[error(
        "{path}: checksum mismatch (SHA-256 {actual}, written as {expected}): the file is corrupt or was changed after it was saved"
    )]
    Checksum {
        /// The file.
        path: PathBuf,
        /// The SHA-256 recorded at save time (hex).
        expected: String,
        /// The SHA-256 of the bytes read now (hex).
        actual: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
