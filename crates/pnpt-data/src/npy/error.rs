//! [`NpyError`]: what went wrong reading or writing a `.npy` file.

use std::io;
use std::path::PathBuf;

/// Why a `.npy` file could not be read or written. Every message names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NpyError {
    /// The file could not be opened, read, written or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file does not start with `\x93NUMPY`.
    #[error("{path}: not a .npy file (bad magic bytes)")]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// A format version other than 1.0, 2.0 or 3.0.
    #[error("{path}: unsupported .npy format version {major}.{minor}")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// Major version byte.
        major: u8,
        /// Minor version byte.
        minor: u8,
    },
    /// The header dictionary could not be parsed.
    #[error("{path}: malformed .npy header: {reason}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The stored dtype is not the one asked for (or not supported at all, e.g. big-endian).
    #[error("{path}: dtype {found:?} cannot be read as {expected:?} (little-endian, C order)")]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The header's `descr`.
        found: String,
        /// The dtype the caller's element type reads.
        expected: &'static str,
    },
    /// Fortran-ordered arrays would come back transposed; refuse them.
    #[error("{path}: Fortran-order array not supported (save it with np.ascontiguousarray)")]
    FortranOrder {
        /// The file.
        path: PathBuf,
    },
    /// The payload is shorter than the shape requires.
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
    /// The payload is longer than the shape requires.
    #[error("{path}: {extra} bytes after the data that shape {shape:?} describes")]
    TrailingData {
        /// The file.
        path: PathBuf,
        /// The header's shape.
        shape: Vec<usize>,
        /// Surplus bytes.
        extra: u64,
    },
    /// `write` was given a shape whose element count differs from the data length.
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
