//! The error type of `pnpt-prompt`.

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
    /// The pool's file could not be read or written: I/O, a damaged or truncated file, another
    /// kind of artefact, a checksum that does not match.
    #[error(transparent)]
    File(#[from] pnpt_io::Error),
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
