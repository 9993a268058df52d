//! The artefact folder: save, load, checksums, manifest.
//!
//! Since manifest format 5 the tensors are safetensors files (`model.safetensors`,
//! `prompt_pool.safetensors`, `patch_memory.safetensors`; [`pnpt_io::tensor_file`]), so
//! Python reads a whole detector. Folders of earlier formats, with `model.mpk` (a Burn record)
//! and the pnpt containers `prompt_pool.bin` / `patch_memory.bin`, still load: each file is
//! taken under its current name if present, else under its [`files::legacy`] name, and each
//! reader tells the two formats apart by the file's first bytes.

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

use super::{Detector, Thresholds, files};
use crate::config::ScoringMethod;
use crate::fusion::PositionalStats;
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

/// 5: model, pool and memory as safetensors files; 4: per-position statistics of PNPT's map
/// (`positional.npy`, `scoring.positional`); 3: a SHA-256 per file in the manifest, verified
/// before anything is parsed; 2: scoring methods and the patch memory; 1: PNPT-only
/// detectors. All still load; 1 and 2 without the integrity check (their configuration of
/// format 1 predates `scoring.method`, read as `pnpt`).
const FORMAT: u32 = 5;

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

impl<B: Backend> Detector<B> {
    fn manifest(&self, checksums: BTreeMap<String, String>) -> Manifest {
        Manifest {
            format: FORMAT,
            backbone: self.config.backbone,
            input_size: self.config.input_size,
            feature_spec: self.config.feature_spec(),
            model: self.config.model.clone(),
            num_params: self.model.num_params(),
            categories: self.pool.names().to_vec(),
            checksums,
        }
    }

