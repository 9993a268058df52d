//! Discovery of MVTec-style dataset folders (MVTec AD, MVTec 3D-AD RGB, MVTec LOCO, VisA in
//! MVTec layout) into plain lists of [`Sample`]s.
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::DataError;
use crate::image_io::{decode, decode_mask};

/// The defect name of normal images, as MVTec spells it.
pub const GOOD: &str = "good";

/// File extensions (lower case) treated as images; everything else (license.txt, xyz/*.tiff,
/// *.json) is ignored by discovery.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

/// One image of a dataset, with its ground truth.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sample {
    /// The image file.
    pub path: PathBuf,
    /// The category (object/texture class) it belongs to.
    pub category: String,
    /// The defect type; [`GOOD`] (`"good"`) for normal images.
    pub defect: String,
    /// Ground-truth mask files, merged with OR when there are several (MVTec LOCO); empty for
    /// normal images.
    pub masks: Vec<PathBuf>,
}

impl Sample {
    /// Whether this is a defective image (`defect != "good"`).
    ///
    /// ```
    /// let s = pnpt_data::Sample { path: "t/crack/000.png".into(), category: "bottle".into(),
    ///     defect: "crack".into(), masks: vec!["gt/crack/000_mask.png".into()] };
    /// assert!(s.is_anomalous());
    /// assert_eq!(s.stem(), "000");
    /// ```
    pub fn is_anomalous(&self) -> bool {
        self.defect != GOOD
    }

    /// The file name without extension (`"000"` for `.../000.png`), for display: bytes that
    /// are not UTF-8 become U+FFFD. Names of files derived from it use [`Sample::file_stem`].
    pub fn stem(&self) -> String {
        self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
    }

    /// The exact file name without extension, any bytes the OS allows (mask lookup and output
    /// names; two names that differ only in non-UTF-8 bytes stay apart).
    pub fn file_stem(&self) -> &OsStr {
        self.path.file_stem().unwrap_or_default()
    }

    /// Image-level label: 1 for anomalous, 0 for normal.
    pub fn label(&self) -> u8 {
        self.is_anomalous() as u8
    }
}

/// One category with its splits, each in sorted (deterministic) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    /// Folder name of the category.
    pub name: String,
    /// Normal training images (`train/good`).
    pub train: Vec<Sample>,
    /// Validation images (`validation/<defect>`), only where the layout has them (MVTec 3D-AD,
    /// MVTec LOCO); empty otherwise.
    pub validation: Vec<Sample>,
    /// Test images, all defect types, sorted by defect name then file name.
    pub test: Vec<Sample>,
}

impl Category {
    /// Sorted distinct defect names of the test split (including `"good"` when present).
    pub fn defects(&self) -> Vec<String> {
        let mut d: Vec<String> = self.test.iter().map(|s| s.defect.clone()).collect();
        d.dedup();
        d.sort();
        d.dedup();
        d
    }
}

/// A dataset root with its categories, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// The folder that was opened.
    pub root: PathBuf,
    /// Categories in name order.
    pub categories: Vec<Category>,
}

