//! The artefact folder: save, load, checksums, manifest.
//!
//! Since manifest format 5 the tensors are safetensors files (`model.safetensors`,
//! `prompt_pool.safetensors`, `patch_memory.safetensors`; [`pnpt_io::tensor_file`]), so
//! Python reads a whole detector; since format 6 the manifest's own SHA-256 is beside it
//! (`manifest.sha256`) and is checked first, so an edit of the manifest (its format, its
//! checksums) is refused as such and cannot turn the other checks off. [`Detector::load`]
//! reads the current format only. Folders of
//! earlier formats, with `model.mpk` (a Burn record) and the pnpt containers
//! `prompt_pool.bin` / `patch_memory.bin`, are converted once by [`upgrade`] (`pnpt upgrade`):
//! there each file is taken under its current name if present, else under its
//! [`files::legacy`] name, and each reader tells the two formats apart by the file's first bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::Backend;
use pnpt_backbone::{Backbone, BackboneKind};
use pnpt_io::tensor_file::{self, TensorFile, looks_like_tensor_file};
use pnpt_io::{read_verified, sha256_hex, write_atomic};
use pnpt_memory::PatchMemory;
use pnpt_prompt::PromptPool;
use serde::{Deserialize, Serialize};

use super::{AnomalyModel, Detector, PostProcessor, Thresholds, files};
use crate::config::ScoringMethod;
use crate::fusion::{Normalization, PositionalStats};
use crate::hpe::FeatureSpec;
use crate::pnpt::Pnpt;
use crate::train::{MODEL_KIND, apply_model_tensors, load_record_checked, model_entries};
use crate::{Error, ModelConfig, PnptConfig, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    backbone: BackboneKind,
    input_size: u32,
    feature_spec: FeatureSpec,
    model: ModelConfig,
    num_params: usize,
    categories: Vec<String>,
    /// SHA-256 (hex) of every other file of the folder, by file name (format 3).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    checksums: BTreeMap<String, String>,
}

/// 6: the manifest's own SHA-256 beside it (`manifest.sha256`), checked before the manifest is
/// parsed; 5: model, pool and memory as safetensors files; 4: per-position statistics of PNPT's
/// map (`positional.npy`, `scoring.positional`); 3: a SHA-256 per file in the manifest,
/// verified before anything is parsed; 2: scoring methods and the patch memory; 1: PNPT-only
/// detectors. Only 6 loads; [`upgrade`] converts the others (1 and 2 without the integrity
/// check, which they did not have; the configuration of format 1 predates `scoring.method`,
/// read as `pnpt`).
const FORMAT: u32 = 6;
/// The first format whose tensors are safetensors files: an earlier manifest beside such a
/// file was edited (to skip the checks of the later formats).
const SAFETENSORS_FORMAT: u32 = 5;

/// Header of `model.safetensors` (its metadata, beside the tensors): what the weights are for.
#[derive(Serialize, Deserialize)]
struct ModelFileHeader {
    num_params: usize,
    model: ModelConfig,
    feature_spec: FeatureSpec,
}

/// The file of a detector folder under its current name, or under its name in earlier formats
/// when only that one exists (the current name when neither does, for the error message).
fn artefact(dir: &Path, current: &str, legacy: &str) -> PathBuf {
    if !dir.join(current).exists() && dir.join(legacy).exists() { dir.join(legacy) } else { dir.join(current) }
}

fn artefact_name<'a>(dir: &Path, current: &'a str, legacy: &'a str) -> &'a str {
    if !dir.join(current).exists() && dir.join(legacy).exists() { legacy } else { current }
}

fn manifest<B: Backend>(detector: &Detector<B>, checksums: BTreeMap<String, String>) -> Manifest {
    let config = detector.config();
    Manifest {
        format: FORMAT,
        backbone: config.backbone,
        input_size: config.input_size,
        feature_spec: config.feature_spec(),
        model: config.model.clone(),
        num_params: detector.model().transformer().num_params(),
        categories: detector.categories().to_vec(),
        checksums,
    }
}

