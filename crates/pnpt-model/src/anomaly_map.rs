//! Anomaly maps and image scores (the paper's Eq. 8).
//!
//! Per scale `i`, per position: `1 - cos(F_input(i), F*_fuse(i))` over channels, giving an
//! `H_i × W_i` map; each is upsampled bilinearly (half-pixel centres, `align_corners = false`,
//! PyTorch's default) to the input size and the three are summed. The sum is smoothed by a
//! Gaussian (separable convolution, radius `⌊4σ + 0.5⌋` like scipy's `truncate = 4`, **edge
//! replicate** padding so the borders are not darkened); the image score is the maximum of the
//! smoothed map or the mean of its top-k values.

use burn::tensor::module::{conv2d, interpolate};
use burn::tensor::ops::{ConvOptions, InterpolateMode, InterpolateOptions, PadMode};
use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::config::ScoreMode;
use crate::loss::COS_EPS;

/// Per-position `1 - cos` over channels of two `[B, C, H, W]` maps → `[B, H, W]`.
pub fn cosine_distance_map<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 3> {
    let [n, _, h, w] = a.dims();
    let dot = (a.clone() * b.clone()).sum_dim(1);
    let norms = a.square().sum_dim(1).sqrt() * b.square().sum_dim(1).sqrt();
    (dot / norms.clamp_min(COS_EPS)).neg().add_scalar(1.0).reshape([n, h, w])
}

/// Sum over scales of the upsampled per-scale maps, before smoothing → `[B, H, W]`.
pub fn raw_anomaly_map<B: Backend>(
    input: &[Tensor<B, 4>; 3],
    fused: &[Tensor<B, 4>; 3],
    out_size: [usize; 2],
) -> Tensor<B, 3> {
    (0..3)
        .map(|i| {
            let m = cosine_distance_map(input[i].clone(), fused[i].clone());
            let [n, h, w] = m.dims();
            let m = m.reshape([n, 1, h, w]);
            let up = if [h, w] == out_size {
                m
            } else {
                interpolate(m, out_size, InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false))
            };
            up.reshape([n, out_size[0], out_size[1]])
        })
        .reduce(|a, b| a + b)
        .expect("three scales")
}

/// The full Eq. 8 map: [`raw_anomaly_map`] then [`gaussian_blur`] → `[B, H, W]`.
pub fn anomaly_map<B: Backend>(
    input: &[Tensor<B, 4>; 3],
    fused: &[Tensor<B, 4>; 3],
    out_size: [usize; 2],
    sigma: f64,
) -> Tensor<B, 3> {
    gaussian_blur(raw_anomaly_map(input, fused, out_size), sigma)
}

/// Radius of the Gaussian kernel for `sigma`: `⌊4σ + 0.5⌋` (scipy's `truncate = 4`).
pub fn gaussian_radius(sigma: f64) -> usize {
    (4.0 * sigma + 0.5).floor().max(0.0) as usize
}

/// Normalised 1-D Gaussian kernel of length `2r + 1`; `[1.0]` for `sigma <= 0`.
///
/// ```
/// let k = pnpt_model::anomaly_map::gaussian_kernel(4.0);
/// assert_eq!(k.len(), 33);
/// assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
/// ```
pub fn gaussian_kernel(sigma: f64) -> Vec<f32> {
    if sigma <= 0.0 {
        return vec![1.0];
    }
    let r = gaussian_radius(sigma) as i64;
    let raw: Vec<f64> = (-r..=r).map(|x| (-(x * x) as f64 / (2.0 * sigma * sigma)).exp()).collect();
    let total: f64 = raw.iter().sum();
    raw.iter().map(|v| (v / total) as f32).collect()
}

/// Separable Gaussian smoothing of `[B, H, W]` maps with edge-replicate padding.
pub fn gaussian_blur<B: Backend>(map: Tensor<B, 3>, sigma: f64) -> Tensor<B, 3> {
    if sigma <= 0.0 {
        return map;
    }
    let [n, h, w] = map.dims();
    let kernel = gaussian_kernel(sigma);
    let k = kernel.len();
    let r = k / 2;
    let device = map.device();
    let horizontal = Tensor::<B, 4>::from_data(TensorData::new(kernel.clone(), [1, 1, 1, k]), &device);
    let vertical = Tensor::<B, 4>::from_data(TensorData::new(kernel, [1, 1, k, 1]), &device);
    let options = || ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
    let x = map.reshape([n, 1, h, w]);
    let x = conv2d(x.pad((r, r, 0, 0), PadMode::Edge), horizontal, None, options());
    let x = conv2d(x.pad((0, 0, r, r), PadMode::Edge), vertical, None, options());
    x.reshape([n, h, w])
}

/// Image scores `[B]` from maps `[B, H, W]`.
pub fn image_scores<B: Backend>(map: Tensor<B, 3>, mode: ScoreMode) -> Tensor<B, 1> {
    let [n, h, w] = map.dims();
    let flat = map.reshape([n, h * w]);
    match mode {
        ScoreMode::Max => flat.max_dim(1).reshape([n]),
        // Burn's `topk` needs k < length; k >= length is the plain mean.
        ScoreMode::TopKMean(k) if k >= h * w => flat.mean_dim(1).reshape([n]),
        ScoreMode::TopKMean(k) => flat.topk(k.max(1), 1).mean_dim(1).reshape([n]),
    }
}

/// The image score of one map already on the host: the same as [`image_scores`] without a
/// device round trip, and in linear time (a selection, not the sort behind `topk`).
/// A NaN in the map gives a NaN score.
///
/// ```
/// use pnpt_model::{anomaly_map::host_image_score, ScoreMode};
/// let map = [0.1, 0.9, 0.4, 0.7];
/// assert_eq!(host_image_score(&map, ScoreMode::Max), 0.9);
/// assert!((host_image_score(&map, ScoreMode::TopKMean(2)) - 0.8).abs() < 1e-6);
/// ```
pub fn host_image_score(map: &[f32], mode: ScoreMode) -> f32 {
    if map.iter().any(|v| v.is_nan()) {
        return f32::NAN;
    }
    let k = match mode {
        ScoreMode::Max => 1,
        ScoreMode::TopKMean(k) => k.clamp(1, map.len().max(1)),
    };
    if map.is_empty() {
        return f32::NAN;
    }
    let mut values = map.to_vec();
    // Largest k first: select the k-th largest, everything before it is larger or equal.
    let (top, kth, _) = values.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let sum: f64 = top.iter().map(|&v| v as f64).sum::<f64>() + *kth as f64;
    (sum / k as f64) as f32
}
