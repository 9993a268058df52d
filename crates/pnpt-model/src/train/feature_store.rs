//! Where a run's frozen-backbone features live: in memory, or in files on disk read back per
//! batch, so that the training set's size does not bound the run by RAM.
//!
//! The paper's backbone (wide_resnet50_2 at 256 x 256) gives 1.83 M floats (7.3 MB) per image:
//! MVTec AD's 3,629 training images need 27 GB in memory. On disk each scale is one raw
//! little-endian file of `N` rows (`C·H·W` values per image, f32 or f16), read with positioned
//! reads: the operating system's page cache holds what fits and is not counted in the process's
//! resident memory, so peak RSS stays at the model plus one batch.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, f16};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How a run keeps its training features ([`TrainOptions::feature_storage`](super::TrainOptions::feature_storage)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FeatureStorage {
    /// In memory when they fit in the budget ([`TrainOptions::feature_memory`](super::TrainOptions::feature_memory)),
    /// else on disk in f32 (the same numbers, read back per batch).
    #[default]
    Auto,
    /// In memory, whatever their size.
    Memory,
    /// On disk, f32.
    Disk,
    /// On disk, f16: half the disk and I/O; every feature rounded to 11 significant bits.
    DiskF16,
}

impl std::fmt::Display for FeatureStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FeatureStorage::Auto => "auto",
            FeatureStorage::Memory => "memory",
            FeatureStorage::Disk => "disk",
            FeatureStorage::DiskF16 => "disk-f16",
        })
    }
}

impl std::str::FromStr for FeatureStorage {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(FeatureStorage::Auto),
            "memory" | "ram" => Ok(FeatureStorage::Memory),
            "disk" | "disk-f32" => Ok(FeatureStorage::Disk),
            "disk-f16" | "f16" => Ok(FeatureStorage::DiskF16),
            other => Err(Error::Config(format!("feature storage `{other}`: expected auto, memory, disk or disk-f16"))),
        }
    }
}

impl FeatureStorage {
    /// What `Auto` resolves to for `bytes` of f32 features under `budget` (`None`: no limit).
    pub fn resolve(self, bytes: u64, budget: Option<u64>) -> FeatureStorage {
        match self {
            FeatureStorage::Auto if budget.is_some_and(|b| bytes > b) => FeatureStorage::Disk,
            FeatureStorage::Auto => FeatureStorage::Memory,
            other => other,
        }
    }
}

/// Parses a size such as `4GiB`, `512MiB`, `8G`, `1.5GB` or plain bytes (binary units: `G`,
/// `GB` and `GiB` all mean 2^30).
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let digits_end = lower.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(lower.len());
    let (number, unit) = lower.split_at(digits_end);
    let scale: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(Error::Config(format!("size `{t}`: expected a number with K, M, G or T (e.g. 4GiB)"))),
    };
    match number.parse::<f64>() {
        Ok(v) if v >= 0.0 && (v * scale as f64) < u64::MAX as f64 => Ok((v * scale as f64) as u64),
        _ => Err(Error::Config(format!("size `{t}`: expected a number with K, M, G or T (e.g. 4GiB)"))),
    }
}

/// The features of `N` images at three scales, on disk: one file per scale.
#[derive(Debug)]
pub(crate) struct DiskFeatures {
    dir: PathBuf,
    files: [File; 3],
    /// `[C, H, W]` per scale.
    dims: [[usize; 3]; 3],
    half: bool,
    rows: usize,
}

impl DiskFeatures {
    /// Whether the rows are stored in f16.
    pub(crate) fn is_half(&self) -> bool {
        self.half
    }

    fn row_len(&self, s: usize) -> usize {
        self.dims[s].iter().product()
    }

    /// Rows `indices` as `[n, C, H, W]` ×3 on `device`.
    pub(crate) fn select<B: Backend>(&self, indices: &[usize], device: &B::Device) -> Result<[Tensor<B, 4>; 3]> {
        use std::os::unix::fs::FileExt;
        let width = if self.half { 2 } else { 4 };
        let mut out: [Option<Tensor<B, 4>>; 3] = [None, None, None];
        for (s, slot) in out.iter_mut().enumerate() {
            let len = self.row_len(s);
            let mut bytes = vec![0u8; len * width];
            let mut values = Vec::with_capacity(len * indices.len());
            for &i in indices {
                if i >= self.rows {
                    return Err(Error::Invalid(format!("feature row {i} of {}", self.rows)));
                }
                self.files[s].read_exact_at(&mut bytes, (i * len * width) as u64).map_err(|e| Error::Artefact {
                    path: self.file(s),
                    reason: format!("reading feature row {i}: {e}"),
                })?;
                if self.half {
                    values.extend(bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()));
                } else {
                    values.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
                }
            }
            let [c, h, w] = self.dims[s];
            *slot = Some(Tensor::from_data(TensorData::new(values, [indices.len(), c, h, w]), device));
        }
        Ok(out.map(|t| t.expect("three scales")))
    }

    fn file(&self, s: usize) -> PathBuf {
        self.dir.join(format!("scale{s}.raw"))
    }
}

