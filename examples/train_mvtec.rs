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
//!
//! On the synthetic set (no `--data`, no `--config`, the `cpu` preset) the job runs at 192 px
//! for 1 epoch (`pnpt::job::SYNTHETIC_INPUT_SIZE`, `SYNTHETIC_EPOCHS`): about 3 minutes.
//! `--resume DIR` fails when `DIR/checkpoint` holds no checkpoint; with `--out` it must name
//! the same folder. Everything here is `pnpt::job`, which the `pnpt train` command runs too.

use std::path::PathBuf;
use std::process::ExitCode;

use pnpt::backend::DeviceSpec;
use pnpt::job::{parse_duration, run_job, ConfigChoice, JobOptions};

const USAGE: &str = "usage: train_mvtec [--data DIR] [--categories a,b] [--device cpu|wgpu|cuda[:N]] \
[--preset cpu|paper] [--config FILE] [--epochs N] [--seed N] [--out DIR] [--resume DIR] \
[--backbone-weights PATH] [--no-heatmaps] [--evaluate DETECTOR_DIR] [--method pnpt|memory|fused] [--time-budget 15m]";

fn parse() -> Result<JobOptions, String> {
    let mut it = std::env::args().skip(1);
    let mut choice = ConfigChoice { preset: "cpu".into(), ..Default::default() };
    let (mut data, mut categories, mut out, mut resume, mut evaluate) = (None, None, None::<PathBuf>, None::<PathBuf>, None);
    let mut device = "cpu".to_string();
    let mut heatmaps = true;
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        let whole = |name: &str, v: String| v.parse::<u64>().map_err(|_| format!("{name} needs a whole number from 0 to {}, got `{v}`", u64::MAX));
        match flag.as_str() {
            "--data" => data = Some(PathBuf::from(value("--data")?)),
            "--categories" => {
                let list: Vec<String> = value("--categories")?.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
                if list.is_empty() {
                    return Err(format!("--categories needs at least one category name\n{USAGE}"));
                }
                categories = Some(list);
            }
            "--device" => device = value("--device")?,
            "--preset" => choice.preset = value("--preset")?,
            "--config" => choice.file = Some(PathBuf::from(value("--config")?)),
            "--epochs" => choice.epochs = Some(whole("--epochs", value("--epochs")?)? as usize),
            "--seed" => choice.seed = Some(whole("--seed", value("--seed")?)?),
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--resume" => resume = Some(PathBuf::from(value("--resume")?)),
            "--backbone-weights" => choice.backbone_weights = Some(PathBuf::from(value("--backbone-weights")?)),
            "--no-heatmaps" => heatmaps = false,
            "--evaluate" => evaluate = Some(PathBuf::from(value("--evaluate")?)),
            "--time-budget" => choice.time_budget_seconds = Some(parse_duration(&value("--time-budget")?).map_err(|e| e.to_string())?),
            "--method" => choice.method = Some(value("--method")?.parse().map_err(|e: pnpt::model::Error| e.to_string())?),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    let device: DeviceSpec = device.parse().map_err(|e: pnpt::Error| e.to_string())?;
    if let (Some(r), Some(o)) = (&resume, &out) {
        if r != o {
            return Err(format!("--resume {} --out {}: a run resumes in its own folder; give one of them", r.display(), o.display()));
        }
    }
    let config = choice.build_for(data.as_deref()).map_err(|e| e.to_string())?;
    let mut options = JobOptions::new(config);
    options.out = out.or_else(|| resume.clone()).unwrap_or_else(|| PathBuf::from("pnpt-out"));
    options.method = choice.method;
    Ok(JobOptions { data, categories, device, resume: resume.is_some(), heatmaps, evaluate, ..options })
}

fn main() -> ExitCode {
    let options = match parse() {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    match run_job(options) {
        Ok(out) => {
            println!("{}", out.report.to_markdown());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
