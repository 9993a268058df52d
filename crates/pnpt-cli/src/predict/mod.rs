//! `pnpt predict`: score files and folders of unlabelled images.
//!
//! Folders are searched recursively for `.png`, `.jpg`, `.jpeg` and `.bmp` files (any case),
//! in sorted order, each folder once and each image once however many links lead to it, at
//! most [`PredictOptions::max_inputs`] ([`collect_inputs`]); files named on the command line
//! are read whatever their extension. The output folder must be writable and hold no earlier
//! results unless [`PredictOptions::overwrite`], checked before the detector loads
//! ([`preflight`]). Into the output folder go `predictions.jsonl` (one JSON object per image,
//! in input order: `path`, the fields of [`crate::render::PredictionRecord`], `overlay` and
//! `mask` (paths relative to the output folder, `null` with `--no-maps`) and `ms`; or `path` and
//! `error` for an image that could not be read or scored) and `maps/<name>.overlay.png` /
//! `maps/<name>.mask.png`, where `<name>` is the image's path relative to the folder it was
//! found in (its stem for files named directly), without extension.
//!
//! Images are decoded in parallel and scored `--batch` at a time; `ms` is the batch's wall time
//! (decoding, scoring, rendering) divided by its size. Every file is written via temp + rename;
//! `predictions.jsonl` is rewritten (complete) at most once a second and at the end, so an
//! interrupted run leaves every line written so far intact.

mod inputs;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::config::Config;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pnpt::backend::{BackendTask, DeviceSpec, run_on};
use pnpt::burn::tensor::backend::{AutodiffBackend, Backend};
use pnpt::data::image::DynamicImage;
use pnpt::io::write_atomic;
use pnpt::model::Detector;
use rayon::prelude::*;
use serde::Serialize;

use crate::render::{self, PredictionRecord};
use crate::{CliError, Result};

pub use inputs::{Input, collect_inputs};

/// File extensions picked up in folders.
pub const EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

/// What `pnpt predict` does: `PredictOptions::new(detector, inputs, out)` with the command's
/// defaults (maps written, retrieval, 8 images per forward, CPU, a progress bar on a terminal),
/// changed by the `with_*` setters that Burn's `Config` derive writes (code outside the crate
/// builds it with them: `#[non_exhaustive]` refuses struct literals there).
#[derive(Config, Debug)]
#[non_exhaustive]
pub struct PredictOptions {
    /// The detector folder.
    pub detector: PathBuf,
    /// Files and folders to score.
    pub inputs: Vec<PathBuf>,
    /// Output folder.
    pub out: PathBuf,
    /// Write overlays and masks.
    #[config(default = true)]
    pub maps: bool,
    /// Judge every image as this category (no retrieval).
    pub category: Option<String>,
    /// Images per forward.
    #[config(default = 8)]
    pub batch: usize,
    /// Device.
    #[config(default = "DeviceSpec::Cpu")]
    pub device: DeviceSpec,
    /// Show a progress bar (on a terminal only).
    #[config(default = true)]
    pub progress: bool,
    /// Most images one run scores; more is an error before any is scored.
    #[config(default = 1_000_000)]
    pub max_inputs: usize,
    /// Replace the results of an earlier run in `out` (`predictions.jsonl`, `maps/`) instead of
    /// refusing to.
    #[config(default = false)]
    pub overwrite: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Images found.
    pub images: usize,
    /// Scored and anomalous.
    pub anomalous: usize,
    /// Scored and of an unknown product.
    pub unknown_category: usize,
    /// Not scored (unreadable or failed).
    pub failed: usize,
    /// Wall time of scoring, in seconds.
    pub seconds: f64,
}

impl Summary {
    /// Images per second over the run.
    pub fn images_per_second(&self) -> f64 {
        if self.seconds > 0.0 { self.images as f64 / self.seconds } else { 0.0 }
    }
}

/// What marks `--out` as holding an earlier run's results.
const RUN_MARKERS: [&str; 2] = ["predictions.jsonl", "maps"];

