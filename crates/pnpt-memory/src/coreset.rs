//! Greedy coreset subsampling (PatchCore §3.2, Algorithm 1).
//!
//! A memory of every training patch is large and slow to search; PatchCore keeps a subset that
//! covers the whole set: minimax facility location, solved approximately by greedy k-center
//! selection — start from one point, then repeatedly add the point farthest from everything
//! selected so far. The covering radius (the largest distance of any point to its nearest
//! selected point) never grows as points are added. Distances are taken in a random projection
//! to `projection_dim` dimensions (Johnson–Lindenstrauss) to make each step cheaper; the
//! projection is a dense Rademacher matrix (entries ±1/√p), drawn from the seed.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::{Error, Result};

/// Number of points kept from `n`: `ceil(n * ratio)`, at most `cap`, at least 1 (for `n > 0`).
///
/// ```
/// assert_eq!(pnpt_memory::coreset_size(41_000, 0.1, 10_000), 4_100);
/// assert_eq!(pnpt_memory::coreset_size(200_000, 0.1, 10_000), 10_000);
/// assert_eq!(pnpt_memory::coreset_size(5, 0.01, 10), 1);
/// ```
pub fn coreset_size(n: usize, ratio: f64, cap: usize) -> usize {
    if n == 0 {
        return 0;
    }
    (((n as f64) * ratio).ceil() as usize).clamp(1, cap.max(1)).min(n)
}

/// Indices of `k` rows of `rows` (`[n, D]`) chosen by greedy k-center selection, in the order
/// picked. The first pick is a seeded random row; every later pick is the row farthest
/// (squared Euclidean distance in the projection) from all rows picked before it, ties going to
/// the lowest index. `projection_dim == 0` or `>= D` measures distances in the original space.
pub fn greedy_coreset<B: Backend>(
    rows: Tensor<B, 2>,
    k: usize,
    projection_dim: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    let [n, d] = rows.dims();
    if n == 0 || d == 0 {
        return Err(Error::InvalidInput(format!("coreset of an empty set [{n}, {d}]")));
    }
    let k = k.min(n);
    if k == 0 {
        return Ok(Vec::new());
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let projected = if projection_dim == 0 || projection_dim >= d {
        rows
    } else {
        let scale = 1.0 / (projection_dim as f32).sqrt();
        let signs: Vec<f32> =
            (0..d * projection_dim).map(|_| if rng.random::<bool>() { scale } else { -scale }).collect();
        let matrix = Tensor::<B, 2>::from_data(TensorData::new(signs, [d, projection_dim]), &rows.device());
        rows.matmul(matrix)
    };
    let p = projected.dims()[1];
    let points: Vec<f32> = projected
        .into_data()
        .into_vec::<f32>()
        .map_err(|e| Error::InvalidInput(format!("features are not f32: {e:?}")))?;
    let first = rng.random_range(0..n);
    Ok(greedy_on_host(&points, p, k, first))
}

/// The selection loop on host rows (`points`: `n × p`, row-major), starting from `first`.
///
/// Each row remembers which picked centre is nearest to it. When a new centre `c` is picked, a
/// row whose nearest centre `a` satisfies `‖a − c‖ ≥ 2 ‖x − a‖` cannot get closer to `c` than to
/// `a` (triangle inequality: `‖x − c‖ ≥ ‖a − c‖ − ‖x − a‖ ≥ ‖x − a‖`), so its distance is not
/// recomputed. As the covering radius shrinks most rows are skipped, which turns a pass over the
/// whole `n × p` matrix per pick (memory-bound for large banks) into a pass over two small
/// arrays. The skip test keeps a relative margin so rounding never skips a real improvement.
fn greedy_on_host(points: &[f32], p: usize, k: usize, first: usize) -> Vec<usize> {
    let n = points.len() / p;
    let mut nearest = vec![f32::INFINITY; n];
    let mut owner = vec![0u32; n];
    let mut picked: Vec<usize> = Vec::with_capacity(k);
    let mut current = first;
    const CHUNK: usize = 2048;
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
            .map(|(c, (near, own))| update_chunk(points, p, centre, j, &between, near, own, c * CHUNK))
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
/// them (256-bit lanes make the distance loop about 1.5× faster).
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
) -> (f32, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function is compiled for (checked above).
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
        assert_eq!(greedy_on_host(&pts, 1, 5, 0), vec![0, 4, 2, 1, 3]);
    }
}
