//! The training recipe options (issue "Detection quality, part 1", item 2): learning-rate
//! schedule, class-balanced epochs, global-norm clipping and the time budget, end to end on a
//! tiny model and random features.

use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;
use pnpt_model::config::LrSchedule;
use pnpt_model::train::{
    CHECKPOINT_FILE, EpochStats, FeatureSet, TrainOptions, epoch_len, epoch_order, learning_rate, train_transformer,
};
use pnpt_model::{PnptConfig, TrainConfig};
use pnpt_prompt::{PoolBuilder, PromptPool};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

type B = Flex<f32>;
type A = Autodiff<B>;

/// The backend's random seed (initialisation, dropout) is global to the process: tests that
/// train take this lock so that they do not reseed each other's runs.
static TRAINING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn dev() -> burn::backend::flex::FlexDevice {
    Default::default()
}

/// Hidden 16, 2 heads, 1 layer, 2 semantic tokens, 32-pixel inputs (EfficientNet maps 8×8,
/// 4×4, 2×2), warm-up + cosine and class-balanced epochs of 4-image batches.
fn tiny_config() -> PnptConfig {
    let mut cfg = PnptConfig::cpu();
    cfg.input_size = 32;
    cfg.model.hidden = 16;
    cfg.model.heads = 2;
    cfg.model.layers = 1;
    cfg.model.semantic_tokens = 2;
    cfg.model.dropout = 0.1; // exercises the per-epoch backend seed
    cfg.train.epochs = 2;
    cfg.train.batch_size = 4;
    cfg.train.lr = 1e-3;
    cfg.train.schedule = LrSchedule::WarmupCosine;
    cfg.train.warmup_steps = 2;
    cfg.train.min_lr_ratio = 0.1;
    cfg.train.class_balanced = true;
    cfg.train.grad_clip_norm = Some(1.0);
    cfg
}

/// 10 random images in three unequal categories (6, 3, 1), interleaved; the pool holds each
/// category's mean and every image's prior is retrieved, as in training.
fn tiny_set(cfg: &PnptConfig) -> (FeatureSet<B>, PromptPool<B>) {
    let spec = cfg.feature_spec();
    let n = 10;
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let feats = [0, 1, 2].map(|i| {
        let [h, w] = spec.sizes[i];
        let t = pnpt_model::pnpt::standard_normal::<B, _>([n, spec.channels[i], h * w], &mut rng, &dev());
        t.reshape([n, spec.channels[i], h, w])
    });
    let names = ["a", "b", "a", "c", "a", "b", "a", "b", "a", "a"];
    let categories: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut builder = PoolBuilder::<B>::new();
    for name in ["a", "b", "c"] {
        let idx: Vec<i64> = (0..n).filter(|&i| names[i] == name).map(|i| i as i64).collect();
        let it = Tensor::<B, 1, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(idx.clone(), [idx.len()]),
            &dev(),
        );
        builder.add(name, &feats.clone().map(|t| t.select(0, it.clone()))).unwrap();
    }
    let pool = builder.build(cfg.distance).unwrap();
    let prior_index = pool.nearest(&feats).unwrap().0;
    (FeatureSet::in_memory(feats, categories, prior_index).unwrap(), pool)
}

fn losses(h: &[EpochStats]) -> Vec<f64> {
    h.iter().map(|e| e.loss).collect()
}

