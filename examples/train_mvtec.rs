//! Train one PNPT model on every category of an MVTec-layout dataset, save the detector and
//! evaluate it (report.json, report.md, heat maps).
//!
//! ```text
//! cargo run --release --example train_mvtec -- [--data DIR] [--categories a,b] [--device cpu|wgpu|cuda[:N]]
//!     [--preset cpu|paper] [--config FILE] [--epochs N] [--seed N] [--out DIR] [--resume DIR]
//!     [--backbone-weights PATH] [--no-heatmaps] [--evaluate DETECTOR_DIR] [--method pnpt|memory|fused]
//!     [--time-budget 15m] [--rescore]
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
//! `--epochs`) and plans the learning-rate schedule for them. `--evaluate DIR --rescore` first
//! re-fits a saved detector's scoring on `--data` (positional statistics, validation,
//! thresholds; the weights stay), saves it to `OUT/detector`, then evaluates it.
//!
//! On the synthetic set (no `--data`, no `--config`, the `cpu` preset) the job runs at 192 px
//! for 1 epoch (`pnpt::job::SYNTHETIC_INPUT_SIZE`, `SYNTHETIC_EPOCHS`): about 3 minutes.
//! `--resume DIR` fails when `DIR/checkpoint` holds no checkpoint, when the checkpoint was
//! trained on other data or another configuration (naming what differs), and when `--epochs`
//! is below the epochs it has done (a larger `--epochs` extends the run); with `--out` it must
//! name the same folder (`pnpt::job::resume_folder`). Everything here is `pnpt::job`, which the
//! `pnpt train` command runs too.

use std::path::PathBuf;
use std::process::ExitCode;

use pnpt::backend::DeviceSpec;
use pnpt::job::{ConfigChoice, JobOptions, parse_duration, run_job};

const USAGE: &str = "usage: train_mvtec [--data DIR] [--categories a,b] [--device cpu|wgpu|cuda[:N]] \
[--preset cpu|paper] [--config FILE] [--epochs N] [--seed N] [--out DIR] [--resume DIR] \
[--backbone-weights PATH] [--no-heatmaps] [--evaluate DETECTOR_DIR] [--method pnpt|memory|fused] [--time-budget 15m] [--rescore]";

fn parse() -> Result<JobOptions, String> {
    let mut it = std::env::args().skip(1);
    let mut choice = ConfigChoice { preset: "cpu".into(), ..Default::default() };
    let (mut data, mut categories, mut out, mut resume, mut evaluate) =
        (None, None, None::<PathBuf>, None::<PathBuf>, None);
    let mut device = "cpu".to_string();
    let mut heatmaps = true;
    let mut rescore = false;
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        let whole = |name: &str, v: String, max: u64| pnpt::job::parse_whole(name, &v, max).map_err(|e| e.to_string());
        match flag.as_str() {
            "--data" => data = Some(PathBuf::from(value("--data")?)),
            "--categories" => {
                categories = Some(pnpt::job::parse_categories(&value("--categories")?).map_err(|e| e.to_string())?)
            }
            "--device" => device = value("--device")?,
            "--preset" => choice.preset = value("--preset")?,
            "--config" => choice.file = Some(PathBuf::from(value("--config")?)),
            "--epochs" => choice.epochs = Some(whole("--epochs", value("--epochs")?, usize::MAX as u64)? as usize),
            "--seed" => choice.seed = Some(whole("--seed", value("--seed")?, u64::MAX)?),
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--resume" => resume = Some(PathBuf::from(value("--resume")?)),
            "--backbone-weights" => choice.backbone_weights = Some(PathBuf::from(value("--backbone-weights")?)),
            "--no-heatmaps" => heatmaps = false,
            "--rescore" => rescore = true,
            "--evaluate" => evaluate = Some(PathBuf::from(value("--evaluate")?)),
            "--time-budget" => {
                choice.time_budget_seconds = Some(parse_duration(&value("--time-budget")?).map_err(|e| e.to_string())?)
            }
            "--method" => {
                choice.method = Some(value("--method")?.parse().map_err(|e: pnpt::model::Error| e.to_string())?)
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    let device: DeviceSpec = device.parse().map_err(|e: pnpt::Error| e.to_string())?;
    let (out, resume) = pnpt::job::resume_folder(resume.as_deref(), out.as_deref()).map_err(|e| e.to_string())?;
    let config = choice.build_for(data.as_deref()).map_err(|e| e.to_string())?;
    let mut options = JobOptions::new(config);
    options.out = out;
    options.method = choice.method;
    if rescore && evaluate.is_none() {
        return Err(format!("--rescore re-fits a saved detector: it needs --evaluate DETECTOR_DIR\n{USAGE}"));
    }
    Ok(JobOptions { data, categories, device, resume, heatmaps, evaluate, rescore, ..options })
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
