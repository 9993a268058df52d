//! The training loss (the paper's Eq. 6–7).
//!
//! ```text
//! l_R(F_γ) = Σ_{i=1..3} (1 - cos(vec F_input(i), vec F*_γ(i)))     per image
//! loss     = mean over the batch of l_R(F*_prior) + l_R(F*_self)
//! ```
//! `vec` flattens the whole `C × H × W` map of one image, so the loss compares global
//! structure per scale, not per position.

use burn::tensor::{Tensor, backend::Backend};

use crate::pnpt::Reconstruction;

/// `max(‖a‖‖b‖, EPS)` in the cosine denominators (PyTorch's `cosine_similarity` eps).
pub const COS_EPS: f64 = 1e-8;

/// Per image `1 - cos(vec a, vec b)` of two `[B, C, H, W]` maps → `[B]`.
pub fn cosine_distance_per_image<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 1> {
    let n = a.dims()[0];
    let a = a.reshape([n as i64, -1]);
    let b = b.reshape([n as i64, -1]);
    let dot = (a.clone() * b.clone()).sum_dim(1);
    let norms = a.square().sum_dim(1).sqrt() * b.square().sum_dim(1).sqrt();
    (dot / norms.clamp_min(COS_EPS)).neg().add_scalar(1.0).reshape([n])
}

/// `l_R` of one stream, per image: `Σ_i (1 - cos)` over the three scales → `[B]`.
pub fn stream_loss<B: Backend>(input: &[Tensor<B, 4>; 3], recon: &[Tensor<B, 4>; 3]) -> Tensor<B, 1> {
    (0..3)
        .map(|i| cosine_distance_per_image(input[i].clone(), recon[i].clone()))
        .reduce(|a, b| a + b)
        .expect("three scales")
}

/// Eq. 7: `l_R(F*_prior) + l_R(F*_self)`, averaged over the batch → `[1]`.
/// Without a prior stream (ablation), just `l_R(F*_self)`.
pub fn pnpt_loss<B: Backend>(input: &[Tensor<B, 4>; 3], recon: &Reconstruction<B>) -> Tensor<B, 1> {
    let mut per_image = stream_loss(input, &recon.sample);
    if let Some(prior) = &recon.prior {
        per_image = per_image + stream_loss(input, prior);
    }
    per_image.mean()
}
