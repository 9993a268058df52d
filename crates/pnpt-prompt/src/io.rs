//! Small file helpers shared by the pnpt crates that save artefacts (`pnpt-prompt` for the
//! pool, `pnpt-model` for checkpoints and detectors).
//!
//! * [`write_atomic`]: a file is either the old one or the complete new one, never half
//!   written ([`pnpt_data::atomic`]), so an interrupted run cannot leave a corrupt checkpoint
//!   behind.
//! * [`crate::tensor_file`] (re-exported here as `io::tensor_file`): what every artefact is
//!   written as now, safetensors with the header in its metadata and a SHA-256 over the file.
//! * [`write_container`] / [`read_container`]: the earlier format, still read so that files
//!   saved by earlier versions load (and written only to test that). One file = an 8-byte
//!   magic, a JSON header and any number of binary blobs, each length-prefixed (little
//!   endian), then the SHA-256 of all the bytes before it. A flipped bit anywhere is a
//!   [`Error::Checksum`] on reading, never a silently different model (version-1 files, written
//!   before the checksum, still load).
//! * [`sha256_hex`] / [`read_verified`]: the same check for files whose checksum is recorded
//!   elsewhere (a detector's `manifest.json`).

use std::fs;
use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};

pub use crate::tensor_file;
use crate::{Error, Result};

/// Version 2 appends the SHA-256; version 1 (no checksum) is still read.
const CONTAINER_VERSION: u32 = 2;

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads `path` and checks its SHA-256 against `expected` (hex), before anything parses it.
pub fn read_verified(path: &Path, expected: &str) -> Result<Vec<u8>> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let actual = sha256_hex(&bytes);
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(Error::Checksum { path: path.to_path_buf(), expected: expected.to_string(), actual });
    }
    Ok(bytes)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn format_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Format { path: path.to_path_buf(), reason: reason.into() }
}

/// Writes `bytes` to `path` atomically (see [`pnpt_data::atomic::write_with`]); the parent
/// folder is created if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    pnpt_data::atomic::write_with(path, |w| w.write_all(bytes)).map_err(|(path, source)| Error::Io { path, source })
}

/// Writes a container file atomically: `magic`, a JSON `header`, then `blobs`.
pub fn write_container<H: Serialize>(path: &Path, magic: &[u8; 8], header: &H, blobs: &[&[u8]]) -> Result<()> {
    let header = serde_json::to_vec(header).map_err(|e| format_err(path, e.to_string()))?;
    let total = 8 + 4 + 8 + header.len() + 4 + blobs.iter().map(|b| 8 + b.len()).sum::<usize>() + 32;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(magic);
    out.extend_from_slice(&CONTAINER_VERSION.to_le_bytes());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&(blobs.len() as u32).to_le_bytes());
    for blob in blobs {
        out.extend_from_slice(&(blob.len() as u64).to_le_bytes());
        out.extend_from_slice(blob);
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(&out);
    out.extend_from_slice(&digest);
    write_atomic(path, &out)
}

/// Reads a file written by [`write_container`], checking the magic, the checksum and every
/// length.
pub fn read_container<H: DeserializeOwned>(path: &Path, magic: &[u8; 8]) -> Result<(H, Vec<Vec<u8>>)> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    parse_container(path, &bytes, magic)
}

