//! BatchNorm folding: each conv + BN pair becomes one convolution with a bias.

use std::collections::HashMap;

use burn::tensor::{Tensor, TensorData, backend::Backend};

use super::model::TensorSource;

/// BatchNorm epsilon of torchvision's ResNets.
const BN_EPS: f64 = 1e-5;

/// Tensors already checked against [`ResNetConfig::expected_tensors`](super::ResNetConfig::expected_tensors),
/// as f32 host vectors.
pub(super) struct CheckedSource(pub(super) HashMap<String, Vec<f32>>);

impl<B: Backend> TensorSource<B> for CheckedSource {
    fn conv_bn(&mut self, conv: &str, bn: &str, shape: [usize; 4], device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 1>) {
        // Keys and shapes were validated up front, so a miss here is a bug in `weights.rs`.
        let mut take = |k: String| self.0.remove(&k).unwrap_or_else(|| panic!("validated key {k} vanished"));
        let mut w = take(format!("{conv}.weight"));
        let gamma = take(format!("{bn}.weight"));
        let beta = take(format!("{bn}.bias"));
        let mean = take(format!("{bn}.running_mean"));
        let var = take(format!("{bn}.running_var"));
        let per_out = shape[1] * shape[2] * shape[3];
        let mut bias = vec![0f32; shape[0]];
        for o in 0..shape[0] {
            let scale = gamma[o] as f64 / (var[o] as f64 + BN_EPS).sqrt();
            bias[o] = (beta[o] as f64 - mean[o] as f64 * scale) as f32;
            for v in &mut w[o * per_out..(o + 1) * per_out] {
                *v = (*v as f64 * scale) as f32;
            }
        }
        (
            Tensor::from_data(TensorData::new(w, shape), device),
            Tensor::from_data(TensorData::new(bias, [shape[0]]), device),
        )
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;

    use super::*;

    /// Folding is inference-mode BatchNorm, per output channel: `w·γ/√(σ²+ε)`, `β − μ·γ/√(σ²+ε)`;
    /// every tensor of the pair is consumed.
    #[test]
    fn folds_batchnorm_per_output_channel() {
        let (w, gamma, beta, mean, var) = ([1.0, -2.0, 0.5, 4.0], [2.0, 0.5], [0.1, -0.3], [1.0, -1.0], [3.0, 0.25]);
        let mut src = CheckedSource(
            [
                ("c.weight", &w[..]),
                ("b.weight", &gamma),
                ("b.bias", &beta),
                ("b.running_mean", &mean),
                ("b.running_var", &var),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect(),
        );
        let (fw, fb) = TensorSource::<Flex>::conv_bn(&mut src, "c", "b", [2, 2, 1, 1], &Default::default());
        assert!(src.0.is_empty());
        let scale = |o: usize| gamma[o] as f64 / (var[o] as f64 + BN_EPS).sqrt();
        let want_w: Vec<f64> = (0..4).map(|i| w[i] as f64 * scale(i / 2)).collect();
        let want_b: Vec<f64> = (0..2).map(|o| beta[o] as f64 - mean[o] as f64 * scale(o)).collect();
        for (got, want) in [(fw.into_data(), want_w), (fb.into_data(), want_b)] {
            let got = got.to_vec::<f32>().unwrap();
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-6, "{got:?} vs {want:?}");
            }
        }
    }
}
