//! Train one PNPT model on every category of an MVTec-layout dataset, save the detector and
//! evaluate it (report.json, report.md, heat maps).
//!
//! ```text
//! cargo run --release --example train_mvtec -- [--data DIR] [--categories a,b] [--device cpu|wgpu|cuda[:N]]
//!     [--preset cpu|paper] [--config FILE] [--epochs N] [--seed N] [--out DIR] [--resume DIR]
//!     [--backbone-weights PATH] [--no-heatmaps] [--evaluate DETECTOR_DIR] [--method pnpt|memory|fused]
//!     [--time-budget 15m] [--rescore]
//! ```
//! The options are `pnpt_cli::job::TrainArgs`, the same as `pnpt train`'s (`--help` lists them).
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
//! (`pnpt_cli::job::SYNTHETIC_INPUT_SIZE`): about 3 minutes.
//! `--resume DIR` fails when `DIR/checkpoint` holds no checkpoint, when the checkpoint was
//! trained on other data or another configuration (naming what differs), and when `--epochs`
//! is below the epochs it has done (a larger `--epochs` extends the run); with `--out` it must
//! name the same folder (`pnpt_cli::job::resume_folder`). Everything here is
//! `pnpt_cli::train_mvtec_main`, the job that the `pnpt train` command runs too: application
//! code lives in pnpt-cli, so the library `pnpt` carries no command line.

fn main() -> std::process::ExitCode {
    pnpt_cli::train_mvtec_main()
}
