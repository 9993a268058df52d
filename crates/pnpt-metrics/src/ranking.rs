//! Threshold-free ranking metrics (AUROC, AP, F1-max) from one sort.
//!
//! Scores are turned into order-preserving `u32` keys and split by label, so a sort costs
//! 4 bytes per score instead of a 16-byte `(f32, bool)` tuple; the two sorted lists are then
//! walked together from the top, one step per distinct score, which is what makes ties exact.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::MetricsError;

/// Order-preserving map from a finite `f32` to `u32`: `a < b` iff `key(a) < key(b)`.
#[inline]
pub(crate) fn key(x: f32) -> u32 {
    // +0.0 and -0.0 compare equal as scores, so they must share a key.
    let x = if x == 0.0 { 0.0 } else { x };
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 { !b } else { b | 0x8000_0000 }
}

/// Inverse of [`key`].
#[inline]
pub(crate) fn unkey(k: u32) -> f32 {
    let b = if k & 0x8000_0000 != 0 { k & 0x7fff_ffff } else { !k };
    f32::from_bits(b)
}

/// Index and value of the first non-finite score, if any.
pub(crate) fn check_finite(what: &'static str, scores: &[f32]) -> Result<(), MetricsError> {
    match scores.par_iter().position_first(|x| !x.is_finite()) {
        Some(index) => Err(MetricsError::NonFinite { what, index, value: scores[index] }),
        None => Ok(()),
    }
}

/// Compensated (Neumaier) summation: sums of up to ~10^8 terms stay accurate to ~1 ulp.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Sum {
    sum: f64,
    comp: f64,
}

impl Sum {
    #[inline]
    pub(crate) fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.comp += (self.sum - t) + x;
        } else {
            self.comp += (x - t) + self.sum;
        }
        self.sum = t;
    }

    #[inline]
    pub(crate) fn value(&self) -> f64 {
        self.sum + self.comp
    }
}

/// The best F1 over all thresholds and the threshold that reaches it.
///
/// A sample is predicted anomalous when `score >= threshold`, as in scikit-learn's
/// `precision_recall_curve`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct F1Max {
    /// `max 2·P·R / (P + R)` over every distinct score used as threshold.
    pub f1: f64,
    /// The score reaching `f1`; on an exact tie in F1 the lowest such score.
    pub threshold: f32,
}

/// AUROC, AP and F1-max of one set of scores, computed from a single sort.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct RankingMetrics {
    /// Area under the ROC curve; tied scores count one half (the ROC's diagonal step).
    pub auroc: f64,
    /// Average precision, scikit-learn's `average_precision_score`: `Σ (Rₖ − Rₖ₋₁)·Pₖ`, no interpolation.
    pub ap: f64,
    /// Best F1 and its threshold.
    pub f1_max: F1Max,
}

/// Accumulates AUROC, AP and F1-max over distinct scores visited in descending order.
pub(crate) struct RankAcc {
    n_pos: u64,
    n_neg: u64,
    tp: u64,
    fp: u64,
    /// Twice the number of correctly ordered (positive, negative) pairs, ties counting one:
    /// integer, so AUROC is exact up to the final division.
    auc2: u128,
    /// Σ over groups of `dpos · precision`; AP is this over `n_pos`.
    ap: Sum,
    best_tp: u64,
    best_fp: u64,
    best_key: u32,
}

impl RankAcc {
    pub(crate) fn new(n_pos: u64, n_neg: u64) -> Self {
        Self { n_pos, n_neg, tp: 0, fp: 0, auc2: 0, ap: Sum::default(), best_tp: 0, best_fp: 0, best_key: 0 }
    }

    /// One distinct score (`key`) holding `dpos` positives and `dneg` negatives.
    #[inline]
    pub(crate) fn push(&mut self, key: u32, dpos: u64, dneg: u64) {
        // Each new negative is outranked by every earlier positive and tied with this group's.
        self.auc2 += dneg as u128 * (2 * self.tp + dpos) as u128;
        self.tp += dpos;
        self.fp += dneg;
        if dpos > 0 {
            self.ap.add(dpos as f64 * self.tp as f64 / (self.tp + self.fp) as f64);
        }
        // F1 = 2·tp / (n_pos + tp + fp); compared as exact fractions so ties are real ties.
        // `>=` lets a later (lower) threshold win a tie, like `np.argmax` over the ascending
        // thresholds of `precision_recall_curve`.
        let lhs = self.tp as u128 * (self.n_pos + self.best_tp + self.best_fp) as u128;
        let rhs = self.best_tp as u128 * (self.n_pos + self.tp + self.fp) as u128;
        if lhs >= rhs {
            self.best_tp = self.tp;
            self.best_fp = self.fp;
            self.best_key = key;
        }
    }

    pub(crate) fn finish(&self) -> RankingMetrics {
        let pairs = self.n_pos as f64 * self.n_neg as f64;
        RankingMetrics {
            auroc: self.auc2 as f64 / (2.0 * pairs),
            ap: self.ap.value() / self.n_pos as f64,
            f1_max: F1Max {
                f1: 2.0 * self.best_tp as f64 / (self.n_pos + self.best_tp + self.best_fp) as f64,
                threshold: unkey(self.best_key),
            },
        }
    }
}

