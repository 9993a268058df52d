//! pnpt-metrics: exact, threshold-free anomaly-detection metrics.
//!
//! * image level: AUROC, AP, F1-max (with its threshold) of one score per image;
//! * pixel level: AUROC, AP, F1-max over all pixels of all images of a category, and AUPRO up
//!   to an FPR limit (0.3) computed as MVTec AD's official evaluation code does.
//!
//! Every distinct score is a threshold (no fixed grid), ties are exact (tied positives and
//! negatives form one curve step), the cost is one O(n log n) sort, and memory is 4–8 bytes
//! per pixel, so a 70-million-pixel category takes seconds. Degenerate input (a single class,
//! NaN scores, mismatched shapes) is an error rather than a NaN.
//!
//! ```
//! use pnpt_metrics::{evaluate, mean};
//! // Two 1×3 images: the second holds a one-pixel defect.
//! let maps = [0.1, 0.2, 0.1, /**/ 0.1, 0.9, 0.3];
//! let masks = [0, 0, 0, /**/ 0, 1, 0];
//! let labels = [false, true];
//! let image_scores = pnpt_metrics::max_per_map(&maps, 2, 1, 3).unwrap();
//! let m = evaluate(&maps, &masks, &labels, &image_scores, 2, 1, 3).unwrap();
//! assert_eq!((m.image_auroc, m.pixel_auroc, m.pixel_ap), (1.0, 1.0, 1.0));
//! assert!((m.aupro - 1.0).abs() < 1e-12);
//! let overall = mean(&[m.clone(), m]).unwrap();
//! assert_eq!(overall.image_ap, 1.0);
//! ```

mod correlation;
mod pixel;
mod ranking;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use correlation::spearman;
pub use pixel::{AUPRO_FPR_LIMIT, PixelMetrics, aupro, pixel_metrics};
pub use ranking::{F1Max, RankingMetrics, auroc, average_precision, f1_max, ranking_metrics};

