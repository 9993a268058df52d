//! Evaluation of a trained [`Detector`] on a dataset: the metrics of `pnpt-metrics` per
//! category, class-retrieval accuracy and speed, as a [`Report`] and, with an output folder,
//! written as `report.json`, `report.md` and heat maps `heatmaps/<category>/<defect>_<stem>.png`
//! ([`crate::heatmap`]; every file via temp + rename). A library call: a program embedding
//! `pnpt` evaluates this way. The page `report.html` is the command's (`pnpt_cli::html`).
//!
//! `report.json`:
//! ```text
//! {"categories": {"<cat>": M, ...}, "mean": M, "preset": "cpu", "seed": 0, "device": "cpu",
//!  "train_seconds": 0.0, "ms_per_image": 0.0, "method": "fused", "aupro_fpr_limit": 0.3,
//!  "methods": {"pnpt": {"categories": {...}, "mean": M}, "memory": ..., "fused": ...},
//!  "images": {"<cat>": {"colour_scale": {"lo", "hi", "threshold", "centred"},
//!             "results": [{"path", "defect", "score", "anomalous", "heatmap"}, ...]}}, ...extra}
//! M = {"image_auroc", "pixel_auroc", "aupro", "image_ap", "pixel_ap", "image_f1_max",
//!      "pixel_f1_max", "retrieval_accuracy", "image_threshold", "pixel_threshold"}
//! ```
//! The keys are defined once, by the serde types [`MetricsRecord`] (`M`, also what
//! `examples/score_maps.rs` prints, as [`MapScores`]) and the private ones of `schema.rs`.
//! `methods` scores the same test images with every method the detector can use (one pass of
//! the model; the ablation of the scoring method), the top-level tables are the detector's own
//! method. `images` holds every test image's score under the category's decision threshold
//! (`null` when none was calibrated) and its heat map, relative to the report (`null` when heat
//! maps were not written); the heat maps' colour scale is fixed per category by that threshold
//! ([`ColourScale`]).

mod agreement;
mod markdown;
mod report;
#[cfg(any(test, feature = "testing"))]
mod sample;
mod schema;

use std::path::PathBuf;
use std::time::Instant;

use burn::config::Config;
use burn::tensor::backend::Backend;
use pnpt_data::{Dataset, Sample};
use pnpt_metrics::CategoryMetrics;
use pnpt_model::detector::{BatchOutput, Detector, Maps};
use pnpt_model::{ScoringMethod, ScoringRule};
use serde_json::{Map, Value};

use crate::heatmap::{self, ColourScale};
use crate::validation::Validation;
use crate::{Error, Result};

pub use agreement::{Agreement, CandidateAgreement};
pub use report::{CategoryReport, ImageResult, METRIC_COLUMNS, MethodReport, Report, metric_values};
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub use sample::{sample_agreement, sample_report};
pub use schema::{MapScores, MetricsRecord};

/// The heat maps' colour rule in one paragraph, for the reports (details: [`crate::heatmap`]).
pub const COLOUR_RULE: &str = "Each heat map shows image | overlay | ground truth. The colour scale is fixed per category: \
from lo, the median pixel of the category's held-out normal images (transparent blue), to hi = 2·threshold − lo (red), so the \
category's decision threshold is always the middle of the colour bar (white tick) and one colour means one score on \
every image of the category; the overlay's opacity grows with the score. The white contour encloses the pixels above \
the threshold, magenta outlines the ground truth. Without a usable threshold the scale is the category's min..max.";

/// Options of [`evaluate`]. Burn's `Config` derive writes the `with_*` setters (code outside
/// the crate builds it with them: `#[non_exhaustive]` refuses struct literals there, so adding
/// an option breaks no caller).
#[derive(Config, Debug)]
#[non_exhaustive]
pub struct EvaluateOptions {
    /// Images per forward.
    #[config(default = 8)]
    pub batch_size: usize,
    /// Folder for `report.json`, `report.md` and `heatmaps/`; `None` writes nothing.
    pub out_dir: Option<PathBuf>,
    /// Write heat maps (one PNG per test image).
    #[config(default = true)]
    pub heatmaps: bool,
    /// Recorded in the report.
    #[config(default = "String::new()")]
    pub preset: String,
    /// Recorded in the report.
    #[config(default = 0)]
    pub seed: u64,
    /// Recorded in the report.
    #[config(default = "\"cpu\".into()")]
    pub device: String,
    /// Recorded in the report.
    #[config(default = 0.0)]
    pub train_seconds: f64,
    /// More top-level entries for `report.json`.
    #[config(default = "Map::new()")]
    pub extra: Map<String, Value>,
    /// The validation of the scoring candidates, when the detector was just trained or
    /// rescored: every candidate is then also scored on the test split ([`Agreement`]).
    pub validation: Option<Validation>,
}

impl Default for EvaluateOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// The categories [`evaluate`] skips, with the reason: those without both normal and
/// anomalous test images, whose metrics are undefined; [`Error::NothingToEvaluate`] when that
/// is every category. It only counts files, so a job calls it before training rather than
/// learn this after.
pub fn check_evaluable(dataset: &Dataset) -> Result<Vec<(String, String)>> {
    let mut skipped = Vec::new();
    for cat in &dataset.categories {
        let n = cat.test.len();
        let anomalous = cat.test.iter().filter(|s| s.is_anomalous()).count();
        if n == 0 || anomalous == 0 || anomalous == n {
            skipped.push((cat.name.clone(), format!("{anomalous} anomalous and {} normal test images", n - anomalous)));
        }
    }
    if skipped.len() == dataset.categories.len() {
        return Err(Error::NothingToEvaluate);
    }
    Ok(skipped)
}

