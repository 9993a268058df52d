//! A stderr logger for programs: the library crates do not print, they send their progress
//! lines and warnings as [`log`] events (`log::info!`, `log::warn!`), and the program decides
//! where they go.
//!
//! `pnpt` (the command) and `examples/train_mvtec.rs` call [`init`] first thing: pnpt's events
//! then appear on stderr as plain lines, info as it is, warnings prefixed `warning: ` and
//! errors `error: `. A library user who installs no logger sees none of them (as usual with
//! `log`, events without a logger go nowhere); any other `log` logger (`env_logger`, a
//! `tracing` bridge, ...) receives them instead, under targets that start with `pnpt`
//! (`pnpt::job`, `pnpt_model::train`, ...).
//!
//! ```no_run
//! pnpt::logging::init(true); // progress lines and warnings on stderr
//! ```

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

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

#[cfg(test)]
mod tests {
    #[test]
    fn only_pnpt_targets() {
        for t in ["pnpt", "pnpt::job", "pnpt_model::train", "pnpt_cli"] {
            assert!(super::is_pnpt(t), "{t}");
        }
        for t in ["burn_autodiff", "wgpu_core::device", "pnptx", "cubecl"] {
            assert!(!super::is_pnpt(t), "{t}");
        }
    }
}
