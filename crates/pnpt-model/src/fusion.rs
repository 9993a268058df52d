//! Fusing PNPT's reconstruction map with the patch memory's map.
//!
//! The two maps live on different scales (a sum of three cosine distances vs a Euclidean
//! feature distance) that also differ from class to class, so each is first standardised with
//! the mean and standard deviation of its own values on the held-out normal images of the
//! image's retrieved class — images never trained on and never put in a memory bank:
//! `z = (map − μ_c) / σ_c`. The fused map is `(1 − w) z_pnpt + w z_memory`. Standardising is an
//! affine map per class, so within one class a single method's ranking is unchanged; what the
//! weight trades is how much each map's deviation from normal counts.
//!
//! **Per-position standardisation of PNPT's map** ([`PositionalStats`], `scoring.positional`).
//! Some regions of a product are always harder to reconstruct than others (edges, printed
//! marks, the rim of a bottle), and with one mean and deviation per class those regions decide
//! the image score of normal images. With positional statistics, each position `x` of PNPT's
//! map is standardised by the mean and deviation of that position over the class's normal
//! training maps: `z(x) = (map(x) − μ_c(x)) / max(σ_c(x), σ_c)`. The floor `σ_c` (the class's
//! held-out pixel deviation above) keeps near-constant background positions from blowing small
//! differences up. The training maps are biased low (the model has seen those images); the
//! bias is a shift shared by all test images of the class, and the choice whether to use it is
//! made on held-out images (`pnpt::validation`), which are not in the statistics. The memory
//! map is not standardised per position: training images are in its banks, so their distances
//! are near zero and say nothing about held-out ones.
//!
//! ```
//! use pnpt_model::fusion::{combine_maps, MapStats};
//! let pnpt = [1.0, 3.0];
//! let memory = [10.0, 10.0];
//! let stats = (MapStats { mean: 1.0, std: 2.0 }, MapStats { mean: 10.0, std: 5.0 });
//! // (1 - 0.5) * (3 - 1) / 2 + 0.5 * (10 - 10) / 5 = 0.5
//! assert_eq!(combine_maps(Some(&pnpt), Some(&memory), stats, 0.5)[1], 0.5);
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Mean and standard deviation of a map's values on normal images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MapStats {
    /// Mean pixel value.
    pub mean: f32,
    /// Standard deviation of the pixel values (floored, never 0).
    pub std: f32,
}

impl MapStats {
    /// No standardisation.
    pub const IDENTITY: MapStats = MapStats { mean: 0.0, std: 1.0 };

    /// Statistics of `values`; `None` when there are none (or none finite).
    pub fn of<'a>(values: impl IntoIterator<Item = &'a f32>) -> Option<Self> {
        let (mut n, mut sum, mut sq) = (0usize, 0.0f64, 0.0f64);
        for &v in values {
            if v.is_finite() {
                n += 1;
                sum += v as f64;
                sq += (v as f64) * (v as f64);
            }
        }
        if n == 0 {
            return None;
        }
        let mean = sum / n as f64;
        let var = (sq / n as f64 - mean * mean).max(0.0);
        // A constant map (e.g. a test double) must not divide by zero.
        let std = var.sqrt().max(1e-6 * mean.abs()).max(1e-12);
        Some(Self { mean: mean as f32, std: std as f32 })
    }
}

/// Per-class statistics of both maps on held-out normal images (`normalization.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    /// PNPT map statistics per category.
    pub pnpt: BTreeMap<String, MapStats>,
    /// Memory map statistics per category.
    pub memory: BTreeMap<String, MapStats>,
    /// Over all held-out images, for categories without their own.
    pub global_pnpt: Option<MapStats>,
    /// Over all held-out images, for categories without their own.
    pub global_memory: Option<MapStats>,
    /// Classes with per-position statistics, in the order of `positional.npy` (set when saved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub positional_classes: Vec<String>,
}

impl Normalization {
    /// Fits the statistics from the maps (`px` values each) of normal images whose categories
    /// are `categories`.
    pub fn fit(categories: &[String], pnpt: Option<&[f32]>, memory: Option<&[f32]>, px: usize) -> Self {
        let per_class = |maps: Option<&[f32]>| -> (BTreeMap<String, MapStats>, Option<MapStats>) {
            let Some(maps) = maps else { return (BTreeMap::new(), None) };
            let mut names: Vec<&String> = categories.iter().collect();
            names.sort();
            names.dedup();
            let stats = names
                .into_iter()
                .filter_map(|c| {
                    let values = categories
                        .iter()
                        .enumerate()
                        .filter(|(_, x)| *x == c)
                        .flat_map(|(i, _)| &maps[i * px..(i + 1) * px]);
                    MapStats::of(values).map(|s| (c.clone(), s))
                })
                .collect();
            (stats, MapStats::of(maps))
        };
        let (pnpt, global_pnpt) = per_class(pnpt);
        let (memory, global_memory) = per_class(memory);
        Self { pnpt, memory, global_pnpt, global_memory, positional_classes: Vec::new() }
    }

    /// The statistics `(pnpt, memory)` used for images retrieved as `category`.
    pub fn for_category(&self, category: &str) -> (MapStats, MapStats) {
        let pick = |own: &BTreeMap<String, MapStats>, global: Option<MapStats>| {
            own.get(category).copied().or(global).unwrap_or(MapStats::IDENTITY)
        };
        (pick(&self.pnpt, self.global_pnpt), pick(&self.memory, self.global_memory))
    }
}

