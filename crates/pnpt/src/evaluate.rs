//! Evaluation of a trained [`Detector`] on a dataset: the metrics of `pnpt-metrics` per
//! category, class-retrieval accuracy and speed, written as `report.json`, `report.md` and
//! heat maps `heatmaps/<category>/<defect>_<stem>.png` (every file via temp + rename).
//!
//! `report.json`:
//! ```text
//! {"categories": {"<cat>": M, ...}, "mean": M, "preset": "cpu", "seed": 0, "device": "cpu",
//!  "train_seconds": 0.0, "ms_per_image": 0.0, "method": "fused",
//!  "methods": {"pnpt": {"categories": {...}, "mean": M}, "memory": ..., "fused": ...}, ...extra}
//! M = {"image_auroc", "pixel_auroc", "aupro", "image_ap", "pixel_ap", "image_f1_max",
//!      "pixel_f1_max", "retrieval_accuracy"}
//! ```
//! `methods` scores the same test images with every method the detector can use (one pass of
//! the model; the ablation of the scoring method), the top-level tables are the detector's own
//! method. Heat maps: the anomaly map, normalised over the category's maps, in a jet colour map
//! alpha-blended (0.5) over the image resized to the model's input size; the ground-truth
//! outline is drawn in white.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::backend::Backend;
use pnpt_data::image::{imageops, ImageFormat, Rgb, RgbImage};
use pnpt_data::{Dataset, Sample};
use pnpt_metrics::CategoryMetrics;
use pnpt_model::detector::{BatchOutput, Detector};
use pnpt_model::ScoringMethod;
use pnpt_prompt::io::write_atomic;
use serde_json::{json, Map, Value};

use crate::{Error, Result};

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

/// One `M` object of `report.json`; non-finite values become `null` (serde_json's rule).
fn metrics_json(m: &CategoryMetrics, retrieval: f64) -> Value {
    json!({
        "image_auroc": m.image_auroc,
        "pixel_auroc": m.pixel_auroc,
        "aupro": m.aupro,
        "image_ap": m.image_ap,
        "pixel_ap": m.pixel_ap,
        "image_f1_max": m.image_f1_max,
        "pixel_f1_max": m.pixel_f1_max,
        "retrieval_accuracy": retrieval,
        "image_threshold": m.image_threshold,
        "pixel_threshold": m.pixel_threshold,
    })
}