/// [`Detector::save`]: staged beside `dir`, then swapped in by renames.
pub(super) fn save<B: Backend>(detector: &Detector<B>, dir: &Path) -> Result<()> {
    let name = dir
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{}: not a folder name to save a detector to", dir.display())))?
        .to_string_lossy()
        .into_owned();
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(Error::io(parent))?;
    let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let previous = parent.join(format!(".{name}.previous-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(Error::io(&staging))?;
    let written = write_files(detector, &staging);
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    pnpt_io::atomic::replace_dir(&staging, dir, &previous).map_err(|(path, e)| {
        let _ = std::fs::remove_dir_all(&staging);
        Error::io(&path)(e)
    })
}

fn write_files<B: Backend>(detector: &Detector<B>, dir: &Path) -> Result<()> {
    let (model, post, config) = (detector.model(), detector.post(), detector.config());
    let transformer = model.transformer();
    let model_path = dir.join(files::MODEL);
    let header = ModelFileHeader {
        num_params: transformer.num_params(),
        model: config.model.clone(),
        feature_spec: config.feature_spec(),
    };
    tensor_file::write(&model_path, MODEL_KIND, &header, &model_entries(transformer, "", &model_path)?)?;
    model.pool().save(&dir.join(files::POOL))?;
    write_atomic(&dir.join(files::THRESHOLDS), &to_json(post.thresholds())?)?;
    let mut written = vec![files::MODEL, files::POOL, files::THRESHOLDS, files::CONFIG];
    if let Some(memory) = model.memory() {
        memory.save(&dir.join(files::MEMORY))?;
        written.push(files::MEMORY);
    }
    let positional = post.positional();
    if model.memory().is_some() || !positional.is_empty() {
        let mut normalization = post.normalization().clone();
        normalization.positional_classes = positional.classes.keys().cloned().collect();
        write_atomic(&dir.join(files::NORMALIZATION), &to_json(&normalization)?)?;
        written.push(files::NORMALIZATION);
    }
    if !positional.is_empty() {
        let px = positional.px;
        let mut data = Vec::with_capacity(positional.classes.len() * 2 * px);
        for (mean, std) in positional.classes.values() {
            data.extend_from_slice(mean);
            data.extend_from_slice(std);
        }
        let side = (px as f64).sqrt() as usize;
        let path = dir.join(files::POSITIONAL);
        pnpt_io::npy::write(&path, &[positional.classes.len(), 2, side, side], &data)
            .map_err(|e| Error::Artefact { path: path.clone(), reason: e.to_string() })?;
        written.push(files::POSITIONAL);
    }
    config.save(dir.join(files::CONFIG))?;
    // Checksums of the bytes as they are on disk, so the manifest vouches for what a reader
    // will find; the manifest is written last.
    let mut checksums = BTreeMap::new();
    for name in written {
        let path = dir.join(name);
        let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
        checksums.insert(name.to_string(), sha256_hex(&bytes));
    }
    write_atomic(&dir.join(files::MANIFEST), &to_json(&manifest(detector, checksums))?)?;
    pnpt_io::checksum::write_sidecar(&dir.join(files::MANIFEST), &dir.join(files::MANIFEST_CHECKSUM))?;
    Ok(())
}

/// Which detector folders a read accepts: [`Detector::load`] the current format only,
/// [`upgrade`] every earlier one too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Formats {
    Current,
    Any,
}

/// [`Detector::load`]; the backbone weights from `weights` when given.
pub(super) fn load<B: Backend>(dir: &Path, weights: Option<&Path>, device: &B::Device) -> Result<Detector<B>> {
    read(dir, weights, device, Formats::Current).map(|(d, _)| d)
}

/// Converts the detector folder `old`, of any format this version has written, to the current
/// format in `new` (written as [`Detector::save`] writes: staged, then renamed into place;
/// `old` is only read). Returns the format `old` had. Checksums are verified where the old
/// format had them (3 and later).
///
/// ```no_run
/// use burn::backend::Flex;
/// let was = pnpt_model::detector::upgrade::<Flex>("old-detector".as_ref(), "detector".as_ref(), &Default::default())?;
/// println!("format {was} -> current");
/// # Ok::<(), pnpt_model::Error>(())
/// ```
pub fn upgrade<B: Backend>(old: &Path, new: &Path, device: &B::Device) -> Result<u32> {
    let (detector, format) = read::<B>(old, None, device, Formats::Any)?;
    save(&detector, new)?;
    Ok(format)
}

/// The manifest of `dir`, checked against `manifest.sha256` where the folder has one (format
/// 6), before any of it is believed; and whether it had one.
fn read_manifest(dir: &Path) -> Result<(Manifest, bool)> {
    let path = dir.join(files::MANIFEST);
    let sidecar = dir.join(files::MANIFEST_CHECKSUM);
    let (bytes, vouched) = match pnpt_io::checksum::read_with_sidecar(&path, &sidecar) {
        Ok(bytes) => (bytes, true),
        // Folders of formats 1-5 have none; what the manifest says decides below.
        Err(pnpt_io::Error::Io { path: p, source })
            if p == sidecar && source.kind() == std::io::ErrorKind::NotFound =>
        {
            (std::fs::read(&path).map_err(Error::io(&path))?, false)
        }
        Err(e) => return Err(e.into()),
    };
    let manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Artefact { path, reason: e.to_string() })?;
    Ok((manifest, vouched))
}

