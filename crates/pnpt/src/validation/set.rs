//! The validation set: held-out normal images and pseudo-anomalies made from them, scored
//! under many rules from one pass of the model.

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use pnpt_data::Sample;
use pnpt_data::image::DynamicImage;
use pnpt_model::{Components, Detector, Maps, ScoringMethod, ScoringRule};
use pnpt_synth::pseudo_anomaly::{PseudoAnomalyConfig, resize_to, synthesize};
use rayon::prelude::*;

use super::{Scores, ValidationOptions};
use crate::{Error, Result};

#[derive(Debug, Clone)]
struct CategorySet {
    name: String,
    images: Vec<DynamicImage>,
    labels: Vec<bool>,
    masks: Vec<u8>,
}

/// The validation images of every category, built once and scored as often as needed.
#[derive(Debug, Clone)]
pub struct ValidationSet {
    /// Per category, sorted by name.
    categories: Vec<CategorySet>,
    /// Held-out normal images.
    pub normal_images: usize,
    /// Synthetic anomalous images made from them.
    pub anomalous_images: usize,
}

impl ValidationSet {
    /// Builds the set from the held-out images `holdout` (resized to `size`), with cut-paste
    /// donors taken from `train`; categories without held-out images are left out.
    pub fn build(holdout: &[Sample], train: &[Sample], size: u32, options: &ValidationOptions) -> Result<Self> {
        let px = (size * size) as usize;
        let (mut normal_images, mut anomalous_images) = (0, 0);
        let mut names: Vec<&str> = holdout.iter().map(|s| s.category.as_str()).collect();
        names.sort();
        names.dedup();
        let mut categories = Vec::new();
        for name in names {
            let normals: Vec<_> = holdout
                .iter()
                .filter(|s| s.category == name)
                .map(|s| pnpt_data::decode_rgb(&s.path).map(|img| resize_to(&img, size)))
                .collect::<std::result::Result<_, _>>()?;
            let donors: Vec<_> = train
                .iter()
                .filter(|s| s.category == name)
                .take(options.donors)
                .map(|s| pnpt_data::decode_rgb(&s.path))
                .collect::<std::result::Result<_, _>>()?;
            let config = PseudoAnomalyConfig { size, per_image: options.per_image, seed: options.seed };
            let pseudo = synthesize(&normals, &donors, &config)?;
            let mut images: Vec<DynamicImage> = normals.iter().cloned().map(DynamicImage::ImageRgb8).collect();
            let mut masks = vec![0u8; normals.len() * px];
            let mut labels = vec![false; normals.len()];
            for p in pseudo {
                images.push(DynamicImage::ImageRgb8(p.image));
                masks.extend(p.mask);
                labels.push(true);
            }
            normal_images += normals.len();
            anomalous_images += labels.len() - normals.len();
            categories.push(CategorySet { name: name.to_string(), images, labels, masks });
        }
        Ok(Self { categories, normal_images, anomalous_images })
    }

    /// Per category, the metrics of every rule in `rules`, from one pass of the model (PNPT's
    /// map, and the memory's when a rule needs it); AUPRO only when `aupro` is set (else 0).
    pub fn score<B: Backend>(
        &self,
        detector: &Detector<B>,
        rules: &[ScoringRule],
        batch_size: usize,
        aupro: bool,
    ) -> Result<Vec<BTreeMap<String, Scores>>> {
        let memory = rules.iter().any(ScoringRule::uses_memory);
        let mut per_rule = vec![BTreeMap::new(); rules.len()];
        for CategorySet { name, images, labels, masks } in &self.categories {
            let parts: Components =
                detector.model().image_components(images, batch_size, Maps { pnpt: true, memory }, None)?;
            let scores = score_rules(detector, name, &parts, rules, masks, labels, aupro)?;
            for (c, s) in scores.into_iter().enumerate() {
                per_rule[c].insert(name.to_string(), s);
            }
        }
        Ok(per_rule)
    }

    /// Mean image and pixel AUROC over the categories of PNPT's map alone, per class
    /// standardised, with the detector's image-score rule: what [`crate::train::train`] records
    /// after every epoch.
    pub fn score_pnpt<B: Backend>(&self, detector: &Detector<B>, batch_size: usize) -> Result<(f64, f64)> {
        let rule = ScoringRule {
            method: ScoringMethod::Pnpt,
            memory_weight: 0.0,
            score: detector.config().scoring.score,
            positional: false,
            positional_map: false,
            score_from: None,
        };
        let per = self.score(detector, &[rule], batch_size, false)?.remove(0);
        let n = per.len().max(1) as f64;
        Ok((per.values().map(|v| v.image_auroc).sum::<f64>() / n, per.values().map(|v| v.pixel_auroc).sum::<f64>() / n))
    }
}

/// Image AUROC, pixel AUROC and (when `aupro`) AUPRO of every rule on one category's component
/// maps. The pixel metrics (a sort of every pixel) dominate, and the map does not depend on the
/// image-score rule nor, without `positional_map`, on `positional`: they are computed once per
/// distinct map, one map per thread.
pub(crate) fn score_rules<B: Backend>(
    detector: &Detector<B>,
    category: &str,
    parts: &Components,
    rules: &[ScoringRule],
    masks: &[u8],
    labels: &[bool],
    aupro: bool,
) -> Result<Vec<Scores>> {
    let metric = |e| Error::CategoryMetrics { category: category.to_string(), source: e };
    let outs =
        rules.iter().map(|rule| detector.post().combine_with(parts, rule)).collect::<pnpt_model::Result<Vec<_>>>()?;
    let map_key = |r: &ScoringRule| {
        let weight = if r.method == ScoringMethod::Fused { r.memory_weight.to_bits() } else { 0 };
        (r.method, weight, r.positional && r.positional_map && r.method.uses_pnpt())
    };
    let keys: Vec<_> = rules.iter().map(map_key).collect();
    // The first rule of each distinct map computes its pixel metrics.
    let firsts: Vec<usize> = (0..rules.len()).filter(|&i| !keys[..i].contains(&keys[i])).collect();
    // Pixel labels for the AUROC-only path, made when needed rather than stored twice.
    let pixel_labels: Vec<bool> = if aupro { Vec::new() } else { masks.iter().map(|&m| m != 0).collect() };
    let pixel: Vec<(f64, f64)> = firsts
        .par_iter()
        .map(|&i| {
            let out = &outs[i];
            if aupro {
                // Pixel AUROC and AUPRO from one sort of the pixels.
                let size = parts.size;
                let m = pnpt_metrics::pixel_metrics(
                    &out.maps,
                    masks,
                    labels.len(),
                    size,
                    size,
                    pnpt_metrics::AUPRO_FPR_LIMIT,
                )
                .map_err(metric)?;
                Ok((m.auroc, m.aupro))
            } else {
                Ok((pnpt_metrics::auroc(&out.maps, &pixel_labels).map_err(metric)?, 0.0))
            }
        })
        .collect::<Result<_>>()?;
    outs.iter()
        .zip(&keys)
        .map(|(out, key)| {
            let image_auroc = pnpt_metrics::auroc(&out.scores, labels).map_err(metric)?;
            let j = firsts.iter().position(|&i| &keys[i] == key).unwrap_or(0);
            let (pixel_auroc, aupro) = pixel[j];
            Ok(Scores { image_auroc, pixel_auroc, aupro })
        })
        .collect()
}
