//! Resuming from a checkpoint reaches the same model as an uninterrupted run.

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use pnpt::backend::Cpu;
use pnpt::model::PnptConfig;
use pnpt::model::train::{CHECKPOINT_FILE, FeatureSet, TrainOptions, train_transformer};
use pnpt::prompt::PoolBuilder;

type A = Autodiff<Cpu>;
type B = Cpu;

/// Deterministic pseudo-random features in [-1, 1) (xorshift; the root crate has no rand).
fn noise(n: usize, state: &mut u64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            (*state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn vals(t: Tensor<B, 4>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

#[test]
fn resume_equals_uninterrupted() {
    let mut cfg = PnptConfig::cpu();
    cfg.input_size = 32; // maps 8x8, 4x4, 2x2 of EfficientNet's 24/40/112 channels
    cfg.model.hidden = 32;
    cfg.model.semantic_tokens = 4;
    cfg.model.heads = 4;
    cfg.model.layers = 1;
    cfg.model.dropout = 0.1; // exercises the per-epoch backend seed too
    cfg.train.epochs = 3;
    cfg.train.batch_size = 4;
    let spec = cfg.feature_spec();
    let device = Default::default();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let n = 10;
    let feats = [0, 1, 2].map(|i| {
        let [h, w] = spec.sizes[i];
        let shape = [n, spec.channels[i], h, w];
        Tensor::<B, 4>::from_data(
            burn::tensor::TensorData::new(noise(shape.iter().product(), &mut state), shape),
            &device,
        )
    });
    let categories: Vec<String> = (0..n).map(|i| if i < 5 { "a".into() } else { "b".into() }).collect();
    let mut builder = PoolBuilder::<B>::new();
    builder.add("a", &feats.clone().map(|t| t.narrow(0, 0, 5))).unwrap();
    builder.add("b", &feats.clone().map(|t| t.narrow(0, 5, 5))).unwrap();
    let pool = builder.build(cfg.distance).unwrap();
    let prior_index = pool.nearest(&feats).unwrap().0;
    let set = FeatureSet::in_memory(feats.clone(), categories, prior_index).unwrap();

    let straight = train_transformer::<A>(&cfg, &set, &pool, &device, &TrainOptions::default(), None).unwrap();
    assert!(straight.completed);

    let dir = tempfile::tempdir().unwrap();
    let first =
        TrainOptions::default().with_checkpoint_dir(Some(dir.path().to_path_buf())).with_stop_after_epoch(Some(1));
    let part = train_transformer::<A>(&cfg, &set, &pool, &device, &first, None).unwrap();
    assert!(!part.completed);
    assert_eq!(part.history.len(), 1);
    assert!(dir.path().join(CHECKPOINT_FILE).is_file());
    let resume = TrainOptions::default().with_checkpoint_dir(Some(dir.path().to_path_buf())).with_resume(true);
    let resumed = train_transformer::<A>(&cfg, &set, &pool, &device, &resume, None).unwrap();
    assert!(resumed.completed);

    let losses = |h: &[pnpt::model::train::EpochStats]| h.iter().map(|e| e.loss).collect::<Vec<_>>();
    assert_eq!(losses(&resumed.history), losses(&straight.history));
    let prior = pool.prior_of(&set.prior_index).unwrap();
    let a = straight.model.forward(&feats, Some(&prior)).unwrap();
    let b = resumed.model.forward(&feats, Some(&prior)).unwrap();
    for i in 0..3 {
        let (x, y) = (vals(a.sample[i].clone()), vals(b.sample[i].clone()));
        let diff = x.iter().zip(&y).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!(diff <= 1e-6, "scale {i}: max difference {diff}");
    }

    // A checkpoint of another architecture is refused with a clear error.
    let mut other = cfg.clone();
    other.model.hidden = 64;
    let err = train_transformer::<A>(&other, &set, &pool, &device, &resume, None).unwrap_err().to_string();
    assert!(err.contains("model"), "{err}");

    // A damaged checkpoint is a checksum error naming it, never a resumed run with other weights.
    let path = dir.path().join(CHECKPOINT_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &bytes).unwrap();
    match train_transformer::<A>(&cfg, &set, &pool, &device, &resume, None) {
        Err(pnpt::model::Error::File(pnpt::io::Error::Checksum { path: p, .. })) => assert_eq!(p, path),
        other => panic!("damaged checkpoint: {:?}", other.map(|r| r.history.len())),
    }
}
