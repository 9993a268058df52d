//! # pnpt-io — file formats and their integrity
//!
//! Every file pnpt reads or writes outside the image datasets goes through this crate:
//!
//! | module | what |
//! |---|---|
//! | [`tensor_file`] | the safetensors artefact format (prompt pool, patch memory, model weights, checkpoints) with a SHA-256 over the whole file, and an independent Python reader |
//! | [`container`] | the container format of earlier versions, still read |
//! | [`npy`] | NumPy `.npy` arrays, byte-identical to `np.save` |
//! | [`atomic`] | writes that leave either the old file or the complete new one (temporary file, fsync, rename), and folder swaps |
//! | [`checksum`] | SHA-256 in hex, of bytes or a streamed file, and the check of a file against a recorded digest |
//!
//! It is a crate of its own, first in the chain with no other pnpt crate below it, because
//! these formats are shared by crates that have nothing else in common (the dataset crate's
//! fingerprints, the prompt pool, the patch memory, the model's checkpoints and detectors, the
//! reports of the facade): each of them imports the format it saves in, not a sibling crate
//! that happens to own it. It works on bytes, `f32` slices and shapes (no Burn), so it builds
//! in seconds, and it has one error type, [`Error`], whose messages name the file and the
//! reason.
//!
//! ```
//! use pnpt_io::tensor_file::{self, Entry, TensorFile};
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("weights.safetensors");
//! let header = serde_json::json!({ "names": ["bottle"] });
//! tensor_file::write(&path, "example", &header, &[Entry::f32("w", vec![2], &[1.0, 2.5])])?;
//! let file = TensorFile::read(&path, "example")?;
//! assert_eq!(file.f32_shaped("w", &[2])?, [1.0, 2.5]);
//! # Ok::<(), pnpt_io::Error>(())
//! ```

pub mod atomic;
pub mod checksum;
pub mod container;
mod error;
pub mod npy;
pub mod tensor_file;

pub use atomic::write_atomic;
pub use checksum::{read_verified, sha256_hex};
pub use error::{Error, Result};

/// `f32` slice to little-endian bytes.
pub fn f32_to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Little-endian bytes to `f32`s; `None` when the length is not a multiple of 4.
pub fn bytes_to_f32(bytes: &[u8]) -> Option<Vec<f32>> {
    bytes
        .len()
        .is_multiple_of(4)
        .then(|| bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_bytes_round_trip() {
        let v = [0.0f32, -1.5, f32::MAX, 3.25e-7];
        assert_eq!(bytes_to_f32(&f32_to_bytes(&v)).unwrap(), v);
        assert!(bytes_to_f32(&[1, 2, 3]).is_none());
    }
}
