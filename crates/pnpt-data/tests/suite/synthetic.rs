//! The synthetic generator: determinism, exact masks, sizes, speed and the cache.
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use pnpt_data::synthetic::{
    Defect, MIN_DELTA, STAMP_FILE, SynthKind, SynthSplit, SyntheticConfig, ensure_synthetic,
    generate, is_complete, render,
};
use pnpt_data::{Dataset, decode_rgb, load_mask};
use tempfile::tempdir;

fn small() -> SyntheticConfig {
    SyntheticConfig {
        size: 64,
        train_good: 3,
        test_good: 2,
        test_defective: 8,
        ..Default::default()
    }
}

fn all_files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn byte_identical_for_same_seed() {
    let (a, b, c) = (tempdir().unwrap(), tempdir().unwrap(), tempdir().unwrap());
    generate(a.path(), &small()).unwrap();
    generate(b.path(), &small()).unwrap();
    generate(
        c.path(),
        &SyntheticConfig {
            seed: 99,
            ..small()
        },
    )
    .unwrap();
    let (fa, fb, fc) = (
        all_files(a.path()),
        all_files(b.path()),
        all_files(c.path()),
    );
    assert_eq!(
        fa.len(),
        small().file_count() + 2,
        "images + masks + readme + stamp"
    );
    assert!(fa == fb, "same seed must give identical bytes");
    let differing = fa
        .iter()
        .filter(|(k, v)| k.extension().is_some_and(|e| e == "png") && fc[*k] != **v)
        .count();
    assert!(
        differing > small().file_count() * 9 / 10,
        "another seed changes the images ({differing})"
    );
}

#[test]
fn masks_are_exactly_the_changed_pixels() {
    let cfg = small();
    let mut mean_abs = Vec::new();
    for kind in SynthKind::ALL {
        let n = cfg.size as usize * cfg.size as usize;
        for &defect in kind.defects() {
            for i in 0..6 {
                let r = render(&cfg, kind, SynthSplit::TestDefect(defect), i);
                let mut changed = 0;
                let mut sum = 0u32;
                for p in 0..n {
                    let (a, b) = (
                        &r.clean.as_raw()[3 * p..3 * p + 3],
                        &r.image.as_raw()[3 * p..3 * p + 3],
                    );
                    let delta = (0..3)
                        .map(|c| (a[c] as i32 - b[c] as i32).unsigned_abs())
                        .max()
                        .unwrap();
                    let m = r.mask.as_raw()[p];
                    assert!(m == 0 || m == 255);
                    assert_eq!(
                        delta > 0,
                        m == 255,
                        "{kind:?} {defect:?} #{i} pixel {p}: delta {delta}, mask {m}"
                    );
                    if m == 255 {
                        assert!(delta >= MIN_DELTA as u32);
                        changed += 1;
                        sum += delta;
                    }
                }
                assert!(
                    changed >= 4,
                    "{kind:?} {defect:?} #{i}: only {changed} pixels"
                );
                assert!(
                    changed < n / 4,
                    "{kind:?} {defect:?} #{i}: {changed} pixels is not a local defect"
                );
                mean_abs.push(sum as f32 / changed as f32);
            }
        }
        for split in [SynthSplit::Train, SynthSplit::TestGood] {
            let r = render(&cfg, kind, split, 0);
            assert_eq!(r.clean, r.image);
            assert!(r.mask.as_raw().iter().all(|&m| m == 0));
        }
    }
    // A mix of subtle and clear defects.
    let min = mean_abs.iter().cloned().fold(f32::MAX, f32::min);
    let max = mean_abs.iter().cloned().fold(0.0, f32::max);
    assert!(min < 16.0 && max > 60.0, "defect strengths {min}..{max}");
}

