//! Pixel-level metrics: AUROC, AP, F1-max and AUPRO from one sort of all pixels.
//!
//! Normal pixels become `u32` score keys and anomalous pixels `u64` keys carrying their
//! ground-truth region in the low half, so one pair of sorts serves both the ranking metrics
//! (normal = negative, anomalous = positive) and the PRO curve (which needs each anomalous
//! pixel's region). Memory: 4 bytes per normal and 8 per anomalous pixel, plus one label buffer
//! per worker thread; about 300 MB for 70 million pixels.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::MetricsError;
use crate::ranking::{F1Max, RankAcc, Sum, check_finite, key, need_both, walk_desc};

/// The FPR limit of the standard MVTec AD AUPRO.
pub const AUPRO_FPR_LIMIT: f64 = 0.3;

/// All pixel-level metrics of one category.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct PixelMetrics {
    /// Pixel AUROC over all pixels of all images.
    pub auroc: f64,
    /// Pixel average precision (scikit-learn definition).
    pub ap: f64,
    /// Pixel F1-max and its threshold.
    pub f1_max: F1Max,
    /// Normalised area under the PRO curve up to the FPR limit.
    pub aupro: f64,
}

/// Checks `maps`/`masks` against `n × h × w` and returns `(h·w, n·h·w)`.
fn check_shape(maps: &[f32], masks: &[u8], n: usize, h: usize, w: usize) -> Result<(usize, usize), MetricsError> {
    let hw = h.checked_mul(w);
    let total = hw.and_then(|hw| hw.checked_mul(n));
    let (Some(hw), Some(total)) = (hw, total) else {
        return Err(MetricsError::TooLarge { what: "n*h*w", count: u64::MAX, max: usize::MAX as u64 });
    };
    for (what, got) in [("anomaly maps", maps.len()), ("masks", masks.len())] {
        if got != total {
            return Err(MetricsError::ShapeMismatch { what, n, h, w, got });
        }
    }
    Ok((hw, total))
}

/// Labels the 8-connected regions of non-zero `mask` pixels: `labels[p]` becomes `r + 1` for
/// region `r` (0 stays background); returns the region sizes.
///
/// 8-connectivity matches `scipy.ndimage.label(mask, np.ones((3, 3)))` in MVTec's evaluation.
fn label_regions(mask: &[u8], h: usize, w: usize, labels: &mut Vec<u32>, stack: &mut Vec<usize>) -> Vec<u32> {
    labels.clear();
    labels.resize(h * w, 0);
    let mut sizes = Vec::new();
    for start in 0..h * w {
        if mask[start] == 0 || labels[start] != 0 {
            continue;
        }
        let id = sizes.len() as u32 + 1;
        let mut size = 0u32;
        labels[start] = id;
        stack.push(start);
        while let Some(p) = stack.pop() {
            size += 1;
            let (y, x) = (p / w, p % w);
            for ny in y.saturating_sub(1)..=(y + 1).min(h - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(w - 1) {
                    let q = ny * w + nx;
                    if mask[q] != 0 && labels[q] == 0 {
                        labels[q] = id;
                        stack.push(q);
                    }
                }
            }
        }
        sizes.push(size);
    }
    sizes
}

/// Splits `v` into consecutive mutable slices of the given lengths.
fn split_by<'a, T>(mut v: &'a mut [T], lens: &[usize]) -> Vec<&'a mut [T]> {
    let mut out = Vec::with_capacity(lens.len());
    for &len in lens {
        let (head, tail) = v.split_at_mut(len);
        out.push(head);
        v = tail;
    }
    out
}

/// Sorted pixel keys: normal pixels as score keys, anomalous pixels as `score key << 32 | region`.
struct PixelKeys {
    neg: Vec<u32>,
    pos: Vec<u64>,
    /// `1 / size` of each ground-truth region, indexed by the global region id.
    inv_size: Vec<f64>,
}

