//! Checks against independent references produced by `tests/reference/make_reference.py`:
//! scikit-learn (`roc_auc_score`, `average_precision_score`, `precision_recall_curve`) for the
//! ranking metrics and a transcription of MVTec AD's official `compute_pro` + `trapezoid` for
//! AUPRO. The inputs are stored in the JSON fixtures as exactly representable f32 values.

use pnpt_metrics::{aupro, evaluate, max_per_map, pixel_metrics, ranking_metrics};
use serde_json::Value;

fn fixture(name: &str) -> Vec<Value> {
    let path = format!("{}/../../tests/reference/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn bools(v: &Value) -> Vec<bool> {
    v.as_array().unwrap().iter().map(|x| x.as_bool().unwrap()).collect()
}

fn num(c: &Value, k: &str) -> f64 {
    c[k].as_f64().unwrap_or_else(|| panic!("missing {k}"))
}

fn close(name: &str, what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol,
        "{name} {what}: got {got:.15}, reference {want:.15} (|diff| {:e})",
        (got - want).abs()
    );
}

#[test]
fn ranking_metrics_match_scikit_learn() {
    let cases = fixture("ranking_cases.json");
    assert_eq!(cases.len(), 7);
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let m = ranking_metrics(&f32s(&c["scores"]), &bools(&c["labels"])).unwrap();
        close(name, "auroc", m.auroc, num(c, "auroc"), 1e-12);
        close(name, "ap", m.ap, num(c, "ap"), 1e-12);
        close(name, "f1", m.f1_max.f1, num(c, "f1_max"), 1e-12);
        assert_eq!(m.f1_max.threshold, num(c, "f1_threshold") as f32, "{name} threshold");
    }
}

#[test]
fn single_metric_wrappers_agree() {
    let c = &fixture("ranking_cases.json")[1];
    let (s, l) = (f32s(&c["scores"]), bools(&c["labels"]));
    close("ties_grid", "auroc", pnpt_metrics::auroc(&s, &l).unwrap(), num(c, "auroc"), 1e-12);
    close("ties_grid", "ap", pnpt_metrics::average_precision(&s, &l).unwrap(), num(c, "ap"), 1e-12);
    let f = pnpt_metrics::f1_max(&s, &l).unwrap();
    close("ties_grid", "f1", f.f1, num(c, "f1_max"), 1e-12);
}

#[test]
fn evaluate_matches_scikit_learn_and_mvtec() {
    let cases = fixture("pixel_cases.json");
    assert_eq!(cases.len(), 3);
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let dim = |k: &str| c[k].as_u64().unwrap() as usize;
        let (n, h, w) = (dim("n"), dim("h"), dim("w"));
        let maps = f32s(&c["maps"]);
        let masks: Vec<u8> = c["masks"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u8).collect();
        let labels = bools(&c["labels"]);
        let image_scores = max_per_map(&maps, n, h, w).unwrap();
        let m = evaluate(&maps, &masks, &labels, &image_scores, n, h, w).unwrap();
        for (what, got) in [
            ("image_auroc", m.image_auroc),
            ("image_ap", m.image_ap),
            ("image_f1_max", m.image_f1_max),
            ("pixel_auroc", m.pixel_auroc),
            ("pixel_ap", m.pixel_ap),
            ("pixel_f1_max", m.pixel_f1_max),
        ] {
            close(name, what, got, num(c, what), 1e-12);
        }
        assert_eq!(m.image_threshold, num(c, "image_threshold") as f32 as f64, "{name}");
        assert_eq!(m.pixel_threshold, num(c, "pixel_threshold") as f32 as f64, "{name}");
        // MVTec's code accumulates the FPR in float32, hence the looser tolerance.
        close(name, "aupro@0.3", m.aupro, num(c, "aupro_0.3"), 1e-6);
        let full = pixel_metrics(&maps, &masks, n, h, w, 1.0).unwrap();
        close(name, "aupro@1.0", full.aupro, num(c, "aupro_1.0"), 1e-6);
        close(name, "aupro()", aupro(&maps, &masks, n, h, w, 0.3).unwrap(), m.aupro, 0.0);
    }
}