fn outputs(model: &pnpt_model::Pnpt<B>, set: &FeatureSet<B>, pool: &PromptPool<B>) -> Vec<f32> {
    let prior = pool.prior_of(&set.prior_index).unwrap();
    let r = model.forward(&set.rows(0, set.len()).unwrap(), Some(&prior)).unwrap();
    r.sample.into_iter().flat_map(|t| t.into_data().iter::<f32>().collect::<Vec<_>>()).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn schedule_by_hand() {
    let t = TrainConfig {
        lr: 2e-3,
        schedule: LrSchedule::WarmupCosine,
        warmup_steps: 10,
        min_lr_ratio: 0.05,
        ..TrainConfig::default()
    };
    let lr = |s| learning_rate(&t, s, 110);
    assert!((lr(0) - 2e-4).abs() < 1e-15, "first step {}", lr(0));
    assert!((lr(9) - 2e-3).abs() < 1e-15, "end of warm-up {}", lr(9));
    // Step 60 (1-based): p = 50 / 100 = 0.5 -> (peak + floor) / 2 = (2e-3 + 1e-4) / 2.
    assert!((lr(59) - 1.05e-3).abs() < 1e-15, "middle {}", lr(59));
    assert!((lr(109) - 1e-4).abs() < 1e-15, "last step {}", lr(109));
    let c = TrainConfig { lr: 2e-3, ..TrainConfig::default() };
    assert_eq!(c.schedule, LrSchedule::Constant);
    assert!([0, 9, 59, 109].iter().all(|&s| learning_rate(&c, s, 110) == 2e-3));
}

#[test]
fn sampler_balanced_permutation_and_deterministic() {
    let names: Vec<String> =
        ["x", "y", "y", "x", "z", "y", "x", "x", "x", "x", "x"].iter().map(|s| s.to_string()).collect();
    let n = names.len(); // 11 images, 3 categories -> 4 of each
    let order = epoch_order(&names, true, &mut ChaCha8Rng::seed_from_u64(1));
    assert_eq!(order.len(), 12);
    assert_eq!(epoch_len(&names, true), 12);
    for c in ["x", "y", "z"] {
        assert_eq!(order.iter().filter(|&&i| names[i] == c).count(), 4, "{c}");
    }
    let plain = epoch_order(&names, false, &mut ChaCha8Rng::seed_from_u64(1));
    let mut sorted = plain.clone();
    sorted.sort();
    assert_eq!(sorted, (0..n).collect::<Vec<_>>());
    for balanced in [true, false] {
        let a = epoch_order(&names, balanced, &mut ChaCha8Rng::seed_from_u64(7));
        let b = epoch_order(&names, balanced, &mut ChaCha8Rng::seed_from_u64(7));
        let c = epoch_order(&names, balanced, &mut ChaCha8Rng::seed_from_u64(8));
        assert_eq!(a, b, "same seed, same order");
        assert_ne!(a, c, "another seed, another order");
    }
}

#[test]
fn config_json_and_validation() {
    let cfg: PnptConfig = serde_json::from_str(
        r#"{"train": {"schedule": "warmup_cosine", "warmup_steps": 5, "class_balanced": true,
            "grad_clip_norm": 1.0, "time_budget_seconds": 600}}"#,
    )
    .unwrap();
    assert_eq!(cfg.train.schedule, LrSchedule::WarmupCosine);
    assert_eq!(cfg.train.grad_clip_norm, Some(1.0));
    cfg.validate().unwrap();
    let d = PnptConfig::cpu().train;
    assert_eq!(
        (d.schedule, d.class_balanced, d.grad_clip_norm, d.time_budget_seconds),
        (LrSchedule::Constant, false, None, None)
    );
    for bad in [
        r#"{"train": {"min_lr_ratio": 1.5}}"#,
        r#"{"train": {"grad_clip_norm": 0}}"#,
        r#"{"train": {"time_budget_seconds": -1}}"#,
    ] {
        let cfg: PnptConfig = serde_json::from_str(bad).unwrap();
        assert!(cfg.validate().unwrap_err().to_string().contains("train."), "{bad}");
    }
    // Epoch statistics of older checkpoints still read.
    let old: EpochStats =
        serde_json::from_str(r#"{"epoch": 1, "loss": 0.5, "seconds": 2.0, "images_per_second": 3.0}"#).unwrap();
    assert_eq!((old.lr, old.planned_epochs), (0.0, 0));
}

