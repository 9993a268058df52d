//! The synthetic generator: determinism, exact and clearly visible defects, normal variation,
//! sizes, speed, the cache and invalid configurations.
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use pnpt_data::{DataError, Dataset, decode_rgb, load_mask};
use pnpt_synth::synthetic::{
    Defect, MIN_DELTA, Rendered, STAMP_FILE, SynthKind, SynthSplit, SyntheticConfig, ensure_synthetic, generate,
    is_complete, render,
};
use rayon::prelude::*;
use tempfile::tempdir;

fn small() -> SyntheticConfig {
    SyntheticConfig { size: 64, train_good: 3, test_good: 2, test_defective: 8, ..Default::default() }
}

fn all_files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_path_buf(), fs::read(&p).unwrap());
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
    generate(c.path(), &SyntheticConfig { seed: 99, ..small() }).unwrap();
    let (fa, fb, fc) = (all_files(a.path()), all_files(b.path()), all_files(c.path()));
    assert_eq!(fa.len(), small().file_count() + 2, "images + masks + readme + stamp");
    assert!(fa == fb, "same seed must give identical bytes");
    let differing = fa.iter().filter(|(k, v)| k.extension().is_some_and(|e| e == "png") && fc[*k] != **v).count();
    assert!(differing > small().file_count() * 9 / 10, "another seed changes the images ({differing})");
}

#[test]
fn masks_are_exactly_the_changed_pixels() {
    let cfg = small();
    let n = cfg.size as usize * cfg.size as usize;
    for kind in SynthKind::ALL {
        for &defect in kind.defects() {
            for i in 0..4 {
                let r = render(&cfg, kind, SynthSplit::TestDefect(defect), i);
                let stats = delta_stats(&r);
                for p in 0..n {
                    let delta = pixel_delta(&r, p);
                    let m = r.mask.as_raw()[p];
                    assert!(m == 0 || m == 255);
                    assert_eq!(delta > 0, m == 255, "{kind:?} {defect:?} #{i} pixel {p}: delta {delta}, mask {m}");
                    if m == 255 {
                        assert!(delta >= MIN_DELTA as u32);
                    }
                }
                assert!(stats.area >= 4, "{kind:?} {defect:?} #{i}: only {} pixels", stats.area);
                assert!(stats.area < n / 4, "{kind:?} {defect:?} #{i}: {} pixels is not a local defect", stats.area);
            }
        }
        for split in [SynthSplit::Train, SynthSplit::TestGood] {
            let r = render(&cfg, kind, split, 0);
            assert_eq!(r.clean, r.image);
            assert!(r.mask.as_raw().iter().all(|&m| m == 0));
        }
    }
}

/// Change of pixel `p` (grey levels, max over channels) between the clean and written image.
fn pixel_delta(r: &Rendered, p: usize) -> u32 {
    let (a, b) = (&r.clean.as_raw()[3 * p..3 * p + 3], &r.image.as_raw()[3 * p..3 * p + 3]);
    (0..3).map(|c| (a[c] as i32 - b[c] as i32).unsigned_abs()).max().unwrap()
}

struct DeltaStats {
    /// Masked pixels.
    area: usize,
    /// Mean change over the masked pixels.
    mean: f32,
}

fn delta_stats(r: &Rendered) -> DeltaStats {
    let (mut area, mut sum) = (0usize, 0u64);
    for (p, &m) in r.mask.as_raw().iter().enumerate() {
        if m != 0 {
            area += 1;
            sum += pixel_delta(r, p) as u64;
        }
    }
    DeltaStats { area, mean: if area == 0 { 0.0 } else { sum as f32 / area as f32 } }
}

/// The (kind, defect, index) of every defective test image `generate` writes for `cfg`.
fn defect_images(cfg: &SyntheticConfig) -> Vec<(SynthKind, Defect, usize)> {
    let mut out = Vec::new();
    for &kind in &cfg.categories {
        let defects = kind.defects();
        for d in 0..cfg.test_defective {
            out.push((kind, defects[d % defects.len()], d / defects.len()));
        }
    }
    out
}

