//! `Dataset::check` / `Dataset::audit` read everything a run will read before it starts: one
//! bad input per case, each a typed error naming the file; several at once are all reported.
use std::fs;
use std::path::{Path, PathBuf};

use pnpt_data::{DataError, Dataset};
use tempfile::tempdir;

use crate::{bytes, png, png_mask, png_rgb};

/// A valid two-category dataset: 2 train, 1 good and 1 defective test image (with mask) each.
fn valid(r: &Path) {
    for c in ["a", "b"] {
        png(&r.join(c).join("train/good/000.png"));
        png(&r.join(c).join("train/good/001.png"));
        png(&r.join(c).join("test/good/000.png"));
        png(&r.join(c).join("test/crack/000.png"));
        png_mask(&r.join(c).join("ground_truth/crack/000_mask.png"), 4, 4, &[(1, 1)], 255);
    }
}

/// A PNG whose header declares `w × h`, followed by the start of an image-data chunk (a
/// decoder needs to reach it before it reports dimensions), and nothing more.
fn huge_header(path: &Path, w: u32, h: u32) -> PathBuf {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    for (kind, data) in [(b"IHDR", ihdr), (b"IDAT", vec![0x78, 0x9c, 0x01, 0x00, 0x00])] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(&data);
        out.extend_from_slice(&chunk);
        out.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    fs::write(path, out).unwrap();
    path.to_path_buf()
}

/// CRC-32 (IEEE, reflected), as PNG chunks use.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

fn truncate(path: &Path) {
    let b = fs::read(path).unwrap();
    fs::write(path, &b[..b.len() / 2]).unwrap();
}

fn problems(r: &Path) -> Vec<DataError> {
    Dataset::open(r, None).unwrap().audit().problems
}

/// Each case breaks one thing in a valid dataset; `expect` checks the single problem found.
#[test]
fn every_bad_input_is_one_typed_problem_naming_its_file() {
    type Break = fn(&Path) -> PathBuf;
    type Expect = fn(&DataError) -> bool;
    let cases: Vec<(&str, Break, Expect)> = vec![
        (
            "truncated training image",
            |r| {
                let p = r.join("a/train/good/001.png");
                truncate(&p);
                p
            },
            |e| matches!(e, DataError::Corrupt { .. }),
        ),
        (
            "truncated test image",
            |r| {
                let p = r.join("b/test/crack/000.png");
                truncate(&p);
                p
            },
            |e| matches!(e, DataError::Corrupt { .. }),
        ),
        (
            "text file named .png (a PNG by its name, not by its bytes)",
            |r| bytes(&r.join("a/test/good/001.png"), b"not an image at all\n"),
            |e| matches!(e, DataError::Corrupt { .. }),
        ),
        (
            "zero-byte image",
            |r| bytes(&r.join("a/train/good/002.png"), b""),
            |e| matches!(e, DataError::EmptyFile { .. }),
        ),
        (
            "truncated mask",
            |r| {
                let p = r.join("a/ground_truth/crack/000_mask.png");
                truncate(&p);
                p
            },
            |e| matches!(e, DataError::Corrupt { .. }),
        ),
        (
            "mask of another size",
            |r| png_mask(&r.join("b/ground_truth/crack/000_mask.png"), 8, 4, &[(1, 1)], 255),
            |e| matches!(e, DataError::MaskSizeMismatch { .. }),
        ),
        (
            "same stem, two extensions",
            |r| {
                png(&r.join("a/train/good/000.bmp"));
                r.join("a/train/good/000.png")
            },
            |e| matches!(e, DataError::NameCollision { .. }),
        ),
        (
            "header of 20000 x 20000 pixels",
            |r| huge_header(&r.join("a/train/good/003.png"), 20_000, 20_000),
            |e| matches!(e, DataError::TooLarge { width: 20_000, height: 20_000, .. }),
        ),
        (
            "dangling symlink",
            |r| {
                let p = r.join("a/train/good/004.png");
                std::os::unix::fs::symlink(r.join("nowhere.png"), &p).unwrap();
                p
            },
            |e| matches!(e, DataError::Io { .. }),
        ),
        (
            "symlink loop",
            |r| {
                let (p, q) = (r.join("a/train/good/005.png"), r.join("a/train/good/006.png"));
                std::os::unix::fs::symlink(&q, &p).unwrap();
                std::os::unix::fs::symlink(&p, &q).unwrap();
                p
            },
            |e| matches!(e, DataError::Io { .. }),
        ),
        (
            "FIFO named .png",
            |r| {
                let p = r.join("a/test/good/007.png");
                let ok = std::process::Command::new("mkfifo").arg(&p).status().map(|s| s.success()).unwrap_or(false);
                assert!(ok, "mkfifo failed");
                p
            },
            |e| matches!(e, DataError::Io { .. }),
        ),
        (
            "directory of images named .png is skipped, a file inside is not",
            |r| {
                let p = r.join("a/train/good/dir.png/x.png");
                bytes(&p, b"x");
                r.join("a/train/good/008.png")
            },
            |_| false,
        ),
    ];
    for (name, break_it, expect) in cases {
        let d = tempdir().unwrap();
        let r = d.path();
        valid(r);
        let path = break_it(r);
        let found = problems(r);
        if name.starts_with("directory") {
            // Discovery ignores sub-folders of a defect folder, whatever their name.
            assert!(found.is_empty(), "{name}: {found:?}");
            continue;
        }
        assert_eq!(found.len(), 1 + (name == "symlink loop") as usize, "{name}: {found:?}");
        assert!(expect(&found[0]), "{name}: {:?}", found[0]);
        let msg = found[0].to_string();
        let stem = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(msg.contains(&stem), "{name}: message {msg:?} does not name {stem}");
    }
}

