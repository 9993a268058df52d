//! The anomaly model: images in, raw anomaly maps out (backbone, CS-NPP retrieval, PNPT's
//! reconstruction map of Eq. 8 and the patch memory's map), before any decision.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Tensor, TensorData};
use image::DynamicImage;
use pnpt_backbone::Backbone;
use pnpt_data::{BatchIter, Preprocess, Sample};
use pnpt_memory::PatchMemory;
use pnpt_prompt::PromptPool;

use super::prediction::RETRIEVAL_MARGIN;
use crate::anomaly_map::{anomaly_map, gaussian_blur};
use crate::config::ScoringRule;
use crate::pnpt::{InferencePlan, Pnpt};
use crate::train::{FeatureSet, preprocess_for};
use crate::{Error, PnptConfig, Result};

/// Which raw maps to compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Maps {
    /// PNPT's reconstruction map.
    pub pnpt: bool,
    /// The patch memory's map.
    pub memory: bool,
}

impl Maps {
    /// PNPT's map only.
    pub const PNPT: Maps = Maps { pnpt: true, memory: false };

    /// The maps `rule` reads.
    pub fn of(rule: &ScoringRule) -> Self {
        Self { pnpt: rule.uses_pnpt(), memory: rule.uses_memory() }
    }
}

/// The raw maps of a batch (smoothed, at the input size, on the host), before the
/// [`PostProcessor`](super::PostProcessor) combines them. Maps that were not asked for are `None`.
#[derive(Debug, Clone, Default)]
pub struct Components {
    /// PNPT's reconstruction maps, `n × size × size`.
    pub pnpt: Option<Vec<f32>>,
    /// The patch memory's maps, `n × size × size`.
    pub memory: Option<Vec<f32>>,
    /// `n` retrieved pool indices.
    pub categories: Vec<usize>,
    /// `n` retrieval distances (to the retrieved or given class).
    pub distances: Vec<f32>,
    /// Map side.
    pub size: usize,
}

impl Components {
    fn empty(size: usize) -> Self {
        Self { size, ..Default::default() }
    }

    fn extend(&mut self, other: Components) {
        let join = |a: &mut Option<Vec<f32>>, b: Option<Vec<f32>>| match (a.as_mut(), b) {
            (Some(a), Some(b)) => a.extend(b),
            (None, b) => *a = b,
            (Some(_), None) => {}
        };
        join(&mut self.pnpt, other.pnpt);
        join(&mut self.memory, other.memory);
        self.categories.extend(other.categories);
        self.distances.extend(other.distances);
        self.size = other.size;
    }
}

/// Backbone, prompt pool, PNPT and (optionally) the patch memory: everything of a detector that
/// turns images into raw maps. On the CPU backend it is `Send + Sync`.
#[derive(Debug, Clone)]
pub struct AnomalyModel<B: Backend> {
    config: PnptConfig,
    backbone: Backbone<B>,
    pool: PromptPool<B>,
    transformer: Pnpt<B>,
    /// Folded HPE / HPE⁻¹ and the pool's embedded priors, built once from `transformer` and `pool`.
    plan: InferencePlan<B>,
    memory: Option<PatchMemory<B>>,
    device: B::Device,
}

impl<B: Backend> AnomalyModel<B> {
    /// Assembles a model, checking that its parts fit the configuration.
    pub fn new(config: PnptConfig, backbone: Backbone<B>, pool: PromptPool<B>, transformer: Pnpt<B>) -> Result<Self> {
        config.validate()?;
        let spec = config.feature_spec();
        let mismatch = |reason: String| Err(Error::Config(reason));
        if backbone.kind() != config.backbone {
            return mismatch(format!("backbone is {} but the configuration says {}", backbone.kind(), config.backbone));
        }
        if transformer.spec != spec || transformer.config != config.model {
            return mismatch(
                "the model was built for another architecture or feature shape than the configuration".into(),
            );
        }
        for (i, shape) in pool.shapes().iter().enumerate() {
            if *shape != [spec.channels[i], spec.sizes[i][0], spec.sizes[i][1]] {
                return mismatch(format!("prompt pool scale {i} is {shape:?}, the configuration gives {spec:?}"));
            }
        }
        let device = pool.codes().device();
        let plan = transformer.plan(pool.priors())?;
        Ok(Self { config, backbone, pool, transformer, plan, memory: None, device })
    }