impl Report {
    /// The `report.json` text.
    pub fn to_json(&self) -> String {
        let categories: Map<String, Value> =
            self.categories.iter().map(|c| (c.name.clone(), metrics_json(&c.metrics, c.retrieval_accuracy))).collect();
        let skipped: Map<String, Value> = self.skipped.iter().map(|(c, r)| (c.clone(), Value::from(r.as_str()))).collect();
        let methods: Map<String, Value> = self
            .methods
            .iter()
            .map(|m| {
                let cats: Map<String, Value> = m.categories.iter().map(|(c, x)| (c.clone(), metrics_json(x, f64::NAN))).collect();
                (m.method.clone(), json!({"categories": cats, "mean": metrics_json(&m.mean, f64::NAN)}))
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
        s.push_str("| category | image AUROC | pixel AUROC | AUPRO | image AP | pixel AP | image F1-max | pixel F1-max | retrieval |\n");
        s.push_str("|---|---|---|---|---|---|---|---|---|\n");
        let row = |s: &mut String, name: &str, m: &CategoryMetrics, r: f64| {
            let _ = writeln!(
                s,
                "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                m.image_auroc, m.pixel_auroc, m.aupro, m.image_ap, m.pixel_ap, m.image_f1_max, m.pixel_f1_max, r
            );
        };
        for c in &self.categories {
            row(&mut s, &c.name, &c.metrics, c.retrieval_accuracy);
        }
        row(&mut s, "**mean**", &self.mean, self.mean_retrieval_accuracy);
        if self.methods.len() > 1 {
            let _ = writeln!(s, "\nScoring method `{}` above. Every method on the same test images (image AUROC / pixel AUROC / AUPRO):\n", self.method);
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
        s
    }

    /// Writes `report.json` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join("report.json"), self.to_json().as_bytes())?;
        write_atomic(&dir.join("report.md"), self.to_markdown().as_bytes())?;
        Ok(())
    }
}

/// Evaluates `detector` on the test split of every category of `dataset`, with its own scoring
/// method and, for the `methods` ablation, every other method it can use.
pub fn evaluate<B: Backend>(detector: &Detector<B>, dataset: &Dataset, options: &EvaluateOptions) -> Result<Report> {
    let size = detector.config().input_size as usize;
    let own = detector.config().scoring.method;
    let weight = detector.config().scoring.memory_weight;
    let methods: Vec<ScoringMethod> = if detector.memory().is_some() { ScoringMethod::ALL.to_vec() } else { vec![ScoringMethod::Pnpt] };
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
        if options.heatmaps {
            if let Some(dir) = &options.out_dir {
                write_heatmaps(&dir.join("heatmaps").join(&cat.name), &cat.test, &out, &masks)?;
            }
        }
        categories.push(CategoryReport { name: cat.name.clone(), metrics, retrieval_accuracy, images: n });
    }
    if categories.is_empty() {
        return Err(Error::NothingToEvaluate);
    }
    let mean_of = |all: Vec<CategoryMetrics>| pnpt_metrics::mean(&all).map_err(|source| Error::CategoryMetrics { category: "<mean>".into(), source });
    let mean = mean_of(categories.iter().map(|c| c.metrics.clone()).collect())?;
    let mean_retrieval_accuracy = categories.iter().map(|c| c.retrieval_accuracy).sum::<f64>() / categories.len() as f64;
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

/// Jet-like colour of `x` in [0, 1] (blue → cyan → yellow → red).
pub fn jet(x: f32) -> [u8; 3] {
    let x = x.clamp(0.0, 1.0);
    let channel = |c: f32| ((1.5 - (4.0 * x - c).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    [channel(3.0), channel(2.0), channel(1.0)]
}

/// An RGB overlay of one `size × size` map (values normalised by `lo..hi`) on `image`, with
/// the outline of `mask` (non-zero = anomalous) in white.
pub fn overlay(image: &RgbImage, map: &[f32], mask: &[u8], size: usize, lo: f32, hi: f32) -> RgbImage {
    let base = imageops::resize(image, size as u32, size as u32, imageops::FilterType::Triangle);
    let span = (hi - lo).max(1e-12);
    let mut out = RgbImage::new(size as u32, size as u32);
    for y in 0..size {
        for x in 0..size {
            let i = y * size + x;
            let inside = mask[i] != 0;
            let edge = inside
                && [(0i64, 1i64), (0, -1), (1, 0), (-1, 0)].iter().any(|(dy, dx)| {
                    let (yy, xx) = (y as i64 + dy, x as i64 + dx);
                    yy < 0 || xx < 0 || yy >= size as i64 || xx >= size as i64 || mask[yy as usize * size + xx as usize] == 0
                });
            let px = if edge {
                [255, 255, 255]
            } else {
                let c = jet((map[i] - lo) / span);
                let b = base.get_pixel(x as u32, y as u32).0;
                [0, 1, 2].map(|k| ((b[k] as f32 + c[k] as f32) * 0.5).round() as u8)
            };
            out.put_pixel(x as u32, y as u32, Rgb(px));
        }
    }
    out
}

fn write_heatmaps(dir: &Path, samples: &[Sample], out: &BatchOutput, masks: &[u8]) -> Result<()> {
    let size = out.size;
    let px = size * size;
    let (lo, hi) = out.maps.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    for (i, s) in samples.iter().enumerate() {
        let image = pnpt_data::decode_rgb(&s.path)?;
        let img = overlay(&image, &out.maps[i * px..(i + 1) * px], &masks[i * px..(i + 1) * px], size, lo, hi);
        let path = dir.join(format!("{}_{}.png", s.defect, s.stem()));
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_to(&mut bytes, ImageFormat::Png).map_err(|e| Error::Image { path: path.clone(), reason: e.to_string() })?;
        write_atomic(&path, bytes.get_ref())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_endpoints_and_overlay_outline() {
        assert_eq!(jet(0.0), [0, 0, 128]);
        assert_eq!(jet(1.0), [128, 0, 0]);
        assert_eq!(jet(0.5), [128, 255, 128]);
        let img = RgbImage::from_pixel(4, 4, Rgb([0, 0, 0]));
        let mut mask = vec![0u8; 16];
        for y in 1..4 {
            for x in 1..4 {
                mask[y * 4 + x] = 1;
            }
        }
        let out = overlay(&img, &[0.0; 16], &mask, 4, 0.0, 1.0);
        assert_eq!(out.get_pixel(1, 1).0, [255, 255, 255], "mask border is outlined");
        // Interior of the mask and outside it: jet(0) = [0, 0, 128] blended 50/50 with black.
        assert_eq!(out.get_pixel(2, 2).0, [0, 0, 64]);
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 64]);
    }

    #[test]
    fn report_json_has_the_documented_shape() {
        let m = CategoryMetrics {
            image_auroc: 0.5, image_ap: 0.25, image_f1_max: 0.75, image_threshold: 1.5, pixel_auroc: f64::NAN,
            pixel_ap: 0.1, pixel_f1_max: 0.2, pixel_threshold: 2.5, aupro: 0.3,
        };
        let report = Report {
            categories: vec![CategoryReport { name: "a\"b".into(), metrics: m.clone(), retrieval_accuracy: 1.0, images: 3 }],
            mean: m.clone(),
            mean_retrieval_accuracy: 1.0,
            skipped: vec![],
            preset: "cpu".into(),
            seed: 7,
            device: "cpu".into(),
            train_seconds: 2.0,
            ms_per_image: 3.0,
            method: "pnpt".into(),
            methods: vec![MethodReport { method: "memory".into(), categories: vec![("a\"b".into(), m.clone())], mean: m.clone() }],
            extra: [("validation".to_string(), json!({"chosen": 2}))].into_iter().collect(),
        };
        let v: Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(v["categories"]["a\"b"]["aupro"], 0.3);
        assert_eq!(v["mean"]["retrieval_accuracy"], 1.0);
        assert!(v["mean"]["pixel_auroc"].is_null(), "NaN must not produce invalid JSON");
        assert_eq!((v["seed"].as_u64(), v["preset"].as_str()), (Some(7), Some("cpu")));
        assert_eq!(v["methods"]["memory"]["categories"]["a\"b"]["image_auroc"], 0.5);
        assert_eq!(v["methods"]["memory"]["mean"]["aupro"], 0.3);
        assert_eq!((v["method"].as_str(), v["validation"]["chosen"].as_u64()), (Some("pnpt"), Some(2)));
        for key in ["image_auroc", "pixel_auroc", "aupro", "image_ap", "pixel_ap", "image_f1_max", "pixel_f1_max", "retrieval_accuracy"] {
            assert!(v["mean"].get(key).is_some(), "{key}");
        }
    }
}
