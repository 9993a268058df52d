//! The selection loop of greedy k-center coreset subsampling (PatchCore §3.2, Algorithm 1)
//! on host rows; pnpt-memory projects the features and draws the first pick.

use rayon::prelude::*;

use crate::simd_available;

/// Indices of `k` rows of `points` (`n × p`, row-major) chosen by greedy k-center selection,
/// in the order picked: `first`, then each time the row farthest (squared Euclidean distance)
/// from all rows picked before it, ties going to the lowest index.
///
/// `k` must be in `1..=n` and `first < n`.
///
/// Each row remembers which picked centre is nearest to it. When a new centre `c` is picked, a
/// row whose nearest centre `a` satisfies `‖a − c‖ ≥ 2 ‖x − a‖` cannot get closer to `c` than to
/// `a` (triangle inequality: `‖x − c‖ ≥ ‖a − c‖ − ‖x − a‖ ≥ ‖x − a‖`), so its distance is not
/// recomputed. As the covering radius shrinks most rows are skipped, which turns a pass over the
/// whole `n × p` matrix per pick (memory-bound for large banks) into a pass over two small
/// arrays. The skip test keeps a relative margin so rounding never skips a real improvement.
pub fn greedy_k_center(points: &[f32], p: usize, k: usize, first: usize) -> Vec<usize> {
    let n = points.len() / p;
    assert!((1..=n).contains(&k) && first < n, "{k} of {n} rows from row {first}");
    let mut nearest = vec![f32::INFINITY; n];
    let mut owner = vec![0u32; n];
    let mut picked: Vec<usize> = Vec::with_capacity(k);
    let mut current = first;
    const CHUNK: usize = 2048;
    let simd = simd_available();
    loop {
        let j = picked.len() as u32;
        picked.push(current);
        if picked.len() == k {
            return picked;
        }
        let centre = &points[current * p..(current + 1) * p];
        // Squared distance of the new centre to every earlier centre.
        let between: Vec<f32> =
            picked[..j as usize].iter().map(|&a| squared_distance(&points[a * p..(a + 1) * p], centre)).collect();
        // Update the rows that may move to the new centre and find the farthest row in one
        // pass; (value, lowest index) makes the parallel reduction independent of scheduling.
        let (_, next) = nearest
            .par_chunks_mut(CHUNK)
            .zip(owner.par_chunks_mut(CHUNK))
            .enumerate()
            .map(|(c, (near, own))| update_chunk(points, p, centre, j, &between, near, own, c * CHUNK, simd))
            .reduce(
                || (f32::NEG_INFINITY, usize::MAX),
                |a, b| if b.0 > a.0 || (b.0 == a.0 && b.1 < a.1) { b } else { a },
            );
        current = next;
    }
}

