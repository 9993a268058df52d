//! One broken fixture per `DataError` case; each message must name the path.
use std::fs;
use std::path::Path;

use burn::backend::Flex;
use pnpt_data::{BatchIter, DataError, Dataset, Preprocess, Sample, decode_rgb, image_size, load_images, load_mask};
use tempfile::tempdir;

use crate::{bytes, png, png_mask, png_rgb};

fn names(err: &DataError, p: &Path) {
    let msg = err.to_string();
    assert!(msg.contains(&p.display().to_string()), "message {msg:?} does not name {}", p.display());
}

/// A minimal valid category.
fn category(r: &Path, name: &str) {
    png(&r.join(name).join("train/good/000.png"));
    png(&r.join(name).join("test/good/000.png"));
}

#[test]
fn missing_root() {
    let d = tempdir().unwrap();
    let p = d.path().join("nope");
    let e = Dataset::open(&p, None).unwrap_err();
    assert!(matches!(&e, DataError::MissingRoot { path } if path == &p), "{e:?}");
    names(&e, &p);
    // A file is not a root either.
    let f = bytes(&d.path().join("file"), b"x");
    assert!(matches!(Dataset::open(&f, None), Err(DataError::MissingRoot { .. })));
}

#[test]
fn missing_split_folders() {
    let d = tempdir().unwrap();
    let r = d.path();
    png(&r.join("a/train/good/000.png")); // no test/
    let e = Dataset::open(r, None).unwrap_err();
    assert!(
        matches!(&e, DataError::MissingSplit { path, category } if path == &r.join("a/test") && category == "a"),
        "{e:?}"
    );
    names(&e, &r.join("a/test"));

    let d = tempdir().unwrap();
    let r = d.path();
    png(&r.join("b/test/good/000.png")); // no train/
    let e = Dataset::open(r, None).unwrap_err();
    assert!(matches!(&e, DataError::MissingSplit { path, .. } if path == &r.join("b/train")), "{e:?}");

    // A requested folder that is not a category says which split is missing.
    category(r, "ok");
    fs::create_dir_all(r.join("plain")).unwrap();
    let e = Dataset::open(r, Some(&["plain".to_string()])).unwrap_err();
    assert!(matches!(&e, DataError::MissingSplit { path, .. } if path == &r.join("plain/train")), "{e:?}");
}

#[test]
fn category_without_training_images() {
    let d = tempdir().unwrap();
    let r = d.path();
    png(&r.join("a/test/good/000.png"));
    fs::create_dir_all(r.join("a/train/good")).unwrap();
    bytes(&r.join("a/train/good/readme.txt"), b"not an image");
    let e = Dataset::open(r, None).unwrap_err();
    assert!(
        matches!(&e, DataError::NoTrainImages { path, category } if path == &r.join("a/train/good") && category == "a"),
        "{e:?}"
    );
    names(&e, &r.join("a/train/good"));
    // train/ without good/ at all: same error.
    fs::remove_dir_all(r.join("a/train/good")).unwrap();
    assert!(matches!(Dataset::open(r, None), Err(DataError::NoTrainImages { .. })));
}

#[test]
fn anomalous_image_without_mask() {
    let d = tempdir().unwrap();
    let r = d.path();
    category(r, "a");
    let img = png(&r.join("a/test/crack/000.png"));
    png_mask(&r.join("a/ground_truth/crack/001_mask.png"), 4, 4, &[], 255); // wrong stem
    let e = Dataset::open(r, None).unwrap_err();
    match &e {
        DataError::MissingMask { path, expected } => {
            assert_eq!(path, &img);
            assert_eq!(expected, &r.join("a/ground_truth/crack/000_mask.png"));
        }
        other => panic!("{other:?}"),
    }
    names(&e, &img);
    // An empty LOCO mask folder does not count as a mask either.
    fs::create_dir_all(r.join("a/ground_truth/crack/000")).unwrap();
    assert!(matches!(Dataset::open(r, None), Err(DataError::MissingMask { .. })));
}

#[test]
fn mask_of_different_size() {
    let d = tempdir().unwrap();
    let r = d.path();
    category(r, "a");
    let img = png(&r.join("a/test/crack/000.png")); // 4×4
    let mask = png_mask(&r.join("a/ground_truth/crack/000_mask.png"), 8, 4, &[], 255);
    let ds = Dataset::open(r, None).unwrap(); // existence only
    let e = ds.check().unwrap_err();
    assert!(
        matches!(&e, DataError::MaskSizeMismatch { path, mask: m, image_size: (4, 4), mask_size: (8, 4) } if path == &img && m == &mask),
        "{e:?}"
    );
    names(&e, &mask);
    let e = load_mask(&ds.categories[0].test[0], 16).unwrap_err();
    assert!(matches!(e, DataError::MaskSizeMismatch { .. }), "{e:?}");
    assert!(e.to_string().contains("8x4") && e.to_string().contains("4x4"), "{e}");
}

