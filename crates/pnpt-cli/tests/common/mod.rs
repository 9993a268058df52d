//! The tiny detector fitted once per test binary (synthetic data), shared by the service and
//! command tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use pnpt::backend::Cpu;
use pnpt::data::Dataset;
use pnpt::model::{Detector, PnptConfig, TrainOptions};
use pnpt::synth::synthetic::{SynthKind, SyntheticConfig, generate};

pub type B = pnpt::burn::backend::Autodiff<Cpu>;

pub struct Fixture {
    /// The saved detector folder.
    pub dir: PathBuf,
    pub detector: Arc<Detector<Cpu>>,
    /// PNG bytes of a normal test image of a trained category.
    pub good_png: Vec<u8>,
    /// Test images of the trained categories: normal and defective.
    pub test_images: Vec<PathBuf>,
    /// An image of a product the detector never saw.
    pub foreign: PathBuf,
    /// Working folder: `data/` (the synthetic dataset), `config.json` (the tiny configuration).
    pub root: PathBuf,
}

/// The `pnpt` binary of this package.
pub fn pnpt_bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_pnpt"))
}

static FIXTURE: OnceLock<Fixture> = OnceLock::new();

/// Bottle and screw, 64 px, 20 training images each, one epoch: a few seconds on 2 cores.
pub fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let t0 = Instant::now();
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        // Folders of earlier runs (whose process is gone) are removed; a concurrent run keeps its own.
        for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("pnpt-cli-service-")
                && cfg!(target_os = "linux")
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let root = tmp.join(format!("pnpt-cli-service-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let data = root.join("data");
        let synth = SyntheticConfig {
            size: 64,
            train_good: 20,
            test_good: 3,
            test_defective: 4,
            categories: vec![SynthKind::Bottle, SynthKind::Screw],
            ..Default::default()
        };
        generate(&data, &synth).unwrap();
        let other = root.join("other");
        generate(
            &other,
            &SyntheticConfig {
                size: 64,
                train_good: 1,
                test_good: 1,
                test_defective: 0,
                categories: vec![SynthKind::Weave],
                ..Default::default()
            },
        )
        .unwrap();
        let dataset = Dataset::open(&data, None).unwrap();
        let mut cfg = PnptConfig::cpu();
        cfg.preset = "test".into();
        cfg.input_size = 64;
        cfg.model.hidden = 32;
        cfg.model.semantic_tokens = 4;
        cfg.model.heads = 2;
        cfg.model.layers = 1;
        cfg.train.epochs = 1;
        cfg.scoring.sigma = 1.0;
        let (detector, _) =
            pnpt::train::train::<B>(&cfg, &dataset, &Default::default(), &TrainOptions::default(), None).unwrap();
        cfg.save(root.join("config.json")).unwrap();
        let dir = root.join("detector");
        detector.save(&dir).unwrap();
        let test_images: Vec<PathBuf> =
            dataset.categories.iter().flat_map(|c| c.test.iter().map(|s| s.path.clone())).collect();
        let good = dataset.categories[0].test.iter().find(|s| !s.is_anomalous()).unwrap();
        let good_png = std::fs::read(&good.path).unwrap();
        let foreign = Dataset::open(&other, None).unwrap().categories[0].train[0].path.clone();
        eprintln!("fixture: detector fitted and saved in {:.1} s", t0.elapsed().as_secs_f64());
        Fixture { dir, detector: Arc::new(detector), good_png, test_images, foreign, root }
    })
}