/// One image's final map from its component maps: the PNPT map alone, the memory map alone
/// (both in their own units), or `(1 − w) z_pnpt + w z_memory` when both are given.
pub fn combine_maps(
    pnpt: Option<&[f32]>,
    memory: Option<&[f32]>,
    stats: (MapStats, MapStats),
    weight: f64,
) -> Vec<f32> {
    match (pnpt, memory) {
        (Some(p), None) => p.to_vec(),
        (None, Some(m)) => m.to_vec(),
        (None, None) => Vec::new(),
        (Some(p), Some(m)) => {
            let (sp, sm) = stats;
            let (a, b) = ((1.0 - weight) as f32 / sp.std, weight as f32 / sm.std);
            p.iter().zip(m).map(|(&x, &y)| a * (x - sp.mean) + b * (y - sm.mean)).collect()
        }
    }
}

/// Per-class, per-position mean and standard deviation of PNPT's map on normal training images
/// (see the module docs), stored in a detector as `positional.npy`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PositionalStats {
    /// Values per map (`size × size`).
    pub px: usize,
    /// Per class: `(mean, std)`, `px` values each.
    pub classes: BTreeMap<String, (Vec<f32>, Vec<f32>)>,
}

impl PositionalStats {
    /// Classes with fewer normal maps than this get no statistics (and keep the per-class
    /// standardisation): two images give a deviation of sorts, one none.
    pub const MIN_IMAGES: usize = 2;

    /// Fits the statistics from maps (`px` values each) whose classes are `categories`: the
    /// class each map was computed with, i.e. the retrieved one, since that is the class whose
    /// statistics will standardise it at inference.
    pub fn fit(categories: &[String], maps: &[f32], px: usize) -> Self {
        let mut sums: BTreeMap<&String, (usize, Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for (i, c) in categories.iter().enumerate() {
            let map = &maps[i * px..(i + 1) * px];
            if map.iter().any(|v| !v.is_finite()) {
                continue;
            }
            let (n, s, q) = sums.entry(c).or_insert_with(|| (0, vec![0.0; px], vec![0.0; px]));
            *n += 1;
            for ((s, q), &v) in s.iter_mut().zip(q.iter_mut()).zip(map) {
                *s += v as f64;
                *q += (v as f64) * (v as f64);
            }
        }
        let classes = sums
            .into_iter()
            .filter(|(_, (n, _, _))| *n >= Self::MIN_IMAGES)
            .map(|(c, (n, s, q))| {
                let n = n as f64;
                let mean: Vec<f32> = s.iter().map(|s| (s / n) as f32).collect();
                let std: Vec<f32> =
                    s.iter().zip(&q).map(|(s, q)| ((q / n - (s / n) * (s / n)).max(0.0)).sqrt() as f32).collect();
                (c.clone(), (mean, std))
            })
            .collect();
        Self { px, classes }
    }

    /// `(map − μ_c) / max(σ_c, floor)` position by position; `None` when the class has no
    /// statistics or the map has another size.
    pub fn standardise(&self, category: &str, map: &[f32], floor: f32) -> Option<Vec<f32>> {
        let (mean, std) = self.classes.get(category)?;
        if map.len() != mean.len() {
            return None;
        }
        let floor = floor.max(1e-12);
        Some(map.iter().zip(mean).zip(std).map(|((&m, &mu), &sd)| (m - mu) / sd.max(floor)).collect())
    }

    /// Whether there are no statistics.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_stats_by_hand() {
        // Class a: two maps of 2 positions, [1, 4] and [3, 4]: means [2, 4], stds [1, 0].
        // Class b has one map only: no statistics.
        let cats = vec!["a".to_string(), "b".to_string(), "a".to_string()];
        let maps = [1.0, 4.0, 9.0, 9.0, 3.0, 4.0];
        let p = PositionalStats::fit(&cats, &maps, 2);
        assert_eq!(p.classes["a"], (vec![2.0, 4.0], vec![1.0, 0.0]));
        assert!(!p.classes.contains_key("b"));
        // Floor 0.5: position 0 divides by its own std 1, position 1 by the floor.
        assert_eq!(p.standardise("a", &[4.0, 5.0], 0.5).unwrap(), vec![2.0, 2.0]);
        // Floor 2 exceeds both stds.
        assert_eq!(p.standardise("a", &[4.0, 5.0], 2.0).unwrap(), vec![1.0, 0.5]);
        assert!(p.standardise("b", &[4.0, 5.0], 1.0).is_none());
        assert!(p.standardise("a", &[4.0], 1.0).is_none());
    }

    #[test]
    fn stats_match_a_hand_worked_case_and_fall_back() {
        // Values 1, 2, 3, 4: mean 2.5, population variance 1.25.
        let s = MapStats::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!((s.mean - 2.5).abs() < 1e-6 && (s.std - 1.25f32.sqrt()).abs() < 1e-6);
        assert!(MapStats::of(&[f32::NAN]).is_none());
        assert!(MapStats::of(&[2.0, 2.0]).unwrap().std > 0.0);
        let cats = vec!["a".to_string(), "b".to_string(), "a".to_string()];
        // Two values per image: a = {0, 2, 4, 6}, b = {10, 10}.
        let maps = [0.0, 2.0, 10.0, 10.0, 4.0, 6.0];
        let n = Normalization::fit(&cats, Some(&maps), None, 2);
        assert_eq!(n.pnpt["a"].mean, 3.0);
        assert!((n.pnpt["a"].std - 5.0f32.sqrt()).abs() < 1e-6);
        assert_eq!(n.pnpt["b"].mean, 10.0);
        assert_eq!(n.for_category("zzz").0, n.global_pnpt.unwrap());
        assert_eq!(n.for_category("a").1, MapStats::IDENTITY);
    }
}
