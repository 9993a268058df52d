//! Per-category decision thresholds and their calibration on held-out normal images.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Per-category decision thresholds calibrated on held-out normal images.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// The quantile used.
    pub quantile: f64,
    /// Threshold per category.
    pub per_category: BTreeMap<String, f32>,
    /// Number of held-out normal images per category.
    pub counts: BTreeMap<String, usize>,
    /// Quantile over all held-out scores (fallback for categories without their own).
    pub global: Option<f32>,
    /// Pixel threshold per category ([`PIXEL_QUANTILE`](super::PIXEL_QUANTILE) of the held-out normal
    /// pixels); empty in detectors saved before it existed.
    #[serde(default)]
    pub pixel: BTreeMap<String, f32>,
    /// Median held-out normal pixel per category (the bottom of a heat map's colour scale).
    #[serde(default)]
    pub pixel_median: BTreeMap<String, f32>,
    /// Retrieval-distance limit per class (see [`super::prediction`]); empty in older detectors.
    #[serde(default)]
    pub retrieval: BTreeMap<String, f32>,
}

impl Thresholds {
    /// Calibrates from `(category, score)` pairs of normal images.
    pub fn calibrate(quantile: f64, scores: &[(String, f32)]) -> Self {
        let mut by_cat: BTreeMap<String, Vec<f32>> = BTreeMap::new();
        for (c, s) in scores {
            by_cat.entry(c.clone()).or_default().push(*s);
        }
        let all: Vec<f32> = scores.iter().map(|(_, s)| *s).collect();
        Self {
            quantile,
            counts: by_cat.iter().map(|(c, v)| (c.clone(), v.len())).collect(),
            per_category: by_cat.into_iter().filter_map(|(c, v)| quantile_of(v, quantile).map(|q| (c, q))).collect(),
            global: quantile_of(all, quantile),
            ..Default::default()
        }
    }

    /// The threshold for `category` (its own, else the global one).
    pub fn for_category(&self, category: &str) -> Option<f32> {
        self.per_category.get(category).copied().or(self.global)
    }
}

/// Quantile with linear interpolation between order statistics (numpy's default); `None` for
/// no values.
pub fn quantile_of(mut values: Vec<f32>, q: f64) -> Option<f32> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f32::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(values.len() - 1);
    let frac = (pos - lo as f64) as f32;
    Some(values[lo] + (values[hi] - values[lo]) * frac)
}
