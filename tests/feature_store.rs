//! Training features kept on disk give the in-memory run's pool, retrieval and losses (f32),
//! or close ones (f16); `Auto` goes to disk past the memory budget, and the cache folder goes
//! when the run ends.

use burn::backend::Autodiff;
use pnpt::backbone::Backbone;
use pnpt::backend::Cpu;
use pnpt::data::Dataset;
use pnpt::model::PnptConfig;
use pnpt::model::train::{FeatureStorage, TrainOptions, build_training_set, train_transformer};
use pnpt::synth::synthetic::{SynthKind, SyntheticConfig, generate};

mod common;

type B = Cpu;

fn config() -> PnptConfig {
    let mut cfg = common::tiny_config(2);
    cfg.input_size = 64;
    // Batches of 5 images cut across the two categories.
    cfg.train.feature_batch = 5;
    cfg
}

fn flat(t: [burn::tensor::Tensor<B, 4>; 3]) -> Vec<f32> {
    t.into_iter().flat_map(|t| t.into_data().iter::<f32>().collect::<Vec<_>>()).collect()
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / x.abs().max(1e-3)).fold(0.0, f32::max)
}

#[test]
fn disk_features_match_memory() {
    let data = tempfile::tempdir().unwrap();
    let synth = SyntheticConfig {
        size: 64,
        train_good: 7,
        test_good: 0,
        test_defective: 0,
        categories: vec![SynthKind::Bottle, SynthKind::Weave],
        ..Default::default()
    };
    generate(data.path(), &synth).unwrap();
    let dataset = Dataset::open(data.path(), None).unwrap();
    let samples: Vec<_> = dataset.categories.iter().flat_map(|c| c.train.iter().cloned()).collect();
    let cfg = config();
    let device = Default::default();
    let backbone = Backbone::<B>::load(cfg.backbone, None, &device).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let options = |storage| {
        TrainOptions::default().with_feature_storage(storage).with_feature_dir(Some(cache.path().to_path_buf()))
    };

    let (mem, mem_pool) =
        build_training_set(&cfg, &backbone, &samples, &device, &options(FeatureStorage::Memory)).unwrap();
    assert_eq!(mem.storage(), FeatureStorage::Memory);
    let mem_losses: Vec<f64> =
        train_transformer::<Autodiff<B>>(&cfg, &mem, &mem_pool, &device, &options(FeatureStorage::Memory), None)
            .unwrap()
            .history
            .iter()
            .map(|e| e.loss)
            .collect();
    let rows = [13, 0, 6, 7];
    let reference = flat(mem.select(&rows).unwrap());

    for (storage, feature_tol, loss_tol) in [(FeatureStorage::Disk, 0.0, 1e-5), (FeatureStorage::DiskF16, 1e-3, 1e-3)] {
        let (disk, pool) = build_training_set(&cfg, &backbone, &samples, &device, &options(storage)).unwrap();
        assert_eq!(disk.storage(), storage);
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1, "one cache folder while the set lives");
        // The rows as extracted (f32: bit for bit), the retrieval and the pool's means.
        let got = flat(disk.select(&rows).unwrap());
        assert!(
            max_rel(&reference, &got) <= feature_tol,
            "{storage}: features differ by {}",
            max_rel(&reference, &got)
        );
        assert_eq!(disk.prior_index, mem.prior_index, "{storage}");
        assert_eq!(disk.categories, mem.categories);
        let (a, b) = (flat(mem_pool.prior_of(&[0, 1]).unwrap()), flat(pool.prior_of(&[0, 1]).unwrap()));
        assert!(max_rel(&a, &b) <= 1e-4, "{storage}: pool means differ by {}", max_rel(&a, &b));
        let losses: Vec<f64> = train_transformer::<Autodiff<B>>(&cfg, &disk, &pool, &device, &options(storage), None)
            .unwrap()
            .history
            .iter()
            .map(|e| e.loss)
            .collect();
        for (x, y) in losses.iter().zip(&mem_losses) {
            assert!((x - y).abs() <= loss_tol * y.abs(), "{storage}: losses {losses:?} vs {mem_losses:?}");
        }
        assert!(disk.select(&[samples.len()]).is_err(), "a row past the end is an error, not a panic");
        drop(disk);
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0, "the cache folder goes with the set");
    }

    // Auto: in memory within the budget, on disk past it.
    let bytes = cfg.estimate_memory(samples.len()).feature_cache;
    let auto = |budget| options(FeatureStorage::Auto).with_feature_memory(Some(budget));
    assert_eq!(auto(bytes).feature_storage_for(&cfg, samples.len()), FeatureStorage::Memory);
    let (small, _) = build_training_set(&cfg, &backbone, &samples, &device, &auto(bytes - 1)).unwrap();
    assert_eq!(small.storage(), FeatureStorage::Disk);
}
