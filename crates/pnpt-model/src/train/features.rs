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

use super::TrainOptions;
use super::feature_store::{DiskFeatures, DiskWriter, FeatureStorage};
use crate::progress::Progress;
use crate::{Error, PnptConfig, Result};

/// Frozen-backbone features of the training images, kept for the run in memory or on disk
/// ([`FeatureStorage`]).
#[derive(Debug)]
pub struct FeatureSet<B: Backend> {
    store: Store<B>,
    /// True category of each image (for reporting and class-balanced sampling; never seen by
    /// the model).
    pub categories: Vec<String>,
    /// Index into the pool of each image's *retrieved* class.
    pub prior_index: Vec<usize>,
}

#[derive(Debug)]
enum Store<B: Backend> {
    /// `[N, C_i, H_i, W_i]` ×3.
    Memory([Tensor<B, 4>; 3]),
    Disk(DiskFeatures, B::Device),
}

impl<B: Backend> FeatureSet<B> {
    /// A set held in memory: `feats` `[N, C_i, H_i, W_i]` ×3, one category and retrieved pool
    /// index per image.
    pub fn in_memory(feats: [Tensor<B, 4>; 3], categories: Vec<String>, prior_index: Vec<usize>) -> Result<Self> {
        let n = feats[0].dims()[0];
        if feats.iter().any(|f| f.dims()[0] != n) || categories.len() != n || prior_index.len() != n {
            return Err(Error::Shape(format!(
                "feature set of {n} rows with {} categories and {} prior indices",
                categories.len(),
                prior_index.len()
            )));
        }
        Ok(Self { store: Store::Memory(feats), categories, prior_index })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.categories.len()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.categories.is_empty()
    }

    /// Where the features are kept: [`FeatureStorage::Memory`], [`FeatureStorage::Disk`] or
    /// [`FeatureStorage::DiskF16`].
    pub fn storage(&self) -> FeatureStorage {
        match &self.store {
            Store::Memory(_) => FeatureStorage::Memory,
            Store::Disk(d, _) if d.is_half() => FeatureStorage::DiskF16,
            Store::Disk(..) => FeatureStorage::Disk,
        }
    }

    /// Rows `indices` of the features.
    pub fn select(&self, indices: &[usize]) -> Result<[Tensor<B, 4>; 3]> {
        match &self.store {
            Store::Memory(feats) => {
                if let Some(&i) = indices.iter().find(|&&i| i >= self.len()) {
                    return Err(Error::Invalid(format!("feature row {i} of {}", self.len())));
                }
                let device = feats[0].device();
                let idx = index_tensor::<B>(indices, &device);
                Ok([0, 1, 2].map(|s| feats[s].clone().select(0, idx.clone())))
            }
            Store::Disk(disk, device) => disk.select(indices, device),
        }
    }

    /// Rows `start..start + len`.
    pub fn rows(&self, start: usize, len: usize) -> Result<[Tensor<B, 4>; 3]> {
        match &self.store {
            Store::Memory(feats) if start + len <= self.len() => {
                Ok([0, 1, 2].map(|s| feats[s].clone().narrow(0, start, len)))
            }
            _ => self.select(&(start..start + len).collect::<Vec<_>>()),
        }
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

/// Extracts the features of `samples` into a [`FeatureSet`] kept as `options` ask
/// ([`TrainOptions::feature_storage`], within [`TrainOptions::feature_memory`]), builds the
/// prompt pool from them (class means per true category, as CS-NPP defines them) and retrieves
/// every image's prior class.
pub fn build_training_set<B: Backend>(
    config: &PnptConfig,
    backbone: &Backbone<B>,
    samples: &[Sample],
    device: &B::Device,
    options: &TrainOptions,
) -> Result<(FeatureSet<B>, PromptPool<B>)> {
    let pre = preprocess_for(config, backbone);
    let bytes = config.estimate_memory(samples.len()).feature_cache;
    let storage = options.feature_storage_for(config, samples.len());
    let mut builder = PoolBuilder::<B>::new();
    let store = if storage == FeatureStorage::Memory {
        let feats =
            extract_features(backbone, samples, &pre, config.train.feature_batch, device, &options.progress_sink)?;
        // Whole classes at once, in the order the classes first appear.
        let mut names: Vec<&str> = Vec::new();
        for s in samples {
            if !names.contains(&s.category.as_str()) {
                names.push(&s.category);
            }
        }
        for name in names {
            let idx: Vec<usize> =
                samples.iter().enumerate().filter(|(_, s)| s.category == name).map(|(i, _)| i).collect();
            let it = index_tensor::<B>(&idx, device);
            builder.add(name, &[0, 1, 2].map(|s| feats[s].clone().select(0, it.clone())))?;
        }
        Store::Memory(feats)
    } else {
        let parent = options.feature_dir.clone().unwrap_or_else(std::env::temp_dir);
        if options.progress {
            log::info!(
                "training features ({:.2} GiB in f32) go to disk under {} ({storage})",
                bytes as f64 / (1u64 << 30) as f64,
                parent.display()
            );
        }
        let mut writer = DiskWriter::create(&parent, storage == FeatureStorage::DiskF16)?;
        let stage = options.progress_sink.stage("features", samples.len());
        for item in BatchIter::<B>::new(samples, &pre, config.train.feature_batch, None, device)? {
            let (images, idx) = item?;
            let maps = backbone.features(images)?.maps;
            // The pool's class sums from the batch as extracted (the rows written are what
            // training reads back; with f16 the pool keeps the unrounded means).
            let mut seen: Vec<&str> = Vec::new();
            for &i in &idx {
                let name = samples[i].category.as_str();
                if seen.contains(&name) {
                    continue;
                }
                seen.push(name);
                let rows: Vec<usize> =
                    idx.iter().enumerate().filter(|(_, j)| samples[**j].category == name).map(|(r, _)| r).collect();
                let it = index_tensor::<B>(&rows, device);
                builder.add(name, &[0, 1, 2].map(|s| maps[s].clone().select(0, it.clone())))?;
            }
            writer.append(&maps)?;
            stage.advance(idx.len(), || None);
        }
        Store::Disk(writer.finish()?, device.clone())
    };
    let pool = builder.build(config.distance)?;
    let categories: Vec<String> = samples.iter().map(|s| s.category.clone()).collect();
    let mut set = FeatureSet { store, prior_index: vec![0; categories.len()], categories };
    let mut prior_index = Vec::with_capacity(samples.len());
    for start in (0..samples.len()).step_by(64) {
        let len = (samples.len() - start).min(64);
        prior_index.extend(pool.nearest(&set.rows(start, len)?)?.0);
    }
    set.prior_index = prior_index;
    Ok((set, pool))
}

/// The preprocessing for a configuration: the backbone's normalisation at `input_size`.
pub fn preprocess_for<B: Backend>(config: &PnptConfig, backbone: &Backbone<B>) -> Preprocess {
    let p = backbone.preprocess();
    Preprocess::new(config.input_size, p.mean, p.std)
}
