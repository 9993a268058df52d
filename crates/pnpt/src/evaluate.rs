//! Evaluation of a trained [`Detector`] on a dataset: the metrics of `pnpt-metrics` per
//! category, class-retrieval accuracy and speed, written as `report.json`, `report.md`,
//! `report.html` ([`crate::html`]) and heat maps `heatmaps/<category>/<defect>_<stem>.png`
//! ([`crate::heatmap`]; every file via temp + rename).
//!
//! `report.json`:
//! ```text
//! {"categories": {"<cat>": M, ...}, "mean": M, "preset": "cpu", "seed": 0, "device": "cpu",
//!  "train_seconds": 0.0, "ms_per_image": 0.0, "method": "fused",
//!  "methods": {"pnpt": {"categories": {...}, "mean": M}, "memory": ..., "fused": ...},
//!  "images": {"<cat>": {"colour_scale": {"lo", "hi", "threshold", "centred"},
//!             "results": [{"path", "defect", "score", "anomalous", "heatmap"}, ...]}}, ...extra}
//! M = {"image_auroc", "pixel_auroc", "aupro", "image_ap", "pixel_ap", "image_f1_max",
//!      "pixel_f1_max", "retrieval_accuracy"}
//! ```
//! `methods` scores the same test images with every method the detector can use (one pass of
//! the model; the ablation of the scoring method), the top-level tables are the detector's own
//! method. `images` holds every test image's score under the category's decision threshold
//! (`null` when none was calibrated) and its heat map, relative to the report (`null` when heat
//! maps were not written); the heat maps' colour scale is fixed per category by that threshold
//! ([`ColourScale`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::Backend;
use pnpt_data::{Dataset, Sample};
use pnpt_metrics::CategoryMetrics;
use pnpt_model::ScoringMethod;
use pnpt_model::detector::{BatchOutput, Detector};
use pnpt_prompt::io::write_atomic;
use serde_json::{Map, Value, json};

use crate::heatmap::{self, ColourScale};
use crate::{Error, Result};

/// The heat maps' colour rule in one paragraph, for the reports (details: [`crate::heatmap`]).
pub const COLOUR_RULE: &str = "Each heat map shows image | overlay | ground truth. The colour scale is fixed per category: \
from lo, the median pixel of the category's held-out normal images (transparent blue), to hi = 2·threshold − lo (red), so the \
category's decision threshold is always the middle of the colour bar (white tick) and one colour means one score on \
every image of the category; the overlay's opacity grows with the score. The white contour encloses the pixels above \
the threshold, magenta outlines the ground truth. Without a usable threshold the scale is the category's min..max.";

/// Options of [`evaluate`].
#[derive(Debug, Clone)]
pub struct EvaluateOptions {
    /// Images per forward.
    pub batch_size: usize,
    /// Folder for `report.json`, `report.md` and `heatmaps/`; `None` writes nothing.
    pub out_dir: Option<PathBuf>,
    /// Write heat maps (one PNG per test image).
    pub heatmaps: bool,
    /// Recorded in the report.
    pub preset: String,
    /// Recorded in the report.
    pub seed: u64,
    /// Recorded in the report.
    pub device: String,
    /// Recorded in the report.
    pub train_seconds: f64,
    /// More top-level entries for `report.json`.
    pub extra: Map<String, Value>,
}

impl Default for EvaluateOptions {
    fn default() -> Self {
        Self {
            batch_size: 8,
            out_dir: None,
            heatmaps: true,
            preset: String::new(),
            seed: 0,
            device: "cpu".into(),
            train_seconds: 0.0,
            extra: Map::new(),
        }
    }
}

/// Results of one category.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryReport {
    /// Category name.
    pub name: String,
    /// Metrics of `pnpt-metrics`.
    pub metrics: CategoryMetrics,
    /// Fraction of test images whose retrieved class is this category.
    pub retrieval_accuracy: f64,
    /// Number of test images.
    pub images: usize,
    /// The heat maps' colour scale; its `threshold` is the category's decision threshold.
    pub scale: ColourScale,
    /// Every test image, in dataset order.
    pub results: Vec<ImageResult>,
}

