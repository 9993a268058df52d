//! The inputs of `pnpt predict`: files named on the command line and the images found in
//! folders, each folder entered once and each image taken once (see [`collect_inputs`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::EXTENSIONS;
use crate::{CliError, Result};

/// One image to score and the name of its maps.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// The file.
    pub path: PathBuf,
    /// Unique name of its outputs, `/`-separated, without extension.
    pub name: String,
    /// Why it cannot be scored before any reading (a missing path).
    pub error: Option<String>,
}

/// The images named by `inputs` (see the module documentation), skipping anything under
/// `skip` (the output folder, so a rerun does not score its own overlays). A folder is entered
/// once however many links lead to it (a link loop ends there), a file reached twice is scored
/// once, and more than `max` images is [`CliError::Input`] as soon as the walk finds one more.
pub fn collect_inputs(inputs: &[PathBuf], skip: &Path, max: usize) -> Result<Vec<Input>> {
    let mut walk = Walk { dirs: HashSet::new(), files: HashSet::new(), skip: key(skip), max, found: 0 };
    let mut found = Vec::new();
    for arg in inputs {
        if arg.is_dir() {
            let files = walk.folder(arg)?;
            for f in files {
                let rel = f.strip_prefix(arg).unwrap_or(&f).with_extension("");
                let name = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                found.push(Input { path: f, name, error: None });
            }
        } else {
            if !walk.new_file(arg)? {
                continue;
            }
            let name = arg.file_stem().map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
            let error = (!arg.exists()).then(|| "no such file or folder".to_string());
            found.push(Input { path: arg.clone(), name, error });
        }
    }
    // Two inputs with the same name (same file name in two folders) get `~2`, `~3`...
    let mut used = HashSet::new();
    for input in &mut found {
        let base = input.name.clone();
        let mut k = 1;
        while !used.insert(input.name.clone()) {
            k += 1;
            input.name = format!("{base}~{k}");
        }
    }
    Ok(found)
}

/// What a file or folder is, whatever the path to it: device and inode on Unix, elsewhere the
/// path with links resolved. `None` for a path that cannot be read (a dangling link).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    #[cfg(unix)]
    Inode(u64, u64),
    #[cfg_attr(unix, allow(dead_code))]
    Path(PathBuf),
}

fn key(path: &Path) -> Option<Key> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(path).ok().map(|m| Key::Inode(m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        path.canonicalize().ok().map(Key::Path)
    }
}

/// The state of one `pnpt predict` walk over every input.
struct Walk {
    /// Folders entered.
    dirs: HashSet<Key>,
    /// Images taken.
    files: HashSet<Key>,
    /// The output folder.
    skip: Option<Key>,
    max: usize,
    found: usize,
}

impl Walk {
    /// Whether `path` is an image not taken yet (a path that cannot be read is taken, to be
    /// reported); counts it against the limit.
    fn new_file(&mut self, path: &Path) -> Result<bool> {
        if let Some(k) = key(path)
            && !self.files.insert(k)
        {
            return Ok(false);
        }
        self.found += 1;
        if self.found > self.max {
            return Err(CliError::Input(format!(
                "more than {} images to score (reached at {}): score fewer at once, or raise the limit (--max-inputs)",
                self.max,
                path.display()
            )));
        }
        Ok(true)
    }

    /// The images under `root`, sorted; iterative, so a deep tree cannot overflow the stack.
    /// Folders reached through a link are entered after every other, so an image is named by
    /// its path without links where it has one.
    fn folder(&mut self, root: &Path) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        let mut linked = std::collections::VecDeque::new();
        while let Some(dir) = stack.pop().or_else(|| linked.pop_front()) {
            let Some(k) = key(&dir) else { continue };
            if self.skip.as_ref() == Some(&k) || !self.dirs.insert(k) {
                continue;
            }
            let mut entries = Vec::new();
            for entry in std::fs::read_dir(&dir).map_err(CliError::io(&dir))? {
                entries.push(entry.map_err(CliError::io(&dir))?.path());
            }
            entries.sort();
            let is_link = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink());
            let (dirs, mut images): (Vec<PathBuf>, Vec<PathBuf>) = entries.into_iter().partition(|p| p.is_dir());
            images.retain(|p| {
                p.extension().is_some_and(|e| EXTENSIONS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str()))
            });
            // Real files before links to them (a stable sort keeps the names' order).
            images.sort_by_key(|p| is_link(p));
            for path in images {
                if self.new_file(&path)? {
                    files.push(path);
                }
            }
            let (links, real): (Vec<PathBuf>, Vec<PathBuf>) = dirs.into_iter().partition(|p| is_link(p));
            linked.extend(links);
            // Reversed onto the stack, so folders are entered in sorted order.
            stack.extend(real.into_iter().rev());
        }
        files.sort();
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_found_named_uniquely_and_the_output_folder_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for f in ["a/x.png", "a/sub/y.JPG", "a/notes.txt", "a/out/maps/x.overlay.png", "b/x.png"] {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"").unwrap();
        }
        let inputs =
            collect_inputs(&[root.join("a"), root.join("b/x.png"), root.join("missing.png")], &root.join("a/out"), 10)
                .unwrap();
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["sub/y", "x", "x~2", "missing"]);
        assert_eq!(inputs[3].error.as_deref(), Some("no such file or folder"));
        assert!(inputs[..3].iter().all(|i| i.error.is_none()));
        // One image too many is refused, naming the limit's option.
        let err = collect_inputs(&[root.join("a"), root.join("b")], &root.join("a/out"), 2).unwrap_err();
        assert!(err.to_string().contains("more than 2 images") && err.to_string().contains("--max-inputs"), "{err}");
    }

    /// Two link loops, two links to one folder and a link to an image: every folder is entered
    /// once, every image taken once, under its path without links.
    #[cfg(unix)]
    #[test]
    fn link_loops_end_and_no_image_is_taken_twice() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir_all(a.join("sub/deep")).unwrap();
        for f in ["x.png", "sub/y.png", "sub/deep/z.png"] {
            std::fs::write(a.join(f), b"").unwrap();
        }
        symlink(&a, a.join("sub/back")).unwrap(); // a/sub/back -> a
        symlink(a.join("sub"), a.join("sub/deep/up")).unwrap(); // a/sub/deep/up -> a/sub
        symlink(a.join("sub"), a.join("again")).unwrap();
        symlink(a.join("x.png"), a.join("w.png")).unwrap();
        let out = dir.path().join("out");
        let inputs = collect_inputs(&[a.clone(), a.join("x.png"), a.join("sub"), a.clone()], &out, 100).unwrap();
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["sub/deep/z", "sub/y", "x"]);
        // The link to the image alone is taken (its target never was).
        let only = collect_inputs(&[a.join("w.png"), a.join("x.png")], &out, 100).unwrap();
        assert_eq!(only.len(), 1);
    }
}
