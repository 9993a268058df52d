//! What a training run was trained on, so that a resumed run can refuse other data.
//!
//! A [`Fingerprint`] holds the sorted category list and, per training file (`train/good` of
//! every category, the held-out part included), its path relative to the dataset root, its size
//! and the SHA-256 of its contents. A content hash rather than the modification time: a copied
//! or re-extracted dataset (new mtimes, same bytes) still resumes, and an image rewritten with
//! the same size does not. Hashing reads each file once (in parallel; the files are in the page
//! cache after [`Dataset::check`](crate::Dataset::check) has decoded them).
//!
//! ```
//! use pnpt_data::{fingerprint::Fingerprint, Dataset};
//! let dir = tempfile::tempdir().unwrap();
//! # for rel in ["bottle/train/good/000.png", "bottle/train/good/001.png", "bottle/test/good/000.png"] {
//! #     let p = dir.path().join(rel);
//! #     std::fs::create_dir_all(p.parent().unwrap()).unwrap();
//! #     pnpt_data::image::RgbImage::from_pixel(8, 8, pnpt_data::image::Rgb([9, 9, 9])).save(p).unwrap();
//! # }
//! let before = Fingerprint::of(&Dataset::open(dir.path(), None).unwrap()).unwrap();
//! std::fs::remove_file(dir.path().join("bottle/train/good/001.png")).unwrap();
//! let after = Fingerprint::of(&Dataset::open(dir.path(), None).unwrap()).unwrap();
//! assert_eq!(before.differences(&after), ["bottle/train/good/001.png removed"]);
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{DataError, Dataset};

/// The category list and every training file of a dataset (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Category names, sorted.
    pub categories: Vec<String>,
    /// Training files, sorted by their exact relative path.
    pub files: Vec<FilePrint>,
}

/// One training file of a [`Fingerprint`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePrint {
    /// The category it belongs to.
    pub category: String,
    /// Path relative to the dataset root, `/`-separated (non-UTF-8 bytes shown as U+FFFD;
    /// [`raw`](Self::raw) keeps them).
    pub path: String,
    /// The exact bytes of the relative path when it is not UTF-8 (JSON strings cannot hold
    /// them), so two names that differ only in such bytes stay two files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<Vec<u8>>,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the contents, lower-case hex.
    pub sha256: String,
}

impl FilePrint {
    /// The identity of the file: its exact relative path bytes.
    fn key(&self) -> &[u8] {
        self.raw.as_deref().unwrap_or(self.path.as_bytes())
    }
}

impl Fingerprint {
    /// Hashes every training image of `dataset` (its categories only: a run restricted with
    /// `--categories` fingerprints those). An unreadable file is [`DataError::Io`] naming it.
    pub fn of(dataset: &Dataset) -> Result<Self, DataError> {
        let mut categories = dataset.names();
        categories.sort();
        let samples: Vec<_> = dataset.categories.iter().flat_map(|c| c.train.iter()).collect();
        let mut files = samples
            .par_iter()
            .map(|s| {
                let rel = s.path.strip_prefix(&dataset.root).unwrap_or(&s.path);
                let (size, sha256) = hash_file(&s.path)?;
                let raw = rel.to_str().is_none().then(|| rel.as_os_str().as_encoded_bytes().to_vec());
                let path = rel.to_string_lossy().replace('\\', "/");
                Ok(FilePrint { category: s.category.clone(), path, raw, size, sha256 })
            })
            .collect::<Result<Vec<_>, DataError>>()?;
        files.sort_by(|a, b| a.key().cmp(b.key()));
        Ok(Self { categories, files })
    }

    /// What differs from `self` (the saved run) in `now`, in a stable order: categories added
    /// or removed, then training files added, removed, or changed in size or content (files of
    /// an added or removed category are covered by its line). Empty when they are the same.
    pub fn differences(&self, now: &Fingerprint) -> Vec<String> {
        let added: Vec<&String> = now.categories.iter().filter(|c| !self.categories.contains(c)).collect();
        let removed: Vec<&String> = self.categories.iter().filter(|c| !now.categories.contains(c)).collect();
        let mut out: Vec<String> = added.iter().map(|c| format!("category {c} added")).collect();
        out.extend(removed.iter().map(|c| format!("category {c} removed")));
        let moved: Vec<&String> = added.into_iter().chain(removed).collect();
        let keep = |f: &&FilePrint| !moved.contains(&&f.category);
        let before: BTreeMap<&[u8], &FilePrint> = self.files.iter().filter(keep).map(|f| (f.key(), f)).collect();
        let after: BTreeMap<&[u8], &FilePrint> = now.files.iter().filter(keep).map(|f| (f.key(), f)).collect();
        let mut keys: Vec<&[u8]> = before.keys().chain(after.keys()).copied().collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            match (before.get(k), after.get(k)) {
                (Some(b), None) => out.push(format!("{} removed", b.path)),
                (None, Some(a)) => out.push(format!("{} added", a.path)),
                (Some(b), Some(a)) if b.size != a.size => {
                    out.push(format!("{} changed size ({} -> {} bytes)", a.path, b.size, a.size))
                }
                (Some(b), Some(a)) if b.sha256 != a.sha256 => {
                    out.push(format!("{} changed content (same size)", a.path))
                }
                _ => {}
            }
        }
        out
    }
}

/// Size and SHA-256 of a file, streamed (no whole-file buffer).
fn hash_file(path: &Path) -> Result<(u64, String), DataError> {
    pnpt_io::checksum::sha256_file(path).map_err(|e| DataError::io(path, e))
}
