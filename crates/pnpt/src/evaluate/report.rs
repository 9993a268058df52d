//! The evaluation's result types and `report.json` (see [the module documentation](super)).

use std::path::{Path, PathBuf};

use pnpt_io::write_atomic;
use pnpt_metrics::CategoryMetrics;
use serde_json::{Map, Value};

use super::schema::{ReportJson, sorted};
use crate::heatmap::ColourScale;
use crate::{Error, Result};

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
    /// The heat map's file relative to the report folder (with the image's exact name, UTF-8
    /// or not); `None` when not written.
    pub heatmap: Option<PathBuf>,
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
    /// Training time in seconds, the whole run (features to validation).
    pub train_seconds: f64,
    /// Mean end-to-end inference time per test image (decoding, backbone, PNPT, map), ms.
    /// With several methods in `methods`, every map the detector has is computed.
    pub ms_per_image: f64,
    /// The detector's scoring method (the tables above).
    pub method: String,
    /// Per scoring method the detector can use: per-category metrics and their mean.
    pub methods: Vec<MethodReport>,
    /// Validation against test over the scoring candidates (when the validation was given).
    pub agreement: Option<super::Agreement>,
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

impl Report {
    /// The `report.json` text (its layout: the `schema` module).
    pub fn to_json(&self) -> String {
        self.json_text().unwrap_or_else(|e| format!("{}\n", serde_json::json!({ "error": e.to_string() })))
    }

    /// The `report.json` text, or why it cannot be written (every value has a JSON form, so
    /// this is a bug; it is said rather than written as `null`).
    fn json_text(&self) -> serde_json::Result<String> {
        let value = serde_json::to_value(ReportJson::new(self))?;
        let mut text = serde_json::to_string_pretty(&sorted(&value))?;
        text.push('\n');
        Ok(text)
    }

    /// Writes `report.json` and `report.md` into `dir` (`report.html` is the command's:
    /// `pnpt_cli::html`).
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        let path = dir.join("report.json");
        let json = self.json_text().map_err(|e| Error::Report { path: path.clone(), reason: e.to_string() })?;
        write_atomic(&path, json.as_bytes())?;
        write_atomic(&dir.join("report.md"), self.to_markdown().as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::sample_report;
    use super::*;

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

    /// A file name that is not UTF-8 is written with U+FFFD in place of its odd byte, in the
    /// image's path and its heat map's; the rest of the report is intact (it was `null`).
    #[cfg(unix)]
    #[test]
    fn names_that_are_not_utf8_are_written_lossily() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let mut report = sample_report();
        let odd = OsStr::from_bytes(b"crack_\xff.png");
        let r = &mut report.categories[0].results[3];
        r.path = Path::new("test/crack").join(OsStr::from_bytes(b"\xff.png"));
        r.heatmap = Some(Path::new("heatmaps/c").join(odd));
        let dir = tempfile::tempdir().unwrap();
        report.write(dir.path()).unwrap();
        let v: Value = serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
        let result = &v["images"]["a\"b"]["results"][3];
        assert_eq!(result["path"], "test/crack/\u{fffd}.png");
        assert_eq!(result["heatmap"], "heatmaps/c/crack_\u{fffd}.png");
        assert_eq!(v["seed"], 7);
        assert_eq!(v["categories"]["a\"b"]["aupro"], 0.3);
    }
}
