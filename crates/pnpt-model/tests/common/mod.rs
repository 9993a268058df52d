//! Helpers shared by the integration tests of pnpt-model (each test binary uses some of them).
#![allow(dead_code)]

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use pnpt_model::{FeatureSpec, ModelConfig, PnptConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub type B = Flex<f32>;

pub fn dev() -> burn::backend::flex::FlexDevice {
    Default::default()
}

pub fn vals<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

pub fn t4(v: Vec<f32>, shape: [usize; 4]) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(v, shape), &dev())
}

pub fn max_abs_diff(a: Vec<f32>, b: Vec<f32>) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Small spec: patches 4, 2, 1 on a 2×2 grid (like 64/32/16 → 16 at full size).
pub fn small_spec() -> FeatureSpec {
    FeatureSpec { channels: [4, 6, 8], sizes: [[8, 8], [4, 4], [2, 2]] }
}

pub fn small_config() -> ModelConfig {
    ModelConfig { hidden: 16, semantic_tokens: 4, heads: 4, layers: 2, ..PnptConfig::cpu().model }
}

pub fn random_feats(spec: &FeatureSpec, n: usize, seed: u64) -> [Tensor<B, 4>; 3] {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    [0, 1, 2].map(|i| {
        let [h, w] = spec.sizes[i];
        let t = pnpt_model::pnpt::standard_normal::<B, _>([n, spec.channels[i], h * w], &mut rng, &dev());
        t.reshape([n, spec.channels[i], h, w])
    })
}