#[test]
fn normal_images_vary() {
    let cfg = small();
    for kind in SynthKind::ALL {
        let imgs: Vec<_> = (0..4)
            .map(|i| render(&cfg, kind, SynthSplit::Train, i).image)
            .collect();
        let means: Vec<f32> = imgs
            .iter()
            .map(|im| im.as_raw().iter().map(|&v| v as f32).sum::<f32>() / im.len() as f32)
            .collect();
        for i in 1..4 {
            let differ = imgs[0]
                .as_raw()
                .iter()
                .zip(imgs[i].as_raw())
                .filter(|(a, b)| (**a as i32 - **b as i32).abs() > 8)
                .count();
            assert!(
                differ > imgs[0].len() / 5,
                "{kind:?}: train 0 and {i} differ in only {differ} values"
            );
        }
        let spread = means.iter().cloned().fold(f32::MIN, f32::max)
            - means.iter().cloned().fold(f32::MAX, f32::min);
        assert!(
            spread > 1.0,
            "{kind:?}: brightness does not vary ({means:?})"
        );
        // Train and test/good are different images.
        assert_ne!(render(&cfg, kind, SynthSplit::TestGood, 0).image, imgs[0]);
    }
}

#[test]
fn default_dataset_layout_size_and_speed() {
    let d = tempdir().unwrap();
    let cfg = SyntheticConfig::default();
    let t = Instant::now();
    generate(d.path(), &cfg).unwrap();
    let secs = t.elapsed().as_secs_f32();
    println!(
        "generated default synthetic set ({} files) in {secs:.2} s",
        cfg.file_count()
    );
    assert!(secs < 20.0, "generation took {secs} s");

    let bytes: usize = all_files(d.path()).values().map(Vec::len).sum();
    println!("on disk: {:.1} MB", bytes as f64 / 1e6);
    assert!(bytes < 40_000_000, "{bytes} bytes");
    let ds = Dataset::open(d.path(), None).unwrap();
    assert_eq!(ds.names(), ["bottle", "carpet", "screw", "weave", "wood"]);
    ds.check().unwrap();
    for c in &ds.categories {
        assert_eq!(c.train.len(), 48, "{}", c.name);
        assert_eq!(c.test.len(), 26, "{}", c.name);
        let kind = SynthKind::ALL.iter().find(|k| k.name() == c.name).unwrap();
        let mut want: Vec<String> = kind
            .defects()
            .iter()
            .map(|d| d.name().to_string())
            .collect();
        want.push("good".into());
        want.sort();
        assert_eq!(c.defects(), want);
        assert_eq!(c.test.iter().filter(|s| s.is_anomalous()).count(), 16);
        for s in c.test.iter().filter(|s| s.is_anomalous()) {
            assert_eq!(s.masks.len(), 1);
            assert!(
                load_mask(s, 128).unwrap().contains(&1),
                "{} has an empty mask",
                s.path.display()
            );
        }
    }
    // The files are exactly what `render` produces.
    let s = &ds
        .category("screw")
        .unwrap()
        .test
        .iter()
        .find(|s| s.defect == "missing")
        .unwrap();
    let r = render(
        &cfg,
        SynthKind::Screw,
        SynthSplit::TestDefect(Defect::Missing),
        0,
    );
    assert_eq!(decode_rgb(&s.path).unwrap(), r.image);
    let m = load_mask(s, 128).unwrap();
    assert!(
        m.iter()
            .zip(r.mask.as_raw())
            .all(|(a, b)| (*a == 1) == (*b == 255))
    );
}