impl Dataset {
    /// Discovers every category under `root` (or only those named in `only`).
    ///
    /// A category is a sub-folder holding a `train` or `test` folder; other folders and stray
    /// files (license.txt, readme.txt) are ignored. Per split the images are either directly in
    /// `<split>/<defect>/` (MVTec AD, LOCO) or in `<split>/<defect>/rgb/` (MVTec 3D-AD). Masks of
    /// anomalous images are looked up, first hit wins, at
    /// `<split>/<defect>/gt/<stem>.png` (3D-AD), `ground_truth/<defect>/<stem>_mask.<ext>` (AD),
    /// `ground_truth/<defect>/<stem>.<ext>` (VisA), and every image in
    /// `ground_truth/<defect>/<stem>/` (LOCO, merged). `test/good` images have no masks.
    ///
    /// Only file existence is checked here; [`Dataset::check`] reads headers and compares sizes.
    ///
    /// ```no_run
    /// let ds = pnpt_data::Dataset::open("/data/mvtec", Some(&["bottle".to_string()])).unwrap();
    /// assert_eq!(ds.categories[0].name, "bottle");
    /// ```
    pub fn open(root: impl AsRef<Path>, only: Option<&[String]>) -> Result<Self, DataError> {
        let root = root.as_ref();
        if !root.is_dir() {
            return Err(DataError::MissingRoot { path: root.to_path_buf() });
        }
        let mut available: Vec<String> = Vec::new();
        let mut not_utf8 = None;
        for (n, p, is_dir) in list_dir(root)? {
            if is_dir && is_category_dir(&p) {
                match n.into_string() {
                    Ok(n) => available.push(n),
                    Err(_) => not_utf8 = not_utf8.or(Some(p)),
                }
            }
        }
        let mut names: Vec<String> = match only {
            // A category's name labels a class in the model and the reports, so it must be
            // text (a run restricted to other categories does not mind).
            None => match not_utf8 {
                Some(path) => return Err(DataError::NonUtf8Name { path }),
                None => available.clone(),
            },
            Some(req) => {
                for name in req {
                    // A requested folder that exists is read (and fails with the precise missing
                    // split); anything else is unknown.
                    let ok = !name.is_empty()
                        && !name.contains(['/', '\\'])
                        && name != "."
                        && name != ".."
                        && root.join(name).is_dir();
                    if !ok {
                        return Err(DataError::UnknownCategory {
                            path: root.to_path_buf(),
                            name: name.clone(),
                            available: available.join(", "),
                        });
                    }
                }
                req.to_vec()
            }
        };
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Err(DataError::EmptyDataset { path: root.to_path_buf() });
        }
        let categories = names.iter().map(|n| read_category(root, n)).collect::<Result<Vec<_>, _>>()?;
        Ok(Self { root: root.to_path_buf(), categories })
    }

    /// The category with this name.
    pub fn category(&self, name: &str) -> Option<&Category> {
        self.categories.iter().find(|c| c.name == name)
    }

    /// Category names in dataset order (the index is a stable class id).
    pub fn names(&self) -> Vec<String> {
        self.categories.iter().map(|c| c.name.clone()).collect()
    }

    /// All training samples of all categories, category by category (multi-class training).
    pub fn train_samples(&self) -> Vec<Sample> {
        self.categories.iter().flat_map(|c| c.train.iter().cloned()).collect()
    }

    /// All test samples of all categories, category by category.
    pub fn test_samples(&self) -> Vec<Sample> {
        self.categories.iter().flat_map(|c| c.test.iter().cloned()).collect()
    }

    /// Total number of training images.
    pub fn num_train(&self) -> usize {
        self.categories.iter().map(|c| c.train.len()).sum()
    }

    /// Total number of test images.
    pub fn num_test(&self) -> usize {
        self.categories.iter().map(|c| c.test.len()).sum()
    }

    /// Reads every image and mask of every split (in parallel) before any training starts:
    /// each must be a regular, non-empty file that decodes completely, with sides up to
    /// [`MAX_IMAGE_SIDE`](crate::image_io::MAX_IMAGE_SIDE); each mask must have its image's size;
    /// no two images of a folder may share a name stem. See [`Dataset::audit`] for the warnings.
    ///
    /// One problem is returned as itself; several as [`DataError::Problems`], all of them, in
    /// dataset order (so the error is reproducible).
    pub fn check(&self) -> Result<(), DataError> {
        let mut audit = self.audit();
        match audit.problems.len() {
            0 => Ok(()),
            1 => Err(audit.problems.remove(0)),
            _ => Err(DataError::Problems { root: self.root.clone(), problems: audit.problems }),
        }
    }

    /// Everything [`Dataset::check`] reads, with all problems and the warnings: defect images
    /// whose mask marks no pixel, categories without anomalous (or without normal) test images,
    /// whose image-level metrics are undefined.
    pub fn audit(&self) -> Audit {
        let all: Vec<&Sample> =
            self.categories.iter().flat_map(|c| c.train.iter().chain(&c.validation).chain(&c.test)).collect();
        let splits: Vec<&'static str> = self
            .categories
            .iter()
            .flat_map(|c| {
                let n = |v: &Vec<Sample>, name| std::iter::repeat_n(name, v.len());
                n(&c.train, "training").chain(n(&c.validation, "validation")).chain(n(&c.test, "test"))
            })
            .collect();
        let results: Vec<SampleCheck> = all.par_iter().map(|s| check_sample(s)).collect();
        let mut audit = Audit::default();
        // Degenerate images, said once per split of a category: a tiny image carries almost
        // nothing once resized to the model's input, and is more likely a broken export.
        let mut tiny: Vec<Tiny> = Vec::new();
        for ((s, &split), check) in all.iter().zip(&splits).zip(results) {
            audit.problems.extend(check.problems);
            audit.warnings.extend(check.warning);
            let Some(size) = check.size.filter(|&(w, h)| w.min(h) < MIN_SIDE) else { continue };
            match tiny.iter_mut().find(|t| t.category == s.category && t.split == split) {
                Some(t) => {
                    t.count += 1;
                    if size.0.min(size.1) < t.size.0.min(t.size.1) {
                        (t.smallest, t.size) = (&s.path, size);
                    }
                }
                None => tiny.push(Tiny { category: &s.category, split, count: 1, smallest: &s.path, size }),
            }
        }
        for t in tiny {
            audit.warnings.push(format!(
                "category {:?}: {} {} image(s) under {MIN_SIDE} pixels a side (the smallest: {}, {} x {}); \
                 so small an image carries almost nothing once resized to the model's input",
                t.category,
                t.count,
                t.split,
                t.smallest.display(),
                t.size.0,
                t.size.1
            ));
        }
        // Same stem, different extension, one folder: the samples are sorted by folder then name.
        for pair in all.windows(2) {
            let (a, b) = (&pair[0].path, &pair[1].path);
            if a.parent() == b.parent() && a.file_stem() == b.file_stem() {
                audit.problems.push(DataError::NameCollision { first: a.clone(), second: b.clone() });
            }
        }
        for c in &self.categories {
            let anomalous = c.test.iter().filter(|s| s.is_anomalous()).count();
            if anomalous == 0 || anomalous == c.test.len() {
                audit.warnings.push(format!(
                    "category {:?}: {anomalous} anomalous and {} normal test images: image AUROC is undefined, its metrics are skipped",
                    c.name,
                    c.test.len() - anomalous
                ));
            }
        }
        audit
    }
}

