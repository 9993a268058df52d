//! Rank correlation: how well one ordering of candidates predicts another (validation metrics
//! against test metrics, say).

use crate::MetricsError;

/// Ranks of `values` (1-based), ties sharing the mean of the ranks they span.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end (0-based) hold ranks start+1..=end; their mean:
        let rank = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Spearman's rank correlation of `a` and `b`: Pearson's correlation of their ranks, ties
/// given average ranks (as `scipy.stats.spearmanr`). `Ok(None)` when either side is constant
/// (no ordering to compare).
///
/// ```
/// // b orders the four candidates as a does, except the last two swapped.
/// let rho = pnpt_metrics::spearman(&[0.1, 0.2, 0.3, 0.4], &[1.0, 2.0, 4.0, 3.0]).unwrap().unwrap();
/// assert!((rho - 0.8).abs() < 1e-12);
/// ```
pub fn spearman(a: &[f64], b: &[f64]) -> Result<Option<f64>, MetricsError> {
    if a.len() != b.len() {
        return Err(MetricsError::LengthMismatch { what: "spearman", expected: a.len(), got: b.len() });
    }
    if a.len() < 2 {
        return Err(MetricsError::Empty { what: "spearman (fewer than two pairs)" });
    }
    for (index, &v) in a.iter().chain(b).enumerate() {
        if !v.is_finite() {
            return Err(MetricsError::NonFinite { what: "spearman", index: index % a.len(), value: v as f32 });
        }
    }
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa == 0.0 || sbb == 0.0 {
        return Ok(None);
    }
    Ok(Some(sab / (saa * sbb).sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
    }

    #[test]
    fn hand_worked_values() {
        // Reversed order: -1.
        assert_eq!(spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap(), Some(-1.0));
        // Monotone but not linear: +1.
        assert_eq!(spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 10.0, 100.0, 1000.0]).unwrap(), Some(1.0));
        // With ties, worked by hand: ranks a = [1.5, 1.5, 3, 4], b = [1, 3, 2, 4];
        // centred a = [-1, -1, 0.5, 1.5], b = [-1.5, 0.5, -0.5, 1.5];
        // sum ab = 1.5 - 0.5 - 0.25 + 2.25 = 3, sum aa = 4.5, sum bb = 5; rho = 3 / sqrt(22.5).
        let rho = spearman(&[0.5, 0.5, 0.7, 0.9], &[1.0, 3.0, 2.0, 4.0]).unwrap().unwrap();
        assert!((rho - 3.0 / 22.5f64.sqrt()).abs() < 1e-12, "{rho}");
    }

    #[test]
    fn degenerate_inputs() {
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).unwrap(), None);
        assert!(spearman(&[1.0, 2.0], &[1.0]).is_err());
        assert!(spearman(&[1.0], &[1.0]).is_err());
        assert!(spearman(&[1.0, f64::NAN], &[1.0, 2.0]).is_err());
    }
}
