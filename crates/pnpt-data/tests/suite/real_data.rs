//! The shared `ad13` benchmark (13 real categories, MVTec layout), when present.
use std::path::PathBuf;

use pnpt_data::{Dataset, Preprocess, load_chw, load_mask};

fn root() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/ad13");
    if p.is_dir() {
        Some(p)
    } else {
        println!("skipped: {} is absent", p.display());
        None
    }
}

#[test]
fn ad13_reads_completely() {
    let Some(root) = root() else { return };
    let ds = Dataset::open(&root, None).unwrap();
    assert_eq!(ds.categories.len(), 13);
    let bottle = ds.category("bottle").unwrap();
    assert_eq!((bottle.train.len(), bottle.test.len()), (209, 83));
    assert_eq!(bottle.defects(), ["broken_large", "broken_small", "contamination", "good"]);
    assert_eq!(bottle.test.iter().filter(|s| !s.is_anomalous()).count(), 20);
    for c in ds.categories.iter().filter(|c| c.name.starts_with("paper_")) {
        assert_eq!((c.train.len(), c.test.len()), (32, 64), "{}", c.name);
    }
    for c in &ds.categories {
        for s in &c.test {
            assert_eq!(s.is_anomalous(), !s.masks.is_empty(), "{}", s.path.display());
        }
    }
    // Every mask has its image's size.
    ds.check().unwrap();
    // Mixed 256/128 sources become one input size; an anomalous mask is non-empty.
    let pre = Preprocess::imagenet(256);
    let paper = &ds.category("paper_bdp01").unwrap().train[0];
    let x = load_chw(&[bottle.train[0].clone(), paper.clone()], &pre).unwrap();
    assert_eq!(x.len(), 2 * 3 * 256 * 256);
    assert!(x.iter().all(|v| v.is_finite() && v.abs() < 3.0));
    let bad = bottle.test.iter().find(|s| s.is_anomalous()).unwrap();
    assert!(load_mask(bad, 256).unwrap().contains(&1));
}
