//! Hand-made MVTec AD, 3D-AD, LOCO and VisA trees → the exact expected sample lists.
use std::path::Path;

use pnpt_data::{Dataset, Sample, load_mask};
use tempfile::tempdir;

use crate::{bytes, png, png_mask, rel};

/// `(defect, image, masks)` of a split, relative to the root.
fn listing(root: &Path, samples: &[Sample]) -> Vec<(String, String, Vec<String>)> {
    samples
        .iter()
        .map(|s| (s.defect.clone(), rel(root, &s.path), s.masks.iter().map(|m| rel(root, m)).collect()))
        .collect()
}

fn row(defect: &str, img: &str, masks: &[&str]) -> (String, String, Vec<String>) {
    (defect.into(), img.into(), masks.iter().map(|m| m.to_string()).collect())
}

fn mvtec_ad_tree(r: &Path) {
    for f in [
        "cable/train/good/001.png",
        "cable/train/good/000.png",
        "cable/test/good/000.png",
        "cable/test/crack/001.png",
        "cable/test/crack/000.png",
        "bottle/train/good/000.png",
        "bottle/test/good/000.png",
    ] {
        png(&r.join(f));
    }
    png_mask(&r.join("cable/ground_truth/crack/000_mask.png"), 4, 4, &[(1, 1)], 255);
    png_mask(&r.join("cable/ground_truth/crack/001_mask.png"), 4, 4, &[], 255);
    // Stray files and folders that are not categories.
    bytes(&r.join("readme.txt"), b"hello");
    bytes(&r.join("cable/license.txt"), b"CC");
    bytes(&r.join("cable/train/good/notes.txt"), b"x");
    bytes(&r.join("cable/train/good/.hidden.png"), b"x");
    std::fs::create_dir_all(r.join("docs/images")).unwrap();
}

#[test]
fn mvtec_ad_layout() {
    let d = tempdir().unwrap();
    let r = d.path();
    mvtec_ad_tree(r);
    let ds = Dataset::open(r, None).unwrap();
    assert_eq!(ds.names(), ["bottle", "cable"]);
    let cable = ds.category("cable").unwrap();
    assert_eq!(
        listing(r, &cable.train),
        [row("good", "cable/train/good/000.png", &[]), row("good", "cable/train/good/001.png", &[])]
    );
    assert_eq!(
        listing(r, &cable.test),
        [
            row("crack", "cable/test/crack/000.png", &["cable/ground_truth/crack/000_mask.png"]),
            row("crack", "cable/test/crack/001.png", &["cable/ground_truth/crack/001_mask.png"]),
            row("good", "cable/test/good/000.png", &[]),
        ]
    );
    assert!(cable.validation.is_empty());
    assert_eq!(cable.defects(), ["crack", "good"]);
    assert!(cable.test[0].is_anomalous() && !cable.test[2].is_anomalous());
    assert_eq!(cable.test[1].stem(), "001");
    assert_eq!((ds.num_train(), ds.num_test()), (3, 4));
    assert_eq!(ds.train_samples()[0].category, "bottle");
    ds.check().unwrap();
    // Pixel (1,1) of the 4×4 mask, at 4×4.
    let m = load_mask(&cable.test[0], 4).unwrap();
    assert_eq!(m.iter().position(|&v| v == 1), Some(5));

    // Subset: only the named category, duplicates collapse.
    let sub = Dataset::open(r, Some(&["cable".to_string(), "cable".to_string()])).unwrap();
    assert_eq!(sub.names(), ["cable"]);
    assert_eq!(sub.categories[0], *cable);
}