/// Visits the union of two ascending-sorted lists from the largest key down, calling
/// `group(key, negatives, positives)` once per distinct key with the count of negatives and
/// the slice of positives holding that key.
pub(crate) fn walk_desc<P: Copy>(
    neg: &[u32],
    pos: &[P],
    pos_key: impl Fn(P) -> u32,
    mut group: impl FnMut(u32, u64, &[P]),
) {
    let (mut i, mut j) = (neg.len(), pos.len());
    while i > 0 || j > 0 {
        let k = match (i > 0, j > 0) {
            (true, true) => neg[i - 1].max(pos_key(pos[j - 1])),
            (true, false) => neg[i - 1],
            _ => pos_key(pos[j - 1]),
        };
        let (i0, j0) = (i, j);
        while i > 0 && neg[i - 1] == k {
            i -= 1;
        }
        while j > 0 && pos_key(pos[j - 1]) == k {
            j -= 1;
        }
        group(k, (i0 - i) as u64, &pos[j..j0]);
    }
}

/// Error unless both classes are present.
pub(crate) fn need_both(what: &'static str, pos: u64, neg: u64) -> Result<(), MetricsError> {
    if pos == 0 || neg == 0 { Err(MetricsError::SingleClass { what, positives: pos, negatives: neg }) } else { Ok(()) }
}

/// AUROC, AP and F1-max of `scores` against `labels` (`true` = anomalous) from one sort.
///
/// Exact (every distinct score is a threshold), O(n log n), 4 bytes of scratch per score.
///
/// # Errors
/// [`MetricsError::LengthMismatch`] if the slices differ in length,
/// [`MetricsError::NonFinite`] for a NaN or infinite score,
/// [`MetricsError::SingleClass`] if all labels are equal (or the input is empty).
///
/// # Example
/// ```
/// use pnpt_metrics::ranking_metrics;
/// let m = ranking_metrics(&[0.9, 0.8, 0.7, 0.6], &[true, false, true, false]).unwrap();
/// assert_eq!(m.auroc, 0.75);
/// assert!((m.ap - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
/// assert_eq!((m.f1_max.f1, m.f1_max.threshold), (0.8, 0.7));
/// ```
pub fn ranking_metrics(scores: &[f32], labels: &[bool]) -> Result<RankingMetrics, MetricsError> {
    ranking_metrics_named(scores, labels, "scores", "labels")
}

/// [`ranking_metrics`] with the inputs' names for error messages.
pub(crate) fn ranking_metrics_named(
    scores: &[f32],
    labels: &[bool],
    scores_name: &'static str,
    labels_name: &'static str,
) -> Result<RankingMetrics, MetricsError> {
    if scores.len() != labels.len() {
        return Err(MetricsError::LengthMismatch { what: labels_name, expected: scores.len(), got: labels.len() });
    }
    check_finite(scores_name, scores)?;
    let n_pos = labels.par_iter().filter(|&&l| l).count();
    let n_neg = labels.len() - n_pos;
    need_both(labels_name, n_pos as u64, n_neg as u64)?;

    let mut pos = Vec::with_capacity(n_pos);
    let mut neg = Vec::with_capacity(n_neg);
    for (&s, &l) in scores.iter().zip(labels) {
        if l {
            pos.push(key(s));
        } else {
            neg.push(key(s));
        }
    }
    pos.par_sort_unstable();
    neg.par_sort_unstable();

    let mut acc = RankAcc::new(n_pos as u64, n_neg as u64);
    walk_desc(&neg, &pos, |k| k, |k, dneg, p| acc.push(k, p.len() as u64, dneg));
    Ok(acc.finish())
}

/// Area under the ROC curve (see [`ranking_metrics`] for errors and cost).
///
/// ```
/// // One tie between a positive and a negative counts one half.
/// let a = pnpt_metrics::auroc(&[0.5, 0.5, 0.1], &[true, false, false]).unwrap();
/// assert_eq!(a, 0.75);
/// ```
pub fn auroc(scores: &[f32], labels: &[bool]) -> Result<f64, MetricsError> {
    ranking_metrics(scores, labels).map(|m| m.auroc)
}

/// Average precision as scikit-learn's `average_precision_score` (step-wise, no
/// interpolation); see [`ranking_metrics`] for errors and cost.
pub fn average_precision(scores: &[f32], labels: &[bool]) -> Result<f64, MetricsError> {
    ranking_metrics(scores, labels).map(|m| m.ap)
}

/// Maximum F1 over all distinct thresholds and its threshold; see [`ranking_metrics`].
pub fn f1_max(scores: &[f32], labels: &[bool]) -> Result<F1Max, MetricsError> {
    ranking_metrics(scores, labels).map(|m| m.f1_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_preserves_order_and_round_trips() {
        let xs = [
            f32::MIN,
            -1e30,
            -1.0,
            -f32::MIN_POSITIVE,
            -1e-45,
            0.0,
            1e-45,
            f32::MIN_POSITIVE,
            0.5,
            1.0,
            3e38,
            f32::MAX,
        ];
        for w in xs.windows(2) {
            assert!(key(w[0]) < key(w[1]), "{} vs {}", w[0], w[1]);
        }
        for &x in &xs {
            assert_eq!(unkey(key(x)), x);
        }
        assert_eq!(key(-0.0), key(0.0));
    }

    #[test]
    fn neumaier_beats_naive_sum() {
        let mut s = Sum::default();
        s.add(1e16);
        for _ in 0..10 {
            s.add(1.0);
        }
        s.add(-1e16);
        assert_eq!(s.value(), 10.0);
    }
}
