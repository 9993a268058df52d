//! Training checkpoints: the file, its header, and the checks before a run resumes.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use pnpt_prompt::io::write_container;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::EpochStats;
use crate::pnpt::Pnpt;
use crate::{Error, PnptConfig, Result};

/// File name of the training checkpoint inside the checkpoint folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.bin";
pub(super) const CHECKPOINT_MAGIC: &[u8; 8] = b"PNPTCKPT";

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
    if ta != tb {
        diffs.push("train (other than epochs)");
    }
    if diffs.is_empty() { Ok(()) } else { Err(diffs.join(", ")) }
}

pub(super) fn load_optimizer<B: AutodiffBackend, O: Optimizer<Pnpt<B>, B>>(
    optim: O,
    bytes: Vec<u8>,
    device: &B::Device,
) -> std::result::Result<O, burn::record::RecorderError> {
    let record: O::Record = Recorder::<B>::load(&recorder(), bytes, device)?;
    Ok(optim.load_record(record))
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
    let model_bytes = Recorder::<B>::record(&recorder(), model.clone().into_record(), ()).map_err(bad)?;
    let optim_bytes = Recorder::<B>::record(&recorder(), optim.to_record(), ()).map_err(bad)?;
    let header = CheckpointHeader {
        epoch,
        rng_seed: config.train.seed,
        rng_word_pos: rng.get_word_pos().to_string(),
        history: history.to_vec(),
        config: config.clone(),
        num_params: model.num_params(),
        planned_epochs,
        dataset: target.dataset.clone(),
    };
    write_container(path, CHECKPOINT_MAGIC, &header, &[&model_bytes, &optim_bytes])?;
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