/// What [`Dataset::audit`] found.
#[derive(Debug, Default)]
pub struct Audit {
    /// Errors: the run cannot use these files.
    pub problems: Vec<DataError>,
    /// Oddities the run survives (said once, before training).
    pub warnings: Vec<String>,
}

/// Images with a side below this are warned about ([`Dataset::audit`]).
pub const MIN_SIDE: u32 = 32;

/// What [`check_sample`] found in one sample.
struct SampleCheck {
    problems: Vec<DataError>,
    /// About its mask.
    warning: Option<String>,
    /// Width and height, when it decodes.
    size: Option<(u32, u32)>,
}

/// The images under [`MIN_SIDE`] of one split of a category.
struct Tiny<'a> {
    category: &'a str,
    split: &'static str,
    count: usize,
    smallest: &'a Path,
    size: (u32, u32),
}

/// The problems of one sample, the warning about its mask, and its size when it decodes.
fn check_sample(s: &Sample) -> SampleCheck {
    let mut problems = Vec::new();
    let size = match decode(&s.path) {
        Ok(img) => (img.width(), img.height()),
        Err(e) => return SampleCheck { problems: vec![e], warning: None, size: None },
    };
    let mut marked = false;
    for m in &s.masks {
        match decode_mask(m) {
            Ok((_, w, h)) if (w, h) != size => problems.push(DataError::MaskSizeMismatch {
                path: s.path.clone(),
                mask: m.clone(),
                image_size: size,
                mask_size: (w, h),
            }),
            Ok((bin, _, _)) => marked |= bin.iter().any(|&v| v != 0),
            Err(e) => problems.push(e),
        }
    }
    let warning = (problems.is_empty() && s.is_anomalous() && !s.masks.is_empty() && !marked)
        .then(|| format!("{}: its mask marks no pixel; it counts for image-level metrics only", s.path.display()));
    SampleCheck { problems, warning, size: Some(size) }
}

fn is_category_dir(p: &Path) -> bool {
    p.join("train").is_dir() || p.join("test").is_dir()
}

