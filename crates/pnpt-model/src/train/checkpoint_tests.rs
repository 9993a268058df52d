//! Checkpoint files: the safetensors layout (read by an independent Python reader), resuming
//! from it and from the earlier container format to the uninterrupted run's result, and
//! damaged files.

use super::*;
use crate::train::{FeatureSet, TrainOptions, adamw, train_transformer};
use burn::backend::{Autodiff, Flex};
use pnpt_io::tensor_file::looks_like_tensor_file;
use pnpt_prompt::PoolBuilder;
use rand::SeedableRng;

type B = Flex<f32>;
type A = Autodiff<B>;

/// The backend seed is global to the process: the training tests of this module take turns.
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Hidden 16, one layer, 32-pixel inputs, no dropout (so a resumed run draws nothing from the
/// backend RNG, which other tests in this process may reseed).
fn tiny() -> PnptConfig {
    let mut cfg = PnptConfig::cpu();
    cfg.input_size = 32;
    cfg.model.hidden = 16;
    cfg.model.heads = 2;
    cfg.model.layers = 1;
    cfg.model.semantic_tokens = 2;
    cfg.model.dropout = 0.0;
    cfg.train.epochs = 2;
    cfg.train.batch_size = 4;
    cfg.train.lr = 1e-3;
    cfg
}

fn tiny_set(cfg: &PnptConfig) -> (FeatureSet<B>, pnpt_prompt::PromptPool<B>) {
    let spec = cfg.feature_spec();
    let device = Default::default();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let feats = [0, 1, 2].map(|i| {
        let [h, w] = spec.sizes[i];
        crate::pnpt::standard_normal::<B, _>([6, spec.channels[i], h * w], &mut rng, &device).reshape([
            6,
            spec.channels[i],
            h,
            w,
        ])
    });
    let mut builder = PoolBuilder::<B>::new();
    builder.add("a", &feats.clone().map(|t| t.narrow(0, 0, 3))).unwrap();
    builder.add("b", &feats.clone().map(|t| t.narrow(0, 3, 3))).unwrap();
    let pool = builder.build(cfg.distance).unwrap();
    let categories = ["a", "a", "a", "b", "b", "b"].map(String::from).to_vec();
    let prior_index = pool.nearest(&feats).unwrap().0;
    (FeatureSet::in_memory(feats, categories, prior_index).unwrap(), pool)
}

fn params<BB: Backend>(model: &Pnpt<BB>) -> Vec<f32> {
    model_entries(model, "", Path::new("-"))
        .unwrap()
        .iter()
        .flat_map(|e| pnpt_io::bytes_to_f32(&e.bytes).unwrap())
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Rewrites the checkpoint at `from` in the container format of earlier versions (Burn records
/// of the model and of AdamW, the JSON header without `param_ids`) at `to`.
fn write_legacy(from: &Path, to: &Path, cfg: &PnptConfig) {
    let device = Default::default();
    let checkpoint = read_checkpoint(from).unwrap();
    let fresh = Pnpt::<A>::new(&cfg.model, cfg.feature_spec(), &device).unwrap();
    let (model, optim) = checkpoint.restore(from, fresh, adamw(cfg).init::<A, Pnpt<A>>(), &device).unwrap();
    let model_bytes = Recorder::<A>::record(&recorder(), model.into_record(), ()).unwrap();
    let optim_bytes = Recorder::<A>::record(&recorder(), optim.to_record(), ()).unwrap();
    let mut header = serde_json::to_value(&checkpoint.header).unwrap();
    header.as_object_mut().unwrap().remove("param_ids");
    pnpt_io::container::write_container(to, CHECKPOINT_MAGIC, &header, &[&model_bytes, &optim_bytes]).unwrap();
}

#[test]
fn checkpoints_resume_exactly_from_either_format() {
    let _turn = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = tiny();
    let (set, pool) = tiny_set(&cfg);
    let device = Default::default();
    let straight = train_transformer::<A>(&cfg, &set, &pool, &device, &TrainOptions::default(), None).unwrap();

    let new_dir = tempfile::tempdir().unwrap();
    let first = TrainOptions {
        checkpoint_dir: Some(new_dir.path().to_path_buf()),
        stop_after_epoch: Some(1),
        ..Default::default()
    };
    train_transformer::<A>(&cfg, &set, &pool, &device, &first, None).unwrap();
    let path = new_dir.path().join(CHECKPOINT_FILE);
    assert!(looks_like_tensor_file(&std::fs::read(&path).unwrap()));
    let checkpoint = read_checkpoint(&path).unwrap();
    assert_eq!(checkpoint.header.epoch, 1);
    let State::Tensors(file) = &checkpoint.state else { panic!("a new checkpoint is a tensor file") };
    let names: Vec<&str> = file.names().collect();
    assert!(names.iter().all(|n| n.starts_with("model.") || *n == OPTIMIZER_TENSOR), "{names:?}");
    assert_eq!(names.len(), checkpoint.header.param_ids.len() + 1, "one tensor per parameter, and the optimizer");

    let old_dir = tempfile::tempdir().unwrap();
    let old_path = old_dir.path().join(CHECKPOINT_FILE);
    write_legacy(&path, &old_path, &cfg);
    assert!(std::fs::read(&old_path).unwrap().starts_with(CHECKPOINT_MAGIC));

    for (what, dir) in [("safetensors", &new_dir), ("container", &old_dir)] {
        let resume =
            TrainOptions { checkpoint_dir: Some(dir.path().to_path_buf()), resume: true, ..Default::default() };
        let resumed = train_transformer::<A>(&cfg, &set, &pool, &device, &resume, None).unwrap();
        assert!(resumed.completed, "{what}");
        let losses = |h: &[EpochStats]| h.iter().map(|e| e.loss).collect::<Vec<_>>();
        // Losses equal to the bit: the second epoch ran from the same weights, AdamW moments
        // and RNG position (lost moments would change the very first step).
        assert_eq!(losses(&resumed.history), losses(&straight.history), "{what}");
        let diff = max_diff(&params(&resumed.model), &params(&straight.model));
        assert!(diff <= 1e-6, "{what}: parameters differ by {diff}");
        // The resumed run's checkpoint is written in the current format.
        assert!(looks_like_tensor_file(&std::fs::read(dir.path().join(CHECKPOINT_FILE)).unwrap()), "{what}");
    }
}

#[test]
fn damaged_checkpoints_are_clear_errors_and_python_reads_a_good_one() {
    let _turn = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = tiny();
    cfg.train.epochs = 1;
    let (set, pool) = tiny_set(&cfg);
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let options = TrainOptions { checkpoint_dir: Some(dir.path().to_path_buf()), ..Default::default() };
    let out = train_transformer::<A>(&cfg, &set, &pool, &device, &options, None).unwrap();
    let path = dir.path().join(CHECKPOINT_FILE);
    let good = std::fs::read(&path).unwrap();

    if let Some(v) = read_with_python(&path) {
        assert_eq!(v["digest_ok"], true);
        assert_eq!(v["metadata"]["pnpt.kind"], CHECKPOINT_KIND);
        assert_eq!(v["metadata"]["epoch"], "1");
        let entries = model_entries(&out.model, MODEL_PREFIX, &path).unwrap();
        for e in &entries {
            let t = &v["tensors"][&e.name];
            assert_eq!(t["dtype"], "F32", "{}", e.name);
            assert_eq!(t["shape"], serde_json::json!(e.shape), "{}", e.name);
            let got: Vec<f32> = t["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
            assert_eq!(got, pnpt_io::bytes_to_f32(&e.bytes).unwrap(), "{}", e.name);
        }
        assert_eq!(v["tensors"][OPTIMIZER_TENSOR]["dtype"], "U8");
        assert_eq!(v["tensors"].as_object().unwrap().len(), entries.len() + 1);
    }

    let mut flipped = good.clone();
    let at = good.len() / 2;
    flipped[at] ^= 0x20;
    std::fs::write(&path, &flipped).unwrap();
    match read_checkpoint(&path) {
        Err(Error::File(pnpt_io::Error::Checksum { path: p, .. })) => assert_eq!(p, path),
        other => panic!("flipped byte: {:?}", other.map(|c| c.header.epoch)),
    }
    for len in [0, 7, 100, good.len() / 2, good.len() - 1] {
        std::fs::write(&path, &good[..len]).unwrap();
        match read_checkpoint(&path) {
            Err(Error::File(pnpt_io::Error::Format { path: p, reason })) => {
                assert_eq!(p, path);
                assert!(reason.contains("truncated") || reason.contains("too short"), "{len}: {reason}");
            }
            other => panic!("truncated to {len}: {:?}", other.map(|c| c.header.epoch)),
        }
    }
    // Another artefact in its place names both kinds.
    let pool_path = dir.path().join("pool.safetensors");
    pool.save(&pool_path).unwrap();
    std::fs::copy(&pool_path, &path).unwrap();
    let err = read_checkpoint(&path).err().unwrap().to_string();
    assert!(err.contains("expected a training checkpoint file, found a prompt pool"), "{err}");
}

/// [`pnpt_io::tensor_file::read_with_python`] on `path`; `None` (with a message) without
/// python3.
fn read_with_python(path: &Path) -> Option<serde_json::Value> {
    let read = pnpt_io::tensor_file::read_with_python(path).unwrap();
    if read.is_none() {
        eprintln!("SKIPPED: python3 is not available, the independent reader did not run");
    }
    read
}
