//! Training checkpoints: the file, its header, and the checks before a run resumes; and the
//! model's weights as named tensors, shared with the detector's `model.safetensors`.
//!
//! A checkpoint is a safetensors file ([`pnpt_io::tensor_file`], `pnpt.kind` =
//! `training_checkpoint`): every parameter as a float32 tensor `model.<module path>`, the AdamW
//! state as one byte tensor `optimizer.adamw_record_mpk` (Burn's named MessagePack record: its
//! per-parameter moments are keyed by Burn's `ParamId`s and nested by tensor rank, which have no
//! clean tensor names; the metadata entry `param_ids` maps each module path to the id the
//! record uses), and the header fields (epoch, RNG position, history, configuration, dataset
//! fingerprint...) as metadata. Checkpoints in the earlier container (`PNPTCKPT`: both Burn
//! records and a JSON header) still resume; the two are told apart by their first bytes.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::{Module, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::TensorData;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn_store::{ModuleSnapshot, TensorSnapshot};
use pnpt_io::container::parse_container;
use pnpt_io::tensor_file::{self, Entry, TensorFile};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::EpochStats;
use crate::pnpt::Pnpt;
use crate::{Error, PnptConfig, Result};

/// File name of the training checkpoint inside the checkpoint folder. The name is kept from
/// the container format: a run folder holds one checkpoint, which a resumed run of an earlier
/// version's folder reads and then replaces in the new format.
pub const CHECKPOINT_FILE: &str = "checkpoint.bin";
/// Magic of the earlier container format (still read).
pub(super) const CHECKPOINT_MAGIC: &[u8; 8] = b"PNPTCKPT";
/// `pnpt.kind` of a checkpoint.
pub(super) const CHECKPOINT_KIND: &str = "training_checkpoint";
/// `pnpt.kind` of a detector's `model.safetensors`.
pub(crate) const MODEL_KIND: &str = "pnpt_model";
/// Prefix of the model's tensors in a checkpoint (the detector's model file has none).
const MODEL_PREFIX: &str = "model.";
const OPTIMIZER_TENSOR: &str = "optimizer.adamw_record_mpk";

/// The optimizer of a training run.
pub(super) type Adam<B> = OptimizerAdaptor<AdamW, Pnpt<B>, B>;

#[derive(Serialize, Deserialize)]
pub(super) struct CheckpointHeader {
    pub(super) epoch: usize,
    pub(super) rng_seed: u64,
    /// ChaCha8 word position, as a decimal string (u128).
    pub(super) rng_word_pos: String,
    pub(super) history: Vec<EpochStats>,
    pub(super) config: PnptConfig,
    pub(super) num_params: usize,
    /// The run's planned epoch count (see [`TrainOutput::planned_epochs`]); `None` in
    /// checkpoints written before it existed, or before a budgeted run chose it.
    ///
    /// [`TrainOutput::planned_epochs`]: super::TrainOutput::planned_epochs
    #[serde(default)]
    pub(super) planned_epochs: Option<usize>,
    /// The training data ([`TrainOptions::dataset`]); `None` in checkpoints written before it
    /// existed (they still resume, with a warning) or by runs that did not record it.
    ///
    /// [`TrainOptions::dataset`]: super::TrainOptions::dataset
    #[serde(default)]
    pub(super) dataset: Option<pnpt_data::fingerprint::Fingerprint>,
    /// Module path → `ParamId` of every parameter at save time, the keys of the AdamW record
    /// (tensor-file checkpoints; empty in container ones, whose model record holds the ids).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) param_ids: BTreeMap<String, u64>,
}

/// A checkpoint read from disk, its training state not yet applied ([`Checkpoint::restore`]).
pub(super) struct Checkpoint {
    pub(super) header: CheckpointHeader,
    state: State,
}

enum State {
    /// The earlier container: Burn records of the model and of AdamW.
    Records { model: Vec<u8>, optimizer: Vec<u8> },
    /// A tensor file.
    Tensors(TensorFile),
}

/// Reads and verifies the checkpoint at `path` (either format), without applying it.
pub(super) fn read_checkpoint(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|source| pnpt_io::Error::Io { path: path.to_path_buf(), source })?;
    if bytes.starts_with(CHECKPOINT_MAGIC) {
        let (header, blobs): (CheckpointHeader, Vec<Vec<u8>>) = parse_container(path, &bytes, CHECKPOINT_MAGIC)?;
        let Ok([model, optimizer]) = <[Vec<u8>; 2]>::try_from(blobs) else {
            return Err(Error::Artefact { path: path.to_path_buf(), reason: "expected 2 records".into() });
        };
        return Ok(Checkpoint { header, state: State::Records { model, optimizer } });
    }
    let file = TensorFile::parse(path, bytes, CHECKPOINT_KIND)?;
    Ok(Checkpoint { header: file.header()?, state: State::Tensors(file) })
}