/// Refuses a manifest whose format this read does not take, or that was edited to look older.
fn check_format(dir: &Path, manifest: &Manifest, vouched: bool, formats: Formats) -> Result<()> {
    let refuse = |reason: String| Err(Error::Mismatch { path: dir.join(files::MANIFEST), reason });
    let sidecar = files::MANIFEST_CHECKSUM;
    match manifest.format {
        FORMAT if vouched => Ok(()),
        FORMAT => refuse(format!(
            "detector format {FORMAT} without its {sidecar}: the folder is incomplete or was edited (save the detector again)"
        )),
        f @ 1..FORMAT if vouched => refuse(format!(
            "detector format {f} beside a {sidecar}, which only format {FORMAT} writes: the manifest was edited (this version reads format {FORMAT})"
        )),
        f @ 1..FORMAT if formats == Formats::Any => {
            // Checksums arrived with format 3: a lower format that carries them was edited.
            if f < 3 && !manifest.checksums.is_empty() {
                return refuse(format!(
                    "format {f} with checksums, which only format 3 and later have: the manifest was edited"
                ));
            }
            if let Some(file) = (f < SAFETENSORS_FORMAT)
                .then(|| [files::MODEL, files::POOL, files::MEMORY].into_iter().find(|n| dir.join(n).exists()))
                .flatten()
            {
                return refuse(format!(
                    "format {f} beside {file}, which only format {SAFETENSORS_FORMAT} and later write: the manifest was edited"
                ));
            }
            Ok(())
        }
        f @ 1..FORMAT => refuse(format!(
            "detector format {f}; this version reads format {FORMAT}: convert the folder with `pnpt upgrade {} NEW` (pnpt::model::detector::upgrade)",
            dir.display()
        )),
        f => refuse(format!("detector format {f} was written by a newer pnpt; this version reads format {FORMAT}")),
    }
}

