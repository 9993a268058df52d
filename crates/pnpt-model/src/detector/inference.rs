//! Scoring: component maps, their combination by a scoring rule, predictions.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use image::DynamicImage;
use pnpt_data::{BatchIter, Sample};

use super::Detector;
use crate::anomaly_map::{anomaly_map, gaussian_blur, host_image_score};
use crate::config::{ScoreSource, ScoringMethod, ScoringRule};
use crate::fusion::{MapStats, combine_maps};
use crate::{Error, Result};

/// One image's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Image anomaly score (max or top-k mean of the smoothed map).
    pub score: f32,
    /// Anomaly map, row-major `height × width` at the model's input size.
    pub anomaly_map: Vec<f32>,
    /// Map height (= `input_size`).
    pub height: usize,
    /// Map width (= `input_size`).
    pub width: usize,
    /// The retrieved (inferred) category.
    pub category: String,
    /// `score > threshold` of the retrieved category.
    pub is_anomalous: bool,
    /// The threshold used, if any was calibrated.
    pub threshold: Option<f32>,
    /// `score / threshold` (above 1 = anomalous) when the threshold is positive.
    pub normalized_score: Option<f32>,
    /// The category's pixel threshold ([`Prediction::defect_mask`]), if calibrated.
    pub pixel_threshold: Option<f32>,
    /// Retrieval distance from the image to its category's coding.
    pub retrieval_distance: f32,
    /// The distance exceeds what the category's normal images reach: probably a product the
    /// detector never saw (see [`crate::predict`]).
    pub unknown_category: bool,
}

/// Raw results of a batch: what evaluation needs, without per-image allocation.
#[derive(Debug, Clone)]
pub struct BatchOutput {
    /// `n × size × size` anomaly maps, row-major per image.
    pub maps: Vec<f32>,
    /// `n` image scores.
    pub scores: Vec<f32>,
    /// `n` retrieved pool indices.
    pub categories: Vec<usize>,
    /// `n` retrieval distances (to the retrieved or given class).
    pub distances: Vec<f32>,
    /// Map side.
    pub size: usize,
}

