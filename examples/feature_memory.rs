//! Peak memory of training on more features than fit in RAM: the training set's features go to
//! disk past `--feature-memory`, and the process's peak resident memory stays at the budget
//! plus the model, whatever the number of images.
//!
//! ```text
//! /usr/bin/time -v cargo run --release --example feature_memory -- \
//!     --preset paper --images 4000 --feature-memory 4GiB --steps 20 --data /tmp/synthetic-4000
//! ```
//!
//! Generates the synthetic dataset (256 x 256) into `--data` when it is not there, extracts the
//! features with a random-weight backbone of the preset (wide_resnet50_2 for `paper`: the
//! weights do not change the memory), then trains `--steps` optimizer steps (0 = whole epochs,
//! `--epochs`). Prints one JSON object: the features' size, where they were kept, the peak
//! resident memory (VmHWM) after each stage, and the seconds per stage.

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::Autodiff;
use clap::Parser;
use pnpt::backbone::Backbone;
use pnpt::backend::Cpu;
use pnpt::data::Dataset;
use pnpt::model::PnptConfig;
use pnpt::model::train::{FeatureStorage, TrainOptions, build_training_set, parse_size, train_transformer};
use pnpt::synth::synthetic::{SynthKind, SyntheticConfig, generate};

#[derive(Parser)]
#[command(name = "feature_memory", about = "Peak memory of training with features on disk")]
struct Args {
    /// Configuration preset: cpu or paper.
    #[arg(long, default_value = "paper")]
    preset: String,
    /// Training images (spread over the synthetic categories).
    #[arg(long, default_value_t = 4000)]
    images: usize,
    /// Image side.
    #[arg(long, default_value_t = 256)]
    size: u32,
    /// Where the synthetic dataset is (generated when missing).
    #[arg(long)]
    data: PathBuf,
    /// Memory the features may take (4GiB, 512MiB).
    #[arg(long, value_parser = |s: &str| parse_size(s).map_err(|e| e.to_string()))]
    feature_memory: Option<u64>,
    /// auto, memory, disk or disk-f16.
    #[arg(long, default_value = "auto")]
    feature_storage: FeatureStorage,
    /// Folder for the on-disk features (default: next to --data).
    #[arg(long)]
    feature_dir: Option<PathBuf>,
    /// Optimizer steps to train (0: `--epochs` whole epochs).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Epochs when `--steps 0`.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
}

/// The process's peak resident memory so far, in bytes (Linux `VmHWM`; 0 elsewhere).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    pnpt_cli::logging::init(true);
    let args = Args::parse();
    let mut config = PnptConfig::preset(&args.preset)?;
    config.input_size = args.size;
    config.train.epochs = args.epochs;
    let t0 = Instant::now();
    if !args.data.is_dir() {
        let kinds = [SynthKind::Weave, SynthKind::Wood, SynthKind::Carpet, SynthKind::Bottle, SynthKind::Screw];
        let synth = SyntheticConfig {
            size: args.size,
            train_good: args.images.div_ceil(kinds.len()),
            test_good: 0,
            test_defective: 0,
            categories: kinds.to_vec(),
            ..Default::default()
        };
        generate(&args.data, &synth)?;
    }
    let generate_seconds = t0.elapsed().as_secs_f64();
    let dataset = Dataset::open(&args.data, None)?;
    let samples: Vec<_> = dataset.categories.iter().flat_map(|c| c.train.iter().cloned()).collect();
    let device = Default::default();
    let backbone = Backbone::<Cpu>::random(config.backbone, &device);
    let feature_dir = args.feature_dir.clone().or_else(|| args.data.parent().map(PathBuf::from));
    let options = TrainOptions::default()
        .with_progress(true)
        .with_progress_sink(pnpt_cli::logging::progress_bars())
        .with_feature_storage(args.feature_storage)
        .with_feature_memory(args.feature_memory)
        .with_feature_dir(feature_dir)
        .with_stop_after_steps((args.steps > 0).then_some(args.steps));
    let estimate = config.estimate_memory(samples.len());
    let rss_start = peak_rss();

    let t0 = Instant::now();
    let (set, pool) = build_training_set(&config, &backbone, &samples, &device, &options)?;
    let feature_seconds = t0.elapsed().as_secs_f64();
    let rss_features = peak_rss();
    drop(backbone);

    let t0 = Instant::now();
    let out = train_transformer::<Autodiff<Cpu>>(&config, &set, &pool, &device, &options, None)?;
    let train_seconds = t0.elapsed().as_secs_f64();
    let rss_train = peak_rss();
    let report = serde_json::json!({
        "preset": args.preset,
        "images": samples.len(),
        "size": args.size,
        "feature_gib_f32": gib(estimate.feature_cache),
        "feature_memory_gib": args.feature_memory.map(gib),
        "storage": set.storage().to_string(),
        "model_estimate_gib": gib(estimate.total() - estimate.feature_cache),
        "peak_rss_gib": { "start": gib(rss_start), "after_features": gib(rss_features), "after_training": gib(rss_train) },
        "seconds": { "generate": generate_seconds, "features": feature_seconds, "train": train_seconds },
        "steps": if args.steps > 0 { args.steps } else { out.history.len() * samples.len().div_ceil(config.train.batch_size) },
        "epochs_completed": out.history.len(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