#[test]
fn several_problems_are_reported_together_in_dataset_order() {
    let d = tempdir().unwrap();
    let r = d.path();
    valid(r);
    truncate(&r.join("a/train/good/001.png"));
    bytes(&r.join("b/test/good/009.png"), b"");
    png_mask(&r.join("b/ground_truth/crack/000_mask.png"), 8, 4, &[(1, 1)], 255);
    let ds = Dataset::open(r, None).unwrap();
    match ds.check().unwrap_err() {
        DataError::Problems { root, problems } => {
            assert_eq!(root, r);
            assert!(matches!(problems[0], DataError::Corrupt { .. }), "{problems:?}");
            // Test images are sorted by defect name, then file name: crack before good.
            assert!(matches!(problems[1], DataError::MaskSizeMismatch { .. }), "{problems:?}");
            assert!(matches!(problems[2], DataError::EmptyFile { .. }), "{problems:?}");
            assert_eq!(problems.len(), 3);
            let msg = DataError::Problems { root, problems }.to_string();
            assert!(msg.contains("3 problems") && msg.contains("001.png") && msg.contains("009.png"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn empty_masks_and_one_sided_test_splits_are_warnings() {
    let d = tempdir().unwrap();
    let r = d.path();
    valid(r);
    png_mask(&r.join("a/ground_truth/crack/000_mask.png"), 4, 4, &[], 255);
    fs::remove_file(r.join("b/test/crack/000.png")).unwrap();
    let mut audit = Dataset::open(r, None).unwrap().audit();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    // The 4 x 4 images of these sets are warned about too (`tiny_images_are_warned_about`).
    audit.warnings.retain(|w| !w.contains("pixels a side"));
    assert_eq!(audit.warnings.len(), 2, "{:?}", audit.warnings);
    assert!(
        audit.warnings.iter().any(|w| w.contains("000.png") && w.contains("marks no pixel")),
        "{:?}",
        audit.warnings
    );
    assert!(audit.warnings.iter().any(|w| w.contains("\"b\"") && w.contains("0 anomalous")), "{:?}", audit.warnings);
    // A valid set has neither.
    let d = tempdir().unwrap();
    valid(d.path());
    let mut audit = Dataset::open(d.path(), None).unwrap().audit();
    audit.warnings.retain(|w| !w.contains("pixels a side"));
    assert!(audit.problems.is_empty() && audit.warnings.is_empty(), "{audit:?}");
}

/// Images under `MIN_SIDE` pixels a side: one warning per category and split, naming the
/// smallest; images of a usable size none.
#[test]
fn tiny_images_are_warned_about() {
    let d = tempdir().unwrap();
    let r = d.path();
    let grey = |_, _| [90, 90, 90];
    for c in ["a", "b"] {
        for f in ["train/good/000.png", "train/good/001.png", "test/good/000.png", "test/crack/000.png"] {
            png_rgb(&r.join(c).join(f), 40, 40, grey);
        }
        png_mask(&r.join(c).join("ground_truth/crack/000_mask.png"), 40, 40, &[(1, 1)], 255);
    }
    let audit = Dataset::open(r, None).unwrap().audit();
    assert!(audit.problems.is_empty() && audit.warnings.is_empty(), "{audit:?}");
    png_rgb(&r.join("a/train/good/001.png"), 1, 1, grey);
    png_rgb(&r.join("a/train/good/002.png"), 300, 2, grey);
    let audit = Dataset::open(r, None).unwrap().audit();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    assert_eq!(audit.warnings.len(), 1, "{:?}", audit.warnings);
    let w = &audit.warnings[0];
    assert!(w.contains("\"a\"") && w.contains("2 training image(s)") && w.contains("001.png, 1 x 1"), "{w}");
    assert!(w.contains(&format!("under {} pixels a side", pnpt_data::dataset::MIN_SIDE)), "{w}");
}
