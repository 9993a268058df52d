//! The cached frozen-backbone features of a run, the prompt pool built from them, and the
//! held-out calibration split.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use pnpt_backbone::Backbone;
use pnpt_data::{BatchIter, Dataset, Preprocess, Sample};
use pnpt_prompt::{PoolBuilder, PromptPool};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::progress::Progress;
use crate::{Error, PnptConfig, Result};

/// Frozen-backbone features of the training images, cached for the run.
#[derive(Debug, Clone)]
pub struct FeatureSet<B: Backend> {
    /// `[N, C_i, H_i, W_i]` ×3.
    pub feats: [Tensor<B, 4>; 3],
    /// True category of each image (for reporting and class-balanced sampling; never seen by
    /// the model).
    pub categories: Vec<String>,
    /// Index into the pool of each image's *retrieved* class.
    pub prior_index: Vec<usize>,
}

impl<B: Backend> FeatureSet<B> {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.categories.len()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.categories.is_empty()
    }

    /// Rows `indices` of the cached features.
    pub fn select(&self, indices: &[usize]) -> [Tensor<B, 4>; 3] {
        let device = self.feats[0].device();
        let idx = index_tensor::<B>(indices, &device);
        [0, 1, 2].map(|s| self.feats[s].clone().select(0, idx.clone()))
    }
}

pub(crate) fn index_tensor<B: Backend>(indices: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let v: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(v, [indices.len()]), device)
}

/// The held-out calibration split: per category, `ceil(fraction * n)` images of `train/good`
/// chosen by a seeded shuffle (at least one image always stays for training). Returns
/// `(train, holdout)`, both in dataset order.
pub fn split_holdout(dataset: &Dataset, fraction: f64, seed: u64) -> (Vec<Sample>, Vec<Sample>) {
    let mut train = Vec::new();
    let mut holdout = Vec::new();
    for (ci, cat) in dataset.categories.iter().enumerate() {
        let n = cat.train.len();
        let k = if fraction > 0.0 { ((n as f64 * fraction).ceil() as usize).min(n.saturating_sub(1)) } else { 0 };
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(ci as u64 + 1))));
        let mut held = vec![false; n];
        for &i in &order[..k] {
            held[i] = true;
        }
        for (i, s) in cat.train.iter().enumerate() {
            if held[i] { holdout.push(s.clone()) } else { train.push(s.clone()) }
        }
    }
    (train, holdout)
}

/// Backbone features of `samples` (decoded in parallel, `batch` images per forward),
/// concatenated in sample order.
pub fn extract_features<B: Backend>(
    backbone: &Backbone<B>,
    samples: &[Sample],
    pre: &Preprocess,
    batch: usize,
    device: &B::Device,
    progress: &Progress,
) -> Result<[Tensor<B, 4>; 3]> {
    if samples.is_empty() {
        return Err(Error::Invalid("no images to extract features from".into()));
    }
    let stage = progress.stage("features", samples.len());
    let mut parts: [Vec<Tensor<B, 4>>; 3] = Default::default();
    for item in BatchIter::<B>::new(samples, pre, batch, None, device)? {
        let (images, idx) = item?;
        let maps = backbone.features(images)?.maps;
        for (s, m) in maps.into_iter().enumerate() {
            parts[s].push(m);
        }
        stage.advance(idx.len(), || None);
    }
    Ok(parts.map(|p| Tensor::cat(p, 0)))
}

/// Extracts and caches the features of `samples`, builds the prompt pool from them (class
/// means per true category, as CS-NPP defines them) and retrieves every image's prior class.
pub fn build_training_set<B: Backend>(
    config: &PnptConfig,
    backbone: &Backbone<B>,
    samples: &[Sample],
    device: &B::Device,
    progress: &Progress,
) -> Result<(FeatureSet<B>, PromptPool<B>)> {
    let pre = preprocess_for(config, backbone);
    let feats = extract_features(backbone, samples, &pre, config.train.feature_batch, device, progress)?;
    let mut builder = PoolBuilder::<B>::new();
    let mut names: Vec<&str> = Vec::new();
    for s in samples {
        if !names.contains(&s.category.as_str()) {
            names.push(&s.category);
        }
    }
    for name in names {
        let idx: Vec<usize> = samples.iter().enumerate().filter(|(_, s)| s.category == name).map(|(i, _)| i).collect();
        let it = index_tensor::<B>(&idx, device);
        builder.add(name, &[0, 1, 2].map(|s| feats[s].clone().select(0, it.clone())))?;
    }
    let pool = builder.build(config.distance)?;
    let mut prior_index = Vec::with_capacity(samples.len());
    for start in (0..samples.len()).step_by(64) {
        let len = (samples.len() - start).min(64);
        let chunk = [0, 1, 2].map(|s| feats[s].clone().narrow(0, start, len));
        prior_index.extend(pool.nearest(&chunk)?.0);
    }
    let categories = samples.iter().map(|s| s.category.clone()).collect();
    Ok((FeatureSet { feats, categories, prior_index }, pool))
}

/// The preprocessing for a configuration: the backbone's normalisation at `input_size`.
pub fn preprocess_for<B: Backend>(config: &PnptConfig, backbone: &Backbone<B>) -> Preprocess {
    let p = backbone.preprocess();
    Preprocess::new(config.input_size, p.mean, p.std)
}
