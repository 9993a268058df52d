//! Small file helpers shared by the pnpt crates that save artefacts (`pnpt-prompt` for the
//! pool, `pnpt-model` for checkpoints and detectors).
//!
//! * [`write_atomic`]: a file is either the old one or the complete new one, never half
//!   written ([`pnpt_data::atomic`]), so an interrupted run cannot leave a corrupt checkpoint
//!   behind.
//! * [`write_container`] / [`read_container`]: one file = an 8-byte magic, a JSON header and
//!   any number of binary blobs, each length-prefixed (little endian).

use std::fs;
use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};

use crate::{Error, Result};

const CONTAINER_VERSION: u32 = 1;

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
pub fn write_container<H: Serialize>(
    path: &Path,
    magic: &[u8; 8],
    header: &H,
    blobs: &[&[u8]],
) -> Result<()> {
    let header = serde_json::to_vec(header).map_err(|e| format_err(path, e.to_string()))?;
    let total = 8 + 4 + 8 + header.len() + 4 + blobs.iter().map(|b| 8 + b.len()).sum::<usize>();
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
    write_atomic(path, &out)
}

/// Reads a file written by [`write_container`], checking the magic and every length.
pub fn read_container<H: DeserializeOwned>(path: &Path, magic: &[u8; 8]) -> Result<(H, Vec<Vec<u8>>)> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let mut cursor = Cursor { bytes: &bytes, pos: 0, path };
    if cursor.take(8)? != magic {
        return Err(format_err(
            path,
            format!("wrong magic (expected {:?})", String::from_utf8_lossy(magic)),
        ));
    }
    let version = u32::from_le_bytes(cursor.take(4)?.try_into().expect("4 bytes"));
    if version != CONTAINER_VERSION {
        return Err(format_err(path, format!("container version {version}, this build reads {CONTAINER_VERSION}")));
    }
    let header_len = cursor.u64()? as usize;
    let header: H = serde_json::from_slice(cursor.take(header_len)?)
        .map_err(|e| format_err(path, format!("header: {e}")))?;
    let n = u32::from_le_bytes(cursor.take(4)?.try_into().expect("4 bytes")) as usize;
    let mut blobs = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let len = cursor.u64()? as usize;
        blobs.push(cursor.take(len)?.to_vec());
    }
    if cursor.pos != bytes.len() {
        return Err(format_err(path, format!("{} trailing bytes", bytes.len() - cursor.pos)));
    }
    Ok((header, blobs))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            format_err(self.path, format!("truncated: wanted {n} bytes at offset {}", self.pos))
        })?;
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
    (bytes.len() % 4 == 0).then(|| {
        bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect()
    })
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
        assert!(err.to_string().contains("wrong magic"), "{err}");
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        let err = read_container::<Vec<String>>(&path, b"TESTMAGC").unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn f32_bytes_round_trip() {
        let v = [0.0f32, -1.5, f32::MAX, 3.25e-7];
        assert_eq!(bytes_to_f32(&f32_to_bytes(&v)).unwrap(), v);
        assert!(bytes_to_f32(&[1, 2, 3]).is_none());
    }
}
