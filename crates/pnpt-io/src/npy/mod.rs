//! NumPy `.npy` reading and writing: little-endian `<f4`, `<f8`, `<i4`, `<i8` and `|u1`,
//! C order, format versions 1.0, 2.0 and 3.0.
//!
//! Arrays come back as `(shape, data)` with `data` flat in C order. Reads stream the payload
//! (no second copy of the file in memory); writes go to a temporary file in the destination's
//! folder and are renamed into place, so a reader never sees a half-written file. Files written
//! here are byte-identical to `np.save` of the same array.
//!
//! ```
//! use pnpt_io::npy;
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("maps.npy");
//! npy::write(&path, &[2, 3], &[0.0f32, 0.5, 1.0, 1.5, 2.0, 2.5]).unwrap();
//! let (shape, data) = npy::read::<f32>(&path).unwrap();
//! assert_eq!((shape, data[5]), (vec![2, 3], 2.5));
//! ```

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

mod element;
mod header;

pub use element::NpyElement;
use header::{header_bytes, read_header};

use crate::Error;

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy aligns the data start to this many bytes.
const ALIGN: usize = 64;
/// numpy leaves room for the first axis to grow to this many digits in place.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;
/// Payload bytes converted per step when streaming.
const CHUNK: usize = 1 << 20;

/// Reads a `.npy` file holding `T` elements in C order: `(shape, data)`, `data.len()` being the
/// product of `shape` (1 for a 0-d array).
///
/// # Errors
/// [`Error`]: unreadable file, bad magic, unsupported version, malformed header, a dtype
/// other than `T`'s, Fortran order, or a payload shorter or longer than the shape needs.
pub fn read<T: NpyElement>(path: impl AsRef<Path>) -> Result<(Vec<usize>, Vec<T>), Error> {
    let path = path.as_ref();
    let io_err = |source| Error::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io_err)?;
    let file_len = file.metadata().map_err(io_err)?.len();
    let mut r = BufReader::new(file);
    let (header, header_len) = read_header(&mut r, path)?;
    if !T::accepts(&header.descr) {
        return Err(Error::UnsupportedDtype { path: path.to_path_buf(), found: header.descr, expected: T::DESCR });
    }
    if header.fortran_order && header.shape.iter().filter(|&&d| d > 1).count() > 1 {
        // (With at most one non-trivial axis, Fortran and C order are the same bytes.)
        return Err(Error::FortranOrder { path: path.to_path_buf() });
    }
    let count = header
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|c| c.checked_mul(T::SIZE).is_some())
        .ok_or_else(|| Error::BadHeader {
            path: path.to_path_buf(),
            reason: format!("shape {:?} overflows", header.shape),
        })?;
    let expected = (count * T::SIZE) as u64;
    let got = file_len.saturating_sub(header_len);
    if got < expected {
        return Err(Error::Truncated { path: path.to_path_buf(), shape: header.shape, expected, got });
    }
    if got > expected {
        return Err(Error::TrailingData { path: path.to_path_buf(), shape: header.shape, extra: got - expected });
    }
    let mut data = Vec::with_capacity(count);
    let mut buf = vec![0u8; CHUNK - CHUNK % T::SIZE];
    let mut left = expected as usize;
    while left > 0 {
        let n = left.min(buf.len());
        r.read_exact(&mut buf[..n]).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                // The file shrank under us.
                Error::Truncated {
                    path: path.to_path_buf(),
                    shape: header.shape.clone(),
                    expected,
                    got: expected - (left as u64),
                }
            } else {
                io_err(e)
            }
        })?;
        data.extend(buf[..n].chunks_exact(T::SIZE).map(T::from_le));
        left -= n;
    }
    Ok((header.shape, data))
}