    /// Adds a patch memory; its classes must be the pool's, in the same order, and its patch
    /// width the backbone's.
    pub fn with_memory(mut self, memory: PatchMemory<B>) -> Result<Self> {
        if memory.names() != self.pool.names() {
            return Err(Error::Config(format!(
                "patch memory classes {:?} differ from the prompt pool's {:?}",
                memory.names(),
                self.pool.names()
            )));
        }
        let want = pnpt_memory::patch_dim(self.config.backbone.channels(), memory.config().max_dim);
        if memory.dim() != want {
            return Err(Error::Config(format!(
                "patch memory holds {}-d patches, the backbone gives {want}-d",
                memory.dim()
            )));
        }
        self.memory = Some(memory);
        Ok(self)
    }

    /// The configuration the model was built with (a detector's own is
    /// [`Detector::config`](super::Detector::config), whose scoring rule is its post-processor's).
    pub fn config(&self) -> &PnptConfig {
        &self.config
    }
    pub(super) fn config_mut(&mut self) -> &mut PnptConfig {
        &mut self.config
    }
    /// The frozen backbone.
    pub fn backbone(&self) -> &Backbone<B> {
        &self.backbone
    }
    /// The CS-NPP prompt pool.
    pub fn pool(&self) -> &PromptPool<B> {
        &self.pool
    }
    /// The transformer.
    pub fn transformer(&self) -> &Pnpt<B> {
        &self.transformer
    }
    /// The patch memory, if the model has one.
    pub fn memory(&self) -> Option<&PatchMemory<B>> {
        self.memory.as_ref()
    }
    /// Category names (pool order).
    pub fn categories(&self) -> &[String] {
        self.pool.names()
    }
    /// The device the model lives on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }
    /// The input preprocessing (resize to `input_size`, backbone normalisation).
    pub fn preprocess(&self) -> Preprocess {
        preprocess_for(&self.config, &self.backbone)
    }

    /// The pool index of `category`, or an error listing the known ones.
    pub fn category_index(&self, category: &str) -> Result<usize> {
        category_index(self.categories(), category)
    }

    /// The raw maps of a preprocessed batch `[n, 3, size, size]`, each smoothed by the same
    /// Gaussian; with the class `category` (pool index) instead of the retrieved one when given.
    pub fn components(&self, images: Tensor<B, 4>, maps: Maps, category: Option<usize>) -> Result<Components> {
        let size = self.config.input_size as usize;
        let [n, c, h, w] = images.dims();
        if c != 3 || h != size || w != size || n == 0 {
            return Err(Error::Shape(format!("images [{n}, {c}, {h}, {w}]: expected [n >= 1, 3, {size}, {size}]")));
        }
        let feats = self.backbone.features(images)?.maps;
        self.feature_components(feats, maps, category)
    }

    /// [`components`](Self::components) of decoded images (any size; resized to `input_size`),
    /// `batch` at a time.
    pub fn image_components(
        &self,
        images: &[DynamicImage],
        batch: usize,
        maps: Maps,
        category: Option<usize>,
    ) -> Result<Components> {
        let pre = self.preprocess();
        let size = pre.size as usize;
        let mut all = Components::empty(size);
        for chunk in images.chunks(batch.max(1)) {
            let mut flat = Vec::with_capacity(chunk.len() * pre.len());
            for img in chunk {
                flat.extend(pnpt_data::to_chw(img, &pre));
            }
            let x = Tensor::<B, 4>::from_data(TensorData::new(flat, [chunk.len(), 3, size, size]), &self.device);
            all.extend(self.components(x, maps, category)?);
        }
        Ok(all)
    }

    /// [`components`](Self::components) of dataset samples, in batches (parallel decoding
    /// ahead of the model).
    pub fn sample_components(&self, samples: &[Sample], batch: usize, maps: Maps) -> Result<Components> {
        let mut all = Components::empty(self.config.input_size as usize);
        if samples.is_empty() {
            return Ok(all);
        }
        for item in BatchIter::<B>::new(samples, &self.preprocess(), batch.max(1), None, &self.device)? {
            let (images, _) = item?;
            all.extend(self.components(images, maps, None)?);
        }
        Ok(all)
    }

    /// [`components`](Self::components) from cached backbone features (no decoding, no backbone
    /// pass), `batch` images at a time.
    pub fn feature_set_components(&self, set: &FeatureSet<B>, batch: usize, maps: Maps) -> Result<Components> {
        let mut all = Components::empty(self.config.input_size as usize);
        let idx: Vec<usize> = (0..set.len()).collect();
        for chunk in idx.chunks(batch.max(1)) {
            all.extend(self.feature_components(set.select(chunk)?, maps, None)?);
        }
        Ok(all)
    }