/// The outcome for one test image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageResult {
    /// The image file.
    pub path: PathBuf,
    /// Defect type (`good` for normal images).
    pub defect: String,
    /// Image anomaly score of the detector's own method.
    pub score: f32,
    /// Ground truth: the image is defective.
    pub anomalous: bool,
    /// The heat map relative to the report folder, `/`-separated; `None` when not written.
    pub heatmap: Option<String>,
}

impl ImageResult {
    /// The detector's verdict under `threshold` (`score > threshold`, as `Detector::predict`
    /// decides); `None` without a threshold.
    pub fn flagged(&self, threshold: Option<f32>) -> Option<bool> {
        threshold.map(|t| self.score > t)
    }
}

/// The whole evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Per category, in dataset order.
    pub categories: Vec<CategoryReport>,
    /// Unweighted mean of the metrics over categories.
    pub mean: CategoryMetrics,
    /// Unweighted mean retrieval accuracy over categories.
    pub mean_retrieval_accuracy: f64,
    /// Categories skipped (only one class in their test split), with the reason.
    pub skipped: Vec<(String, String)>,
    /// Preset name.
    pub preset: String,
    /// Seed.
    pub seed: u64,
    /// Device string.
    pub device: String,
    /// Training time in seconds.
    pub train_seconds: f64,
    /// Mean end-to-end inference time per test image (decoding, backbone, PNPT, map), ms.
    /// With several methods in `methods`, every map the detector has is computed.
    pub ms_per_image: f64,
    /// The detector's scoring method (the tables above).
    pub method: String,
    /// Per scoring method the detector can use: per-category metrics and their mean.
    pub methods: Vec<MethodReport>,
    /// More top-level `report.json` entries (training history, validation, memory sizes...).
    pub extra: Map<String, Value>,
}

/// The metrics of one scoring method.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodReport {
    /// `pnpt`, `memory` or `fused`.
    pub method: String,
    /// `(category, metrics)` in dataset order.
    pub categories: Vec<(String, CategoryMetrics)>,
    /// Unweighted mean over categories.
    pub mean: CategoryMetrics,
}

/// The columns of the metrics tables: `report.json` key and table heading.
pub const METRIC_COLUMNS: [(&str, &str); 8] = [
    ("image_auroc", "image AUROC"),
    ("pixel_auroc", "pixel AUROC"),
    ("aupro", "AUPRO"),
    ("image_ap", "image AP"),
    ("pixel_ap", "pixel AP"),
    ("image_f1_max", "image F1-max"),
    ("pixel_f1_max", "pixel F1-max"),
    ("retrieval_accuracy", "retrieval"),
];

/// The values of [`METRIC_COLUMNS`], in that order.
pub fn metric_values(m: &CategoryMetrics, retrieval: f64) -> [f64; 8] {
    [m.image_auroc, m.pixel_auroc, m.aupro, m.image_ap, m.pixel_ap, m.image_f1_max, m.pixel_f1_max, retrieval]
}

/// One `M` object of `report.json`; non-finite values become `null` (serde_json's rule).
fn metrics_json(m: &CategoryMetrics, retrieval: f64) -> Value {
    let mut obj: Map<String, Value> =
        METRIC_COLUMNS.iter().zip(metric_values(m, retrieval)).map(|((k, _), v)| (k.to_string(), json!(v))).collect();
    obj.insert("image_threshold".into(), json!(m.image_threshold));
    obj.insert("pixel_threshold".into(), json!(m.pixel_threshold));
    Value::Object(obj)
}

