//! The single error type of `pnpt-io`: every message names the file and says what is wrong.

use std::io;
use std::path::PathBuf;

/// Why a file could not be read or written: a tensor file or container (safetensors artefact,
/// earlier container format), a file with a recorded checksum, or a `.npy` array. Every
/// message names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened, read, written or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
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
    /// A checksum file ([`crate::checksum::write_sidecar`]) that is not as it was written: its
    /// two records differ or it is malformed, so it was changed (the file it vouches for is not
    /// read).
    #[error("{path}: {reason}: the checksum file was changed after it was saved")]
    Sidecar {
        /// The checksum file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A `.npy` file that does not start with `\x93NUMPY`.
    #[error("{path}: not a .npy file (bad magic bytes)")]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// A `.npy` format version other than 1.0, 2.0 or 3.0.
    #[error("{path}: unsupported .npy format version {major}.{minor}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Major version byte.
        major: u8,
        /// Minor version byte.
        minor: u8,
    },
    /// The `.npy` header dictionary could not be parsed.
    #[error("{path}: malformed .npy header: {reason}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The dtype stored in a `.npy` file is not the one asked for (or not supported at all, e.g. big-endian).
    #[error("{path}: dtype {found:?} cannot be read as {expected:?} (little-endian, C order)")]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The header's `descr`.
        found: String,
        /// The dtype the caller's element type reads.
        expected: &'static str,
    },
    /// Fortran-ordered `.npy` arrays would come back transposed; refuse them.
    #[error("{path}: Fortran-order array not supported (save it with np.ascontiguousarray)")]
    FortranOrder {
        /// The file.
        path: PathBuf,
    },
    /// A `.npy` payload shorter than its shape requires.
    #[error("{path}: truncated data: shape {shape:?} needs {expected} bytes, the file holds {got}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The header's shape.
        shape: Vec<usize>,
        /// Payload bytes the shape needs.
        expected: u64,
        /// Payload bytes present.
        got: u64,
    },
    /// A `.npy` payload longer than its shape requires.
    #[error("{path}: {extra} bytes after the data that shape {shape:?} describes")]
    TrailingData {
        /// The file.
        path: PathBuf,
        /// The header's shape.
        shape: Vec<usize>,
        /// Surplus bytes.
        extra: u64,
    },
    /// `npy::write` was given a shape whose element count differs from the data length.
    #[error("{path}: shape {shape:?} does not hold {len} values")]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The shape given.
        shape: Vec<usize>,
        /// The number of values given.
        len: usize,
    },
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `map_err` adapter: an I/O error on `path`.
pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

/// A [`Error::Format`] on `path`.
pub(crate) fn format_err(path: &std::path::Path, reason: impl Into<String>) -> Error {
    Error::Format { path: path.to_path_buf(), reason: reason.into() }
}