impl Checkpoint {
    /// The saved weights in `model` and the saved AdamW state in `optim` (both fresh, of the
    /// checkpoint's configuration).
    pub(super) fn restore<B: AutodiffBackend>(
        &self,
        path: &Path,
        model: Pnpt<B>,
        optim: Adam<B>,
        device: &B::Device,
    ) -> Result<(Pnpt<B>, Adam<B>)> {
        let bad = |reason: String| Error::Artefact { path: path.to_path_buf(), reason };
        let load_optimizer = |bytes: &[u8]| -> Result<<Adam<B> as Optimizer<Pnpt<B>, B>>::Record> {
            Recorder::<B>::load(&recorder(), bytes.to_vec(), device).map_err(|e| bad(format!("optimizer record: {e}")))
        };
        match &self.state {
            State::Records { model: record, optimizer } => {
                let record = Recorder::<B>::load(&recorder(), record.clone(), device)
                    .map_err(|e| bad(format!("model record: {e}")))?;
                // The record restores the saved ParamIds, which the AdamW record is keyed by.
                let model = load_record_checked(model, record, self.header.num_params, path)?;
                let record = load_optimizer(optimizer)?;
                Ok((model, optim.load_record(record)))
            }
            State::Tensors(file) => {
                let model = apply_model_tensors(model, file, MODEL_PREFIX, self.header.num_params)?;
                // The rebuilt model has fresh ParamIds: re-key the AdamW state from the saved
                // ids to them through the module paths.
                let fresh: HashMap<String, ParamId> = model
                    .collect(None, None, false)
                    .iter()
                    .filter_map(|s| Some((s.full_path(), s.tensor_id?)))
                    .collect();
                let mut by_saved = HashMap::with_capacity(fresh.len());
                for (name, saved) in &self.header.param_ids {
                    let id =
                        fresh.get(name).ok_or_else(|| bad(format!("param_ids names `{name}`, not in the model")))?;
                    by_saved.insert(*saved, *id);
                }
                // Burn's own map type (not std's), hence built from the record type.
                let mut record = <Adam<B> as Optimizer<Pnpt<B>, B>>::Record::default();
                for (id, state) in load_optimizer(file.u8(OPTIMIZER_TENSOR)?)? {
                    let new = by_saved.get(&id.val()).ok_or_else(|| {
                        bad(format!("optimizer state for parameter id {} that param_ids does not name", id.val()))
                    })?;
                    record.insert(*new, state);
                }
                Ok((model, optim.load_record(record)))
            }
        }
    }
}

/// The model's parameters as float32 tensors named `prefix` + module path (burn-store's
/// collector: `hpe.…`, `layers.0.…`), in the module's order.
pub(crate) fn model_entries<B: Backend>(model: &Pnpt<B>, prefix: &str, path: &Path) -> Result<Vec<Entry>> {
    model
        .collect(None, None, false)
        .iter()
        .map(|snapshot| {
            let name = snapshot.full_path();
            let data = snapshot
                .to_data()
                .map_err(|e| Error::Artefact { path: path.to_path_buf(), reason: format!("parameter {name}: {e}") })?;
            let values: Vec<f32> = data.iter::<f32>().collect();
            Ok(Entry::f32(format!("{prefix}{name}"), data.shape.to_vec(), &values))
        })
        .collect()
}

/// Loads the tensors `prefix` + module path of `file` into `model` (built from the saved
/// configuration): every parameter must be there with its shape, and no other tensor may be.
pub(crate) fn apply_model_tensors<B: Backend>(
    mut model: Pnpt<B>,
    file: &TensorFile,
    prefix: &str,
    expected_params: usize,
) -> Result<Pnpt<B>> {
    let path = file.path().to_path_buf();
    let mut snapshots = Vec::new();
    for name in file.names().filter(|n| n.starts_with(prefix)) {
        let (shape, values) = file.f32(name)?;
        let data = TensorData::new(values, shape);
        snapshots.push(TensorSnapshot::from_data(
            data,
            vec![name[prefix.len()..].to_string()],
            Vec::new(),
            ParamId::new(),
        ));
    }
    let result = model.apply(snapshots, None, None, false);
    if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
        let list = |v: Vec<String>| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        return Err(Error::Mismatch {
            path,
            reason: format!(
                "the saved weights have another structure than the configured model: missing {}; unexpected {}; {}",
                list(result.missing.into_iter().map(|(p, _)| p).collect()),
                list(result.unused),
                list(result.errors.iter().map(ToString::to_string).collect()),
            ),
        });
    }
    let got = model.num_params();
    if got != expected_params {
        return Err(Error::Mismatch {
            path,
            reason: format!("the saved weights hold {got} parameters, the configuration expects {expected_params}"),
        });
    }
    Ok(model)
}

/// Where a run's checkpoints go and what they record besides the training state.
pub(super) struct CheckpointFile {
    pub(super) path: PathBuf,
    pub(super) dataset: Option<pnpt_data::fingerprint::Fingerprint>,
}