impl Drop for DiskFeatures {
    fn drop(&mut self) {
        // A cache of this run only; nothing to keep.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes feature rows in order to a fresh folder; [`finish`](Self::finish) gives the store.
pub(crate) struct DiskWriter {
    dir: PathBuf,
    writers: [BufWriter<File>; 3],
    dims: Option<[[usize; 3]; 3]>,
    half: bool,
    rows: usize,
}

impl DiskWriter {
    /// A writer into a new folder under `parent` (created; a stale one of an earlier run is
    /// replaced).
    pub(crate) fn create(parent: &Path, half: bool) -> Result<Self> {
        let dir = parent.join(format!("pnpt-features-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(Error::io(&dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let open = |s: usize| -> Result<BufWriter<File>> {
            let path = dir.join(format!("scale{s}.raw"));
            Ok(BufWriter::with_capacity(1 << 20, File::create(&path).map_err(Error::io(&path))?))
        };
        Ok(Self { writers: [open(0)?, open(1)?, open(2)?], dir, dims: None, half, rows: 0 })
    }

    /// Appends a batch `[n, C, H, W]` ×3.
    pub(crate) fn append<B: Backend>(&mut self, feats: &[Tensor<B, 4>; 3]) -> Result<()> {
        let dims = [0, 1, 2].map(|s| {
            let [_, c, h, w] = feats[s].dims();
            [c, h, w]
        });
        if *self.dims.get_or_insert(dims) != dims {
            return Err(Error::Shape(format!("feature batch of shape {dims:?} after {:?}", self.dims)));
        }
        for (s, t) in feats.iter().enumerate() {
            let values =
                t.to_data().convert::<f32>().into_vec::<f32>().map_err(|e| Error::Invalid(format!("{e:?}")))?;
            let mut bytes = Vec::with_capacity(values.len() * if self.half { 2 } else { 4 });
            if self.half {
                values.iter().for_each(|v| bytes.extend_from_slice(&f16::from_f32(*v).to_le_bytes()));
            } else {
                values.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
            }
            let path = self.dir.join(format!("scale{s}.raw"));
            self.writers[s].write_all(&bytes).map_err(Error::io(&path))?;
        }
        self.rows += feats[0].dims()[0];
        Ok(())
    }

    /// Flushes the files and opens them for reading.
    pub(crate) fn finish(self) -> Result<DiskFeatures> {
        let Self { dir, writers, dims, half, rows } = self;
        let dims = dims.ok_or_else(|| Error::Invalid("no features were written".into()))?;
        let mut files = Vec::with_capacity(3);
        for (s, w) in writers.into_iter().enumerate() {
            let path = dir.join(format!("scale{s}.raw"));
            let file = w.into_inner().map_err(|e| Error::io(&path)(e.into_error()))?;
            file.sync_data().map_err(Error::io(&path))?;
            drop(file);
            files.push(File::open(&path).map_err(Error::io(&path))?);
        }
        let files: [File; 3] = files.try_into().expect("three scales");
        Ok(DiskFeatures { dir, files, dims, half, rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type B = Flex<f32>;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size(" 512 MiB ").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5gb").unwrap(), 3 << 29);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        for bad in ["", "GiB", "4 parsecs", "-1G", "1e999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn auto_goes_to_disk_only_past_the_budget() {
        assert_eq!(FeatureStorage::Auto.resolve(10, Some(10)), FeatureStorage::Memory);
        assert_eq!(FeatureStorage::Auto.resolve(11, Some(10)), FeatureStorage::Disk);
        assert_eq!(FeatureStorage::Auto.resolve(u64::MAX, None), FeatureStorage::Memory);
        assert_eq!(FeatureStorage::DiskF16.resolve(0, None), FeatureStorage::DiskF16);
        for s in [FeatureStorage::Auto, FeatureStorage::Memory, FeatureStorage::Disk, FeatureStorage::DiskF16] {
            assert_eq!(s.to_string().parse::<FeatureStorage>().unwrap(), s);
        }
    }

    /// Rows written in batches read back exactly (f32) or rounded to f16 (relative error
    /// at most 2^-11), in any order, and the folder goes with the store.
    #[test]
    fn rows_round_trip() {
        let device = Default::default();
        let tmp = tempfile::tempdir().unwrap();
        let value = |n: usize, c: usize, hw: usize, base: f32| {
            let v: Vec<f32> = (0..n * c * hw * hw).map(|i| base + (i as f32 * 0.37).sin() * 3.0).collect();
            Tensor::<B, 4>::from_data(TensorData::new(v, [n, c, hw, hw]), &device)
        };
        let batches = [
            [value(3, 2, 4, 0.0), value(3, 3, 2, 1.0), value(3, 1, 1, 2.0)],
            [value(2, 2, 4, 5.0), value(2, 3, 2, 6.0), value(2, 1, 1, 7.0)],
        ];
        for half in [false, true] {
            let mut w = DiskWriter::create(tmp.path(), half).unwrap();
            for b in &batches {
                w.append(b).unwrap();
            }
            let store = w.finish().unwrap();
            let dir = store.dir.clone();
            assert!(dir.is_dir());
            let got = store.select::<B>(&[4, 0, 3], &device).unwrap();
            for s in 0..3 {
                let expected = Tensor::cat(
                    vec![
                        batches[1][s].clone().narrow(0, 1, 1),
                        batches[0][s].clone().narrow(0, 0, 1),
                        batches[1][s].clone().narrow(0, 0, 1),
                    ],
                    0,
                );
                let (e, g): (Vec<f32>, Vec<f32>) =
                    (expected.into_data().to_vec().unwrap(), got[s].clone().into_data().to_vec().unwrap());
                assert_eq!(e.len(), g.len());
                for (a, b) in e.iter().zip(&g) {
                    let tol = if half { a.abs() * 2f32.powi(-11) } else { 0.0 };
                    assert!((a - b).abs() <= tol, "{a} vs {b} (half {half})");
                }
            }
            assert!(store.select::<B>(&[5], &device).is_err(), "past the last row");
            drop(store);
            assert!(!dir.exists(), "the cache folder is removed with the store");
        }
    }
}