/// [`read_container`] of the `bytes` already read from `path` (for loaders that first look at
/// the magic to tell this format from a [`tensor_file`]).
pub fn parse_container<H: DeserializeOwned>(path: &Path, bytes: &[u8], magic: &[u8; 8]) -> Result<(H, Vec<Vec<u8>>)> {
    if bytes.len() < 12 || &bytes[..8] != magic {
        let found = String::from_utf8_lossy(&bytes[..bytes.len().min(8)]).into_owned();
        return Err(format_err(
            path,
            format!("expected a {} file (magic {:?}), found {found:?}", kind(magic), String::from_utf8_lossy(magic)),
        ));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let body = match version {
        1 => bytes,
        2 => {
            // The digest is checked before any length or header is trusted.
            let Some(split) = bytes.len().checked_sub(32).filter(|&n| n >= 12) else {
                return Err(format_err(path, "truncated: no room for the checksum"));
            };
            let (body, digest) = bytes.split_at(split);
            let expected: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            let actual = sha256_hex(body);
            if actual != expected {
                return Err(Error::Checksum { path: path.to_path_buf(), expected, actual });
            }
            body
        }
        v => {
            return Err(format_err(path, format!("container version {v}, this build reads 1 and {CONTAINER_VERSION}")));
        }
    };
    let mut cursor = Cursor { bytes: body, pos: 12, path };
    let header_len = cursor.u64()? as usize;
    let header: H = serde_json::from_slice(cursor.take(header_len)?)
        .map_err(|e| format_err(path, format!("{} header: {e}", kind(magic))))?;
    let n = u32::from_le_bytes(cursor.take(4)?.try_into().expect("4 bytes")) as usize;
    let mut blobs = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let len = cursor.u64()? as usize;
        blobs.push(cursor.take(len)?.to_vec());
    }
    if cursor.pos != body.len() {
        return Err(format_err(path, format!("{} trailing bytes", body.len() - cursor.pos)));
    }
    Ok((header, blobs))
}

/// What a magic stands for, for error messages.
fn kind(magic: &[u8; 8]) -> &'static str {
    match magic {
        b"PNPTPOOL" => "prompt pool",
        b"PNPTMEM1" => "patch memory",
        b"PNPTCKPT" => "training checkpoint",
        _ => "pnpt container",
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format_err(self.path, format!("truncated: wanted {n} bytes at offset {}", self.pos)))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

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
    fn container_round_trips_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.bin");
        let header = vec!["a".to_string(), "b".to_string()];
        write_container(&path, b"TESTMAGC", &header, &[&[1, 2, 3], &[]]).unwrap();
        let (h, blobs): (Vec<String>, _) = read_container(&path, b"TESTMAGC").unwrap();
        assert_eq!(h, header);
        assert_eq!(blobs, vec![vec![1u8, 2, 3], vec![]]);
        // No temp file left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

        let err = read_container::<Vec<String>>(&path, b"OTHERMAG").unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err}");
        let bytes = fs::read(&path).unwrap();
        // Any flipped byte, header or blob or digest, is a checksum error naming the file.
        for at in [13, bytes.len() - 40, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            fs::write(&path, &bad).unwrap();
            match read_container::<Vec<String>>(&path, b"TESTMAGC") {
                Err(Error::Checksum { path: p, .. }) => assert_eq!(p, path),
                other => panic!("byte {at}: {other:?}"),
            }
        }
        fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        assert!(matches!(read_container::<Vec<String>>(&path, b"TESTMAGC"), Err(Error::Checksum { .. })));
        fs::write(&path, &bytes[..20]).unwrap();
        assert!(read_container::<Vec<String>>(&path, b"TESTMAGC").is_err());
    }

    #[test]
    fn version_one_files_without_checksum_still_load() {
        // Built by hand in the layout of the first version: magic, version 1, header, blobs.
        let header = br#"["a"]"#;
        let mut bytes = b"TESTMAGC".to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&2u64.to_le_bytes());
        bytes.extend_from_slice(&[7, 9]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.bin");
        fs::write(&path, &bytes).unwrap();
        let (h, blobs): (Vec<String>, _) = read_container(&path, b"TESTMAGC").unwrap();
        assert_eq!((h, blobs), (vec!["a".to_string()], vec![vec![7u8, 9]]));
    }

    #[test]
    fn sha256_matches_the_fips_example_and_verifies_files() {
        // FIPS 180-2, appendix B.1: SHA-256("abc").
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        fs::write(&path, b"abc").unwrap();
        assert_eq!(
            read_verified(&path, "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD").unwrap(),
            b"abc"
        );
        fs::write(&path, b"abd").unwrap();
        assert!(matches!(read_verified(&path, &sha256_hex(b"abc")), Err(Error::Checksum { .. })));
    }

    #[test]
    fn f32_bytes_round_trip() {
        let v = [0.0f32, -1.5, f32::MAX, 3.25e-7];
        assert_eq!(bytes_to_f32(&f32_to_bytes(&v)).unwrap(), v);
        assert!(bytes_to_f32(&[1, 2, 3]).is_none());
    }
}
