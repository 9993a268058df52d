//! Writing a file so that it is either the old one or the complete new one, never half
//! written: the contents go to a temporary file in the same folder, which is fsynced and then
//! renamed over the target, and the folder is fsynced so that a power cut cannot undo the
//! rename. Every artefact of the pnpt crates (arrays, pools, checkpoints, detectors, reports) is
//! written through here ([`write_atomic`] for bytes in memory); whole folders (a saved detector)
//! are swapped by [`replace_dir`].

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `path` atomically with the bytes `fill` writes (buffered, so it may stream large
/// contents in pieces). The folder must exist. The temporary file gets the
/// permissions of any newly created file (the umask), and is removed if anything fails.
///
/// The error names the file that failed: the temporary one or the target.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("a.txt");
/// pnpt_io::atomic::write_with(&path, |w| w.write_all(b"hello")).unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), b"hello");
/// # use std::io::Write;
/// ```
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), (PathBuf, io::Error)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| (path.to_path_buf(), io::Error::new(io::ErrorKind::InvalidInput, "not a file path")))?
        .to_string_lossy();
    // Unique per process and call, so two writers never share a temporary file.
    let tmp = parent.join(format!(".{name}.{}.{}.tmp", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let at_tmp = |e: io::Error| (tmp.clone(), e);
    let result = (|| {
        let mut w = BufWriter::new(File::create(&tmp).map_err(at_tmp)?);
        fill(&mut w).map_err(at_tmp)?;
        let file = w.into_inner().map_err(|e| at_tmp(e.into_error()))?;
        file.sync_all().map_err(at_tmp)?;
        drop(file);
        fs::rename(&tmp, path).map_err(|e| (path.to_path_buf(), e))?;
        sync_dir(&parent).map_err(|e| (parent.clone(), e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes `bytes` to `path` atomically (see [`write_with`]); the parent folder is created if
/// needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> crate::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(crate::error::io_err(parent))?;
    }
    write_with(path, |w| w.write_all(bytes)).map_err(|(path, source)| crate::Error::Io { path, source })
}

/// Makes the renames in folder `dir` durable by fsyncing the folder itself (on Unix; elsewhere
/// folders cannot be opened for it and this does nothing).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Replaces the folder `dir` by the complete folder `staging` (in the same parent folder): an
/// existing `dir` is first renamed to `aside`, `staging` is renamed to `dir`, then `aside` is
/// removed and the parent fsynced. If renaming `staging` fails, the old folder is put back, so
/// `dir` is at every moment either the old folder or the new one (between the two renames, the
/// old one sits at `aside`).
///
/// The error names the folder that failed.
///
/// ```
/// let parent = tempfile::tempdir().unwrap();
/// let (dir, staging, aside) = (parent.path().join("d"), parent.path().join(".d.new"), parent.path().join(".d.old"));
/// std::fs::create_dir(&dir).unwrap();
/// std::fs::write(dir.join("old.txt"), b"old").unwrap();
/// std::fs::create_dir(&staging).unwrap();
/// std::fs::write(staging.join("new.txt"), b"new").unwrap();
/// pnpt_io::atomic::replace_dir(&staging, &dir, &aside).unwrap();
/// assert!(dir.join("new.txt").is_file() && !dir.join("old.txt").exists());
/// assert!(!staging.exists() && !aside.exists());
/// ```
pub fn replace_dir(staging: &Path, dir: &Path, aside: &Path) -> Result<(), (PathBuf, io::Error)> {
    let had_old = dir.exists();
    if had_old {
        fs::rename(dir, aside).map_err(|e| (dir.to_path_buf(), e))?;
    }
    if let Err(e) = fs::rename(staging, dir) {
        if had_old {
            let _ = fs::rename(aside, dir);
        }
        return Err((staging.to_path_buf(), e));
    }
    if had_old {
        let _ = fs::remove_dir_all(aside);
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    sync_dir(parent).map_err(|e| (parent.to_path_buf(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        write_with(&path, |w| w.write_all(b"old")).unwrap();
        let (failed, _) = write_with(&path, |w| {
            w.write_all(b"partial")?;
            Err(io::Error::other("interrupted"))
        })
        .unwrap_err();
        assert_ne!(failed, path, "the temporary file is named");
        assert_eq!(fs::read(&path).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "temporary file removed");
    }

    #[test]
    fn a_failed_folder_swap_keeps_the_old_folder() {
        let parent = tempfile::tempdir().unwrap();
        let (dir, aside) = (parent.path().join("d"), parent.path().join(".d.old"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("old.txt"), b"old").unwrap();
        // The staging folder does not exist: the second rename fails.
        let (failed, _) = replace_dir(&parent.path().join(".d.new"), &dir, &aside).unwrap_err();
        assert_eq!(failed, parent.path().join(".d.new"));
        assert_eq!(fs::read(dir.join("old.txt")).unwrap(), b"old");
        assert!(!aside.exists());
    }

    #[test]
    fn a_folder_swap_into_a_new_place_needs_no_old_folder() {
        let parent = tempfile::tempdir().unwrap();
        let (dir, staging) = (parent.path().join("d"), parent.path().join(".d.new"));
        fs::create_dir(&staging).unwrap();
        fs::write(staging.join("a"), b"a").unwrap();
        replace_dir(&staging, &dir, &parent.path().join(".d.old")).unwrap();
        assert_eq!(fs::read(dir.join("a")).unwrap(), b"a");
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn files_get_the_usual_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_with(&a, |w| w.write_all(b"x")).unwrap();
        File::create(&b).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&a), mode(&b), "same as a plainly created file");
    }
}
