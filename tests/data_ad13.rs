//! pnpt-data on the shared `ad13` benchmark (13 real categories in MVTec AD layout).
//! Skips with a message when the data folder is absent.
use std::path::PathBuf;

use pnpt_data::{DataError, Dataset, Preprocess, load_chw, load_mask};

fn ad13() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/ad13");
    if p.is_dir() {
        Some(p)
    } else {
        println!("skipped: {} is absent", p.display());
        None
    }
}

#[test]
fn ad13_has_13_categories_and_bottle_counts() {
    let Some(root) = ad13() else { return };
    let ds = Dataset::open(&root, None).unwrap();
    assert_eq!(ds.categories.len(), 13, "{:?}", ds.names());
    let bottle = ds.category("bottle").unwrap();
    assert_eq!(bottle.train.len(), 209);
    assert_eq!(bottle.test.len(), 83);
    assert_eq!(bottle.test.iter().filter(|s| s.is_anomalous()).count(), 63);
    assert_eq!(ds.num_train(), 209 + 12 * 32);
    assert_eq!(ds.num_test(), 83 + 12 * 64);
}

#[test]
fn ad13_every_anomalous_sample_has_a_mask_of_its_size() {
    let Some(root) = ad13() else { return };
    let ds = Dataset::open(&root, None).unwrap();
    for c in &ds.categories {
        for s in &c.test {
            assert_eq!(s.is_anomalous(), !s.masks.is_empty(), "{}", s.path.display());
        }
    }
    // Header-level check of every image and mask: readable, and mask size == image size.
    ds.check().unwrap();
    // Full decode of a few anomalous masks at the model size: binary and non-empty.
    for c in &ds.categories {
        let s = c.test.iter().find(|s| s.is_anomalous()).unwrap();
        let m = load_mask(s, 256).unwrap();
        assert_eq!(m.len(), 256 * 256);
        assert!(m.iter().all(|&v| v <= 1) && m.contains(&1), "{}", s.path.display());
    }
}

#[test]
fn ad13_subset_and_unknown_category() {
    let Some(root) = ad13() else { return };
    let only = ["paper_gla01".to_string(), "bottle".to_string()];
    let ds = Dataset::open(&root, Some(&only)).unwrap();
    assert_eq!(ds.names(), ["bottle", "paper_gla01"]);
    let x =
        load_chw(&[ds.categories[0].train[0].clone(), ds.categories[1].train[0].clone()], &Preprocess::imagenet(256))
            .unwrap();
    assert_eq!(x.len(), 2 * 3 * 256 * 256);
    let e = Dataset::open(&root, Some(&["cable".to_string()])).unwrap_err();
    assert!(matches!(e, DataError::UnknownCategory { .. }), "{e:?}");
}
