//! Train one PNPT model on every category of an MVTec-layout dataset, save the detector and
//! evaluate it (report.json, report.md, heat maps).
//!
//! ```text
//! cargo run --release --example train_mvtec -- [--data DIR] [--categories a,b] [--device cpu|wgpu|cuda[:N]]
//!     [--preset cpu|paper] [--config FILE] [--epochs N] [--seed N] [--out DIR] [--resume DIR]
//!     [--backbone-weights PATH] [--no-heatmaps] [--evaluate DETECTOR_DIR] [--method pnpt|memory|fused]
//!     [--time-budget 15m]
//! ```
//! Without `--data` it trains on the synthetic dataset (generated once into the cache folder),
//! so it works offline on a fresh clone. `--config FILE` is JSON (see `PnptConfig`); fields it
//! leaves out take the `cpu` preset's values; `--epochs`, `--seed` and `--backbone-weights`
//! override it. `--resume DIR` continues the run whose output folder is `DIR` from its last
//! checkpoint (and writes there unless `--out` is given). `--evaluate DETECTOR_DIR` skips
//! training: it loads a saved detector and writes the report and heat maps for `--data`.
//! `--method` fixes the scoring method (default: the one that validates best on pseudo-anomalies
//! made from the held-out normal images, see `pnpt::validation`); with `--evaluate` it switches a
//! saved detector's method and recalibrates its thresholds on the held-out split of `--data`.
//! `--time-budget 15m` (or `900s`, `1h`) trains as many epochs as fit in that time (at most
//! `--epochs`) and plans the learning-rate schedule for them.

use std::path::PathBuf;
use std::process::ExitCode;

use burn::tensor::backend::AutodiffBackend;
use pnpt::backend::{run_on, BackendTask, DeviceSpec};
use pnpt::data::{synthetic::SyntheticConfig, Dataset};
use pnpt::evaluate::{evaluate, EvaluateOptions};
use pnpt::model::train::split_holdout;
use pnpt::model::{Detector, PnptConfig, ScoringMethod, TrainOptions};
use pnpt::train::train;
use pnpt::validation::ValidationOptions;
use serde_json::{json, Map};

const USAGE: &str = "usage: train_mvtec [--data DIR] [--categories a,b] [--device cpu|wgpu|cuda[:N]] \
[--preset cpu|paper] [--config FILE] [--epochs N] [--seed N] [--out DIR] [--resume DIR] \
[--backbone-weights PATH] [--no-heatmaps] [--evaluate DETECTOR_DIR] [--method pnpt|memory|fused] [--time-budget 15m]";

#[derive(Debug)]
struct Args {
    data: Option<PathBuf>,
    categories: Option<Vec<String>>,
    device: DeviceSpec,
    config: PnptConfig,
    out: PathBuf,
    resume: bool,
    heatmaps: bool,
    evaluate: Option<PathBuf>,
    method: Option<ScoringMethod>,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut data = None;
    let mut categories = None;
    let mut device = "cpu".to_string();
    let mut preset = "cpu".to_string();
    let mut config_file: Option<PathBuf> = None;
    let mut epochs: Option<usize> = None;
    let mut seed: Option<u64> = None;
    let mut out: Option<PathBuf> = None;
    let mut resume: Option<PathBuf> = None;
    let mut weights: Option<PathBuf> = None;
    let mut heatmaps = true;
    let mut evaluate_dir: Option<PathBuf> = None;
    let mut method: Option<ScoringMethod> = None;
    let mut budget: Option<f64> = None;
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--data" => data = Some(PathBuf::from(value("--data")?)),
            "--categories" => {
                categories = Some(value("--categories")?.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            }
            "--device" => device = value("--device")?,
            "--preset" => preset = value("--preset")?,
            "--config" => config_file = Some(PathBuf::from(value("--config")?)),
            "--epochs" => epochs = Some(value("--epochs")?.parse().map_err(|_| "--epochs needs a whole number".to_string())?),
            "--seed" => seed = Some(value("--seed")?.parse().map_err(|_| "--seed needs a whole number".to_string())?),
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--resume" => resume = Some(PathBuf::from(value("--resume")?)),
            "--backbone-weights" => weights = Some(PathBuf::from(value("--backbone-weights")?)),
            "--no-heatmaps" => heatmaps = false,
            "--evaluate" => evaluate_dir = Some(PathBuf::from(value("--evaluate")?)),
            "--time-budget" => budget = Some(parse_duration(&value("--time-budget")?)?),
            "--method" => method = Some(value("--method")?.parse().map_err(|e: pnpt::model::Error| e.to_string())?),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    let device: DeviceSpec = device.parse().map_err(|e: pnpt::Error| e.to_string())?;
    let mut config = match &config_file {
        Some(path) => PnptConfig::load(path).map_err(|e| e.to_string())?,
        None => PnptConfig::preset(&preset).map_err(|e| e.to_string())?,
    };
    if let Some(e) = epochs {
        config.train.epochs = e;
    }
    if let Some(s) = seed {
        config.train.seed = s;
    }
    if weights.is_some() {
        config.backbone_weights = weights;
    }
    if let Some(m) = method {
        config.scoring.method = m;
    }
    if budget.is_some() {
        config.train.time_budget_seconds = budget;
    }
    config.validate().map_err(|e| e.to_string())?;
    let out = out.or_else(|| resume.clone()).unwrap_or_else(|| PathBuf::from("pnpt-out"));
    Ok(Args { data, categories, device, config, out, resume: resume.is_some(), heatmaps, evaluate: evaluate_dir, method })
}

/// `90s`, `15m`, `1.5h` or plain seconds.
fn parse_duration(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (number, unit) = match t.char_indices().last() {
        Some((i, 's')) => (&t[..i], 1.0),
        Some((i, 'm')) => (&t[..i], 60.0),
        Some((i, 'h')) => (&t[..i], 3600.0),
        _ => (t, 1.0),
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v * unit),
        _ => Err(format!("--time-budget `{text}`: expected a positive duration such as 900s, 15m or 1h")),
    }
}