/// The detector in `dir` and the format it was saved in.
fn read<B: Backend>(
    dir: &Path,
    weights: Option<&Path>,
    device: &B::Device,
    formats: Formats,
) -> Result<(Detector<B>, u32)> {
    warn_if_unoptimised();
    let (manifest, vouched) = read_manifest(dir)?;
    check_format(dir, &manifest, vouched, formats)?;
    let legacy = formats == Formats::Any;
    // A current folder has only the current names; an older one may have the names of its time.
    let artefact = |current: &str, old: &str| if legacy { artefact(dir, current, old) } else { dir.join(current) };
    if manifest.format >= 3 {
        verify_checksums(dir, &manifest.checksums, legacy)?;
    }
    let mut config = PnptConfig::load_saved(dir.join(files::CONFIG))?;
    if let Some(w) = weights {
        config.backbone_weights = Some(w.to_path_buf());
    }
    if manifest.format == 1 {
        config.scoring.method = ScoringMethod::Pnpt;
    }
    let mut diffs = Vec::new();
    if manifest.backbone != config.backbone {
        diffs.push(format!("backbone {} vs {}", manifest.backbone, config.backbone));
    }
    if manifest.input_size != config.input_size {
        diffs.push(format!("input_size {} vs {}", manifest.input_size, config.input_size));
    }
    let (a, b) = (&manifest.model, &config.model);
    for (name, x, y) in [
        ("hidden", a.hidden, b.hidden),
        ("semantic_tokens", a.semantic_tokens, b.semantic_tokens),
        ("heads", a.heads, b.heads),
        ("layers", a.layers, b.layers),
        ("ffn_ratio", a.ffn_ratio, b.ffn_ratio),
    ] {
        if x != y {
            diffs.push(format!("model.{name} {x} vs {y}"));
        }
    }
    if a != b && diffs.is_empty() {
        diffs.push(format!("model {a:?} vs {b:?}"));
    }
    if !diffs.is_empty() {
        return Err(Error::Mismatch {
            path: dir.join(files::CONFIG),
            reason: format!("weights were saved with (manifest.json vs config.json): {}", diffs.join("; ")),
        });
    }
    let model_path = artefact(files::MODEL, files::legacy::MODEL);
    let bytes = std::fs::read(&model_path).map_err(Error::io(&model_path))?;
    let fresh = Pnpt::<B>::new(&config.model, config.feature_spec(), device)?;
    let expected = fresh.num_params();
    if expected != manifest.num_params {
        return Err(Error::Mismatch {
            path: model_path,
            reason: format!("manifest says {} parameters, the configuration builds {expected}", manifest.num_params),
        });
    }
    let model = if looks_like_tensor_file(&bytes) {
        apply_model_tensors(fresh, &TensorFile::parse(&model_path, bytes, MODEL_KIND)?, "", expected)?
    } else {
        let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
        let record = Recorder::<B>::load(&recorder, bytes, device)
            .map_err(|e| Error::Artefact { path: model_path.clone(), reason: format!("unreadable weights: {e}") })?;
        load_record_checked(fresh, record, expected, &model_path)?
    };
    let pool_path = artefact(files::POOL, files::legacy::POOL);
    let mut pool = PromptPool::<B>::load(&pool_path, device)?;
    pool.set_distance(config.distance);
    if pool.names() != manifest.categories.as_slice() {
        return Err(Error::Mismatch { path: pool_path, reason: "categories differ from manifest.json".into() });
    }
    let thresholds: Thresholds = read_json(&dir.join(files::THRESHOLDS))?;
    let backbone = Backbone::<B>::load(config.backbone, config.backbone_weights.as_deref(), device)?;
    let mut model = AnomalyModel::new(config.clone(), backbone, pool, model)?;
    let memory_path = artefact(files::MEMORY, files::legacy::MEMORY);
    if memory_path.exists() {
        let memory = PatchMemory::<B>::load(&memory_path, device)?;
        model = model
            .with_memory(memory)
            .map_err(|e| Error::Mismatch { path: memory_path.clone(), reason: e.to_string() })?;
    }
    let normalization_path = dir.join(files::NORMALIZATION);
    let normalization: Normalization =
        if normalization_path.exists() { read_json(&normalization_path)? } else { Normalization::default() };
    let positional_path = dir.join(files::POSITIONAL);
    let positional = if positional_path.exists() || !normalization.positional_classes.is_empty() {
        read_positional(&positional_path, &normalization.positional_classes, config.input_size as usize)?
    } else {
        PositionalStats::default()
    };
    let rule = config.scoring.rule();
    if rule.uses_positional() && positional.is_empty() {
        return Err(Error::Mismatch {
            path: dir.join(files::CONFIG),
            reason: format!("scoring.positional is set but the folder has no {}", files::POSITIONAL),
        });
    }
    let post =
        PostProcessor::from_parts(model.categories().to_vec(), &config.scoring, normalization, positional, thresholds);
    let detector = Detector::new(model, post)
        .map_err(|e| Error::Mismatch { path: dir.join(files::CONFIG), reason: e.to_string() })?;
    Ok((detector, manifest.format))
}