/// `(name, path, is_dir)` of a folder's entries sorted by the name's bytes (names as the OS
/// gives them, UTF-8 or not), hidden ones (`.name`) skipped.
fn list_dir(dir: &Path) -> Result<Vec<(OsString, PathBuf, bool)>, DataError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = entry.path();
        // Follows symlinks, so a linked category folder still counts.
        let is_dir = path.is_dir();
        out.push((name, path, is_dir));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn is_image_path(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// Image files directly inside `dir`, sorted.
fn images_in(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    Ok(list_dir(dir)?.into_iter().filter(|(_, p, is_dir)| !is_dir && is_image_path(p)).map(|(_, p, _)| p).collect())
}

fn read_category(root: &Path, name: &str) -> Result<Category, DataError> {
    let cat_dir = root.join(name);
    let split_dir = |split: &str| -> Result<PathBuf, DataError> {
        let p = cat_dir.join(split);
        if p.is_dir() { Ok(p) } else { Err(DataError::MissingSplit { path: p, category: name.to_string() }) }
    };
    let train_dir = split_dir("train")?;
    let test_dir = split_dir("test")?;
    let gt_dir = cat_dir.join("ground_truth");

    let good_dir = train_dir.join(GOOD);
    let train = if good_dir.is_dir() { read_split(&train_dir, name, &gt_dir, true)? } else { Vec::new() };
    if train.is_empty() {
        return Err(DataError::NoTrainImages { path: good_dir, category: name.to_string() });
    }
    let val_dir = cat_dir.join("validation");
    let validation = if val_dir.is_dir() { read_split(&val_dir, name, &gt_dir, false)? } else { Vec::new() };
    let test = read_split(&test_dir, name, &gt_dir, false)?;
    Ok(Category { name: name.to_string(), train, validation, test })
}

/// All `<split>/<defect>/` folders of a split; for `train` only `good` (MVTec trains on normal
/// images only).
fn read_split(split_dir: &Path, category: &str, gt_dir: &Path, good_only: bool) -> Result<Vec<Sample>, DataError> {
    let mut out = Vec::new();
    for (defect, defect_dir, is_dir) in list_dir(split_dir)? {
        if !is_dir || (good_only && defect != GOOD) {
            continue;
        }
        // The defect type names a row of the reports and prefixes heat-map names: text only.
        let Ok(defect) = defect.into_string() else {
            return Err(DataError::NonUtf8Name { path: defect_dir });
        };
        // MVTec 3D-AD keeps the colour image in rgb/ next to xyz/ and gt/.
        let rgb_dir = defect_dir.join("rgb");
        let is_3d = rgb_dir.is_dir();
        let images = images_in(if is_3d { &rgb_dir } else { &defect_dir })?;
        for path in images {
            let masks =
                if defect == GOOD { Vec::new() } else { find_masks(&path, &defect_dir, is_3d, gt_dir, &defect)? };
            out.push(Sample { path, category: category.to_string(), defect: defect.clone(), masks });
        }
    }
    Ok(out)
}

fn find_masks(
    image: &Path,
    defect_dir: &Path,
    is_3d: bool,
    gt_dir: &Path,
    defect: &str,
) -> Result<Vec<PathBuf>, DataError> {
    // The exact bytes of the name: a lossy copy would look for a mangled mask name.
    let stem = image.file_stem().unwrap_or_default();
    let with_suffix = |suffix: &str| {
        let mut n = stem.to_os_string();
        n.push(suffix);
        n
    };
    let mut first_candidate = None;
    let mut try_file = |base: &Path, name_stem: &OsStr| -> Option<PathBuf> {
        for ext in IMAGE_EXTENSIONS {
            let mut name = name_stem.to_os_string();
            name.push(".");
            name.push(ext);
            let p = base.join(name);
            if first_candidate.is_none() {
                first_candidate = Some(p.clone());
            }
            if p.is_file() {
                return Some(p);
            }
        }
        None
    };
    let gt_3d = if is_3d { try_file(&defect_dir.join("gt"), stem) } else { None };
    if let Some(p) = gt_3d {
        return Ok(vec![p]);
    }
    let gt = gt_dir.join(defect);
    if let Some(p) = try_file(&gt, &with_suffix("_mask")) {
        return Ok(vec![p]);
    }
    if let Some(p) = try_file(&gt, stem) {
        return Ok(vec![p]);
    }
    let loco = gt.join(stem);
    if loco.is_dir() {
        let masks = images_in(&loco)?;
        if !masks.is_empty() {
            return Ok(masks);
        }
    }
    Err(DataError::MissingMask { path: image.to_path_buf(), expected: first_candidate.unwrap_or(gt) })
}
