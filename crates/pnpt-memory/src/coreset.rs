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
use pnpt_kernels::greedy_k_center;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
    Ok(greedy_k_center(&points, p, k, first))
}