fn pixel_keys(maps: &[f32], masks: &[u8], n: usize, h: usize, w: usize) -> Result<PixelKeys, MetricsError> {
    let (hw, _) = check_shape(maps, masks, n, h, w)?;
    check_finite("anomaly maps", maps)?;
    if hw == 0 {
        return Err(MetricsError::SingleClass { what: "masks", positives: 0, negatives: 0 });
    }
    let pos_per_image: Vec<usize> = masks.par_chunks(hw).map(|m| m.iter().filter(|&&v| v != 0).count()).collect();
    let n_pos: usize = pos_per_image.iter().sum();
    let n_neg = n * hw - n_pos;
    need_both("masks", n_pos as u64, n_neg as u64)?;
    let neg_per_image: Vec<usize> = pos_per_image.iter().map(|&p| hw - p).collect();

    // vec![0; n] comes from calloc: no up-front cost for the untouched pages.
    let mut neg = vec![0u32; n_neg];
    let mut pos = vec![0u64; n_pos];
    let sizes: Vec<Vec<u32>> = maps
        .par_chunks(hw)
        .zip(masks.par_chunks(hw))
        .zip(split_by(&mut neg, &neg_per_image).into_par_iter())
        .zip(split_by(&mut pos, &pos_per_image).into_par_iter())
        .map_init(
            || (Vec::new(), Vec::new()),
            |(labels, stack), (((map, mask), neg), pos)| {
                if pos.is_empty() {
                    for (d, &s) in neg.iter_mut().zip(map) {
                        *d = key(s);
                    }
                    return Vec::new();
                }
                let sizes = label_regions(mask, h, w, labels, stack);
                let (mut i, mut j) = (0, 0);
                for p in 0..hw {
                    if mask[p] == 0 {
                        neg[i] = key(map[p]);
                        i += 1;
                    } else {
                        // Local region id for now; made global below once all counts are known.
                        pos[j] = (key(map[p]) as u64) << 32 | (labels[p] - 1) as u64;
                        j += 1;
                    }
                }
                sizes
            },
        )
        .collect();

    let n_regions: usize = sizes.iter().map(Vec::len).sum();
    if n_regions > u32::MAX as usize {
        return Err(MetricsError::TooLarge {
            what: "ground-truth regions",
            count: n_regions as u64,
            max: u32::MAX as u64,
        });
    }
    let mut offsets = Vec::with_capacity(n);
    let mut off = 0u64;
    for s in &sizes {
        offsets.push(off);
        off += s.len() as u64;
    }
    split_by(&mut pos, &pos_per_image)
        .into_par_iter()
        .zip(offsets)
        .for_each(|(slice, off)| slice.iter_mut().for_each(|k| *k += off));
    let inv_size = sizes.iter().flatten().map(|&s| 1.0 / s as f64).collect();

    neg.par_sort_unstable();
    pos.par_sort_unstable();
    Ok(PixelKeys { neg, pos, inv_size })
}

/// Integrates the PRO curve up to `limit` as MVTec's `trapezoid(fprs, pros, x_max=limit)`.
struct ProAcc {
    n_neg: f64,
    n_regions: f64,
    limit: f64,
    cum_neg: u64,
    cum_pro: Sum,
    prev: (f64, f64),
    area: f64,
    done: bool,
}

impl ProAcc {
    fn new(n_neg: u64, n_regions: usize, limit: f64) -> Self {
        Self {
            n_neg: n_neg as f64,
            n_regions: n_regions as f64,
            limit,
            cum_neg: 0,
            cum_pro: Sum::default(),
            prev: (0.0, 0.0), // the curve starts at (0, 0)
            area: 0.0,
            done: false,
        }
    }

    /// Adds one merged curve point (one distinct score): `dneg` normal pixels and `dpro`
    /// summed region-overlap gain.
    fn push(&mut self, dneg: u64, dpro: f64) {
        if self.done {
            return;
        }
        self.cum_neg += dneg;
        self.cum_pro.add(dpro);
        // Clipped to 1 like MVTec's code, against rounding in the running sums.
        let x = (self.cum_neg as f64 / self.n_neg).min(1.0);
        let y = (self.cum_pro.value() / self.n_regions).min(1.0);
        let (x0, y0) = self.prev;
        if x <= self.limit {
            self.area += 0.5 * (x - x0) * (y + y0);
            self.prev = (x, y);
        } else {
            // First point past the limit: close with the linearly interpolated value at it.
            let yi = y0 + (y - y0) * (self.limit - x0) / (x - x0);
            self.area += 0.5 * (yi + y0) * (self.limit - x0);
            self.done = true;
        }
    }

    fn finish(&self) -> f64 {
        // The final (1, 1) point adds nothing: the last merged point already is (1, 1).
        self.area / self.limit
    }
}

