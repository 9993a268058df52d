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
//! The image score is the maximum of each map. The output is [`pnpt::evaluate::MapScores`]: the
//! keys of a metrics object of `report.json` (`image_auroc`, `image_ap`, `image_f1_max`,
//! `image_threshold`, `pixel_auroc`, `pixel_ap`, `pixel_f1_max`, `pixel_threshold`, `aupro`,
//! `retrieval_accuracy`: `null`) and `aupro_fpr_limit` (0.3).
//! Exit status: 0 on success, 2 for bad arguments, 1 for unreadable files or invalid data.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pnpt::evaluate::MapScores;
use pnpt::io::npy;
use pnpt::metrics;

/// Scores saved anomaly maps against ground truth and prints every metric as one JSON object.
#[derive(Debug, Parser)]
#[command(name = "score_maps")]
// `pub(crate)`: tests/report_html.rs compiles this file as a module and calls `run`, so the
// test checks the keys this example really prints.
pub(crate) struct Args {
    /// N x H x W float32 anomaly maps.
    #[arg(long, value_name = "MAPS.npy")]
    pub(crate) maps: PathBuf,
    /// N x H x W uint8 ground-truth masks (non-zero = anomalous).
    #[arg(long, value_name = "MASKS.npy")]
    pub(crate) masks: PathBuf,
    /// N uint8 image labels (non-zero = anomalous).
    #[arg(long, value_name = "LABELS.npy")]
    pub(crate) labels: PathBuf,
}

/// The JSON line to print, or why there is none.
pub(crate) fn run(args: &Args) -> Result<String, String> {
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
    Ok(MapScores::new(&m).to_json())
}

fn main() -> ExitCode {
    // Bad arguments (missing, unknown or repeated flags): clap prints its message and exits 2.
    let args = Args::parse();
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
