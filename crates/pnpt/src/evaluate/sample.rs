//! Reports for the tests of the report writers: `report.json` and `report.md` here,
//! `report.html` in `pnpt-cli`, which is why they are public under the `testing` feature.

use std::path::PathBuf;

use pnpt_metrics::CategoryMetrics;
use serde_json::json;

use super::{Agreement, CandidateAgreement, CategoryReport, ImageResult, MethodReport, Report};
use crate::heatmap::ColourScale;
use crate::validation::Scores;

/// A report of two categories (`a"b` and `<x>&y`, names that need escaping) with
/// per-image results, a training history and two methods.
pub fn sample_report() -> Report {
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
        heatmap: Some(PathBuf::from(format!("heatmaps/c/{defect}_{i:03}.png"))),
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
        agreement: None,
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

/// The agreement of two candidates for [`sample_report`]: the chosen one's rule (`memory <b>`)
/// needs escaping, the pixel AUROC's correlation is unknown.
pub fn sample_agreement() -> Agreement {
    let s = |x: f64| Scores { image_auroc: x, pixel_auroc: x, aupro: x };
    let candidate = |rule: &str, v: f64, t: f64| CandidateAgreement {
        rule: rule.into(),
        validation: s(v),
        test: s(t),
        test_categories: Default::default(),
    };
    Agreement {
        candidates: vec![candidate("pnpt max", 0.5, 0.75), candidate("memory <b>", 0.625, 0.875)],
        chosen: 1,
        best_on_test: 1,
        objective: Some(1.0),
        image_auroc: Some(1.0),
        pixel_auroc: None,
        aupro: Some(-0.5),
        categories: [("a\"b".to_string(), Some(1.0))].into_iter().collect(),
    }
}
