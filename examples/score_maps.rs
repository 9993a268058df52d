//! Scores saved anomaly maps against ground truth and prints every metric as one JSON object.
//!
//! ```text
//! cargo run --release --example score_maps -- --maps maps.npy --masks masks.npy --labels labels.npy
//! ```
//!
//! * `maps.npy`   N×H×W float32 anomaly maps;
//! * `masks.npy`  N×H×W uint8 ground truth (non-zero = anomalous pixel; bool also accepted);
//! * `labels.npy` N uint8 image labels (non-zero = anomalous image; bool also accepted).
//!
//! The image score is the maximum of each map. Output keys: `image_auroc`, `image_ap`,
//! `image_f1_max`, `pixel_auroc`, `pixel_ap`, `pixel_f1_max`, `aupro_0.3`.
//! Exit status: 0 on success, 2 for bad arguments, 1 for unreadable files or invalid data.

use std::path::PathBuf;
use std::process::ExitCode;

use pnpt::data::npy;
use pnpt::metrics;

const USAGE: &str = "usage: score_maps --maps MAPS.npy --masks MASKS.npy --labels LABELS.npy
  MAPS    N x H x W float32 anomaly maps
  MASKS   N x H x W uint8 ground-truth masks (non-zero = anomalous)
  LABELS  N uint8 image labels (non-zero = anomalous)";

struct Args {
    maps: PathBuf,
    masks: PathBuf,
    labels: PathBuf,
}

/// `Ok(None)` means `--help` was asked for.
fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let (mut maps, mut masks, mut labels) = (None, None, None);
    while let Some(arg) = it.next() {
        // Accept both `--maps x` and `--maps=x`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let slot = match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--maps" => &mut maps,
            "--masks" => &mut masks,
            "--labels" => &mut labels,
            _ => return Err(format!("unknown argument {arg:?}")),
        };
        let value = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("{flag} needs a file path"))?,
        };
        if slot.replace(PathBuf::from(value)).is_some() {
            return Err(format!("{flag} given twice"));
        }
    }
    let need = |v: Option<PathBuf>, flag: &str| v.ok_or_else(|| format!("missing {flag}"));
    Ok(Some(Args { maps: need(maps, "--maps")?, masks: need(masks, "--masks")?, labels: need(labels, "--labels")? }))
}

fn run(args: &Args) -> Result<serde_json::Value, String> {
    let (map_shape, maps) = npy::read::<f32>(&args.maps).map_err(|e| e.to_string())?;
    let (mask_shape, masks) = npy::read::<u8>(&args.masks).map_err(|e| e.to_string())?;
    let (label_shape, labels) = npy::read::<u8>(&args.labels).map_err(|e| e.to_string())?;
    let [n, h, w] = map_shape[..] else {
        return Err(format!("{}: expected an N x H x W array, got shape {map_shape:?}", args.maps.display()));
    };
    if mask_shape != map_shape {
        return Err(format!("{}: shape {mask_shape:?} differs from the maps' {map_shape:?}", args.masks.display()));
    }
    if label_shape != [n] {
        return Err(format!("{}: expected shape [{n}], got {label_shape:?}", args.labels.display()));
    }
    let labels: Vec<bool> = labels.iter().map(|&l| l != 0).collect();
    let m = (|| {
        let image_scores = metrics::max_per_map(&maps, n, h, w)?;
        metrics::evaluate(&maps, &masks, &labels, &image_scores, n, h, w)
    })()
    .map_err(|e| e.to_string())?;
    Ok(serde_json::json!({
        "image_auroc": m.image_auroc,
        "image_ap": m.image_ap,
        "image_f1_max": m.image_f1_max,
        "pixel_auroc": m.pixel_auroc,
        "pixel_ap": m.pixel_ap,
        "pixel_f1_max": m.pixel_f1_max,
        "aupro_0.3": m.aupro,
    }))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("score_maps: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("score_maps: {e}");
            ExitCode::FAILURE
        }
    }
}