struct Run(Args);

impl BackendTask for Run {
    type Output = Result<(), String>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<(), String> {
        let args = self.0;
        let root = match &args.data {
            Some(dir) => dir.clone(),
            None => {
                let cache = pnpt::data::default_cache_dir();
                eprintln!("no --data: using the synthetic dataset (cache {})", cache.display());
                pnpt::data::ensure_synthetic(&cache, &SyntheticConfig::default()).map_err(|e| e.to_string())?
            }
        };
        let dataset = Dataset::open(&root, args.categories.as_deref()).map_err(|e| e.to_string())?;
        if dataset.categories.is_empty() {
            return Err(format!("{}: no category found", root.display()));
        }
        eprintln!(
            "{} categories, {} training images, {} test images; preset {}, {} epochs, device {}",
            dataset.categories.len(),
            dataset.num_train(),
            dataset.num_test(),
            args.config.preset,
            args.config.train.epochs,
            args.device
        );
        let mut extra = Map::new();
        let (detector, train_seconds) = match &args.evaluate {
            Some(dir) => {
                let mut detector = Detector::<B::InnerBackend>::load(dir, &device).map_err(|e| e.to_string())?;
                eprintln!("evaluating the saved detector {}", dir.display());
                if let Some(m) = args.method {
                    let c = detector.config().clone();
                    detector.set_scoring(m, c.scoring.memory_weight).map_err(|e| e.to_string())?;
                    let (_, holdout) = split_holdout(&dataset, c.scoring.calibration_fraction, c.train.seed);
                    detector.calibrate(&holdout).map_err(|e| e.to_string())?;
                    eprintln!("scoring method {m}; thresholds recalibrated on {} held-out images of --data", holdout.len());
                }
                (detector, 0.0)
            }
            None => {
                let options = TrainOptions {
                    checkpoint_dir: Some(args.out.join("checkpoint")),
                    resume: args.resume,
                    progress: true,
                    stop_after_epoch: None,
                };
                let validation = ValidationOptions { seed: args.config.train.seed, select: args.method.is_none(), ..Default::default() };
                let (detector, report) = train::<B>(&args.config, &dataset, &device, &options, &validation).map_err(|e| e.to_string())?;
                let fit = &report.fit;
                for e in &fit.history {
                    eprintln!("epoch {:>3}: loss {:.5}  {:.1} s  {:.2} img/s", e.epoch, e.loss, e.seconds, e.images_per_second);
                }
                eprintln!(
                    "features {:.1} s, patch memory {:.1} s, training {:.1} s, validation {:.1} s ({} train, {} held-out images)",
                    fit.feature_seconds, fit.memory_seconds, fit.train_seconds, report.validation_seconds, fit.train_images, fit.holdout_images
                );
                if let Some(v) = &report.validation {
                    eprintln!("validation on {} held-out normal and {} pseudo-anomalous images (image AUROC / pixel AUROC):", v.normal_images, v.anomalous_images);
                    for (i, c) in v.candidates.iter().enumerate() {
                        let mark = if i == v.chosen { "  <- chosen" } else { "" };
                        eprintln!("  {:<7} w={:.2} {:<6}: {:.4} / {:.4}{mark}", c.method.to_string(), c.memory_weight, c.score.to_string(), c.image_auroc, c.pixel_auroc);
                    }
                    extra.insert("validation".into(), json!(v));
                }
                if let Some(m) = detector.memory() {
                    let banks: Map<String, serde_json::Value> =
                        m.names().iter().zip(m.sizes()).zip(m.candidates()).map(|((n, k), c)| (n.clone(), json!({"bank": k, "patches": c}))).collect();
                    extra.insert("memory".into(), json!({"dim": m.dim(), "seconds": fit.memory_seconds, "classes": banks}));
                }
                extra.insert("history".into(), json!(fit.history));
                extra.insert(
                    "seconds".into(),
                    json!({"features": fit.feature_seconds, "memory": fit.memory_seconds, "training": fit.train_seconds, "validation": report.validation_seconds}),
                );
                let detector_dir = args.out.join("detector");
                detector.save(&detector_dir).map_err(|e| e.to_string())?;
                eprintln!("detector saved to {}", detector_dir.display());
                (detector, fit.feature_seconds + fit.memory_seconds + fit.train_seconds)
            }
        };
        let config = detector.config().clone();
        let eval = EvaluateOptions {
            batch_size: config.train.batch_size,
            out_dir: Some(args.out.clone()),
            heatmaps: args.heatmaps,
            preset: config.preset.clone(),
            seed: config.train.seed,
            device: args.device.to_string(),
            train_seconds,
            extra,
        };
        let result = evaluate(&detector, &dataset, &eval).map_err(|e| e.to_string())?;
        println!("{}", result.to_markdown());
        eprintln!("report written to {}", args.out.join("report.md").display());
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let spec = args.device;
    match run_on(&spec, Run(args)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