pub(super) fn recorder() -> NamedMpkBytesRecorder<FullPrecisionSettings> {
    NamedMpkBytesRecorder::<FullPrecisionSettings>::default()
}

/// Whether two configurations train the same model (everything but the epoch count and
/// inference-only settings must match to resume).
pub(super) fn resumable(a: &PnptConfig, b: &PnptConfig) -> std::result::Result<(), String> {
    let mut diffs = Vec::new();
    if a.model != b.model {
        diffs.push("model");
    }
    if a.backbone != b.backbone || a.input_size != b.input_size {
        diffs.push("backbone/input_size");
    }
    if a.distance != b.distance {
        diffs.push("distance");
    }
    let (mut ta, mut tb) = (a.train.clone(), b.train.clone());
    ta.epochs = 0;
    tb.epochs = 0;
    ta.feature_batch = 0;
    tb.feature_batch = 0;
    // The run's time budget decides where the loop stops, not what a step computes.
    ta.run_budget_seconds = None;
    tb.run_budget_seconds = None;
    if ta != tb {
        diffs.push("train (other than epochs)");
    }
    if diffs.is_empty() { Ok(()) } else { Err(diffs.join(", ")) }
}

/// Loads `record` into `model`, turning Burn's structural panics into an error and checking
/// the parameter count against the saved one.
pub(crate) fn load_record_checked<B: Backend>(
    model: Pnpt<B>,
    record: <Pnpt<B> as Module<B>>::Record,
    expected_params: usize,
    path: &Path,
) -> Result<Pnpt<B>> {
    let loaded =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.load_record(record))).map_err(|_| {
            Error::Mismatch {
                path: path.to_path_buf(),
                reason: "the saved weights have another structure than the configured model".into(),
            }
        })?;
    let got = loaded.num_params();
    if got != expected_params {
        return Err(Error::Mismatch {
            path: path.to_path_buf(),
            reason: format!("the saved weights hold {got} parameters, the configuration expects {expected_params}"),
        });
    }
    Ok(loaded)
}

/// Refuses a checkpoint of other data (both fingerprints known); a checkpoint written before
/// fingerprints existed resumes with a warning, as does a run that records none.
pub(super) fn same_dataset(
    path: &Path,
    saved: Option<&pnpt_data::fingerprint::Fingerprint>,
    now: Option<&pnpt_data::fingerprint::Fingerprint>,
    progress: bool,
) -> Result<()> {
    match (saved, now) {
        (Some(saved), Some(now)) => {
            let differences = saved.differences(now);
            if differences.is_empty() {
                Ok(())
            } else {
                Err(Error::DatasetChanged { path: path.to_path_buf(), differences })
            }
        }
        (None, Some(_)) => {
            if progress {
                log::warn!(
                    "{} records no dataset fingerprint (an older checkpoint): resuming without checking that the data is the same",
                    path.display()
                );
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The line a resumed run prints: `done` epochs of `total` are in the checkpoint.
pub(super) fn resume_note(done: usize, total: usize, path: &Path) -> String {
    if done >= total {
        format!("resuming from {}: all {total} epochs are done, nothing left to train", path.display())
    } else {
        format!("resuming from epoch {} of {total} ({done} done, {})", done + 1, path.display())
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn save_checkpoint<B: AutodiffBackend, O: Optimizer<Pnpt<B>, B>>(
    target: &CheckpointFile,
    config: &PnptConfig,
    model: &Pnpt<B>,
    optim: &O,
    epoch: usize,
    rng: &ChaCha8Rng,
    history: &[EpochStats],
    planned_epochs: Option<usize>,
) -> Result<()> {
    let path = target.path.as_path();
    let bad = |e: burn::record::RecorderError| Error::Artefact { path: path.to_path_buf(), reason: e.to_string() };
    let optim_bytes = Recorder::<B>::record(&recorder(), optim.to_record(), ()).map_err(bad)?;
    let mut tensors = model_entries(model, MODEL_PREFIX, path)?;
    tensors.push(Entry::bytes(OPTIMIZER_TENSOR, optim_bytes));
    let param_ids =
        model.collect(None, None, false).iter().filter_map(|s| Some((s.full_path(), s.tensor_id?.val()))).collect();
    let header = CheckpointHeader {
        epoch,
        rng_seed: config.train.seed,
        rng_word_pos: rng.get_word_pos().to_string(),
        history: history.to_vec(),
        config: config.clone(),
        num_params: model.num_params(),
        planned_epochs,
        dataset: target.dataset.clone(),
        param_ids,
    };
    tensor_file::write(path, CHECKPOINT_KIND, &header, &tensors)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_note_says_where_the_run_continues() {
        let p = Path::new("out/checkpoint/checkpoint.bin");
        assert!(resume_note(2, 5, p).starts_with("resuming from epoch 3 of 5 (2 done"), "{}", resume_note(2, 5, p));
        assert!(resume_note(5, 5, p).contains("all 5 epochs are done"), "{}", resume_note(5, 5, p));
    }
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod format_tests;