/// Evaluates `detector` on the test split of every category of `dataset`, with its own scoring
/// method and, for the `methods` ablation, every other method it can use.
pub fn evaluate<B: Backend>(detector: &Detector<B>, dataset: &Dataset, options: &EvaluateOptions) -> Result<Report> {
    let size = detector.config().input_size as usize;
    let rule = detector.config().scoring.rule();
    let own = rule.method;
    let methods: Vec<ScoringMethod> =
        if detector.model().memory().is_some() { ScoringMethod::ALL.to_vec() } else { vec![ScoringMethod::Pnpt] };
    let mut per_method: Vec<Vec<(String, CategoryMetrics)>> = vec![Vec::new(); methods.len()];
    let mut categories = Vec::new();
    let skipped = check_evaluable(dataset)?;
    let mut images = 0usize;
    let mut seconds = 0.0f64;
    let mut agreement = options.validation.as_ref().map(agreement::AgreementBuilder::new);
    for cat in &dataset.categories {
        let n = cat.test.len();
        if skipped.iter().any(|(name, _)| *name == cat.name) {
            continue;
        }
        let t0 = Instant::now();
        let parts = detector.model().sample_components(
            &cat.test,
            options.batch_size,
            Maps { pnpt: true, memory: methods.len() > 1 },
        )?;
        let out = detector.post().combine(&parts)?;
        seconds += t0.elapsed().as_secs_f64();
        images += n;
        let masks = pnpt_data::load_masks(&cat.test, size as u32)?;
        let labels: Vec<bool> = cat.test.iter().map(Sample::is_anomalous).collect();
        let score = |out: &BatchOutput| {
            pnpt_metrics::evaluate(&out.maps, &masks, &labels, &out.scores, n, size, size)
                .map_err(|source| Error::CategoryMetrics { category: cat.name.clone(), source })
        };
        let metrics = score(&out)?;
        if let Some(a) = agreement.as_mut() {
            a.add(detector, &cat.name, &parts, &masks, &labels)?;
        }
        for (i, &m) in methods.iter().enumerate() {
            // The other methods' rows read their image scores from their own maps.
            let other = ScoringRule { method: m, score_from: None, ..rule };
            let metrics =
                if m == own { metrics.clone() } else { score(&detector.post().combine_with(&parts, &other)?)? };
            per_method[i].push((cat.name.clone(), metrics));
        }
        let truth = vec![cat.name.as_str(); n];
        let retrieval_accuracy = detector.model().pool().accuracy(&out.categories, &truth).unwrap_or(0.0);
        let thresholds = detector.post().thresholds();
        let scale = ColourScale::for_category(
            &out.maps,
            thresholds.for_category(&cat.name),
            thresholds.pixel_median.get(&cat.name).copied(),
        );
        let heatmap_dir = options.out_dir.as_deref().filter(|_| options.heatmaps);
        if let Some(dir) = heatmap_dir {
            heatmap::write_category(dir, &cat.name, &cat.test, &out.maps, &masks, size, &scale)?;
        }
        let results = cat
            .test
            .iter()
            .zip(&out.scores)
            .map(|(s, &score)| ImageResult {
                path: s.path.clone(),
                defect: s.defect.clone(),
                score,
                anomalous: s.is_anomalous(),
                heatmap: heatmap_dir.map(|_| heatmap::relative_file(&cat.name, s)),
            })
            .collect();
        categories.push(CategoryReport {
            name: cat.name.clone(),
            metrics,
            retrieval_accuracy,
            images: n,
            scale,
            results,
        });
    }
    let mean_of = |all: Vec<CategoryMetrics>| {
        pnpt_metrics::mean(&all).map_err(|source| Error::CategoryMetrics { category: "<mean>".into(), source })
    };
    let mean = mean_of(categories.iter().map(|c| c.metrics.clone()).collect())?;
    let mean_retrieval_accuracy =
        categories.iter().map(|c| c.retrieval_accuracy).sum::<f64>() / categories.len() as f64;
    let mut method_reports = Vec::with_capacity(methods.len());
    for (m, cats) in methods.iter().zip(per_method) {
        let mean = mean_of(cats.iter().map(|c| c.1.clone()).collect())?;
        method_reports.push(MethodReport { method: m.to_string(), categories: cats, mean });
    }
    let report = Report {
        categories,
        mean,
        mean_retrieval_accuracy,
        skipped,
        preset: options.preset.clone(),
        seed: options.seed,
        device: options.device.clone(),
        train_seconds: options.train_seconds,
        ms_per_image: 1000.0 * seconds / images.max(1) as f64,
        method: own.to_string(),
        methods: method_reports,
        agreement: agreement.and_then(agreement::AgreementBuilder::finish),
        extra: options.extra.clone(),
    };
    if let Some(dir) = &options.out_dir {
        report.write(dir)?;
    }
    Ok(report)
}