    /// Writes the artefact folder. The files are written into a staging folder beside `dir`,
    /// which then replaces `dir` by renames, so an interrupted save never leaves a mix of old
    /// and new files, and an existing detector survives until the new one is complete.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
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
        let written = self.write_files(&staging);
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        pnpt_io::atomic::replace_dir(&staging, dir, &previous).map_err(|(path, e)| {
            let _ = std::fs::remove_dir_all(&staging);
            Error::io(&path)(e)
        })
    }

    fn write_files(&self, dir: &Path) -> Result<()> {
        let model_path = dir.join(files::MODEL);
        let header = ModelFileHeader {
            num_params: self.model.num_params(),
            model: self.config.model.clone(),
            feature_spec: self.config.feature_spec(),
        };
        tensor_file::write(&model_path, MODEL_KIND, &header, &model_entries(&self.model, "", &model_path)?)?;
        self.pool.save(&dir.join(files::POOL))?;
        write_atomic(&dir.join(files::THRESHOLDS), &to_json(&self.thresholds)?)?;
        let mut written = vec![files::MODEL, files::POOL, files::THRESHOLDS, files::CONFIG];
        if let Some(memory) = &self.memory {
            memory.save(&dir.join(files::MEMORY))?;
            written.push(files::MEMORY);
        }
        if self.memory.is_some() || !self.positional.is_empty() {
            let mut normalization = self.normalization.clone();
            normalization.positional_classes = self.positional.classes.keys().cloned().collect();
            write_atomic(&dir.join(files::NORMALIZATION), &to_json(&normalization)?)?;
            written.push(files::NORMALIZATION);
        }
        if !self.positional.is_empty() {
            let px = self.positional.px;
            let mut data = Vec::with_capacity(self.positional.classes.len() * 2 * px);
            for (mean, std) in self.positional.classes.values() {
                data.extend_from_slice(mean);
                data.extend_from_slice(std);
            }
            let side = (px as f64).sqrt() as usize;
            let path = dir.join(files::POSITIONAL);
            pnpt_io::npy::write(&path, &[self.positional.classes.len(), 2, side, side], &data)
                .map_err(|e| Error::Artefact { path: path.clone(), reason: e.to_string() })?;
            written.push(files::POSITIONAL);
        }
        self.config.save(dir.join(files::CONFIG))?;
        // Checksums of the bytes as they are on disk, so the manifest vouches for what a reader
        // will find; the manifest is written last.
        let mut checksums = BTreeMap::new();
        for name in written {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
            checksums.insert(name.to_string(), sha256_hex(&bytes));
        }
        write_atomic(&dir.join(files::MANIFEST), &to_json(&self.manifest(checksums))?)?;
        Ok(())
    }

    /// Loads an artefact folder written by [`Detector::save`]; the backbone weights come from
    /// the saved configuration (bundled for EfficientNet-Lite0).
    pub fn load(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        Self::load_with_backbone_weights(dir.as_ref(), None, device)
    }

    /// Loads an artefact folder, taking the backbone weights from `weights` when given (e.g.
    /// the `.pth` moved since training).
    pub fn load_with_backbone_weights(dir: &Path, weights: Option<&Path>, device: &B::Device) -> Result<Self> {
        warn_if_unoptimised();
        let manifest_path = dir.join(files::MANIFEST);
        let manifest: Manifest = read_json(&manifest_path)?;
        if manifest.format >= 3 {
            verify_checksums(dir, &manifest.checksums)?;
        }
        let mut config = PnptConfig::load_saved(dir.join(files::CONFIG))?;
        if let Some(w) = weights {
            config.backbone_weights = Some(w.to_path_buf());
        }
        let mut diffs = Vec::new();
        if manifest.format == 1 {
            config.scoring.method = ScoringMethod::Pnpt;
        } else if !(2..=FORMAT).contains(&manifest.format) {
            diffs.push(format!("format {} (this build reads 1 to {FORMAT})", manifest.format));
        }
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
        let model_path = artefact(dir, files::MODEL, files::legacy::MODEL);
        let bytes = std::fs::read(&model_path).map_err(Error::io(&model_path))?;
        let fresh = Pnpt::<B>::new(&config.model, config.feature_spec(), device)?;
        let expected = fresh.num_params();
        if expected != manifest.num_params {
            return Err(Error::Mismatch {
                path: model_path,
                reason: format!(
                    "manifest says {} parameters, the configuration builds {expected}",
                    manifest.num_params
                ),
            });
        }
        let model = if looks_like_tensor_file(&bytes) {
            apply_model_tensors(fresh, &TensorFile::parse(&model_path, bytes, MODEL_KIND)?, "", expected)?
        } else {
            let recorder = NamedMpkBytesRecorder::<FullPrecisionSettings>::default();
            let record = Recorder::<B>::load(&recorder, bytes, device).map_err(|e| Error::Artefact {
                path: model_path.clone(),
                reason: format!("unreadable weights: {e}"),
            })?;
            load_record_checked(fresh, record, expected, &model_path)?
        };
        let pool_path = artefact(dir, files::POOL, files::legacy::POOL);
        let mut pool = PromptPool::<B>::load(&pool_path, device)?;
        pool.set_distance(config.distance);
        if pool.names() != manifest.categories.as_slice() {
            return Err(Error::Mismatch { path: pool_path, reason: "categories differ from manifest.json".into() });
        }
        let thresholds: Thresholds = read_json(&dir.join(files::THRESHOLDS))?;
        let backbone = Backbone::<B>::load(config.backbone, config.backbone_weights.as_deref(), device)?;
        let mut detector = Self::new(config, backbone, pool, model, thresholds)?;
        let memory_path = artefact(dir, files::MEMORY, files::legacy::MEMORY);
        if memory_path.exists() {
            let memory = PatchMemory::<B>::load(&memory_path, device)?;
            detector = detector
                .with_memory(memory)
                .map_err(|e| Error::Mismatch { path: memory_path.clone(), reason: e.to_string() })?;
        }
        let normalization_path = dir.join(files::NORMALIZATION);
        if normalization_path.exists() {
            detector.normalization = read_json(&normalization_path)?;
        }
        let positional_path = dir.join(files::POSITIONAL);
        if positional_path.exists() || !detector.normalization.positional_classes.is_empty() {
            detector.positional = read_positional(
                &positional_path,
                &detector.normalization.positional_classes,
                detector.config.input_size as usize,
            )?;
        }
        let rule = detector.config.scoring.rule();
        if rule.uses_positional() && detector.positional.is_empty() {
            return Err(Error::Mismatch {
                path: dir.join(files::CONFIG),
                reason: format!("scoring.positional is set but the folder has no {}", files::POSITIONAL),
            });
        }
        for method in [rule.method, rule.score_source().method] {
            detector
                .check_method(method)
                .map_err(|e| Error::Mismatch { path: dir.join(files::CONFIG), reason: e.to_string() })?;
        }
        Ok(detector)
    }
}

/// Every file a detector of format 3 must vouch for; the memory's two only when present.
fn verify_checksums(dir: &Path, checksums: &BTreeMap<String, String>) -> Result<()> {
    let memory = artefact_name(dir, files::MEMORY, files::legacy::MEMORY);
    let mut required = vec![
        files::CONFIG,
        artefact_name(dir, files::MODEL, files::legacy::MODEL),
        artefact_name(dir, files::POOL, files::legacy::POOL),
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
                path: dir.join(files::MANIFEST),
                reason: format!("no checksum for {name}: the manifest was edited or comes from another detector"),
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
