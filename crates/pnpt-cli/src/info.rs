//! `pnpt info` and `GET /v1/info`: what a detector knows and how it decides.

use std::fmt::Write as _;
use std::path::Path;

use pnpt::burn::module::Module;
use pnpt::burn::tensor::backend::Backend;
use pnpt::model::Detector;
use serde_json::{Map, Value, json};

/// The detector as JSON: categories with their thresholds, training-image counts and memory
/// bank sizes; scoring; backbone; sizes; the full configuration; and, given the folder, its
/// files with their sizes in bytes.
pub fn info_json<B: Backend>(detector: &Detector<B>, dir: Option<&Path>) -> Value {
    let c = detector.config();
    let counts = detector.pool().counts();
    let banks = detector.memory().map(|m| m.sizes());
    let categories: Vec<Value> = detector
        .categories()
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let t = detector.category_thresholds(name).unwrap_or_default();
            json!({
                "name": name,
                "threshold": t.image,
                "pixel_threshold": t.pixel,
                "retrieval_limit": t.retrieval,
                "training_images": counts.get(i),
                "heldout_images": detector.thresholds().counts.get(name),
                "memory_bank": banks.as_ref().and_then(|b| b.get(i)),
            })
        })
        .collect();
    let files: Map<String, Value> = dir
        .and_then(|d| std::fs::read_dir(d).ok())
        .map(|entries| {
            let mut v: Vec<(String, u64)> = entries
                .flatten()
                .filter_map(|e| Some((e.file_name().to_string_lossy().into_owned(), e.metadata().ok()?.len())))
                .collect();
            v.sort();
            v.into_iter().map(|(n, s)| (n, json!(s))).collect()
        })
        .unwrap_or_default();
    json!({
        "categories": categories,
        "scoring": {
            "method": c.scoring.method.to_string(),
            "memory_weight": c.scoring.memory_weight,
            "score": c.scoring.score.to_string(),
            "threshold_quantile": detector.thresholds().quantile,
            "pixel_quantile": pnpt::model::predict::PIXEL_QUANTILE,
            "global_threshold": detector.thresholds().global,
        },
        "backbone": c.backbone.to_string(),
        "input_size": c.input_size,
        "parameters": detector.model().num_params(),
        "memory_dim": detector.memory().map(|m| m.dim()),
        "preset": c.preset,
        "files": files,
        "config": serde_json::to_value(c).unwrap_or(Value::Null),
    })
}

/// [`info_json`] for a person to read.
pub fn info_text(info: &Value) -> String {
    let mut s = String::new();
    let num = |v: &Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.4}"));
    let _ = writeln!(
        s,
        "backbone: {} (input {} x {})",
        info["backbone"].as_str().unwrap_or("?"),
        info["input_size"],
        info["input_size"]
    );
    let _ = writeln!(s, "preset: {}, parameters: {}", info["preset"].as_str().unwrap_or("?"), info["parameters"]);
    let sc = &info["scoring"];
    let _ = writeln!(
        s,
        "scoring: {} (memory weight {}, image score {}), thresholds = {} quantile of held-out normal scores, pixel thresholds = {} quantile of their pixels",
        sc["method"].as_str().unwrap_or("?"),
        sc["memory_weight"],
        sc["score"].as_str().unwrap_or("?"),
        sc["threshold_quantile"],
        sc["pixel_quantile"]
    );
    let _ = writeln!(
        s,
        "\n{:<24} {:>10} {:>10} {:>10} {:>6} {:>8} {:>8}",
        "category", "threshold", "pixel", "retrieval", "train", "held-out", "bank"
    );
    for c in info["categories"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "{:<24} {:>10} {:>10} {:>10} {:>6} {:>8} {:>8}",
            c["name"].as_str().unwrap_or("?"),
            num(&c["threshold"]),
            num(&c["pixel_threshold"]),
            num(&c["retrieval_limit"]),
            c["training_images"].to_string(),
            c["heldout_images"].to_string(),
            c["memory_bank"].to_string()
        );
    }
    if let Some(files) = info["files"].as_object().filter(|f| !f.is_empty()) {
        let _ = writeln!(s, "\nfiles:");
        for (name, bytes) in files {
            let _ = writeln!(s, "  {name:<22} {:>12} bytes", bytes.to_string());
        }
    }
    s
}