/// Pixel AUROC, AP, F1-max and AUPRO (up to `fpr_limit`) from one sort of all pixels.
///
/// `maps` are `n × h × w` anomaly scores in C order, `masks` the matching ground truth
/// (non-zero = anomalous). AUPRO follows MVTec AD's official evaluation: ground-truth regions
/// are 8-connected per image; at each distinct score (equal scores merged into one curve
/// point) the FPR is over all normal pixels of all images and the PRO is the mean over all
/// regions of the fraction of each region at or above the score; the curve from (0, 0) to
/// (1, 1) is integrated with the trapezoid rule up to `fpr_limit`, interpolating linearly at the
/// limit, and divided by `fpr_limit`.
///
/// # Errors
/// [`MetricsError::ShapeMismatch`] if a slice is not `n·h·w` long,
/// [`MetricsError::InvalidFprLimit`] unless `0 < fpr_limit <= 1`,
/// [`MetricsError::NonFinite`] for a NaN or infinite score,
/// [`MetricsError::SingleClass`] if the masks hold no anomalous or no normal pixel.
pub fn pixel_metrics(
    maps: &[f32],
    masks: &[u8],
    n: usize,
    h: usize,
    w: usize,
    fpr_limit: f64,
) -> Result<PixelMetrics, MetricsError> {
    if !(fpr_limit > 0.0 && fpr_limit <= 1.0) {
        return Err(MetricsError::InvalidFprLimit { limit: fpr_limit });
    }
    let keys = pixel_keys(maps, masks, n, h, w)?;
    let (n_pos, n_neg) = (keys.pos.len() as u64, keys.neg.len() as u64);
    let mut rank = RankAcc::new(n_pos, n_neg);
    let mut pro = ProAcc::new(n_neg, keys.inv_size.len(), fpr_limit);
    let inv_size = &keys.inv_size;
    walk_desc(
        &keys.neg,
        &keys.pos,
        |k| (k >> 32) as u32,
        |k, dneg, group| {
            rank.push(k, group.len() as u64, dneg);
            // The group is sorted by region id: add each region's run as count / size.
            let mut dpro = 0.0;
            let mut rest = group;
            while let Some(&first) = rest.first() {
                let run = rest.iter().take_while(|&&p| p == first).count();
                dpro += run as f64 * inv_size[(first & 0xffff_ffff) as usize];
                rest = &rest[run..];
            }
            pro.push(dneg, dpro);
        },
    );
    let r = rank.finish();
    Ok(PixelMetrics { auroc: r.auroc, ap: r.ap, f1_max: r.f1_max, aupro: pro.finish() })
}

/// Normalised area under the per-region-overlap curve up to `fpr_limit` (0.3 is standard,
/// see [`AUPRO_FPR_LIMIT`]), as MVTec AD's official evaluation computes it; see
/// [`pixel_metrics`] for the definition, errors and cost.
///
/// # Example
/// ```
/// // One 1×4 image: a 2-pixel region scored above both normal pixels.
/// let maps = [0.9, 0.8, 0.2, 0.1];
/// let masks = [1, 1, 0, 0];
/// let a = pnpt_metrics::aupro(&maps, &masks, 1, 1, 4, 0.3).unwrap();
/// assert!((a - 1.0).abs() < 1e-12);
/// ```
pub fn aupro(maps: &[f32], masks: &[u8], n: usize, h: usize, w: usize, fpr_limit: f64) -> Result<f64, MetricsError> {
    pixel_metrics(maps, masks, n, h, w, fpr_limit).map(|m| m.aupro)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(mask: &[u8], h: usize, w: usize) -> (Vec<u32>, Vec<u32>) {
        let (mut labels, mut stack) = (Vec::new(), Vec::new());
        let sizes = label_regions(mask, h, w, &mut labels, &mut stack);
        (labels, sizes)
    }

    #[test]
    fn labels_are_eight_connected() {
        // Diagonal chain = one region; the right column block is separate (gap column 3).
        #[rustfmt::skip]
        let mask = [
            1, 0, 0, 0, 1,
            0, 1, 0, 0, 1,
            0, 0, 1, 0, 0,
            0, 0, 0, 0, 0,
            1, 1, 0, 0, 0,
        ];
        let (labels, sizes) = label(&mask, 5, 5);
        assert_eq!(sizes, vec![3, 2, 2]);
        assert_eq!(labels[0], labels[6]);
        assert_eq!(labels[6], labels[12]);
        assert_ne!(labels[0], labels[4]);
        assert_eq!(labels[4], labels[9]);
        assert_eq!(labels[20], labels[21]);
        assert_eq!(labels[1], 0);
    }

    #[test]
    fn labels_do_not_wrap_rows() {
        // Pixel (0, 3) and (1, 0) are adjacent in memory but not in the image.
        let mask = [0, 0, 0, 1, 1, 0, 0, 0];
        let (_, sizes) = label(&mask, 2, 4);
        assert_eq!(sizes, vec![1, 1]);
    }

    #[test]
    fn labels_a_snake() {
        // A U-shape whose arms only meet at the bottom: one region found by flood fill.
        #[rustfmt::skip]
        let mask = [
            1, 0, 1,
            1, 0, 1,
            1, 1, 1,
        ];
        let (_, sizes) = label(&mask, 3, 3);
        assert_eq!(sizes, vec![7]);
    }
}
