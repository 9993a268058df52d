//! A stderr logger for programs: the library crates do not print, they send their progress
//! lines and warnings as [`log`] events (`log::info!`, `log::warn!`), and the program decides
//! where they go.
//!
//! `pnpt` (the command) and `examples/train_mvtec.rs` call [`init`] first thing: pnpt's events
//! then appear on stderr as plain lines, info as it is, warnings prefixed `warning: ` and
//! errors `error: `. A library user who installs no logger sees none of them (as usual with
//! `log`, events without a logger go nowhere); any other `log` logger (`env_logger`, a
//! `tracing` bridge, ...) receives them instead, under targets that start with `pnpt`
//! (`pnpt_cli::job`, `pnpt_model::train`, ...). Here, not in the library: which logger and
//! which bars a program shows is the program's choice.
//!
//! ```no_run
//! pnpt_cli::logging::init(true); // progress lines and warnings on stderr
//! ```
//!
//! The progress of long training stages comes as [`ProgressEvent`]s instead (a bar is not a
//! line); [`progress_bars`] draws them as indicatif bars on stderr, as [`crate::job`] does for
//! `pnpt train` and `examples/train_mvtec.rs`.

use std::io::Write;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use log::{Level, LevelFilter, Log, Metadata, Record};
use pnpt::model::{Progress, ProgressEvent};

/// Prints pnpt's events on stderr.
struct Stderr;

static LOGGER: Stderr = Stderr;

impl Log for Stderr {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level() && is_pnpt(metadata.target())
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let prefix = match record.level() {
            Level::Error => "error: ",
            Level::Warn => "warning: ",
            _ => "",
        };
        let _ = writeln!(std::io::stderr().lock(), "{prefix}{}", record.args());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Events of pnpt's own crates; those of its dependencies (Burn, CubeCL, wgpu) are left out, as
/// they were before the library used `log`.
fn is_pnpt(target: &str) -> bool {
    target == "pnpt" || target.starts_with("pnpt::") || target.starts_with("pnpt_")
}

/// Installs the stderr logger: info lines (progress) and warnings when `verbose`, warnings and
/// errors only otherwise. Returns `false`, changing nothing, when the program installed
/// another logger first.
pub fn init(verbose: bool) -> bool {
    if log::set_logger(&LOGGER).is_err() {
        return false;
    }
    log::set_max_level(if verbose { LevelFilter::Info } else { LevelFilter::Warn });
    true
}

/// Draws every stage of a training run as a bar on stderr,
/// `<stage> [bar] done/total [elapsed<eta] status`, cleared when the stage ends; nothing shows
/// when stderr is not a terminal (logs, CI), where the per-epoch `log` lines remain.
///
/// ```no_run
/// use pnpt::prelude::*;
/// type B = Autodiff<Cpu>;
///
/// let dataset = Dataset::open("/data/mvtec_ad", None)?;
/// let options = TrainOptions::default().with_progress(true).with_progress_sink(pnpt_cli::logging::progress_bars());
/// let (detector, _) = train::<B>(&PnptConfig::cpu(), &dataset, &Default::default(), &options, Some(&Default::default()))?;
/// # Ok::<(), pnpt::Error>(())
/// ```
pub fn progress_bars() -> Progress {
    let current: Mutex<Option<ProgressBar>> = Mutex::new(None);
    Progress::new(move |event| {
        // A poisoned lock only means an earlier callback panicked: the bar is cosmetic.
        let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            ProgressEvent::Start { stage, len } => {
                if let Some(old) = current.replace(bar(stage, len)) {
                    old.finish_and_clear();
                }
            }
            ProgressEvent::Advance { steps, status } => {
                if let Some(pb) = current.as_ref() {
                    if let Some(status) = status {
                        pb.set_message(status.to_string());
                    }
                    pb.inc(steps);
                }
            }
            ProgressEvent::Finish => {
                if let Some(pb) = current.take() {
                    pb.finish_and_clear();
                }
            }
            // Events added later are not drawn.
            _ => {}
        }
    })
}

/// One stage's bar.
fn bar(stage: &str, len: u64) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let style = ProgressStyle::with_template(&format!(
        "{stage} {{bar:30}} {{pos}}/{{len}} [{{elapsed_precise}}<{{eta_precise}}] {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_pnpt_targets() {
        for t in ["pnpt", "pnpt::train", "pnpt_model::train", "pnpt_cli::job"] {
            assert!(super::is_pnpt(t), "{t}");
        }
        for t in ["burn_autodiff", "wgpu_core::device", "pnptx", "cubecl"] {
            assert!(!super::is_pnpt(t), "{t}");
        }
    }
}