impl Report {
    /// The `report.json` text.
    pub fn to_json(&self) -> String {
        let categories: Map<String, Value> =
            self.categories.iter().map(|c| (c.name.clone(), metrics_json(&c.metrics, c.retrieval_accuracy))).collect();
        let skipped: Map<String, Value> =
            self.skipped.iter().map(|(c, r)| (c.clone(), Value::from(r.as_str()))).collect();
        let methods: Map<String, Value> = self
            .methods
            .iter()
            .map(|m| {
                let cats: Map<String, Value> =
                    m.categories.iter().map(|(c, x)| (c.clone(), metrics_json(x, f64::NAN))).collect();
                (m.method.clone(), json!({"categories": cats, "mean": metrics_json(&m.mean, f64::NAN)}))
            })
            .collect();
        let images: Map<String, Value> = self
            .categories
            .iter()
            .map(|c| {
                let s = &c.scale;
                let results: Vec<Value> = c
                    .results
                    .iter()
                    .map(|r| json!({"path": r.path, "defect": r.defect, "score": r.score, "anomalous": r.anomalous, "heatmap": r.heatmap}))
                    .collect();
                let scale = json!({"lo": s.lo, "hi": s.hi, "threshold": s.threshold, "centred": s.centred});
                (c.name.clone(), json!({"colour_scale": scale, "results": results}))
            })
            .collect();
        let mut report = json!({
            "categories": categories,
            "mean": metrics_json(&self.mean, self.mean_retrieval_accuracy),
            "skipped": skipped,
            "preset": self.preset,
            "seed": self.seed,
            "device": self.device,
            "train_seconds": self.train_seconds,
            "ms_per_image": self.ms_per_image,
            "method": self.method,
            "methods": methods,
            "images": images,
        });
        if let Value::Object(map) = &mut report {
            for (k, v) in &self.extra {
                map.insert(k.clone(), v.clone());
            }
        }
        let mut text = serde_json::to_string_pretty(&report).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The `report.md` text: one table row per category and the mean.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "# PNPT evaluation\n\npreset `{}`, seed {}, device `{}`, training {:.1} s, inference {:.1} ms/image\n\n",
            self.preset, self.seed, self.device, self.train_seconds, self.ms_per_image
        );
        s.push_str("| category |");
        for (_, heading) in METRIC_COLUMNS {
            let _ = write!(s, " {heading} |");
        }
        let _ = writeln!(s, "\n|---|{}", "---|".repeat(METRIC_COLUMNS.len()));
        let row = |s: &mut String, name: &str, m: &CategoryMetrics, r: f64| {
            let _ = write!(s, "| {name} |");
            for v in metric_values(m, r) {
                let _ = write!(s, " {v:.3} |");
            }
            s.push('\n');
        };
        for c in &self.categories {
            row(&mut s, &c.name, &c.metrics, c.retrieval_accuracy);
        }
        row(&mut s, "**mean**", &self.mean, self.mean_retrieval_accuracy);
        if self.methods.len() > 1 {
            let _ = writeln!(
                s,
                "\nScoring method `{}` above. Every method on the same test images (image AUROC / pixel AUROC / AUPRO):\n",
                self.method
            );
            s.push_str("| category |");
            for m in &self.methods {
                let _ = write!(s, " {} |", m.method);
            }
            s.push_str("\n|---|");
            s.push_str(&"---|".repeat(self.methods.len()));
            s.push('\n');
            let cell = |m: &CategoryMetrics| format!(" {:.3} / {:.3} / {:.3} |", m.image_auroc, m.pixel_auroc, m.aupro);
            for (i, c) in self.categories.iter().enumerate() {
                let _ = write!(s, "| {} |", c.name);
                for m in &self.methods {
                    s.push_str(&cell(&m.categories[i].1));
                }
                s.push('\n');
            }
            s.push_str("| **mean** |");
            for m in &self.methods {
                s.push_str(&cell(&m.mean));
            }
            s.push('\n');
        }
        for (c, r) in &self.skipped {
            let _ = writeln!(s, "\nskipped `{c}`: {r}");
        }
        let _ = writeln!(s, "\n## Heat maps\n\n{}\n", COLOUR_RULE);
        for c in &self.categories {
            let _ = writeln!(s, "* {}: {}", c.name, c.scale.describe());
        }
        s.push_str("\n`report.html` shows the curves and the images to look at.\n");
        s
    }

    /// Writes `report.json`, `report.md` and `report.html` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join("report.json"), self.to_json().as_bytes())?;
        write_atomic(&dir.join("report.md"), self.to_markdown().as_bytes())?;
        write_atomic(&dir.join("report.html"), self.to_html().as_bytes())?;
        Ok(())
    }
}