/// Every file a detector of format 3 must vouch for; the memory's two only when present.
/// With `legacy`, a file may go by its name in formats 3 and 4.
fn verify_checksums(dir: &Path, checksums: &BTreeMap<String, String>, legacy: bool) -> Result<()> {
    let name =
        |current: &'static str, old: &'static str| if legacy { artefact_name(dir, current, old) } else { current };
    let memory = name(files::MEMORY, files::legacy::MEMORY);
    let mut required = vec![
        files::CONFIG,
        name(files::MODEL, files::legacy::MODEL),
        name(files::POOL, files::legacy::POOL),
        files::THRESHOLDS,
    ];
    if dir.join(memory).exists() {
        required.extend([memory, files::NORMALIZATION]);
    }
    for optional in [files::NORMALIZATION, files::POSITIONAL] {
        if dir.join(optional).exists() {
            required.push(optional);
        }
    }
    for name in required {
        if !checksums.contains_key(name) {
            return Err(Error::Artefact {
                path: dir.join(name),
                reason: format!(
                    "{} has no checksum for it: the file was added after the detector was saved, or the manifest comes from another detector",
                    files::MANIFEST
                ),
            });
        }
    }
    for (name, sha) in checksums {
        // Names are plain file names: a manifest must not point outside its folder.
        if Path::new(name).file_name().map(|f| f != name.as_str()).unwrap_or(true) {
            return Err(Error::Artefact {
                path: dir.join(files::MANIFEST),
                reason: format!("checksum entry `{name}` is not a file name"),
            });
        }
        read_verified(&dir.join(name), sha)?;
    }
    Ok(())
}

/// `positional.npy`: one `(mean, std)` pair of `size × size` maps per class of `classes`.
fn read_positional(path: &Path, classes: &[String], size: usize) -> Result<PositionalStats> {
    let bad = |reason: String| Error::Artefact { path: path.to_path_buf(), reason };
    let (shape, data) = pnpt_io::npy::read::<f32>(path).map_err(|e| bad(e.to_string()))?;
    let px = size * size;
    if shape != [classes.len(), 2, size, size] {
        return Err(bad(format!(
            "shape {shape:?}, expected [{}, 2, {size}, {size}] (classes of normalization.json, input_size)",
            classes.len()
        )));
    }
    if data.iter().any(|v| !v.is_finite()) || data.chunks(px).skip(1).step_by(2).flatten().any(|&v| v < 0.0) {
        return Err(bad("non-finite values or a negative deviation".into()));
    }
    let classes = classes
        .iter()
        .zip(data.chunks(2 * px))
        .map(|(c, d)| (c.clone(), (d[..px].to_vec(), d[px..].to_vec())))
        .collect();
    Ok(PositionalStats { px, classes })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &PathBuf) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    serde_json::from_str(&text).map_err(|e| Error::Artefact { path: path.clone(), reason: e.to_string() })
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::Invalid(e.to_string()))
}

/// Whether this crate was compiled without optimisation (see `build.rs`).
pub const UNOPTIMISED: bool = cfg!(pnpt_unoptimised);

/// Warns once per process when the model code was compiled without optimisation: profiles are
/// not inherited by dependents, and a plain `cargo run` of a program that depends on pnpt runs
/// the model unoptimised, seconds per image instead of a tenth of a second.
fn warn_if_unoptimised() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if UNOPTIMISED {
        ONCE.call_once(|| {
            log::warn!(
                "pnpt-model was compiled without optimisation (opt-level 0): inference runs some 30-60x slower. \
                 Add `[profile.dev.package.\"*\"] opt-level = 3` to your Cargo.toml, or build with --release."
            )
        });
    }
}

#[cfg(test)]
#[path = "persistence_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "persistence_integrity_tests.rs"]
mod integrity_tests;
