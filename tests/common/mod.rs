//! Helpers shared by the job's integration tests (each test binary uses some of them).
#![allow(dead_code)]

use std::path::Path;

use burn::tensor::{Tensor, TensorData};
use pnpt::backend::Cpu;
use pnpt::model::PnptConfig;
use pnpt::model::train::FeatureSet;
use pnpt::prompt::PoolBuilder;

pub type B = Cpu;

/// A model small enough to train in a blink (as `tests/train_resume.rs`).
pub fn tiny_config(epochs: usize) -> PnptConfig {
    let mut cfg = PnptConfig::cpu();
    cfg.preset = "test".into();
    cfg.input_size = 32;
    cfg.model.hidden = 32;
    cfg.model.semantic_tokens = 4;
    cfg.model.heads = 4;
    cfg.model.layers = 1;
    cfg.train.epochs = epochs;
    cfg.train.batch_size = 4;
    cfg
}

/// Copies the folder `from` (recursively) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Deterministic features for [`train_transformer`] (as `tests/train_resume.rs`).
pub fn feature_set(cfg: &PnptConfig, n: usize) -> (FeatureSet<B>, pnpt::prompt::PromptPool<B>) {
    let spec = cfg.feature_spec();
    let device = Default::default();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let feats = [0, 1, 2].map(|i| {
        let [h, w] = spec.sizes[i];
        let shape = [n, spec.channels[i], h, w];
        let v: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect();
        Tensor::<B, 4>::from_data(TensorData::new(v, shape), &device)
    });
    let half = n / 2;
    let categories: Vec<String> = (0..n).map(|i| if i < half { "a".into() } else { "b".into() }).collect();
    let mut builder = PoolBuilder::<B>::new();
    builder.add("a", &feats.clone().map(|t| t.narrow(0, 0, half))).unwrap();
    builder.add("b", &feats.clone().map(|t| t.narrow(0, half, n - half))).unwrap();
    let pool = builder.build(cfg.distance).unwrap();
    let prior_index = pool.nearest(&feats).unwrap().0;
    (FeatureSet::in_memory(feats, categories, prior_index).unwrap(), pool)
}