/// Writes `data` (C order) with `shape` as a `.npy` file, byte-identical to `np.save`.
///
/// The bytes go to a temporary file next to `path` that is then renamed over it, so `path`
/// is either the old file or the complete new one.
///
/// # Errors
/// [`Error::ShapeMismatch`] if `shape`'s product is not `data.len()`, [`Error::Io`] if the
/// folder is not writable.
pub fn write<T: NpyElement>(path: impl AsRef<Path>, shape: &[usize], data: &[T]) -> Result<(), Error> {
    let path = path.as_ref();
    if shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) != Some(data.len()) {
        return Err(Error::ShapeMismatch { path: path.to_path_buf(), shape: shape.to_vec(), len: data.len() });
    }
    crate::atomic::write_with(path, |w| {
        w.write_all(&header_bytes(T::DESCR, shape))?;
        let mut bytes = Vec::with_capacity(CHUNK);
        for chunk in data.chunks(CHUNK / T::SIZE) {
            bytes.clear();
            chunk.iter().for_each(|&v| v.put_le(&mut bytes));
            w.write_all(&bytes)?;
        }
        Ok(())
    })
    .map_err(|(path, source)| Error::Io { path, source })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/reference/npy").join(name)
    }

    /// `(2, 3, 4)` array `(arange(24) - 5.5) / 4` as `make_reference.py` writes it.
    fn reference_f32() -> Vec<f32> {
        (0..24).map(|i| (i as f32 - 5.5) / 4.0).collect()
    }

    #[test]
    fn reads_numpy_files() {
        for name in ["f32_2x3x4.npy", "f32_2x3x4_v2.npy"] {
            let (shape, data) = read::<f32>(fixture(name)).unwrap();
            assert_eq!(shape, vec![2, 3, 4], "{name}");
            assert_eq!(data, reference_f32(), "{name}");
        }
        let (shape, data) = read::<u8>(fixture("u8_3x5.npy")).unwrap();
        assert_eq!(shape, vec![3, 5]);
        assert_eq!(data, (0..15).map(|i| i * 17).collect::<Vec<u8>>());
        let (shape, data) = read::<f64>(fixture("f64_4.npy")).unwrap();
        assert_eq!((shape, data), (vec![4], vec![1.5, -2.25, 1e300, 0.0]));
        let (shape, data) = read::<i64>(fixture("i64_3.npy")).unwrap();
        assert_eq!((shape, data), (vec![3], vec![-1, 0, 1 << 40]));
        let (shape, data) = read::<f32>(fixture("f32_scalar.npy")).unwrap();
        assert_eq!((shape, data), (vec![], vec![3.25]));
    }

    #[test]
    fn writes_what_numpy_writes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f32.npy");
        write(&p, &[2, 3, 4], &reference_f32()).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(fixture("f32_2x3x4.npy")).unwrap());
        let p = dir.path().join("u8.npy");
        write(&p, &[3, 5], &(0..15).map(|i| i * 17).collect::<Vec<u8>>()).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(fixture("u8_3x5.npy")).unwrap());
        let p = dir.path().join("i64.npy");
        write(&p, &[3], &[-1i64, 0, 1 << 40]).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(fixture("i64_3.npy")).unwrap());
        let p = dir.path().join("scalar.npy");
        write(&p, &[], &[3.25f32]).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(fixture("f32_scalar.npy")).unwrap());
    }

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        // More than one streaming chunk, with values that exercise every byte.
        let data: Vec<f32> = (0..700_000).map(|i| (i as f32).sin() * 1e3).collect();
        write(&p, &[7, 100_000, 1], &data).unwrap();
        let (shape, back) = read::<f32>(&p).unwrap();
        assert_eq!(shape, vec![7, 100_000, 1]);
        assert_eq!(back, data);
        // Overwrite in place; no temporary file left behind.
        write(&p, &[0, 4], &[] as &[f32]).unwrap();
        assert_eq!(read::<f32>(&p).unwrap(), (vec![0, 4], vec![]));
        let u: Vec<u8> = (0..=255).collect();
        write(&p, &[16, 16], &u).unwrap();
        assert_eq!(read::<u8>(&p).unwrap(), (vec![16, 16], u));
        write(&p, &[2], &[i32::MIN, i32::MAX]).unwrap();
        assert_eq!(read::<i32>(&p).unwrap().1, vec![i32::MIN, i32::MAX]);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.npy")]);
    }

    #[test]
    fn large_header_uses_version_2() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("many_axes.npy");
        let shape = vec![1usize; 30_000];
        write(&p, &shape, &[1.0f32]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(bytes[6], 2);
        assert_eq!(read::<f32>(&p).unwrap(), (shape, vec![1.0]));
    }

    #[test]
    fn rejects_bad_files() {
        let err = read::<f32>(fixture("f32_fortran.npy")).unwrap_err();
        assert!(matches!(err, Error::FortranOrder { .. }), "{err}");
        let err = read::<f32>(fixture("f32_bigendian.npy")).unwrap_err();
        assert!(matches!(&err, Error::UnsupportedDtype { found, .. } if found == ">f4"), "{err}");
        let err = read::<u8>(fixture("f32_2x3x4.npy")).unwrap_err();
        assert!(matches!(err, Error::UnsupportedDtype { expected: "|u1", .. }), "{err}");
        assert!(err.to_string().contains("f32_2x3x4.npy"), "{err}");
        let err = read::<f32>(fixture("missing.npy")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.npy");
        std::fs::write(&p, b"PK\x03\x04 this is a zip").unwrap();
        assert!(matches!(read::<f32>(&p), Err(Error::BadMagic { .. })));
        std::fs::write(&p, b"\x93NUM").unwrap();
        assert!(matches!(read::<f32>(&p), Err(Error::BadMagic { .. })));
        std::fs::write(&p, b"\x93NUMPY\x09\x00\x10\x00").unwrap();
        assert!(matches!(read::<f32>(&p), Err(Error::UnsupportedVersion { major: 9, .. })));

        let good = std::fs::read(fixture("f32_2x3x4.npy")).unwrap();
        std::fs::write(&p, &good[..good.len() - 3]).unwrap();
        let err = read::<f32>(&p).unwrap_err();
        assert!(matches!(err, Error::Truncated { expected: 96, got: 93, .. }), "{err}");
        std::fs::write(&p, &good[..50]).unwrap();
        assert!(matches!(read::<f32>(&p), Err(Error::BadHeader { .. })));
        let mut long = good.clone();
        long.push(0);
        std::fs::write(&p, &long).unwrap();
        assert!(matches!(read::<f32>(&p), Err(Error::TrailingData { extra: 1, .. })));

        assert!(matches!(write(&p, &[2, 2], &[1.0f32; 3]), Err(Error::ShapeMismatch { len: 3, .. })));
        assert!(matches!(write(dir.path().join("no/such/dir/x.npy"), &[1], &[1.0f32]), Err(Error::Io { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn written_files_are_not_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        write(&path, &[2], &[1.0f32, 2.0]).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o044, 0o044, "mode {mode:o}");
    }
}
