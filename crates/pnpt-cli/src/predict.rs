//! `pnpt predict`: score files and folders of unlabelled images.
//!
//! Folders are searched recursively for `.png`, `.jpg`, `.jpeg` and `.bmp` files (any case),
//! in sorted order; files named on the command line are read whatever their extension. Into
//! the output folder go `predictions.jsonl` (one JSON object per image, in input order:
//! `path`, the fields of [`crate::render::PredictionRecord`], `overlay` and `mask` (paths
//! relative to the output folder, `null` with `--no-maps`) and `ms`; or `path` and `error` for
//! an image that could not be read or scored) and `maps/<name>.overlay.png` /
//! `maps/<name>.mask.png`, where `<name>` is the image's path relative to the folder it was
//! found in (its stem for files named directly), without extension.
//!
//! Images are decoded in parallel and scored `--batch` at a time; `ms` is the batch's wall time
//! (decoding, scoring, rendering) divided by its size. Every file is written via temp + rename;
//! `predictions.jsonl` is rewritten (complete) at most once a second and at the end, so an
//! interrupted run leaves every line written so far intact.

use std::collections::HashSet;
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

/// One image to score and the name of its maps.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// The file.
    pub path: PathBuf,
    /// Unique name of its outputs, `/`-separated, without extension.
    pub name: String,
    /// Why it cannot be scored before any reading (a missing path).
    pub error: Option<String>,
}

/// The images named by `inputs` (see the module documentation), skipping anything under
/// `skip` (the output folder, so a rerun does not score its own overlays).
pub fn collect_inputs(inputs: &[PathBuf], skip: &Path) -> Result<Vec<Input>> {
    let skip = skip.canonicalize().ok();
    let mut found = Vec::new();
    for arg in inputs {
        if arg.is_dir() {
            let mut files = Vec::new();
            walk(arg, skip.as_deref(), &mut files)?;
            files.sort();
            for f in files {
                let rel = f.strip_prefix(arg).unwrap_or(&f).with_extension("");
                let name = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                found.push(Input { path: f, name, error: None });
            }
        } else {
            let name = arg.file_stem().map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
            let error = (!arg.exists()).then(|| "no such file or folder".to_string());
            found.push(Input { path: arg.clone(), name, error });
        }
    }
    // Two inputs with the same name (same file name in two folders) get `~2`, `~3`...
    let mut used = HashSet::new();
    for input in &mut found {
        let base = input.name.clone();
        let mut k = 1;
        while !used.insert(input.name.clone()) {
            k += 1;
            input.name = format!("{base}~{k}");
        }
    }
    Ok(found)
}

fn walk(dir: &Path, skip: Option<&Path>, out: &mut Vec<PathBuf>) -> Result<()> {
    if skip.is_some_and(|s| dir.canonicalize().is_ok_and(|d| d == s)) {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).map_err(CliError::io(dir))? {
        let path = entry.map_err(CliError::io(dir))?.path();
        if path.is_dir() {
            walk(&path, skip, out)?;
        } else if path
            .extension()
            .is_some_and(|e| EXTENSIONS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Loads the detector on the options' device and runs [`predict_with`].
pub fn run_predict(options: PredictOptions) -> Result<Summary> {
    let device = options.device;
    run_on(&device, Task(options))?
}

struct Task(PredictOptions);

impl BackendTask for Task {
    type Output = Result<Summary>;
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Summary> {
        let detector = Detector::<B::InnerBackend>::load(&self.0.detector, &device)?;
        predict_with(&detector, &self.0)
    }
}

/// Scores every input with `detector` and writes the outputs; a failed image is an error line
/// and the run goes on.
pub fn predict_with<B: Backend>(detector: &Detector<B>, options: &PredictOptions) -> Result<Summary> {
    if let Some(c) = &options.category {
        detector.model().category_index(c)?;
    }
    let inputs = collect_inputs(&options.inputs, &options.out)?;
    if inputs.is_empty() {
        let names: Vec<String> = options.inputs.iter().map(|p| p.display().to_string()).collect();
        return Err(CliError::Input(format!(
            "no image found in {} (looked for {})",
            names.join(", "),
            EXTENSIONS.join(", ")
        )));
    }
    std::fs::create_dir_all(&options.out).map_err(CliError::io(&options.out))?;
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
    let mut last_write = Instant::now();
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
        if last_write.elapsed() >= Duration::from_secs(1) {
            write_lines(&jsonl, &lines)?;
            last_write = Instant::now();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_found_named_uniquely_and_the_output_folder_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in ["a/x.png", "a/sub/y.JPG", "a/notes.txt", "a/out/maps/x.overlay.png", "b/x.png"] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"").unwrap();
        }
        let inputs =
            collect_inputs(&[root.join("a"), root.join("b/x.png"), root.join("missing.png")], &root.join("a/out"))
                .unwrap();
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["sub/y", "x", "x~2", "missing"]);
        assert_eq!(inputs[3].error.as_deref(), Some("no such file or folder"));
        assert!(inputs[..3].iter().all(|i| i.error.is_none()));
    }
}