#[test]
fn ensure_synthetic_caches_and_repairs() {
    let cache = tempdir().unwrap();
    let cfg = SyntheticConfig {
        size: 32,
        train_good: 2,
        test_good: 1,
        test_defective: 4,
        ..Default::default()
    };
    let root = ensure_synthetic(cache.path(), &cfg).unwrap();
    assert_eq!(root, cache.path().join(cfg.folder_name()));
    assert!(is_complete(&root, &cfg));
    // No partial folder is left behind.
    let entries: Vec<_> = fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");

    // Cached: a marker survives the second call.
    fs::write(root.join("marker"), b"x").unwrap();
    assert_eq!(ensure_synthetic(cache.path(), &cfg).unwrap(), root);
    assert!(root.join("marker").exists());

    // A deleted image makes the copy incomplete: regenerated from scratch.
    fs::remove_file(root.join("wood/train/good/001.png")).unwrap();
    assert!(!is_complete(&root, &cfg));
    ensure_synthetic(cache.path(), &cfg).unwrap();
    assert!(root.join("wood/train/good/001.png").exists() && !root.join("marker").exists());

    // A stamp from another generator version is stale.
    fs::write(root.join("marker"), b"x").unwrap();
    let stamp = fs::read_to_string(root.join(STAMP_FILE)).unwrap();
    fs::write(
        root.join(STAMP_FILE),
        stamp.replace("\"version\": ", "\"version\": 1000"),
    )
    .unwrap();
    assert!(!is_complete(&root, &cfg));
    ensure_synthetic(cache.path(), &cfg).unwrap();
    assert!(is_complete(&root, &cfg) && !root.join("marker").exists());

    // A half-written folder under the final name (no stamp) is replaced too.
    fs::remove_file(root.join(STAMP_FILE)).unwrap();
    ensure_synthetic(cache.path(), &cfg).unwrap();
    assert!(is_complete(&root, &cfg));

    // Another configuration gets its own folder.
    let other = SyntheticConfig {
        seed: 1,
        ..cfg.clone()
    };
    assert_ne!(ensure_synthetic(cache.path(), &other).unwrap(), root);
}

#[test]
fn default_cache_dir_honours_env() {
    // Only read here (setting env vars races other tests): the result is absolute or temp-based.
    let p = pnpt_data::default_cache_dir();
    assert!(!p.as_os_str().is_empty());
    if let Some(v) = std::env::var_os("PNPT_CACHE").filter(|v| !v.is_empty()) {
        assert_eq!(p, PathBuf::from(v));
    } else {
        assert!(
            p.ends_with("pnpt") || p.ends_with("pnpt-cache"),
            "{}",
            p.display()
        );
    }
}

/// Writes a contact sheet of the default set (per category: 4 normal images, then each defect
/// with its mask outlined in red) to `$PNPT_DATA_PREVIEW` (default `target/synthetic_preview.png`)
/// for eyeballing. `cargo test -p pnpt-data --test suite -- --ignored preview`.
#[test]
#[ignore]
fn preview_contact_sheet() {
    use pnpt_data::image::{Rgb, RgbImage};
    let cfg = SyntheticConfig::default();
    let s = cfg.size;
    let cols = 12u32;
    let mut sheet = RgbImage::new(cols * s, SynthKind::ALL.len() as u32 * s);
    for (row, kind) in SynthKind::ALL.iter().enumerate() {
        let mut tiles = Vec::new();
        for i in 0..4 {
            tiles.push(render(&cfg, *kind, SynthSplit::Train, i).image);
        }
        for (j, &d) in kind.defects().iter().enumerate() {
            let r = render(&cfg, *kind, SynthSplit::TestDefect(d), j);
            let mut outlined = r.image.clone();
            for (x, y, p) in outlined.enumerate_pixels_mut() {
                let on = |x: i64, y: i64| {
                    x >= 0
                        && y >= 0
                        && x < s as i64
                        && y < s as i64
                        && r.mask.get_pixel(x as u32, y as u32).0[0] > 0
                };
                let (xi, yi) = (x as i64, y as i64);
                if !on(xi, yi)
                    && (on(xi - 1, yi) || on(xi + 1, yi) || on(xi, yi - 1) || on(xi, yi + 1))
                {
                    *p = Rgb([255, 0, 0]);
                }
            }
            tiles.push(r.image);
            tiles.push(outlined);
        }
        for (c, t) in tiles.iter().enumerate() {
            pnpt_data::image::imageops::replace(
                &mut sheet,
                t,
                c as i64 * s as i64,
                row as i64 * s as i64,
            );
        }
    }
    let out = std::env::var_os("PNPT_DATA_PREVIEW")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/synthetic_preview.png")
        });
    sheet.save(&out).unwrap();
    println!("wrote {}", out.display());
}
