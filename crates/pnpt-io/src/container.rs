//! The container format of earlier pnpt versions, still read so that files saved by them load
//! (and written only to test that). Every artefact is written as a [`crate::tensor_file`] now.
//!
//! One file = an 8-byte magic, a JSON header and any number of binary blobs, each
//! length-prefixed (little endian), then the SHA-256 of all the bytes before it. A flipped bit
//! anywhere is a [`Error::Checksum`] on reading, never a silently different model (version-1
//! files, written before the checksum, still load).

use std::fs;
use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};

use crate::atomic::write_atomic;
use crate::checksum::{hex, sha256_hex};
use crate::error::{format_err, io_err};
use crate::{Error, Result};

/// Version 2 appends the SHA-256; version 1 (no checksum) is still read.
const CONTAINER_VERSION: u32 = 2;

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
/// the magic to tell this format from a [`crate::tensor_file`]).
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
            let expected = hex(digest);
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
}
