//! The serde types of `report.json` and of `examples/score_maps.rs`' output: one definition of
//! every key, so the two writers cannot drift apart (the AUPRO is `aupro` in both, its FPR
//! limit recorded once as `aupro_fpr_limit`).
//!
//! Every writer serialises through [`serde_json::Value`], whose objects keep their keys sorted:
//! the files' key order is alphabetical whatever the field order here, as it was when the
//! objects were built by hand.

use std::collections::BTreeMap;
use std::path::Path;

use pnpt_metrics::{AUPRO_FPR_LIMIT, CategoryMetrics};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{ImageResult, Report};
use crate::heatmap::ColourScale;

/// One metrics object `M` of `report.json` (per category, mean, per method) and the body of
/// `score_maps`' output. Non-finite values are written as `null` (serde_json's rule).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MetricsRecord {
    /// Image-level AUROC.
    pub image_auroc: f64,
    /// Pixel-level AUROC.
    pub pixel_auroc: f64,
    /// Normalised area under the PRO curve up to [`AUPRO_FPR_LIMIT`] (recorded beside the
    /// metrics as `aupro_fpr_limit`, not in the key).
    pub aupro: f64,
    /// Image-level average precision.
    pub image_ap: f64,
    /// Pixel-level average precision.
    pub pixel_ap: f64,
    /// Image-level F1-max.
    pub image_f1_max: f64,
    /// Pixel-level F1-max.
    pub pixel_f1_max: f64,
    /// Class-retrieval accuracy; `null` where it was not measured (per-method tables,
    /// `score_maps`).
    pub retrieval_accuracy: Option<f64>,
    /// Image score reaching `image_f1_max`.
    pub image_threshold: f64,
    /// Pixel score reaching `pixel_f1_max`.
    pub pixel_threshold: f64,
}

impl MetricsRecord {
    /// The record of `m`, with the retrieval accuracy where one was measured.
    pub fn new(m: &CategoryMetrics, retrieval_accuracy: Option<f64>) -> Self {
        Self {
            image_auroc: m.image_auroc,
            pixel_auroc: m.pixel_auroc,
            aupro: m.aupro,
            image_ap: m.image_ap,
            pixel_ap: m.pixel_ap,
            image_f1_max: m.image_f1_max,
            pixel_f1_max: m.pixel_f1_max,
            retrieval_accuracy,
            image_threshold: m.image_threshold,
            pixel_threshold: m.pixel_threshold,
        }
    }
}

/// What `examples/score_maps.rs` prints: the metrics of saved maps under the keys of
/// `report.json`, and the AUPRO's FPR limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MapScores {
    /// The metrics (`retrieval_accuracy` is `null`: no classes are retrieved).
    #[serde(flatten)]
    pub metrics: MetricsRecord,
    /// The FPR limit of `aupro` ([`AUPRO_FPR_LIMIT`]).
    pub aupro_fpr_limit: f64,
}

impl MapScores {
    /// The scores of `m` as `score_maps` prints them.
    pub fn new(m: &CategoryMetrics) -> Self {
        Self { metrics: MetricsRecord::new(m, None), aupro_fpr_limit: AUPRO_FPR_LIMIT }
    }

    /// One line of JSON (keys sorted, as [`Report::to_json`] writes them).
    pub fn to_json(&self) -> String {
        sorted(self).to_string()
    }
}

/// `value` as a [`Value`], whose objects sort their keys; `null` if it cannot be represented
/// (the types here always can: every map key is a string).
pub(crate) fn sorted(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// The whole `report.json`.
#[derive(Serialize)]
pub(super) struct ReportJson<'a> {
    categories: BTreeMap<&'a str, MetricsRecord>,
    mean: MetricsRecord,
    skipped: BTreeMap<&'a str, &'a str>,
    preset: &'a str,
    seed: u64,
    device: &'a str,
    train_seconds: f64,
    ms_per_image: f64,
    method: &'a str,
    methods: BTreeMap<&'a str, MethodJson<'a>>,
    images: BTreeMap<&'a str, ImagesJson<'a>>,
    aupro_fpr_limit: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    agreement: Option<&'a super::Agreement>,
    /// [`Report::extra`], after the fields above (an entry of the same name replaces one).
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
}

/// `methods.<method>`.
#[derive(Serialize)]
struct MethodJson<'a> {
    categories: BTreeMap<&'a str, MetricsRecord>,
    mean: MetricsRecord,
}