#[test]
fn resumed_equals_uninterrupted_with_the_recipe() {
    let _lock = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = tiny_config();
    let (set, pool) = tiny_set(&cfg);
    let t = &cfg.train;
    // ceil(10 / 3) = 4 per category -> 12 images, 3 steps of 4 per epoch, 6 in all.
    assert_eq!(epoch_len(&set.categories, true), 12);

    let straight = train_transformer::<A>(&cfg, &set, &pool, &dev(), &TrainOptions::default(), None).unwrap();
    assert!(straight.completed);
    assert_eq!(straight.planned_epochs, 2);
    assert_eq!(straight.history.len(), 2);
    for e in &straight.history {
        assert!(e.loss.is_finite() && e.loss > 0.0, "epoch {}: loss {}", e.epoch, e.loss);
        assert_eq!(e.planned_epochs, 2);
        assert!((e.images_per_second - 12.0 / e.seconds).abs() <= 1e-6 * e.images_per_second);
    }
    assert_eq!(straight.history[0].lr, learning_rate(t, 2, 6));
    assert!((straight.history[1].lr - t.lr * t.min_lr_ratio).abs() < 1e-15, "ends at the floor");

    let dir = tempfile::tempdir().unwrap();
    let first =
        TrainOptions::default().with_checkpoint_dir(Some(dir.path().to_path_buf())).with_stop_after_epoch(Some(1));
    let part = train_transformer::<A>(&cfg, &set, &pool, &dev(), &first, None).unwrap();
    assert!(!part.completed);
    assert_eq!(part.history.len(), 1);
    assert!(dir.path().join(CHECKPOINT_FILE).is_file());
    let resume = TrainOptions::default().with_checkpoint_dir(Some(dir.path().to_path_buf())).with_resume(true);
    let resumed = train_transformer::<A>(&cfg, &set, &pool, &dev(), &resume, None).unwrap();
    assert!(resumed.completed);
    assert_eq!(losses(&resumed.history), losses(&straight.history));
    let lrs = |h: &[EpochStats]| h.iter().map(|e| e.lr).collect::<Vec<_>>();
    assert_eq!(lrs(&resumed.history), lrs(&straight.history));
    let diff = max_abs_diff(&outputs(&straight.model, &set, &pool), &outputs(&resumed.model, &set, &pool));
    assert!(diff <= 1e-6, "max difference {diff}");

    // Unbalanced, constant, unclipped: another run (the options do something).
    let mut plain = cfg.clone();
    plain.train.schedule = LrSchedule::Constant;
    plain.train.class_balanced = false;
    plain.train.grad_clip_norm = None;
    let other = train_transformer::<A>(&plain, &set, &pool, &dev(), &TrainOptions::default(), None).unwrap();
    assert_ne!(losses(&other.history), losses(&straight.history));
}

#[test]
fn time_budget_chooses_and_keeps_the_epoch_count() {
    let _lock = TRAINING.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = tiny_config();
    cfg.train.epochs = 3;
    let (set, pool) = tiny_set(&cfg);

    // A budget far larger than the run: the same run as without one.
    let unbudgeted = train_transformer::<A>(&cfg, &set, &pool, &dev(), &TrainOptions::default(), None).unwrap();
    let mut roomy = cfg.clone();
    roomy.train.time_budget_seconds = Some(1e6);
    let big = train_transformer::<A>(&roomy, &set, &pool, &dev(), &TrainOptions::default(), None).unwrap();
    assert_eq!(big.planned_epochs, 3);
    assert_eq!(losses(&big.history), losses(&unbudgeted.history));

    assert_eq!(big.history.iter().map(|e| e.steps).collect::<Vec<_>>(), vec![3, 3, 3]);

    // A budget shorter than one step: the first epoch stops after its first step (at least
    // one step runs), completed, and the plan is in the history.
    let mut tight = cfg.clone();
    tight.train.time_budget_seconds = Some(1e-9);
    let dir = tempfile::tempdir().unwrap();
    let opts = TrainOptions::default().with_checkpoint_dir(Some(dir.path().to_path_buf()));
    let short = train_transformer::<A>(&tight, &set, &pool, &dev(), &opts, None).unwrap();
    assert!(short.completed);
    assert_eq!(short.planned_epochs, 1);
    assert_eq!(short.history.len(), 1);
    assert_eq!(short.history[0].planned_epochs, 1);
    assert_eq!(short.history[0].epoch, 1);
    assert_eq!(short.history[0].steps, 1, "stopped mid-epoch");
    // The caller's limit (a run budget's share) acts like the configuration's budget, and the
    // smaller of the two counts.
    let limited = TrainOptions::default().with_time_limit(Some(1e-9), 0.0);
    let by_option = train_transformer::<A>(&cfg, &set, &pool, &dev(), &limited, None).unwrap();
    assert_eq!(losses(&by_option.history), losses(&short.history));
    let roomy_limit = TrainOptions::default().with_time_limit(Some(1e6), 0.0);
    let both = train_transformer::<A>(&tight, &set, &pool, &dev(), &roomy_limit, None).unwrap();
    assert_eq!(losses(&both.history), losses(&short.history));
    // Resuming keeps the saved plan: nothing more to do.
    let resume = TrainOptions::default().with_checkpoint_dir(Some(dir.path().to_path_buf())).with_resume(true);
    let again = train_transformer::<A>(&tight, &set, &pool, &dev(), &resume, None).unwrap();
    assert!(again.completed);
    assert_eq!(again.planned_epochs, 1);
    assert_eq!(losses(&again.history), losses(&short.history));

    // With a budget the warm-up must fit in the first epoch (3 steps here).
    let mut long_warmup = tight.clone();
    long_warmup.train.warmup_steps = 4;
    let err = train_transformer::<A>(&long_warmup, &set, &pool, &dev(), &TrainOptions::default(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("warmup_steps"), "{err}");
}