/// Lowers `nearest[i]` (rows `offset..`) to the distance to `centre` (centre number `j`, at
/// squared distances `between` from the earlier centres) where it may improve, and returns the
/// largest `(value, index)`. On x86-64 CPUs with AVX2 and FMA the same code is compiled for
/// them (256-bit lanes make the distance loop about 1.5× faster); `simd` is only set when
/// [`simd_available`].
#[allow(clippy::too_many_arguments)]
fn update_chunk(
    points: &[f32],
    p: usize,
    centre: &[f32],
    j: u32,
    between: &[f32],
    nearest: &mut [f32],
    owner: &mut [u32],
    offset: usize,
    simd: bool,
) -> (f32, usize) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    #[cfg(target_arch = "x86_64")]
    {
        if simd {
            // SAFETY: `simd` is only set when the CPU has the features the function is compiled for.
            return unsafe { update_chunk_avx2(points, p, centre, j, between, nearest, owner, offset) };
        }
    }
    update_chunk_generic(points, p, centre, j, between, nearest, owner, offset)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn update_chunk_avx2(
    points: &[f32],
    p: usize,
    centre: &[f32],
    j: u32,
    between: &[f32],
    nearest: &mut [f32],
    owner: &mut [u32],
    offset: usize,
) -> (f32, usize) {
    update_chunk_generic(points, p, centre, j, between, nearest, owner, offset)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn update_chunk_generic(
    points: &[f32],
    p: usize,
    centre: &[f32],
    j: u32,
    between: &[f32],
    nearest: &mut [f32],
    owner: &mut [u32],
    offset: usize,
) -> (f32, usize) {
    let mut best = (f32::NEG_INFINITY, usize::MAX);
    for (k, (slot, own)) in nearest.iter_mut().zip(owner.iter_mut()).enumerate() {
        let i = offset + k;
        // ‖a − c‖² ≥ 4 ‖x − a‖² (with margin) ⇒ c is no closer than a.
        let skip = slot.is_finite() && between[*own as usize] >= 4.0 * *slot * (1.0 + 1e-4) + 1e-12;
        if !skip {
            let dist = squared_distance(&points[i * p..(i + 1) * p], centre);
            if dist < *slot {
                *slot = dist;
                *own = j;
            }
        }
        if *slot > best.0 {
            best = (*slot, i);
        }
    }
    best
}

/// `‖a − b‖²` with eight independent partial sums: a single running sum is a dependency chain
/// the compiler may not reorder (float addition is not associative), eight lanes vectorise.
#[inline(always)]
fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a8, a_rest) = a.split_at(a.len() - a.len() % 8);
    let (b8, b_rest) = b.split_at(a8.len());
    for (x, y) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for l in 0..8 {
            let d = x[l] - y[l];
            lanes[l] += d * d;
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| (x - y) * (x - y)).sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squared_distance_matches_the_plain_sum() {
        for len in [1usize, 7, 8, 13, 128] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
            assert!((squared_distance(&a, &b) as f64 - plain).abs() < 1e-5 * plain.max(1.0), "{len}");
        }
    }

    #[test]
    fn host_loop_picks_the_farthest_point_each_time() {
        // Points on a line: 0, 1, 2, 10, 11. From 0 the farthest is 11, then 2 or 10? Distances
        // to {0, 11}: 1 -> 1, 2 -> 4, 10 -> 1 -> pick 2 (squared distance 4), then 1 or 10
        // (both 1): the lower index, 1.
        let pts = [0.0f32, 1.0, 2.0, 10.0, 11.0];
        assert_eq!(greedy_k_center(&pts, 1, 5, 0), vec![0, 4, 2, 1, 3]);
    }

    /// Deterministic points in [-1, 1).
    fn points(n: usize, p: usize, seed: u32) -> Vec<f32> {
        crate::test_util::values(n * p, seed)
    }

    /// The chunk update on both paths: the same values bit for bit, and the distances of a
    /// plain f64 loop (every row starts infinitely far, so none is skipped).
    #[test]
    fn update_chunk_matches_the_plain_loop_on_both_paths() {
        let (n, p) = (37, 13);
        let pts = points(n, p, 1);
        let centre = &pts[5 * p..6 * p];
        let mut results = Vec::new();
        for simd in [false, simd_available()] {
            let (mut nearest, mut owner) = (vec![f32::INFINITY; n], vec![0u32; n]);
            let best = update_chunk(&pts, p, centre, 0, &[], &mut nearest, &mut owner, 0, simd);
            for (i, &d) in nearest.iter().enumerate() {
                let want: f64 =
                    pts[i * p..(i + 1) * p].iter().zip(centre).map(|(&x, &c)| (x as f64 - c as f64).powi(2)).sum();
                assert!((d as f64 - want).abs() < 1e-5 * want.max(1.0), "simd {simd}, row {i}: {d} vs {want}");
            }
            let farthest = (0..n).max_by(|&a, &b| nearest[a].total_cmp(&nearest[b]).then(b.cmp(&a))).unwrap();
            assert_eq!(best, (nearest[farthest], farthest));
            results.push((best, nearest.iter().map(|v| v.to_bits()).collect::<Vec<_>>()));
        }
        assert_eq!(results[0], results[1], "both paths bit for bit");
    }

    /// The selection against the textbook greedy loop (every distance recomputed, in f64): the
    /// skipped rows never change a pick.
    #[test]
    fn greedy_matches_the_plain_greedy_loop() {
        for (n, p, k, seed) in [(300, 8, 40, 2), (5000, 5, 120, 3), (64, 21, 64, 4)] {
            let pts = points(n, p, seed);
            let row = |i: usize| &pts[i * p..(i + 1) * p];
            let dist =
                |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>();
            let mut want = vec![n / 2];
            let mut nearest = vec![f64::INFINITY; n];
            while want.len() < k {
                let centre = row(*want.last().unwrap());
                for (i, near) in nearest.iter_mut().enumerate() {
                    *near = near.min(dist(row(i), centre));
                }
                let far = (0..n).fold(0, |best, i| if nearest[i] > nearest[best] { i } else { best });
                want.push(far);
            }
            assert_eq!(greedy_k_center(&pts, p, k, n / 2), want, "{n} x {p}, k {k}");
        }
    }

    /// A NaN coordinate never makes a distance smaller: the row keeps its infinite distance and
    /// is picked next, and the other rows still get their distances to the first pick.
    #[test]
    fn nan_row_is_picked_next() {
        let mut pts = points(20, 4, 5);
        pts[7 * 4 + 2] = f32::NAN;
        for simd in [false, simd_available()] {
            let (mut nearest, mut owner) = (vec![f32::INFINITY; 20], vec![0u32; 20]);
            let best = update_chunk(&pts, 4, &pts[..4], 0, &[], &mut nearest, &mut owner, 0, simd);
            assert_eq!(best, (f32::INFINITY, 7), "simd {simd}");
            assert!(nearest.iter().enumerate().all(|(i, d)| (i == 7) == d.is_infinite()), "simd {simd}");
        }
        assert_eq!(greedy_k_center(&pts, 4, 2, 0), vec![0, 7]);
    }
}