/// Every defect of the default set is seen at a glance — at least 40 grey levels of
/// mean change over its mask, on at least 0.3 % of the image. Prints min/median per kind.
#[test]
fn every_default_defect_is_clearly_visible() {
    let cfg = SyntheticConfig::default();
    let n = (cfg.size * cfg.size) as f32;
    let images = defect_images(&cfg);
    assert_eq!(images.len(), 6 * 20);
    let stats: Vec<(SynthKind, Defect, usize, DeltaStats)> = images
        .par_iter()
        .map(|&(kind, defect, i)| {
            let r = render(&cfg, kind, SynthSplit::TestDefect(defect), i);
            (kind, defect, i, delta_stats(&r))
        })
        .collect();
    let mut failures = Vec::new();
    for (kind, defect, i, st) in &stats {
        if st.mean < 40.0 || (st.area as f32) < 0.003 * n {
            failures.push(format!("{kind:?} {defect:?} #{i}: mean |delta| {:.1}, area {} px", st.mean, st.area));
        }
    }
    for defect in Defect::ALL {
        let of: Vec<&DeltaStats> = stats.iter().filter(|s| s.1 == defect).map(|s| &s.3).collect();
        if of.is_empty() {
            continue;
        }
        let mut means: Vec<f32> = of.iter().map(|s| s.mean).collect();
        let mut areas: Vec<usize> = of.iter().map(|s| s.area).collect();
        means.sort_by(f32::total_cmp);
        areas.sort();
        println!(
            "{:8} n={:2}  mean|delta| min {:5.1} median {:5.1}  area min/median/max {:4} {:4} {:4} px ({:.2} / {:.2} / {:.2} %)",
            defect.name(),
            of.len(),
            means[0],
            means[means.len() / 2],
            areas[0],
            areas[areas.len() / 2],
            areas[areas.len() - 1],
            100.0 * areas[0] as f32 / n,
            100.0 * areas[areas.len() / 2] as f32 / n,
            100.0 * areas[areas.len() - 1] as f32 / n,
        );
    }
    assert!(failures.is_empty(), "too subtle:\n{}", failures.join("\n"));
}