/// Why a metric could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// Only one class present: AUROC, AP, F1 and PRO are undefined.
    #[error("{what}: need both classes, got {positives} anomalous and {negatives} normal")]
    SingleClass { what: &'static str, positives: u64, negatives: u64 },
    /// Two inputs that must pair up element by element differ in length.
    #[error("{what}: expected {expected} values, got {got}")]
    LengthMismatch { what: &'static str, expected: usize, got: usize },
    /// A NaN or infinite score: it has no place in a ranking.
    #[error("{what}: non-finite score {value} at index {index}")]
    NonFinite { what: &'static str, index: usize, value: f32 },
    /// A flat `n × h × w` buffer of the wrong length.
    #[error("{what}: {got} values do not match the shape {n}x{h}x{w}")]
    ShapeMismatch { what: &'static str, n: usize, h: usize, w: usize, got: usize },
    /// The AUPRO FPR limit must lie in (0, 1].
    #[error("FPR limit must be in (0, 1], got {limit}")]
    InvalidFprLimit { limit: f64 },
    /// A count beyond what the implementation indexes.
    #[error("{what}: {count} exceeds the supported maximum {max}")]
    TooLarge { what: &'static str, count: u64, max: u64 },
    /// Nothing to compute on.
    #[error("{what}: empty input")]
    Empty { what: &'static str },
}

/// All metrics of one category (or their mean over categories, see [`mean`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CategoryMetrics {
    /// Image AUROC.
    pub image_auroc: f64,
    /// Image average precision.
    pub image_ap: f64,
    /// Image F1-max.
    pub image_f1_max: f64,
    /// Image score reaching `image_f1_max` (`score >= threshold` is anomalous).
    pub image_threshold: f64,
    /// Pixel AUROC over all pixels of the category.
    pub pixel_auroc: f64,
    /// Pixel average precision.
    pub pixel_ap: f64,
    /// Pixel F1-max.
    pub pixel_f1_max: f64,
    /// Pixel score reaching `pixel_f1_max`.
    pub pixel_threshold: f64,
    /// AUPRO up to FPR [`AUPRO_FPR_LIMIT`] (0.3), normalised to [0, 1].
    pub aupro: f64,
}

/// Image score of each map: its maximum (the usual reduction for patch-based detectors).
///
/// # Errors
/// [`MetricsError::ShapeMismatch`] if `maps` is not `n·h·w` long, [`MetricsError::Empty`] if
/// `h·w == 0`, [`MetricsError::NonFinite`] for a NaN or infinite value.
pub fn max_per_map(maps: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<f32>, MetricsError> {
    let hw = h.checked_mul(w).filter(|hw| hw.checked_mul(n) == Some(maps.len()));
    let Some(hw) = hw else {
        return Err(MetricsError::ShapeMismatch { what: "anomaly maps", n, h, w, got: maps.len() });
    };
    if hw == 0 {
        return Err(MetricsError::Empty { what: "anomaly maps" });
    }
    ranking::check_finite("anomaly maps", maps)?;
    Ok(maps.par_chunks(hw).map(|m| m.iter().copied().fold(f32::NEG_INFINITY, f32::max)).collect())
}

/// Every metric of one category.
///
/// `maps`/`masks` are `n × h × w` in C order (mask non-zero = anomalous pixel), `labels` and
/// `image_scores` one per image (`true` = anomalous image). Image metrics rank `image_scores`
/// (e.g. from [`max_per_map`]); pixel metrics and AUPRO@0.3 come from one sort of all pixels
/// ([`pixel_metrics`]).
///
/// # Errors
/// Any [`MetricsError`] of [`ranking_metrics`] (image level) or [`pixel_metrics`], and
/// [`MetricsError::LengthMismatch`] if `labels` or `image_scores` do not have `n` entries.
pub fn evaluate(
    maps: &[f32],
    masks: &[u8],
    labels: &[bool],
    image_scores: &[f32],
    n: usize,
    h: usize,
    w: usize,
) -> Result<CategoryMetrics, MetricsError> {
    for (what, got) in [("image labels", labels.len()), ("image scores", image_scores.len())] {
        if got != n {
            return Err(MetricsError::LengthMismatch { what, expected: n, got });
        }
    }
    let image = ranking::ranking_metrics_named(image_scores, labels, "image scores", "image labels")?;
    let pixel = pixel_metrics(maps, masks, n, h, w, AUPRO_FPR_LIMIT)?;
    Ok(CategoryMetrics {
        image_auroc: image.auroc,
        image_ap: image.ap,
        image_f1_max: image.f1_max.f1,
        image_threshold: image.f1_max.threshold as f64,
        pixel_auroc: pixel.auroc,
        pixel_ap: pixel.ap,
        pixel_f1_max: pixel.f1_max.f1,
        pixel_threshold: pixel.f1_max.threshold as f64,
        aupro: pixel.aupro,
    })
}

/// Unweighted mean over categories of every field (the usual MVTec "mean" row).
///
/// The mean thresholds are plain averages, reported for completeness only: a threshold is
/// specific to its category's score scale.
///
/// # Errors
/// [`MetricsError::Empty`] for no categories.
pub fn mean(per_category: &[CategoryMetrics]) -> Result<CategoryMetrics, MetricsError> {
    if per_category.is_empty() {
        return Err(MetricsError::Empty { what: "categories" });
    }
    let k = per_category.len() as f64;
    let avg = |f: fn(&CategoryMetrics) -> f64| per_category.iter().map(f).sum::<f64>() / k;
    Ok(CategoryMetrics {
        image_auroc: avg(|m| m.image_auroc),
        image_ap: avg(|m| m.image_ap),
        image_f1_max: avg(|m| m.image_f1_max),
        image_threshold: avg(|m| m.image_threshold),
        pixel_auroc: avg(|m| m.pixel_auroc),
        pixel_ap: avg(|m| m.pixel_ap),
        pixel_f1_max: avg(|m| m.pixel_f1_max),
        pixel_threshold: avg(|m| m.pixel_threshold),
        aupro: avg(|m| m.aupro),
    })
}
