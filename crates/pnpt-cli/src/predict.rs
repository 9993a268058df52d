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
/// `skip` (the output folder, so a rerun does not score its own overlays). A folder is entered
/// once however many links lead to it (a link loop ends there), a file reached twice is scored
/// once, and more than `max` images is [`CliError::Input`] as soon as the walk finds one more.
pub fn collect_inputs(inputs: &[PathBuf], skip: &Path, max: usize) -> Result<Vec<Input>> {
    let mut walk = Walk { dirs: HashSet::new(), files: HashSet::new(), skip: key(skip), max, found: 0 };
    let mut found = Vec::new();
    for arg in inputs {
        if arg.is_dir() {
            let files = walk.folder(arg)?;
            for f in files {
                let rel = f.strip_prefix(arg).unwrap_or(&f).with_extension("");
                let name = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                found.push(Input { path: f, name, error: None });
            }
        } else {
            if !walk.new_file(arg)? {
                continue;
            }
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

/// What a file or folder is, whatever the path to it: device and inode on Unix, elsewhere the
/// path with links resolved. `None` for a path that cannot be read (a dangling link).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    #[cfg(unix)]
    Inode(u64, u64),
    #[cfg_attr(unix, allow(dead_code))]
    Path(PathBuf),
}

fn key(path: &Path) -> Option<Key> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| Key::Inode(m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        path.canonicalize().ok().map(Key::Path)
    }
}

/// The state of one `pnpt predict` walk over every input.
struct Walk {
    /// Folders entered.
    dirs: HashSet<Key>,
    /// Images taken.
    files: HashSet<Key>,
    /// The output folder.
    skip: Option<Key>,
    max: usize,
    found: usize,
}

impl Walk {
    /// Whether `path` is an image not taken yet (a path that cannot be read is taken, to be
    /// reported); counts it against the limit.
    fn new_file(&mut self, path: &Path) -> Result<bool> {
        if let Some(k) = key(path)
            && !self.files.insert(k)
        {
            return Ok(false);
        }
        self.found += 1;
        if self.found > self.max {
            return Err(CliError::Input(format!(
                "more than {} images to score (reached at {}): score fewer at once, or raise the limit (--max-inputs)",
                self.max,
                path.display()
            )));
        }
        Ok(true)
    }

    /// The images under `root`, sorted; iterative, so a deep tree cannot overflow the stack.
    /// Folders reached through a link are entered after every other, so an image is named by
    /// its path without links where it has one.
    fn folder(&mut self, root: &Path) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        let mut linked = std::collections::VecDeque::new();
        while let Some(dir) = stack.pop().or_else(|| linked.pop_front()) {
            let Some(k) = key(&dir) else { continue };
            if self.skip.as_ref() == Some(&k) || !self.dirs.insert(k) {
                continue;
            }
            let mut entries = Vec::new();
            for entry in std::fs::read_dir(&dir).map_err(CliError::io(&dir))? {
                entries.push(entry.map_err(CliError::io(&dir))?.path());
            }
            entries.sort();
            let is_link = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
            let (dirs, mut images): (Vec<PathBuf>, Vec<PathBuf>) = entries.into_iter().partition(|p| p.is_dir());
            images.retain(|p| {
                p.extension().is_some_and(|e| EXTENSIONS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str()))
            });
            // Real files before links to them (a stable sort keeps the names' order).
            images.sort_by_key(|p| is_link(p));
            for path in images {
                if self.new_file(&path)? {
                    files.push(path);
                }
            }
            let (links, real): (Vec<PathBuf>, Vec<PathBuf>) = dirs.into_iter().partition(|p| is_link(p));
            linked.extend(links);
            // Reversed onto the stack, so folders are entered in sorted order.
            stack.extend(real.into_iter().rev());
        }
        files.sort();
        Ok(files)
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
            collect_inputs(&[root.join("a"), root.join("b/x.png"), root.join("missing.png")], &root.join("a/out"), 10)
                .unwrap();
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["sub/y", "x", "x~2", "missing"]);
        assert_eq!(inputs[3].error.as_deref(), Some("no such file or folder"));
        assert!(inputs[..3].iter().all(|i| i.error.is_none()));
        // One image too many is refused, naming the limit's option.
        let err = collect_inputs(&[root.join("a"), root.join("b")], &root.join("a/out"), 2).unwrap_err();
        assert!(err.to_string().contains("more than 2 images") && err.to_string().contains("--max-inputs"), "{err}");
    }

    /// Two link loops, two links to one folder and a link to an image: every folder is entered
    /// once, every image taken once, under its path without links.
    #[cfg(unix)]
    #[test]
    fn link_loops_end_and_no_image_is_taken_twice() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir_all(a.join("sub/deep")).unwrap();
        for f in ["x.png", "sub/y.png", "sub/deep/z.png"] {
            std::fs::write(a.join(f), b"").unwrap();
        }
        symlink(&a, a.join("sub/back")).unwrap(); // a/sub/back -> a
        symlink(a.join("sub"), a.join("sub/deep/up")).unwrap(); // a/sub/deep/up -> a/sub
        symlink(a.join("sub"), a.join("again")).unwrap();
        symlink(a.join("x.png"), a.join("w.png")).unwrap();
        let out = dir.path().join("out");
        let inputs = collect_inputs(&[a.clone(), a.join("x.png"), a.join("sub"), a.clone()], &out, 100).unwrap();
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["sub/deep/z", "sub/y", "x"]);
        // The link to the image alone is taken (its target never was).
        let only = collect_inputs(&[a.join("w.png"), a.join("x.png")], &out, 100).unwrap();
        assert_eq!(only.len(), 1);
    }
}
