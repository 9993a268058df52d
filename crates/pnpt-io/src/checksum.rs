//! SHA-256 in lower-case hex: of bytes in memory, of a file streamed, the check of a file
//! against a digest recorded elsewhere (a detector's `manifest.json`) before anything parses
//! it, and a file's own checksum beside it ([`write_sidecar`], [`read_with_sidecar`]: the
//! manifest, which cannot vouch for itself).

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

/// The record of `digest` for the file `name` in a checksum file (the `sha256sum` layout).
fn record(digest: &str, name: &str) -> String {
    format!("{digest}  {name}\n")
}

/// Writes `sidecar` (atomically): the SHA-256 of `file` as `sha256sum` writes it, twice. Two
/// identical records let [`read_with_sidecar`] tell which of the two files changed: an edit of
/// the checksum file makes its records differ, an edit of `file` leaves them equal and wrong.
/// `sha256sum -c` reads it as is.
pub fn write_sidecar(file: &Path, sidecar: &Path) -> Result<()> {
    let bytes = std::fs::read(file).map_err(io_err(file))?;
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let line = record(&sha256_hex(&bytes), &name);
    crate::write_atomic(sidecar, format!("{line}{line}").as_bytes())
}

/// Reads `file` after checking it against its checksum file `sidecar` ([`write_sidecar`]),
/// before anything parses it. A changed checksum file is [`Error::Sidecar`] naming it; a
/// changed `file` is [`Error::Checksum`] naming `file`; a missing checksum file is the
/// [`Error::Io`] of its path (`NotFound`), for the caller to explain.
pub fn read_with_sidecar(file: &Path, sidecar: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read(sidecar).map_err(io_err(sidecar))?;
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let bad = |reason: &str| Error::Sidecar { path: sidecar.to_path_buf(), reason: reason.into() };
    let text = std::str::from_utf8(&text).map_err(|_| bad("not text"))?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let [first, second] = lines[..] else {
        return Err(bad("not two records"));
    };
    if first != second {
        return Err(bad("its two records differ"));
    }
    let digest = first
        .strip_suffix(&format!("  {name}\n"))
        .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .ok_or_else(|| bad(&format!("not a record `<64 lower-case hex digits>  {name}`")))?;
    read_verified(file, digest)
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

    /// Every bit flipped in either file is refused, and the error names the file that changed.
    #[test]
    fn a_sidecar_names_the_file_that_changed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("manifest.json");
        let sidecar = dir.path().join("manifest.sha256");
        let good = br#"{"format": 6, "checksums": {"a": "00ff"}}"#.to_vec();
        std::fs::write(&file, &good).unwrap();
        write_sidecar(&file, &sidecar).unwrap();
        assert_eq!(read_with_sidecar(&file, &sidecar).unwrap(), good);
        let sums = std::fs::read(&sidecar).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&sums),
            format!("{0}  manifest.json\n{0}  manifest.json\n", sha256_hex(&good))
        );
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&file, &bad).unwrap();
            match read_with_sidecar(&file, &sidecar) {
                Err(Error::Checksum { path, .. }) => assert_eq!(path, file),
                other => panic!("bit {bit} of the file: {other:?}"),
            }
        }
        std::fs::write(&file, &good).unwrap();
        for bit in 0..sums.len() * 8 {
            let mut bad = sums.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&sidecar, &bad).unwrap();
            match read_with_sidecar(&file, &sidecar) {
                Err(Error::Sidecar { path, .. }) => assert_eq!(path, sidecar),
                other => panic!("bit {bit} of the checksum file: {other:?}"),
            }
        }
        // Cut short, one record, missing.
        for bad in [&sums[..sums.len() - 1], &sums[..sums.len() / 2], b""] {
            std::fs::write(&sidecar, bad).unwrap();
            assert!(matches!(read_with_sidecar(&file, &sidecar), Err(Error::Sidecar { .. })));
        }
        std::fs::remove_file(&sidecar).unwrap();
        match read_with_sidecar(&file, &sidecar) {
            Err(Error::Io { path, source }) => {
                assert_eq!((path, source.kind()), (sidecar, std::io::ErrorKind::NotFound));
            }
            other => panic!("missing checksum file: {other:?}"),
        }
    }
}