#[test]
fn zero_byte_file() {
    let d = tempdir().unwrap();
    let p = bytes(&d.path().join("empty.png"), b"");
    let e = decode_rgb(&p).unwrap_err();
    assert!(matches!(&e, DataError::EmptyFile { path } if path == &p), "{e:?}");
    names(&e, &p);
    assert!(matches!(image_size(&p), Err(DataError::EmptyFile { .. })));
    // Through a dataset: check() finds it without decoding pixels.
    let r = d.path().join("ds");
    category(&r, "a");
    bytes(&r.join("a/train/good/001.png"), b"");
    let e = Dataset::open(&r, None).unwrap().check().unwrap_err();
    assert!(matches!(&e, DataError::EmptyFile { path } if path.ends_with("001.png")), "{e:?}");
}

#[test]
fn truncated_and_garbage_files() {
    let d = tempdir().unwrap();
    let good = png_rgb(&d.path().join("good.png"), 32, 32, |x, y| [x as u8 * 7, y as u8 * 5, 3]);
    let all = fs::read(&good).unwrap();
    for cut in [8usize, 40, all.len() / 2, all.len() - 13] {
        let p = bytes(&d.path().join(format!("cut{cut}.png")), &all[..cut]);
        let e = decode_rgb(&p).unwrap_err();
        assert!(matches!(&e, DataError::Corrupt { path, .. } if path == &p), "cut {cut}: {e:?}");
        names(&e, &p);
    }
    let p = bytes(&d.path().join("garbage.png"), b"this is not a png at all, just text");
    let e = decode_rgb(&p).unwrap_err();
    assert!(matches!(&e, DataError::Corrupt { .. }), "{e:?}");
    names(&e, &p);
}

#[test]
fn unsupported_formats() {
    let d = tempdir().unwrap();
    // A GIF header: recognised, but not a supported format.
    let gif = bytes(&d.path().join("x.gif"), b"GIF89a\x01\x00\x01\x00\x00\x00\x00;");
    let e = decode_rgb(&gif).unwrap_err();
    assert!(matches!(&e, DataError::UnsupportedFormat { path, .. } if path == &gif), "{e:?}");
    names(&e, &gif);
    // Text under an unknown extension: no format at all.
    let txt = bytes(&d.path().join("x.txt"), b"hello world");
    let e = decode_rgb(&txt).unwrap_err();
    assert!(matches!(&e, DataError::UnsupportedFormat { .. }), "{e:?}");
    names(&e, &txt);
    // A TIFF hidden under .png is detected from its bytes.
    let tif = bytes(&d.path().join("t.png"), b"II*\0\x08\0\0\0\0\0\0\0\0\0\0\0");
    assert!(matches!(decode_rgb(&tif), Err(DataError::UnsupportedFormat { .. })), "{:?}", decode_rgb(&tif));
}

#[test]
fn empty_dataset() {
    let d = tempdir().unwrap();
    bytes(&d.path().join("license.txt"), b"x");
    fs::create_dir_all(d.path().join("not_a_category/images")).unwrap();
    let e = Dataset::open(d.path(), None).unwrap_err();
    assert!(matches!(&e, DataError::EmptyDataset { path } if path == d.path()), "{e:?}");
    names(&e, d.path());
    // Nothing to batch.
    let e = load_images::<Flex>(&[], &Preprocess::imagenet(8), &Default::default()).unwrap_err();
    assert!(matches!(e, DataError::NoSamples { .. }), "{e:?}");
}

#[test]
fn unknown_category() {
    let d = tempdir().unwrap();
    let r = d.path();
    category(r, "bottle");
    category(r, "cable");
    for bad in ["screw", "", "../x", "."] {
        let e = Dataset::open(r, Some(&["bottle".to_string(), bad.to_string()])).unwrap_err();
        match &e {
            DataError::UnknownCategory { name, available, .. } => {
                assert_eq!(name, bad);
                assert_eq!(available, "bottle, cable");
            }
            other => panic!("{bad:?}: {other:?}"),
        }
        names(&e, r);
    }
}

/// (The generator's invalid configurations are tested in pnpt-synth.)
#[test]
fn invalid_configurations() {
    let d = tempdir().unwrap();
    let s = Sample { path: png(&d.path().join("a.png")), category: "c".into(), defect: "good".into(), masks: vec![] };
    let e = BatchIter::<Flex>::new(&[s], &Preprocess::imagenet(8), 0, None, &Default::default()).err().unwrap();
    assert!(matches!(e, DataError::InvalidConfig { .. }), "{e:?}");
}

#[test]
fn first_failure_in_list_order_is_reported() {
    let d = tempdir().unwrap();
    let ok = png(&d.path().join("ok.png"));
    let empty = bytes(&d.path().join("empty.png"), b"");
    let junk = bytes(&d.path().join("junk.png"), b"junk junk junk");
    let s = |p: &Path| Sample { path: p.to_path_buf(), category: "c".into(), defect: "good".into(), masks: vec![] };
    let samples: Vec<Sample> = [&ok, &ok, &empty, &ok, &junk].iter().map(|p| s(p)).collect();
    for _ in 0..5 {
        let e = load_images::<Flex>(&samples, &Preprocess::imagenet(8), &Default::default()).unwrap_err();
        assert!(matches!(&e, DataError::EmptyFile { path } if path == &empty), "{e:?}");
    }
}