    fn feature_components(&self, feats: [Tensor<B, 4>; 3], maps: Maps, category: Option<usize>) -> Result<Components> {
        if maps.memory && self.memory.is_none() {
            return Err(Error::Config(
                "the patch memory's map was asked for, and this detector has none (it was trained with `pnpt` scoring)"
                    .into(),
            ));
        }
        let size = self.config.input_size as usize;
        let (categories, distances) = retrieve(&self.pool, &feats, category)?;
        let sigma = self.config.scoring.sigma;
        let to_host = |t: Tensor<B, 3>| -> Result<Vec<f32>> {
            let v: Vec<f32> = t.into_data().iter::<f32>().collect();
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::Invalid("non-finite anomaly map (NaN features?)".into()));
            }
            Ok(v)
        };
        let pnpt = if maps.pnpt {
            let recon = self.transformer.forward_planned(&self.plan, &feats, &categories)?;
            let fused = recon.fused(self.config.scoring.fusion_weight);
            Some(to_host(anomaly_map(&feats, &fused, [size, size], sigma))?)
        } else {
            None
        };
        let memory = match (&self.memory, maps.memory) {
            (Some(bank), true) => {
                let d = bank.score(&feats, &categories)?;
                let [n, gh, gw] = d.dims();
                let up = interpolate(
                    d.reshape([n, 1, gh, gw]),
                    [size, size],
                    InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false),
                );
                Some(to_host(gaussian_blur(up.reshape([n, size, size]), sigma))?)
            }
            _ => None,
        };
        Ok(Components { pnpt, memory, categories, distances, size })
    }

    /// Retrieval-distance limits from the training images' features: each image raises its own
    /// class (by its distance to that class) and its retrieved class (by the nearest distance).
    pub fn retrieval_limits(&self, set: &FeatureSet<B>) -> Result<BTreeMap<String, f32>> {
        let truth = &set.categories;
        let (names, k) = (self.pool.names(), self.pool.len());
        let mut limits = BTreeMap::new();
        for start in (0..truth.len()).step_by(64) {
            let len = (truth.len() - start).min(64);
            let dist: Vec<f32> = self.pool.distances(&set.rows(start, len)?)?.into_data().iter::<f32>().collect();
            for (row, t) in dist.chunks(k).zip(&truth[start..start + len]) {
                if let Some(own) = names.iter().position(|n| n == t) {
                    raise_limit(&mut limits, t, row[own]);
                }
                let (best, d) = row
                    .iter()
                    .copied()
                    .enumerate()
                    .fold((0, f32::INFINITY), |a, (i, d)| if d < a.1 { (i, d) } else { a });
                raise_limit(&mut limits, &names[best], d);
            }
        }
        Ok(limits)
    }
}

/// The index of `category` in `names`, or an error listing the known ones.
pub(super) fn category_index(names: &[String], category: &str) -> Result<usize> {
    names.iter().position(|c| c == category).ok_or_else(|| {
        Error::Invalid(format!("unknown category `{category}`: this detector knows {}", names.join(", ")))
    })
}

/// Raises `class`'s retrieval limit to [`RETRIEVAL_MARGIN`] × `distance` (NaN sets nothing).
pub(super) fn raise_limit(limits: &mut BTreeMap<String, f32>, class: &str, distance: f32) {
    let v = distance * RETRIEVAL_MARGIN;
    if v.is_finite() {
        let e = limits.entry(class.to_string()).or_insert(v);
        *e = e.max(v);
    }
}

/// Per image, the nearest class and its distance, or the distance to `forced` when given.
fn retrieve<B: Backend>(
    pool: &PromptPool<B>,
    feats: &[Tensor<B, 4>; 3],
    forced: Option<usize>,
) -> Result<(Vec<usize>, Vec<f32>)> {
    let Some(class) = forced else { return Ok(pool.nearest(feats)?) };
    let k = pool.len();
    if class >= k {
        return Err(Error::Invalid(format!("class index {class} out of range for a pool of {k} classes")));
    }
    let dist: Vec<f32> = pool.distances(feats)?.into_data().iter::<f32>().collect();
    let d: Vec<f32> = dist.chunks(k).map(|row| row[class]).collect();
    if d.iter().any(|v| !v.is_finite()) {
        return Err(Error::Invalid("query features give a non-finite retrieval distance (NaN features?)".into()));
    }
    Ok((vec![class; d.len()], d))
}