/// The checks before any image is scored (and before the detector loads): the inputs found
/// and within the limit, the output folder writable and not holding an earlier run (unless
/// [`PredictOptions::overwrite`], which clears that run's results).
pub fn preflight(options: &PredictOptions) -> Result<Vec<Input>> {
    let inputs = collect_inputs(&options.inputs, &options.out, options.max_inputs)?;
    if inputs.is_empty() {
        let names: Vec<String> = options.inputs.iter().map(|p| p.display().to_string()).collect();
        return Err(CliError::Input(format!(
            "no image found in {} (looked for {})",
            names.join(", "),
            EXTENSIONS.join(", ")
        )));
    }
    let out = &options.out;
    let refuse = |reason: String| CliError::Output { path: out.clone(), reason };
    if out.exists() && !out.is_dir() {
        return Err(refuse("exists and is not a folder".into()));
    }
    let earlier: Vec<&str> = RUN_MARKERS.iter().copied().filter(|m| out.join(m).exists()).collect();
    if !earlier.is_empty() && !options.overwrite {
        return Err(refuse(format!(
            "holds the results of an earlier run ({}): pass --overwrite to replace them, or choose another --out",
            earlier.join(", ")
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| refuse(e.to_string()))?;
    let probe = out.join(format!(".pnpt-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| refuse(format!("not writable: {e}")))?;
    let _ = std::fs::remove_file(&probe);
    for m in earlier {
        let path = out.join(m);
        let removed = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        removed.map_err(|e| refuse(format!("cannot clear {m} of the earlier run: {e}")))?;
    }
    Ok(inputs)
}

/// Checks the inputs and the output folder ([`preflight`]), loads the detector on the
/// options' device and scores every input.
pub fn run_predict(options: PredictOptions) -> Result<Summary> {
    let inputs = preflight(&options)?;
    let device = options.device;
    run_on(&device, Task(options, inputs))?
}

struct Task(PredictOptions, Vec<Input>);

impl BackendTask for Task {
    type Output = Result<Summary>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Summary> {
        let detector = Detector::<B::InnerBackend>::load(&self.0.detector, &device)?;
        score_inputs(&detector, &self.0, &self.1)
    }
}

/// Scores every input with `detector` and writes the outputs ([`preflight`] first); a failed
/// image is an error line and the run goes on.
pub fn predict_with<B: Backend>(detector: &Detector<B>, options: &PredictOptions) -> Result<Summary> {
    let inputs = preflight(options)?;
    score_inputs(detector, options, &inputs)
}

fn score_inputs<B: Backend>(detector: &Detector<B>, options: &PredictOptions, inputs: &[Input]) -> Result<Summary> {
    if let Some(c) = &options.category {
        detector.model().category_index(c)?;
    }
    let jsonl = options.out.join("predictions.jsonl");
    let pb = if options.progress && std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(inputs.len() as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("predict {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut lines: Vec<String> = Vec::with_capacity(inputs.len());
    let mut summary = Summary { images: inputs.len(), ..Default::default() };
    let t0 = Instant::now();
    // The first batch's lines are written at once, so an output that cannot be written after
    // all fails after one batch, not after every image.
    let mut last_write: Option<Instant> = None;
    for chunk in inputs.chunks(options.batch.max(1)) {
        let tb = Instant::now();
        let records = score_batch(detector, chunk, options);
        let ms = tb.elapsed().as_secs_f64() * 1000.0 / chunk.len() as f64;
        for (input, record) in chunk.iter().zip(records) {
            let path = input.path.display().to_string();
            let line = match record {
                Ok(scored) => {
                    summary.anomalous += usize::from(scored.prediction.anomalous);
                    summary.unknown_category += usize::from(scored.prediction.unknown_category);
                    render::sorted_json(&Line::Scored { path, scored, ms })
                }
                Err(error) => {
                    summary.failed += 1;
                    render::sorted_json(&Line::Failed { path, error })
                }
            };
            lines.push(line.to_string());
        }
        pb.inc(chunk.len() as u64);
        pb.set_message(format!("{} anomalous, {} failed", summary.anomalous, summary.failed));
        if last_write.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            write_lines(&jsonl, &lines)?;
            last_write = Some(Instant::now());
        }
    }
    write_lines(&jsonl, &lines)?;
    pb.finish_and_clear();
    summary.seconds = t0.elapsed().as_secs_f64();
    Ok(summary)
}

fn write_lines(path: &Path, lines: &[String]) -> Result<()> {
    let mut text = lines.join("\n");
    text.push('\n');
    write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// One line of `predictions.jsonl`.
#[derive(Serialize)]
#[serde(untagged)]
enum Line {
    /// A scored image: `path`, the prediction, its maps and `ms`.
    Scored {
        path: String,
        #[serde(flatten)]
        scored: Scored,
        ms: f64,
    },
    /// An image that could not be read or scored: `path` and `error`.
    Failed { path: String, error: String },
}

/// A scored image of a batch: the prediction and its maps (`null` with `--no-maps`).
#[derive(Serialize)]
struct Scored {
    #[serde(flatten)]
    prediction: PredictionRecord,
    overlay: Option<String>,
    mask: Option<String>,
}

/// Every input of a batch: scored, or why not.
fn score_batch<B: Backend>(
    detector: &Detector<B>,
    chunk: &[Input],
    options: &PredictOptions,
) -> Vec<Result<Scored, String>> {
    let decoded: Vec<Result<DynamicImage, String>> = chunk
        .par_iter()
        .map(|input| match &input.error {
            Some(e) => Err(e.clone()),
            None => pnpt::data::decode(&input.path).map_err(|e| e.to_string()),
        })
        .collect();
    // Scored images side by side for one forward; each input keeps its index there or its error.
    let mut images = Vec::with_capacity(chunk.len());
    let slots: Vec<Result<usize, String>> = decoded
        .into_iter()
        .map(|d| {
            d.map(|img| {
                images.push(img);
                images.len() - 1
            })
        })
        .collect();
    let predictions = match options.category.as_deref() {
        Some(c) => detector.predict_as(&images, c),
        None => detector.predict(&images),
    }
    .map_err(|e| e.to_string());
    let mut records = Vec::with_capacity(chunk.len());
    for (input, slot) in chunk.iter().zip(slots) {
        let record = match (slot, &predictions) {
            (Err(e), _) => Err(e),
            (Ok(_), Err(e)) => Err(format!("scoring failed: {e}")),
            (Ok(i), Ok(preds)) => {
                let p = &preds[i];
                write_maps(detector, &images[i], p, input, options).map(|(overlay, mask)| Scored {
                    prediction: PredictionRecord::new(p, options.category.is_some()),
                    overlay,
                    mask,
                })
            }
        };
        records.push(record);
    }
    records
}

/// Writes the overlay and mask of one image; their paths relative to the output folder.
fn write_maps<B: Backend>(
    detector: &Detector<B>,
    image: &DynamicImage,
    p: &pnpt::model::Prediction,
    input: &Input,
    options: &PredictOptions,
) -> Result<(Option<String>, Option<String>), String> {
    if !options.maps {
        return Ok((None, None));
    }
    let median = detector.post().thresholds().pixel_median.get(&p.category).copied();
    let overlay_rel = format!("maps/{}.overlay.png", input.name);
    let bytes = render::png(render::overlay(image, p, median))?;
    write_atomic(&options.out.join(&overlay_rel), &bytes).map_err(|e| e.to_string())?;
    let mask_rel = match render::mask(p, image.width(), image.height()) {
        Some(mask) => {
            let rel = format!("maps/{}.mask.png", input.name);
            write_atomic(&options.out.join(&rel), &render::png(mask)?).map_err(|e| e.to_string())?;
            Some(rel)
        }
        None => None,
    };
    Ok((Some(overlay_rel), mask_rel))
}
