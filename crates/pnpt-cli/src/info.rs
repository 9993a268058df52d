//! `pnpt info` and `GET /v1/info`: what a detector knows and how it decides.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use pnpt::burn::module::Module;
use pnpt::burn::tensor::backend::Backend;
use pnpt::model::{Detector, PnptConfig};
use serde::Serialize;

/// What `pnpt info` and `GET /v1/info` report about a detector (`pnpt info --json` writes it
/// with its keys sorted, [`crate::render::sorted_json`]).
#[derive(Debug, Clone, Serialize)]
pub struct DetectorInfo {
    /// Per category, in the detector's order.
    pub categories: Vec<CategoryInfo>,
    /// How images are scored and judged.
    pub scoring: ScoringInfo,
    /// Backbone name.
    pub backbone: String,
    /// Model input side in pixels.
    pub input_size: u32,
    /// Parameters of the trained model.
    pub parameters: usize,
    /// Feature size of the patch memory (`null` without one).
    pub memory_dim: Option<usize>,
    /// Preset the detector was trained with.
    pub preset: String,
    /// The files of the detector folder and their sizes in bytes (empty without a folder).
    pub files: BTreeMap<String, u64>,
    /// The full configuration.
    pub config: PnptConfig,
}

/// One category of [`DetectorInfo`].
#[derive(Debug, Clone, Serialize)]
pub struct CategoryInfo {
    /// Category name.
    pub name: String,
    /// Image threshold.
    pub threshold: Option<f32>,
    /// Pixel threshold.
    pub pixel_threshold: Option<f32>,
    /// Retrieval-distance limit.
    pub retrieval_limit: Option<f32>,
    /// Training images of the category.
    pub training_images: Option<usize>,
    /// Held-out normal images its thresholds were calibrated on.
    pub heldout_images: Option<usize>,
    /// Patches in its memory bank.
    pub memory_bank: Option<usize>,
}

/// The scoring of [`DetectorInfo`].
#[derive(Debug, Clone, Serialize)]
pub struct ScoringInfo {
    /// `pnpt`, `memory` or `fused`.
    pub method: String,
    /// Weight of the memory map in `fused`.
    pub memory_weight: f64,
    /// The image score rule.
    pub score: String,
    /// The whole rule as one line: the map, its standardisation, and the map the image score
    /// is read from when it is another.
    pub rule: String,
    /// Quantile of held-out normal scores that is a category's image threshold.
    pub threshold_quantile: f64,
    /// Quantile of held-out normal pixels that is a category's pixel threshold.
    pub pixel_quantile: f64,
    /// The threshold of categories without their own.
    pub global_threshold: Option<f32>,
}

/// The detector's [`DetectorInfo`]: categories with their thresholds, training-image counts and
/// memory bank sizes; scoring; backbone; sizes; the full configuration; and, given the folder,
/// its files with their sizes in bytes.
pub fn detector_info<B: Backend>(detector: &Detector<B>, dir: Option<&Path>) -> DetectorInfo {
    let c = detector.config();
    let counts = detector.model().pool().counts();
    let banks = detector.model().memory().map(|m| m.sizes());
    let categories = detector
        .categories()
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let t = detector.post().category_thresholds(name).unwrap_or_default();
            CategoryInfo {
                name: name.clone(),
                threshold: t.image,
                pixel_threshold: t.pixel,
                retrieval_limit: t.retrieval,
                training_images: counts.get(i).copied(),
                heldout_images: detector.post().thresholds().counts.get(name).copied(),
                memory_bank: banks.as_ref().and_then(|b| b.get(i)).copied(),
            }
        })
        .collect();
    let files = dir
        .and_then(|d| std::fs::read_dir(d).ok())
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| Some((e.file_name().to_string_lossy().into_owned(), e.metadata().ok()?.len())))
                .collect()
        })
        .unwrap_or_default();
    DetectorInfo {
        categories,
        scoring: ScoringInfo {
            method: c.scoring.method.to_string(),
            memory_weight: c.scoring.memory_weight,
            score: c.scoring.score.to_string(),
            rule: c.scoring.rule().to_string(),
            threshold_quantile: detector.post().thresholds().quantile,
            pixel_quantile: pnpt::model::detector::PIXEL_QUANTILE,
            global_threshold: detector.post().thresholds().global,
        },
        backbone: c.backbone.to_string(),
        input_size: c.input_size,
        parameters: detector.model().transformer().num_params(),
        memory_dim: detector.model().memory().map(|m| m.dim()),
        preset: c.preset.clone(),
        files,
        config: c.clone(),
    }
}

/// [`DetectorInfo`] for a person to read.
pub fn info_text(info: &DetectorInfo) -> String {
    let mut s = String::new();
    let num = |v: Option<f32>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
    let count = |v: Option<usize>| v.map_or("-".to_string(), |n| n.to_string());
    let _ = writeln!(s, "backbone: {} (input {} x {})", info.backbone, info.input_size, info.input_size);
    let _ = writeln!(s, "preset: {}, parameters: {}", info.preset, info.parameters);
    let sc = &info.scoring;
    let _ = writeln!(
        s,
        "scoring: {}, thresholds = {} quantile of held-out normal scores, pixel thresholds = {} quantile of their pixels",
        sc.rule, sc.threshold_quantile, sc.pixel_quantile
    );
    let _ = writeln!(
        s,
        "\n{:<24} {:>10} {:>10} {:>10} {:>6} {:>8} {:>8}",
        "category", "threshold", "pixel", "retrieval", "train", "held-out", "bank"
    );
    for c in &info.categories {
        let _ = writeln!(
            s,
            "{:<24} {:>10} {:>10} {:>10} {:>6} {:>8} {:>8}",
            c.name,
            num(c.threshold),
            num(c.pixel_threshold),
            num(c.retrieval_limit),
            count(c.training_images),
            count(c.heldout_images),
            count(c.memory_bank)
        );
    }
    if !info.files.is_empty() {
        let _ = writeln!(s, "\nfiles:");
        for (name, bytes) in &info.files {
            let _ = writeln!(s, "  {name:<22} {bytes:>12} bytes");
        }
    }
    s
}
