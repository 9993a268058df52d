//! What to generate: [`SyntheticConfig`], its checks and its cache folder name.
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{GENERATOR_VERSION, SynthKind};
use pnpt_data::DataError;

/// What to generate. `Default` is the embedded dataset of the `train_mvtec` example and the
/// integration tests: 6 categories × (48 train + 10 good + 20 defective test) at 128×128.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyntheticConfig {
    /// Master seed; everything derives from it.
    pub seed: u64,
    /// Square image side in pixels (32..=1024); defect and pattern sizes scale with it.
    pub size: u32,
    /// Normal training images per category.
    pub train_good: usize,
    /// Normal test images per category.
    pub test_good: usize,
    /// Defective test images per category, spread evenly over the category's defect kinds.
    pub test_defective: usize,
    /// Categories to generate, in this order.
    pub categories: Vec<SynthKind>,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            seed: 0x5EED_0001,
            size: 128,
            train_good: 48,
            test_good: 10,
            // Divisible by 4 and 5: every category has 4 or 5 defect kinds, each equally often.
            test_defective: 20,
            categories: SynthKind::ALL.to_vec(),
        }
    }
}

impl SyntheticConfig {
    /// Checks the ranges; `path` only labels the error.
    pub fn validate(&self, path: &Path) -> Result<(), DataError> {
        let bad = |reason: String| Err(DataError::InvalidConfig { path: path.to_path_buf(), reason });
        if !(32..=1024).contains(&self.size) {
            return bad(format!("synthetic size {} is outside 32..=1024", self.size));
        }
        if self.train_good == 0 {
            return bad("synthetic train_good must be at least 1".into());
        }
        if self.categories.is_empty() {
            return bad("synthetic categories must not be empty".into());
        }
        let mut seen = self.categories.clone();
        seen.sort_by_key(|k| k.id());
        seen.dedup();
        if seen.len() != self.categories.len() {
            return bad("synthetic categories contain a duplicate".into());
        }
        if self.train_good + self.test_good + self.test_defective > 100_000 {
            return bad("synthetic image counts are unreasonably large (> 100000)".into());
        }
        Ok(())
    }

    /// Folder name used by [`ensure_synthetic`](super::ensure_synthetic): version, seed, size
    /// and a hash of the whole configuration, so different configurations never share a cache
    /// entry.
    pub fn folder_name(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("synthetic-v{GENERATOR_VERSION}-seed{}-{}px-{:016x}", self.seed, self.size, fnv1a(json.as_bytes()))
    }

    /// Number of PNG files (images and masks) a complete dataset holds.
    pub fn file_count(&self) -> usize {
        self.categories.len() * (self.train_good + self.test_good + 2 * self.test_defective)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x1000_0000_01b3))
}
