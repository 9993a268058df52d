//! Locally aware patch features (PatchCore, Roth et al. 2022, §3.1).
//!
//! From the backbone's three taps (strides 4, 8, 16) PatchCore keeps the two mid-level ones:
//! the stride-4 tap is too local and too generic, deeper ones too ImageNet-specific. Each tap
//! is average-pooled over a 3×3 neighbourhood (stride 1, zero padding counted, as
//! `torch.nn.AvgPool2d(3, 1, 1)`), so a patch feature describes its neighbourhood; the
//! stride-16 tap is upsampled bilinearly (`align_corners = false`) to the stride-8 grid and the
//! two are concatenated along channels. When the concatenation is wider than `max_dim`, it is
//! reduced by adaptive average pooling along channels, as PatchCore reduces
//! ResNet layer2 + layer3 (1,536 channels) to 1,024.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::{adaptive_avg_pool1d, avg_pool2d, interpolate};
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

use crate::{Error, Result};

/// Width of the patch features for backbone tap widths `channels` (strides 4, 8, 16).
///
/// ```
/// // EfficientNet-Lite0's taps are 24, 40 and 112 channels wide: 40 + 112 = 152.
/// assert_eq!(pnpt_memory::patch_dim([24, 40, 112], 1024), 152);
/// // wide_resnet50_2: layer2 (512) + layer3 (1024), reduced to 1024.
/// assert_eq!(pnpt_memory::patch_dim([256, 512, 1024], 1024), 1024);
/// ```
pub fn patch_dim(channels: [usize; 3], max_dim: usize) -> usize {
    (channels[1] + channels[2]).min(max_dim)
}

/// Patch features `[N, D, H8, W8]` of backbone taps `[N, C_i, H_i, W_i]` ×3 (see the module
/// docs); `D = patch_dim(C, max_dim)`.
pub fn patch_features<B: Backend>(taps: &[Tensor<B, 4>; 3], max_dim: usize) -> Result<Tensor<B, 4>> {
    let [n, c1, h, w] = taps[1].dims();
    let [n2, c2, h2, w2] = taps[2].dims();
    if n != n2 || n == 0 || h2 == 0 || w2 == 0 {
        return Err(Error::InvalidInput(format!(
            "taps [{n}, {c1}, {h}, {w}] and [{n2}, {c2}, {h2}, {w2}]: need the same non-zero batch"
        )));
    }
    if max_dim == 0 {
        return Err(Error::Config("max_dim must be at least 1".into()));
    }
    let pool = |x: Tensor<B, 4>| avg_pool2d(x, [3, 3], [1, 1], [1, 1], true, false);
    let fine = pool(taps[1].clone());
    let coarse = pool(taps[2].clone());
    let coarse = if [h2, w2] == [h, w] {
        coarse
    } else {
        interpolate(coarse, [h, w], InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false))
    };
    let joined = Tensor::cat(vec![fine, coarse], 1);
    let d = c1 + c2;
    if d <= max_dim {
        return Ok(joined);
    }
    // [N, D, H, W] -> [N*H*W, 1, D] -> pool along D -> back.
    let rows = joined.permute([0, 2, 3, 1]).reshape([n * h * w, 1, d]);
    let reduced = adaptive_avg_pool1d(rows, max_dim);
    Ok(reduced.reshape([n, h, w, max_dim]).permute([0, 3, 1, 2]))
}

/// `[N, D, H, W]` → `[N*H*W, D]`, rows in image-major, row-major position order.
pub fn to_rows<B: Backend>(features: Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, d, h, w] = features.dims();
    features.permute([0, 2, 3, 1]).reshape([n * h * w, d])
}