/// Evaluates `detector` on the test split of every category of `dataset`, with its own scoring
/// method and, for the `methods` ablation, every other method it can use.
pub fn evaluate<B: Backend>(detector: &Detector<B>, dataset: &Dataset, options: &EvaluateOptions) -> Result<Report> {
    let size = detector.config().input_size as usize;
    let own = detector.config().scoring.method;
    let weight = detector.config().scoring.memory_weight;
    let methods: Vec<ScoringMethod> =
        if detector.memory().is_some() { ScoringMethod::ALL.to_vec() } else { vec![ScoringMethod::Pnpt] };
    let mut per_method: Vec<Vec<(String, CategoryMetrics)>> = vec![Vec::new(); methods.len()];
    let mut categories = Vec::new();
    let mut skipped = Vec::new();
    let mut images = 0usize;
    let mut seconds = 0.0f64;
    for cat in &dataset.categories {
        let n = cat.test.len();
        let anomalous = cat.test.iter().filter(|s| s.is_anomalous()).count();
        if n == 0 || anomalous == 0 || anomalous == n {
            skipped.push((cat.name.clone(), format!("{anomalous} anomalous and {} normal test images", n - anomalous)));
            continue;
        }
        let t0 = Instant::now();
        let parts = detector.sample_components(&cat.test, options.batch_size, true, methods.len() > 1)?;
        let out = detector.combine(&parts, own, weight)?;
        seconds += t0.elapsed().as_secs_f64();
        images += n;
        let masks = pnpt_data::load_masks(&cat.test, size as u32)?;
        let labels: Vec<bool> = cat.test.iter().map(Sample::is_anomalous).collect();
        let score = |out: &BatchOutput| {
            pnpt_metrics::evaluate(&out.maps, &masks, &labels, &out.scores, n, size, size)
                .map_err(|source| Error::CategoryMetrics { category: cat.name.clone(), source })
        };
        let metrics = score(&out)?;
        for (i, &m) in methods.iter().enumerate() {
            let metrics = if m == own { metrics.clone() } else { score(&detector.combine(&parts, m, weight)?)? };
            per_method[i].push((cat.name.clone(), metrics));
        }
        let truth = vec![cat.name.as_str(); n];
        let retrieval_accuracy = detector.pool().accuracy(&out.categories, &truth).unwrap_or(0.0);
        let thresholds = detector.thresholds();
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
                heatmap: heatmap_dir.map(|_| heatmap::relative_path(&cat.name, s)),
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
    if categories.is_empty() {
        return Err(Error::NothingToEvaluate);
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
        extra: options.extra.clone(),
    };
    if let Some(dir) = &options.out_dir {
        report.write(dir)?;
    }
    Ok(report)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A report of two categories (`a"b` and `<x>&y`, names that need escaping) with
    /// per-image results, a training history and two methods; shared with `html`'s tests.
    pub(crate) fn sample_report() -> Report {
        let m = CategoryMetrics {
            image_auroc: 0.5,
            image_ap: 0.25,
            image_f1_max: 0.75,
            image_threshold: 1.5,
            pixel_auroc: f64::NAN,
            pixel_ap: 0.1,
            pixel_f1_max: 0.2,
            pixel_threshold: 2.5,
            aupro: 0.3,
        };
        let m2 = CategoryMetrics { image_auroc: 0.875, aupro: 0.625, ..m.clone() };
        let scale = ColourScale { lo: 0.5, hi: 1.5, threshold: Some(1.0), centred: true, held_out: false };
        let result = |defect: &str, i: usize, score: f32| ImageResult {
            path: PathBuf::from(format!("test/{defect}/{i:03}.png")),
            defect: defect.into(),
            score,
            anomalous: defect != "good",
            heatmap: Some(format!("heatmaps/c/{defect}_{i:03}.png")),
        };
        let results =
            vec![result("good", 0, 0.2), result("good", 1, 1.2), result("crack", 0, 0.9), result("crack", 1, 2.0)];
        let category = |name: &str, metrics: &CategoryMetrics| CategoryReport {
            name: name.into(),
            metrics: metrics.clone(),
            retrieval_accuracy: 1.0,
            images: 4,
            scale,
            results: results.clone(),
        };
        Report {
            categories: vec![category("a\"b", &m), category("<x>&y", &m2)],
            mean: m.clone(),
            mean_retrieval_accuracy: 1.0,
            skipped: vec![],
            preset: "cpu".into(),
            seed: 7,
            device: "cpu".into(),
            train_seconds: 2.0,
            ms_per_image: 3.0,
            method: "pnpt".into(),
            methods: vec![
                MethodReport {
                    method: "pnpt".into(),
                    categories: vec![("a\"b".into(), m.clone()), ("<x>&y".into(), m2.clone())],
                    mean: m.clone(),
                },
                MethodReport {
                    method: "memory".into(),
                    categories: vec![("a\"b".into(), m.clone()), ("<x>&y".into(), m2)],
                    mean: m,
                },
            ],
            extra: [
                ("validation".to_string(), json!({"chosen": 2})),
                (
                    "history".to_string(),
                    json!([{"epoch": 1, "loss": 0.9}, {"epoch": 2, "loss": 0.5}, {"epoch": 3, "loss": 0.4}]),
                ),
            ]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn report_json_has_the_documented_shape() {
        let report = sample_report();
        let v: Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(v["categories"]["a\"b"]["aupro"], 0.3);
        assert_eq!(v["mean"]["retrieval_accuracy"], 1.0);
        assert!(v["mean"]["pixel_auroc"].is_null(), "NaN must not produce invalid JSON");
        assert_eq!((v["seed"].as_u64(), v["preset"].as_str()), (Some(7), Some("cpu")));
        assert_eq!(v["methods"]["memory"]["categories"]["a\"b"]["image_auroc"], 0.5);
        assert_eq!(v["methods"]["memory"]["mean"]["aupro"], 0.3);
        assert_eq!((v["method"].as_str(), v["validation"]["chosen"].as_u64()), (Some("pnpt"), Some(2)));
        for (key, _) in METRIC_COLUMNS {
            assert!(v["mean"].get(key).is_some(), "{key}");
        }
        let images = &v["images"]["<x>&y"];
        assert_eq!(
            (images["colour_scale"]["threshold"].as_f64(), images["colour_scale"]["centred"].as_bool()),
            (Some(1.0), Some(true))
        );
        assert_eq!(images["results"][3]["heatmap"], "heatmaps/c/crack_001.png");
        assert_eq!(
            (images["results"][3]["score"].as_f64(), images["results"][3]["anomalous"].as_bool()),
            (Some(2.0), Some(true))
        );
    }

    #[test]
    fn markdown_states_every_colour_scale() {
        let md = sample_report().to_markdown();
        assert!(md.contains("| a\"b | 0.500 | NaN | 0.300 |"), "{md}");
        assert!(
            md.contains("* <x>&y: lo 0.5000 (median test-map pixel), threshold 1.0000 (middle of the bar), hi 1.5000"),
            "{md}"
        );
    }
}
