//! SHA-256 in lower-case hex: of bytes in memory, of a file streamed, and the check of a file
//! against a digest recorded elsewhere (a detector's `manifest.json`), before anything parses
//! it.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::io_err;
use crate::{Error, Result};

/// Lower-case hex of `digest` (any bytes; a SHA-256 gives 64 characters).
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Size and lower-case hex SHA-256 of the file at `path`, streamed (no whole-file buffer).
pub fn sha256_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok((size, hex(&hasher.finalize())))
}

/// Reads `path` and checks its SHA-256 against `expected` (hex), before anything parses it.
pub fn read_verified(path: &Path, expected: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let actual = sha256_hex(&bytes);
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(Error::Checksum { path: path.to_path_buf(), expected: expected.to_string(), actual });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_fips_example_and_verifies_files() {
        // FIPS 180-2, appendix B.1: SHA-256("abc").
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(sha256_file(&path).unwrap(), (3, sha256_hex(b"abc")));
        assert_eq!(
            read_verified(&path, "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD").unwrap(),
            b"abc"
        );
        std::fs::write(&path, b"abd").unwrap();
        assert!(matches!(read_verified(&path, &sha256_hex(b"abc")), Err(Error::Checksum { .. })));
    }
}