/// Normal variation (lighting, pose, texture phase) is larger than what a defect does to the
/// whole image, so no global statistic tells normal from defective: per category, the AUROC of
/// the image mean and of the image standard deviation stays near chance.
#[test]
fn defects_are_not_separable_by_global_statistics() {
    let cfg = SyntheticConfig::default();
    let stat = |r: &Rendered| {
        let v = r.image.as_raw();
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        [mean, var.sqrt()]
    };
    for kind in SynthKind::ALL {
        let normal: Vec<[f64; 2]> = (0..20)
            .into_par_iter()
            .map(|i| stat(&render(&cfg, kind, SynthSplit::Train, i)))
            .chain((0..cfg.test_good).into_par_iter().map(|i| stat(&render(&cfg, kind, SynthSplit::TestGood, i))))
            .collect();
        let cat = SyntheticConfig { categories: vec![kind], ..cfg.clone() };
        let defective: Vec<[f64; 2]> = defect_images(&cat)
            .par_iter()
            .map(|&(kind, d, i)| stat(&render(&cfg, kind, SynthSplit::TestDefect(d), i)))
            .collect();
        for (j, name) in ["mean", "std"].iter().enumerate() {
            let mut wins = 0.0;
            for d in &defective {
                for n in &normal {
                    wins += if d[j] > n[j] {
                        1.0
                    } else if d[j] == n[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
            let auroc = wins / (defective.len() * normal.len()) as f64;
            println!("{kind:?}: AUROC of the image {name}: {auroc:.2}");
            assert!(
                (0.2..=0.8).contains(&auroc),
                "{kind:?}: the image {name} separates defective from normal (AUROC {auroc:.2})"
            );
        }
    }
}

/// A defect the category does not list is drawn as a kind it supports, never a panic or an
/// empty mask.
#[test]
fn unlisted_defects_fall_back() {
    let cfg = small();
    for kind in SynthKind::ALL {
        for defect in Defect::ALL {
            let r = render(&cfg, kind, SynthSplit::TestDefect(defect), 0);
            assert!(delta_stats(&r).area >= 4, "{kind:?} {defect:?}: empty mask");
        }
    }
}

#[test]
fn categories_are_three_textures_and_three_objects() {
    let textures: Vec<&str> = SynthKind::ALL.iter().filter(|k| k.is_texture()).map(|k| k.name()).collect();
    let objects: Vec<&str> = SynthKind::ALL.iter().filter(|k| !k.is_texture()).map(|k| k.name()).collect();
    assert_eq!(textures, ["weave", "wood", "carpet"]);
    assert_eq!(objects, ["bottle", "screw", "capsule"]);
    for kind in SynthKind::ALL {
        let d = kind.defects();
        assert!((4..=5).contains(&d.len()), "{kind:?}: {d:?}");
        // Structural defects only on objects; the bent tip is the screw's, the print the capsule's.
        for x in d {
            match x {
                Defect::Missing => assert!(!kind.is_texture()),
                Defect::Bent => assert_eq!(kind, SynthKind::Screw),
                Defect::Print => assert_eq!(kind, SynthKind::Capsule),
                _ => {}
            }
        }
    }
}

#[test]
fn normal_images_vary() {
    let cfg = small();
    for kind in SynthKind::ALL {
        let imgs: Vec<_> = (0..4).map(|i| render(&cfg, kind, SynthSplit::Train, i).image).collect();
        let means: Vec<f32> =
            imgs.iter().map(|im| im.as_raw().iter().map(|&v| v as f32).sum::<f32>() / im.len() as f32).collect();
        for i in 1..4 {
            let differ = imgs[0]
                .as_raw()
                .iter()
                .zip(imgs[i].as_raw())
                .filter(|(a, b)| (**a as i32 - **b as i32).abs() > 8)
                .count();
            assert!(differ > imgs[0].len() / 5, "{kind:?}: train 0 and {i} differ in only {differ} values");
        }
        let spread = means.iter().cloned().fold(f32::MIN, f32::max) - means.iter().cloned().fold(f32::MAX, f32::min);
        assert!(spread > 1.0, "{kind:?}: brightness does not vary ({means:?})");
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
    println!("generated default synthetic set ({} files) in {secs:.2} s", cfg.file_count());
    assert!(secs < 20.0, "generation took {secs} s");

    let bytes: usize = all_files(d.path()).values().map(Vec::len).sum();
    println!("on disk: {:.1} MB", bytes as f64 / 1e6);
    assert!(bytes < 40_000_000, "{bytes} bytes");
    let ds = Dataset::open(d.path(), None).unwrap();
    assert_eq!(ds.names(), ["bottle", "capsule", "carpet", "screw", "weave", "wood"]);
    ds.check().unwrap();
    for c in &ds.categories {
        assert_eq!(c.train.len(), 48, "{}", c.name);
        assert_eq!(c.test.len(), 30, "{}", c.name);
        let kind = SynthKind::ALL.iter().find(|k| k.name() == c.name).unwrap();
        let mut want: Vec<String> = kind.defects().iter().map(|d| d.name().to_string()).collect();
        want.push("good".into());
        want.sort();
        assert_eq!(c.defects(), want);
        assert_eq!(c.test.iter().filter(|s| s.is_anomalous()).count(), 20);
        for s in c.test.iter().filter(|s| s.is_anomalous()) {
            assert_eq!(s.masks.len(), 1);
            assert!(load_mask(s, 128).unwrap().contains(&1), "{} has an empty mask", s.path.display());
        }
    }
    // The files are exactly what `render` produces.
    let s = &ds.category("screw").unwrap().test.iter().find(|s| s.defect == "missing").unwrap();
    let r = render(&cfg, SynthKind::Screw, SynthSplit::TestDefect(Defect::Missing), 0);
    assert_eq!(decode_rgb(&s.path).unwrap(), r.image);
    let m = load_mask(s, 128).unwrap();
    assert!(m.iter().zip(r.mask.as_raw()).all(|(a, b)| (*a == 1) == (*b == 255)));
}

#[test]
fn ensure_synthetic_caches_and_repairs() {
    let cache = tempdir().unwrap();
    let cfg = SyntheticConfig { size: 32, train_good: 2, test_good: 1, test_defective: 4, ..Default::default() };
    let root = ensure_synthetic(cache.path(), &cfg).unwrap();
    assert_eq!(root, cache.path().join(cfg.folder_name()));
    assert!(is_complete(&root, &cfg));
    // No partial folder is left behind.
    let entries: Vec<_> = fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
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
    fs::write(root.join(STAMP_FILE), stamp.replace("\"version\": ", "\"version\": 1000")).unwrap();
    assert!(!is_complete(&root, &cfg));
    ensure_synthetic(cache.path(), &cfg).unwrap();
    assert!(is_complete(&root, &cfg) && !root.join("marker").exists());

    // A half-written folder under the final name (no stamp) is replaced too.
    fs::remove_file(root.join(STAMP_FILE)).unwrap();
    ensure_synthetic(cache.path(), &cfg).unwrap();
    assert!(is_complete(&root, &cfg));

    // Another configuration gets its own folder.
    let other = SyntheticConfig { seed: 1, ..cfg.clone() };
    assert_ne!(ensure_synthetic(cache.path(), &other).unwrap(), root);
}

#[test]
fn default_cache_dir_honours_env() {
    // Only read here (setting env vars races other tests): the result is absolute or temp-based.
    let p = pnpt_synth::default_cache_dir();
    assert!(!p.as_os_str().is_empty());
    if let Some(v) = std::env::var_os("PNPT_CACHE").filter(|v| !v.is_empty()) {
        assert_eq!(p, PathBuf::from(v));
    } else {
        assert!(p.ends_with("pnpt") || p.ends_with("pnpt-cache"), "{}", p.display());
    }
}

#[test]
fn invalid_configurations() {
    let d = tempdir().unwrap();
    let cfg = SyntheticConfig { size: 8, ..Default::default() };
    let e = generate(d.path(), &cfg).unwrap_err();
    assert!(matches!(&e, DataError::InvalidConfig { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&d.path().display().to_string()), "message {msg:?} does not name {}", d.path().display());
    let cfg = SyntheticConfig { categories: vec![], ..Default::default() };
    assert!(matches!(generate(d.path(), &cfg), Err(DataError::InvalidConfig { .. })));
}

/// Writes a contact sheet of the default set (per category: 4 normal images, then each defect
/// with its mask outlined in red) to `$PNPT_DATA_PREVIEW` (default `target/synthetic_preview.png`)
/// for eyeballing. `cargo test -p pnpt-synth --test synthetic -- --ignored preview`.
///
/// With `PNPT_DATA_PREVIEW_ONLY=<category>` it shows that category instead, one row per defect
/// kind with every default-set instance (image, then outlined); `PNPT_DATA_PREVIEW_SCALE=N`
/// enlarges the sheet N times (nearest neighbour) to see single pixels.
#[test]
#[ignore]
fn preview_contact_sheet() {
    use pnpt_data::image::{Rgb, RgbImage, imageops};
    let cfg = SyntheticConfig::default();
    let s = cfg.size;
    let outlined = |r: &Rendered| {
        let mut o = r.image.clone();
        for (x, y, p) in o.enumerate_pixels_mut() {
            let on = |x: i64, y: i64| {
                x >= 0 && y >= 0 && x < s as i64 && y < s as i64 && r.mask.get_pixel(x as u32, y as u32).0[0] > 0
            };
            let (xi, yi) = (x as i64, y as i64);
            if !on(xi, yi) && (on(xi - 1, yi) || on(xi + 1, yi) || on(xi, yi - 1) || on(xi, yi + 1)) {
                *p = Rgb([255, 0, 0]);
            }
        }
        o
    };
    let only = std::env::var("PNPT_DATA_PREVIEW_ONLY").ok();
    let rows: Vec<Vec<RgbImage>> =
        match only.as_deref().and_then(|name| SynthKind::ALL.into_iter().find(|k| k.name() == name)) {
            Some(kind) => {
                let per = cfg.test_defective.div_ceil(kind.defects().len());
                kind.defects()
                    .iter()
                    .map(|&d| {
                        (0..per)
                            .flat_map(|i| {
                                let r = render(&cfg, kind, SynthSplit::TestDefect(d), i);
                                [r.image.clone(), outlined(&r)]
                            })
                            .collect()
                    })
                    .collect()
            }
            None => SynthKind::ALL
                .iter()
                .map(|&kind| {
                    let mut tiles: Vec<RgbImage> =
                        (0..4).map(|i| render(&cfg, kind, SynthSplit::Train, i).image).collect();
                    for (j, &d) in kind.defects().iter().enumerate() {
                        let r = render(&cfg, kind, SynthSplit::TestDefect(d), j);
                        tiles.push(r.image.clone());
                        tiles.push(outlined(&r));
                    }
                    tiles
                })
                .collect(),
        };
    let cols = rows.iter().map(Vec::len).max().unwrap() as u32;
    let mut sheet = RgbImage::new(cols * s, rows.len() as u32 * s);
    for (row, tiles) in rows.iter().enumerate() {
        for (c, t) in tiles.iter().enumerate() {
            imageops::replace(&mut sheet, t, c as i64 * s as i64, row as i64 * s as i64);
        }
    }
    let scale: u32 = std::env::var("PNPT_DATA_PREVIEW_SCALE").ok().and_then(|v| v.parse().ok()).unwrap_or(1).max(1);
    if scale > 1 {
        sheet = imageops::resize(&sheet, sheet.width() * scale, sheet.height() * scale, imageops::FilterType::Nearest);
    }
    let out = std::env::var_os("PNPT_DATA_PREVIEW")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/synthetic_preview.png"));
    sheet.save(&out).unwrap();
    println!("wrote {}", out.display());
}