/// `images.<category>`.
#[derive(Serialize)]
struct ImagesJson<'a> {
    colour_scale: ScaleJson,
    results: Vec<ImageJson<'a>>,
}

/// `images.<category>.colour_scale` (without [`ColourScale::held_out`], which `report.md`
/// states in words).
#[derive(Serialize)]
struct ScaleJson {
    lo: f32,
    hi: f32,
    threshold: Option<f32>,
    centred: bool,
}

/// One entry of `images.<category>.results`. Paths are written as text, names that are not
/// UTF-8 with U+FFFD in place of their odd bytes (serde refuses such a `Path`, which left the
/// whole report `null`).
#[derive(Serialize)]
struct ImageJson<'a> {
    path: String,
    defect: &'a str,
    score: f32,
    anomalous: bool,
    heatmap: Option<String>,
}

/// `path` as `/`-separated text, lossily where a name is not UTF-8.
pub(crate) fn lossy(path: &Path) -> String {
    path.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

impl<'a> ReportJson<'a> {
    pub(super) fn new(r: &'a Report) -> Self {
        let scale = |s: &ColourScale| ScaleJson { lo: s.lo, hi: s.hi, threshold: s.threshold, centred: s.centred };
        let image = |i: &'a ImageResult| ImageJson {
            path: i.path.to_string_lossy().into_owned(),
            defect: &i.defect,
            score: i.score,
            anomalous: i.anomalous,
            heatmap: i.heatmap.as_deref().map(lossy),
        };
        Self {
            categories: r
                .categories
                .iter()
                .map(|c| (c.name.as_str(), MetricsRecord::new(&c.metrics, Some(c.retrieval_accuracy))))
                .collect(),
            mean: MetricsRecord::new(&r.mean, Some(r.mean_retrieval_accuracy)),
            skipped: r.skipped.iter().map(|(c, why)| (c.as_str(), why.as_str())).collect(),
            preset: &r.preset,
            seed: r.seed,
            device: &r.device,
            train_seconds: r.train_seconds,
            ms_per_image: r.ms_per_image,
            method: &r.method,
            methods: r
                .methods
                .iter()
                .map(|m| {
                    let categories = m.categories.iter().map(|(c, x)| (c.as_str(), MetricsRecord::new(x, None)));
                    let json = MethodJson { categories: categories.collect(), mean: MetricsRecord::new(&m.mean, None) };
                    (m.method.as_str(), json)
                })
                .collect(),
            images: r
                .categories
                .iter()
                .map(|c| {
                    let results = c.results.iter().map(image).collect();
                    (c.name.as_str(), ImagesJson { colour_scale: scale(&c.scale), results })
                })
                .collect(),
            aupro_fpr_limit: AUPRO_FPR_LIMIT,
            agreement: r.agreement.as_ref(),
            extra: &r.extra,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::evaluate::METRIC_COLUMNS;
    use crate::evaluate::sample_report;

    fn keys(v: &Value) -> BTreeSet<String> {
        v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
    }

    /// `score_maps`' object is a metrics object of `report.json` plus the FPR limit, which
    /// `report.json` records once at the top.
    #[test]
    fn map_scores_and_report_json_share_the_metric_keys() {
        let report = sample_report();
        let json: Value = serde_json::from_str(&report.to_json()).unwrap();
        let scores: Value = serde_json::from_str(&MapScores::new(&report.categories[0].metrics).to_json()).unwrap();
        let mut metric_keys = keys(&scores);
        assert!(metric_keys.remove("aupro_fpr_limit"));
        for m in [&json["mean"], &json["categories"]["a\"b"], &json["methods"]["memory"]["mean"]] {
            assert_eq!(metric_keys, keys(m));
        }
        assert!(METRIC_COLUMNS.iter().all(|(k, _)| metric_keys.contains(*k)));
        assert_eq!((scores["aupro"].as_f64(), json["categories"]["a\"b"]["aupro"].as_f64()), (Some(0.3), Some(0.3)));
        assert_eq!((scores["aupro_fpr_limit"].as_f64(), json["aupro_fpr_limit"].as_f64()), (Some(0.3), Some(0.3)));
        assert!(
            scores["retrieval_accuracy"].is_null() && json["methods"]["memory"]["mean"]["retrieval_accuracy"].is_null()
        );
    }
}
