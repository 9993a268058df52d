//! The output folder: made writable and cleared of a killed run's temporaries before a job.

use std::path::Path;

use crate::{CliError, Result};

/// What marks a folder as holding a run: the reports, the detector and the checkpoints a job
/// writes.
const RUN_MARKERS: [&str; 5] = ["report.json", "report.md", "report.html", "detector", "checkpoint"];
/// An earlier run's reports, removed before an `overwrite` so a failed run leaves none that
/// looks like its own.
const REPORTS: [&str; 3] = ["report.json", "report.md", "report.html"];

/// Refuses an `out` that holds an earlier run, unless `overwrite` (checked before anything is
/// created, trained or cleared).
pub(super) fn check_earlier_run(out: &Path, overwrite: bool) -> Result<()> {
    let found: Vec<&str> = RUN_MARKERS.iter().copied().filter(|m| out.join(m).exists()).collect();
    if found.is_empty() || overwrite {
        return Ok(());
    }
    Err(CliError::Output {
        path: out.to_path_buf(),
        reason: format!(
            "holds an earlier run ({}): pass --overwrite to replace it, --resume {} to continue its training, or choose another --out",
            found.join(", "),
            out.display()
        ),
    })
}

/// Makes `out` a writable folder before anything runs, removes temporaries that killed runs
/// left behind (their process is gone), the heat maps of an earlier run and, with `overwrite`,
/// its reports, so the folder holds this run's outputs only.
pub(super) fn prepare_out(out: &Path, overwrite: bool) -> Result<()> {
    let io = |e: std::io::Error| CliError::Output { path: out.to_path_buf(), reason: e.to_string() };
    if out.exists() && !out.is_dir() {
        return Err(CliError::Output { path: out.to_path_buf(), reason: "exists and is not a folder".into() });
    }
    std::fs::create_dir_all(out).map_err(io)?;
    let probe = out.join(format!(".pnpt-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(io)?;
    let _ = std::fs::remove_file(&probe);
    if overwrite {
        for r in REPORTS {
            match std::fs::remove_file(out.join(r)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                _ => {}
            }
        }
    }
    for dir in [out.to_path_buf(), out.join("checkpoint")] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = stale_pid(&name)
                && pid != std::process::id()
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let path = entry.path();
                let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            }
        }
    }
    let heatmaps = out.join("heatmaps");
    if heatmaps.is_dir() {
        std::fs::remove_dir_all(&heatmaps).map_err(io)?;
    }
    Ok(())
}

/// The writer's process id in the name of a temporary: `.detector.partial-<pid>`,
/// `.detector.previous-<pid>` (detector saves), `.<file>.<pid>.<n>.tmp` (atomic writes).
fn stale_pid(name: &str) -> Option<u32> {
    if !name.starts_with('.') {
        return None;
    }
    for marker in [".partial-", ".previous-"] {
        if let Some(i) = name.find(marker) {
            return name[i + marker.len()..].parse().ok();
        }
    }
    let parts: Vec<&str> = name.strip_suffix(".tmp")?.rsplit('.').collect();
    parts.get(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temporaries_name_their_writer() {
        assert_eq!(stale_pid(".detector.partial-4242"), Some(4242));
        assert_eq!(stale_pid(".detector.previous-17"), Some(17));
        assert_eq!(stale_pid(".checkpoint.bin.311.0.tmp"), Some(311));
        assert_eq!(stale_pid("report.md"), None);
        assert_eq!(stale_pid(".hidden"), None);
    }
}