#[test]
fn mvtec_3d_ad_rgb_layout() {
    let d = tempdir().unwrap();
    let r = d.path();
    for f in [
        "cookie/train/good/rgb/001.png",
        "cookie/train/good/rgb/000.png",
        "cookie/validation/good/rgb/000.png",
        "cookie/test/good/rgb/000.png",
        "cookie/test/hole/rgb/000.png",
        "cookie/test/hole/rgb/001.png",
    ] {
        png(&r.join(f));
    }
    // 3D-AD also ships all-zero gt for good images and xyz tiffs: both ignored.
    png_mask(&r.join("cookie/test/good/gt/000.png"), 4, 4, &[], 255);
    png_mask(&r.join("cookie/test/hole/gt/000.png"), 4, 4, &[(0, 0)], 255);
    png_mask(&r.join("cookie/test/hole/gt/001.png"), 4, 4, &[(3, 0)], 255);
    bytes(&r.join("cookie/train/good/xyz/000.tiff"), b"II*\0");
    bytes(&r.join("cookie/test/hole/xyz/000.tiff"), b"II*\0");
    let ds = Dataset::open(r, None).unwrap();
    let c = &ds.categories[0];
    assert_eq!(c.name, "cookie");
    assert_eq!(
        listing(r, &c.train),
        [row("good", "cookie/train/good/rgb/000.png", &[]), row("good", "cookie/train/good/rgb/001.png", &[])]
    );
    assert_eq!(listing(r, &c.validation), [row("good", "cookie/validation/good/rgb/000.png", &[])]);
    assert_eq!(
        listing(r, &c.test),
        [
            row("good", "cookie/test/good/rgb/000.png", &[]),
            row("hole", "cookie/test/hole/rgb/000.png", &["cookie/test/hole/gt/000.png"]),
            row("hole", "cookie/test/hole/rgb/001.png", &["cookie/test/hole/gt/001.png"]),
        ]
    );
    ds.check().unwrap();
    assert_eq!(load_mask(&c.test[2], 4).unwrap().iter().position(|&v| v == 1), Some(3));
}

#[test]
fn mvtec_loco_layout_merges_masks() {
    let d = tempdir().unwrap();
    let r = d.path();
    for f in [
        "box/train/good/000.png",
        "box/validation/good/000.png",
        "box/test/good/000.png",
        "box/test/logical_anomalies/000.png",
        "box/test/logical_anomalies/001.png",
        "box/test/structural_anomalies/000.png",
    ] {
        png(&r.join(f));
    }
    png_mask(&r.join("box/ground_truth/logical_anomalies/000/000.png"), 4, 4, &[(0, 0)], 243);
    png_mask(&r.join("box/ground_truth/logical_anomalies/000/001.png"), 4, 4, &[(3, 3)], 12);
    png_mask(&r.join("box/ground_truth/logical_anomalies/001/000.png"), 4, 4, &[(2, 1)], 255);
    png_mask(&r.join("box/ground_truth/structural_anomalies/000/000.png"), 4, 4, &[(1, 2)], 255);
    let ds = Dataset::open(r, None).unwrap();
    let c = &ds.categories[0];
    assert_eq!(listing(r, &c.validation), [row("good", "box/validation/good/000.png", &[])]);
    assert_eq!(
        listing(r, &c.test),
        [
            row("good", "box/test/good/000.png", &[]),
            row(
                "logical_anomalies",
                "box/test/logical_anomalies/000.png",
                &["box/ground_truth/logical_anomalies/000/000.png", "box/ground_truth/logical_anomalies/000/001.png"]
            ),
            row(
                "logical_anomalies",
                "box/test/logical_anomalies/001.png",
                &["box/ground_truth/logical_anomalies/001/000.png"]
            ),
            row(
                "structural_anomalies",
                "box/test/structural_anomalies/000.png",
                &["box/ground_truth/structural_anomalies/000/000.png"]
            ),
        ]
    );
    ds.check().unwrap();
    let m = load_mask(&c.test[1], 4).unwrap();
    let on: Vec<usize> = (0..16).filter(|&i| m[i] == 1).collect();
    assert_eq!(on, [0, 15]);
}

#[test]
fn visa_style_masks_without_suffix() {
    let d = tempdir().unwrap();
    let r = d.path();
    png(&r.join("pcb1/train/good/0000.png"));
    png(&r.join("pcb1/test/bad/0001.png"));
    png_mask(&r.join("pcb1/ground_truth/bad/0001.png"), 4, 4, &[(2, 2)], 255);
    let ds = Dataset::open(r, None).unwrap();
    assert_eq!(
        listing(r, &ds.categories[0].test),
        [row("bad", "pcb1/test/bad/0001.png", &["pcb1/ground_truth/bad/0001.png"])]
    );
}