/// The component maps of a batch (smoothed, at the input size, on the host), before they are
/// combined into the final map of a [`ScoringMethod`]. Maps that were not asked for are `None`.
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
    pub(crate) fn extend(&mut self, other: Components) {
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

impl<B: Backend> Detector<B> {
    /// Scores a preprocessed batch `[n, 3, size, size]` with the configured method.
    pub fn infer(&self, images: Tensor<B, 4>) -> Result<BatchOutput> {
        let rule = self.config.scoring.rule();
        let parts = self.components(images, rule.uses_pnpt(), rule.uses_memory())?;
        self.combine_with(&parts, &rule)
    }

    /// The component maps of a preprocessed batch `[n, 3, size, size]`: PNPT's (when `pnpt`) and
    /// the patch memory's (when `memory`), each smoothed by the same Gaussian.
    pub fn components(&self, images: Tensor<B, 4>, pnpt: bool, memory: bool) -> Result<Components> {
        self.components_as(images, pnpt, memory, None)
    }

    /// [`components`](Self::components) with the class `category` (pool index) instead of the
    /// retrieved one when given.
    pub fn components_as(
        &self,
        images: Tensor<B, 4>,
        pnpt: bool,
        memory: bool,
        category: Option<usize>,
    ) -> Result<Components> {
        let size = self.config.input_size as usize;
        let [n, c, h, w] = images.dims();
        if c != 3 || h != size || w != size || n == 0 {
            return Err(Error::Shape(format!("images [{n}, {c}, {h}, {w}]: expected [n >= 1, 3, {size}, {size}]")));
        }
        if memory {
            self.check_method(ScoringMethod::Memory)?;
        }
        let feats = self.backbone.features(images)?.maps;
        self.components_of_features(feats, pnpt, memory, category)
    }

    /// [`components_as`](Self::components_as) from backbone features.
    pub(super) fn components_of_features(
        &self,
        feats: [Tensor<B, 4>; 3],
        pnpt: bool,
        memory: bool,
        category: Option<usize>,
    ) -> Result<Components> {
        let size = self.config.input_size as usize;
        let (categories, distances) = crate::predict::retrieve(&self.pool, &feats, category)?;
        let sigma = self.config.scoring.sigma;
        let to_host = |t: Tensor<B, 3>| -> Result<Vec<f32>> {
            let v: Vec<f32> = t.into_data().iter::<f32>().collect();
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::Invalid("non-finite anomaly map (NaN features?)".into()));
            }
            Ok(v)
        };
        let pnpt_map = if pnpt {
            let recon = self.model.forward_planned(&self.plan, &feats, &categories)?;
            let fused = recon.fused(self.config.scoring.fusion_weight);
            Some(to_host(anomaly_map(&feats, &fused, [size, size], sigma))?)
        } else {
            None
        };
        let memory_map = match (&self.memory, memory) {
            (Some(bank), true) => {
                let d = bank.score(&feats, &categories)?;
                let [n, gh, gw] = d.dims();
                let d = d.reshape([n, 1, gh, gw]);
                let up = interpolate(
                    d,
                    [size, size],
                    InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false),
                );
                Some(to_host(gaussian_blur(up.reshape([n, size, size]), sigma))?)
            }
            _ => None,
        };
        Ok(Components { pnpt: pnpt_map, memory: memory_map, categories, distances, size })
    }

    /// Combines component maps into the final maps and image scores of the configured rule.
    pub fn combine(&self, parts: &Components) -> Result<BatchOutput> {
        self.combine_with(parts, &self.config.scoring.rule())
    }

    /// Combines component maps by any scoring rule. With `positional`, the map the image score
    /// is read from uses PNPT's map standardised position by position (floored by the class's
    /// held-out deviation) instead of by the class's one mean and deviation, where the class has
    /// positional statistics; with `positional_map` too, so does the returned anomaly map. The
    /// image score reads the anomaly map's own combination unless `score_from` names another.
    pub fn combine_with(&self, parts: &Components, rule: &ScoringRule) -> Result<BatchOutput> {
        let size = parts.size;
        let px = size * size;
        let n = parts.categories.len();
        fn pick<'a>(
            v: &'a Option<Vec<f32>>,
            wanted: bool,
            len: usize,
            what: &str,
            rule: &ScoringRule,
        ) -> Result<Option<&'a [f32]>> {
            match (v, wanted) {
                (_, false) => Ok(None),
                (Some(v), true) if v.len() == len => Ok(Some(v.as_slice())),
                _ => Err(Error::Invalid(format!("scoring rule `{rule}` needs the {what} maps of every image"))),
            }
        }
        let pnpt = pick(&parts.pnpt, rule.uses_pnpt(), n * px, "PNPT", rule)?;
        let memory = pick(&parts.memory, rule.uses_memory(), n * px, "patch memory", rule)?;
        let source = rule.score_source();
        let map_positional = rule.positional && rule.positional_map;
        // The image score reads the anomaly map itself when both are the same map.
        let own_map = source == ScoreSource { method: rule.method, memory_weight: rule.memory_weight }
            && (rule.positional == map_positional || !rule.method.uses_pnpt());
        let mut maps = Vec::with_capacity(n * px);
        let mut scores = Vec::with_capacity(n);
        for i in 0..n {
            let name = &self.pool.names()[parts.categories[i]];
            let (sp, sm) = self.normalization.for_category(name);
            let own = pnpt.map(|m| &m[i * px..(i + 1) * px]);
            let mem = memory.map(|m| &m[i * px..(i + 1) * px]);
            let z = own.filter(|_| rule.uses_positional()).and_then(|p| self.positional.standardise(name, p, sp.std));
            let map_of = |ScoreSource { method, memory_weight }: ScoreSource, positional: bool| {
                let mem = mem.filter(|_| method.uses_memory());
                match (&z, method.uses_pnpt()) {
                    (Some(z), true) if positional => {
                        combine_maps(Some(z), mem, (MapStats::IDENTITY, sm), memory_weight)
                    }
                    (_, uses) => combine_maps(own.filter(|_| uses), mem, (sp, sm), memory_weight),
                }
            };
            let map = map_of(ScoreSource { method: rule.method, memory_weight: rule.memory_weight }, map_positional);
            let score = if own_map {
                host_image_score(&map, rule.score)
            } else {
                host_image_score(&map_of(source, rule.positional), rule.score)
            };
            scores.push(score);
            maps.extend(map);
        }
        if scores.iter().any(|s| !s.is_finite()) {
            return Err(Error::Invalid("non-finite anomaly score (NaN features?)".into()));
        }
        // Outputs built by hand (tests) may carry no distances: read as 0, never unknown.
        let mut distances = parts.distances.clone();
        distances.resize(n, 0.0);
        Ok(BatchOutput { maps, scores, categories: parts.categories.clone(), distances, size })
    }

    /// Scores images already decoded (any size; resized to `input_size`).
    pub fn predict_batch(&self, images: &[DynamicImage]) -> Result<Vec<Prediction>> {
        self.predict_batch_as(images, None)
    }

    /// Scores one image.
    pub fn predict(&self, image: &DynamicImage) -> Result<Prediction> {
        Ok(self.predict_batch(std::slice::from_ref(image))?.remove(0))
    }

    /// Splits a batch result into per-image predictions with decisions.
    pub fn to_predictions(&self, out: BatchOutput) -> Vec<Prediction> {
        let px = out.size * out.size;
        (0..out.scores.len())
            .map(|i| {
                let category = self.pool.names()[out.categories[i]].clone();
                let threshold = self.thresholds.for_category(&category);
                let distance = out.distances.get(i).copied().unwrap_or(0.0);
                Prediction {
                    score: out.scores[i],
                    anomaly_map: out.maps[i * px..(i + 1) * px].to_vec(),
                    height: out.size,
                    width: out.size,
                    is_anomalous: threshold.is_some_and(|t| out.scores[i] > t),
                    threshold,
                    normalized_score: threshold.filter(|t| *t > 0.0).map(|t| out.scores[i] / t),
                    pixel_threshold: self.thresholds.pixel.get(&category).copied(),
                    retrieval_distance: distance,
                    unknown_category: self.thresholds.retrieval.get(&category).is_some_and(|&l| distance > l),
                    category,
                }
            })
            .collect()
    }

    /// Scores dataset samples in batches (parallel decoding ahead of the model).
    pub fn infer_samples(&self, samples: &[Sample], batch: usize) -> Result<BatchOutput> {
        let rule = self.config.scoring.rule();
        let parts = self.sample_components(samples, batch, rule.uses_pnpt(), rule.uses_memory())?;
        self.combine_with(&parts, &rule)
    }

    /// [`components`](Self::components) of dataset samples, in batches.
    pub fn sample_components(&self, samples: &[Sample], batch: usize, pnpt: bool, memory: bool) -> Result<Components> {
        let mut all = Components { size: self.config.input_size as usize, ..Default::default() };
        if samples.is_empty() {
            return Ok(all);
        }
        for item in BatchIter::<B>::new(samples, &self.preprocess(), batch.max(1), None, &self.device)? {
            let (images, _) = item?;
            all.extend(self.components(images, pnpt, memory)?);
        }
        Ok(all)
    }

    /// [`components`](Self::components) of decoded images (any size; resized to `input_size`),
    /// `batch` at a time.
    pub fn image_components(
        &self,
        images: &[DynamicImage],
        batch: usize,
        pnpt: bool,
        memory: bool,
    ) -> Result<Components> {
        self.image_components_as(images, batch, pnpt, memory, None)
    }
}
