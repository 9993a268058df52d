//! Invariants of the pseudo-anomalies: exact masks, area bounds, placement on the object,
//! determinism, kind schedule and configuration errors.
use std::collections::HashSet;

use image::Rgb;

use super::layout::{dilate, erode};
use super::*;

fn hash(x: u32, y: u32, k: u32) -> u32 {
    let mut h = x.wrapping_mul(0x9E37_79B1) ^ y.wrapping_mul(0x85EB_CA77) ^ k.wrapping_mul(0xC2B2_AE3D);
    h ^= h >> 15;
    h = h.wrapping_mul(0x2C1B_3C6D);
    h ^ (h >> 12)
}

/// A colourful stationary texture (stripes, waves and noise) filling the image.
fn texture(s: u32, k: u32) -> RgbImage {
    RgbImage::from_fn(s, s, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let n = (hash(x, y, k) % 21) as f32 - 10.0;
        Rgb([
            (120.0 + 50.0 * (fx * 0.4 + k as f32).sin() + n) as u8,
            (110.0 + 40.0 * (fy * 0.3).sin() + n) as u8,
            (90.0 + 30.0 * ((fx + fy) * 0.2).sin() + n) as u8,
        ])
    })
}

const DISC_R: f32 = 0.35;

/// A shaded, slightly textured bright disc of radius `DISC_R * s` at the centre, on a noisy
/// near-black background.
fn disc(s: u32, k: u32) -> RgbImage {
    let c = s as f32 / 2.0;
    let r = DISC_R * s as f32;
    RgbImage::from_fn(s, s, |x, y| {
        let (dx, dy) = (x as f32 + 0.5 - c, y as f32 + 0.5 - c);
        let d = dx.hypot(dy);
        let n = (hash(x, y, k) % 5) as u8;
        if d <= r {
            let shade = 1.0 - 0.3 * d / r;
            Rgb([
                (210.0 * shade) as u8 + n,
                (185.0 * shade + 10.0 * (x as f32 * 0.5).sin()) as u8 + n,
                (150.0 * shade) as u8 + n,
            ])
        } else {
            Rgb([n, n, n])
        }
    })
}

fn cfg(size: u32, per_image: usize, seed: u64) -> PseudoAnomalyConfig {
    PseudoAnomalyConfig { size, per_image, seed }
}

/// Checks the mask invariants against the clean image; returns the number of mask pixels.
fn check_mask(clean: &RgbImage, a: &PseudoAnomaly) -> usize {
    assert_eq!(a.image.dimensions(), clean.dimensions());
    let n = (clean.width() * clean.height()) as usize;
    assert_eq!(a.mask.len(), n);
    let mut count = 0;
    for (i, (p, q)) in a.image.pixels().zip(clean.pixels()).enumerate() {
        let d = (0..3).map(|c| p.0[c].abs_diff(q.0[c])).max().unwrap();
        match a.mask[i] {
            0 => assert_eq!(d, 0, "{} changed pixel {i} outside its mask", a.kind),
            1 => {
                assert!(d >= MIN_DELTA, "{} mask pixel {i} changed by only {d}", a.kind);
                count += 1;
            }
            v => panic!("mask value {v} is not 0/1"),
        }
    }
    count
}

fn check_area(a: &PseudoAnomaly, count: usize) {
    let frac = count as f32 / a.mask.len() as f32;
    assert!(
        (MIN_AREA_FRACTION..=MAX_AREA_FRACTION).contains(&frac),
        "{} covers {:.3} % of the image",
        a.kind,
        100.0 * frac
    );
}

#[test]
fn same_seed_same_bytes_whatever_the_thread_count() {
    let normals = [texture(128, 1), disc(128, 2)];
    let donors = [texture(128, 3)];
    let c = cfg(128, 3, 11);
    let a = synthesize(&normals, &donors, &c).unwrap();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let b = pool.install(|| synthesize(&normals, &donors, &c)).unwrap();
    assert_eq!(a.len(), 6);
    assert_eq!(a, b);
}

#[test]
fn another_seed_gives_other_output() {
    let normals = [texture(128, 1), disc(128, 2)];
    let a = synthesize(&normals, &[], &cfg(128, 3, 11)).unwrap();
    let b = synthesize(&normals, &[], &cfg(128, 3, 12)).unwrap();
    let differing = a.iter().zip(&b).filter(|(x, y)| x.image != y.image).count();
    assert!(differing >= 5, "only {differing} of 6 images differ");
    // Same cycle of kinds: the seed moves the defects, not the kind schedule.
    let kinds = |v: &[PseudoAnomaly]| v.iter().map(|x| x.kind).collect::<Vec<_>>();
    assert_eq!(kinds(&a), kinds(&b));
}

#[test]
fn texture_masks_are_exactly_the_changes_and_sized() {
    let normal = texture(128, 5);
    let out = synthesize(std::slice::from_ref(&normal), &[], &cfg(128, 10, 3)).unwrap();
    assert_eq!(out.len(), 10);
    for a in &out {
        assert_eq!(a.source, 0);
        let count = check_mask(&normal, a);
        check_area(a, count);
    }
}

#[test]
fn object_masks_are_exactly_the_changes_sized_and_on_the_object() {
    let s = 128u32;
    let normals = [disc(s, 1), disc(s, 2)];
    let out = synthesize(&normals, &[], &cfg(s, 10, 5)).unwrap();
    assert_eq!(out.len(), 20);
    let c = s as f32 / 2.0;
    let r = DISC_R * s as f32 + 3.0;
    for a in &out {
        let count = check_mask(&normals[a.source], a);
        check_area(a, count);
        let on = a
            .mask
            .iter()
            .enumerate()
            .filter(|&(i, &m)| {
                let (x, y) = ((i as u32 % s) as f32 + 0.5, (i as u32 / s) as f32 + 0.5);
                m == 1 && (x - c).hypot(y - c) <= r
            })
            .count();
        assert!(on as f32 >= 0.9 * count as f32, "{}: only {on} of {count} mask pixels on the disc", a.kind);
    }
}

#[test]
fn small_object_on_black_gets_its_defects() {
    // A disc far from the centre and much smaller: placement must find it, not the middle.
    let s = 128u32;
    let img = RgbImage::from_fn(s, s, |x, y| {
        let d = (x as f32 + 0.5 - 96.0).hypot(y as f32 + 0.5 - 36.0);
        if d <= 20.0 { Rgb([180, 200, 90]) } else { Rgb([0, 0, 0]) }
    });
    let out = synthesize(std::slice::from_ref(&img), &[], &cfg(s, 5, 9)).unwrap();
    for a in &out {
        let count = check_mask(&img, a);
        let on = (0..a.mask.len())
            .filter(|&i| {
                let (x, y) = ((i as u32 % s) as f32 + 0.5, (i as u32 / s) as f32 + 0.5);
                a.mask[i] == 1 && (x - 96.0).hypot(y - 36.0) <= 23.0
            })
            .count();
        assert!(on as f32 >= 0.9 * count as f32, "{}: {on}/{count}", a.kind);
    }
}

#[test]
fn every_kind_appears_and_outputs_are_in_source_order() {
    let all: HashSet<PseudoKind> = PseudoKind::ALL.into_iter().collect();
    let k = PseudoKind::ALL.len();
    for (n_img, per) in [(k, 1usize), (1, k), (3, k.div_ceil(3))] {
        let normals: Vec<RgbImage> = (0..n_img as u32).map(|k| texture(64, k)).collect();
        let out = synthesize(&normals, &[], &cfg(64, per, 1)).unwrap();
        assert_eq!(out.len(), n_img * per);
        for (g, a) in out.iter().enumerate() {
            assert_eq!(a.source, g / per);
            check_mask(&normals[a.source], a);
        }
        let kinds: HashSet<PseudoKind> = out.iter().map(|a| a.kind).collect();
        assert_eq!(kinds, all, "{n_img} images x {per}");
    }
}

#[test]
fn invisible_kind_is_replaced_by_a_visible_one() {
    // On pure black, cut-paste (black onto black, any gain) cannot change anything.
    let black = RgbImage::new(64, 64);
    let out = synthesize(std::slice::from_ref(&black), &[], &cfg(64, 5, 2)).unwrap();
    assert_eq!(out.len(), 5);
    assert_ne!(out[0].kind, PseudoKind::CutPaste);
    for a in &out {
        assert!(check_mask(&black, a) > 0);
    }
}

#[test]
fn cut_paste_takes_its_patch_from_a_donor() {
    // A flat grey surface and a saturated red donor: pasted pixels must be red.
    let grey = RgbImage::from_fn(64, 64, |x, y| {
        let n = (hash(x, y, 1) % 9) as u8;
        Rgb([120 + n, 120 + n, 120 + n])
    });
    let red = RgbImage::from_pixel(64, 64, Rgb([220, 30, 30]));
    let out = synthesize(std::slice::from_ref(&grey), &[red], &cfg(64, 1, 4)).unwrap();
    let a = &out[0];
    assert_eq!(a.kind, PseudoKind::CutPaste);
    let count = check_mask(&grey, a);
    let red_px = a.image.pixels().zip(&a.mask).filter(|(p, m)| **m == 1 && p.0[0] as i32 > p.0[1] as i32 + 100).count();
    assert!(red_px as f32 >= 0.9 * count as f32, "{red_px}/{count}");
}

#[test]
fn any_input_size_is_resized_first() {
    let img = disc(100, 3);
    let wide = image::imageops::resize(&img, 150, 90, FilterType::Nearest);
    let r = resize_to(&wide, 64);
    assert_eq!(r.dimensions(), (64, 64));
    assert_eq!(resize_to(&r, 64), r);
    let out = synthesize(&[wide], &[img], &cfg(64, 3, 8)).unwrap();
    for a in &out {
        check_mask(&r, a);
    }
}

#[test]
fn bad_configs_are_errors() {
    let ok = [texture(32, 1)];
    let msg = |r: Result<Vec<PseudoAnomaly>, DataError>| match r {
        Err(e @ DataError::InvalidPseudoAnomaly { .. }) => e.to_string(),
        other => panic!("expected InvalidPseudoAnomaly, got {other:?}"),
    };
    assert!(msg(synthesize(&ok, &[], &cfg(15, 1, 0))).contains("size 15"));
    assert!(msg(synthesize(&ok, &[], &cfg(8193, 1, 0))).contains("size 8193"));
    assert!(msg(synthesize(&ok, &[], &cfg(32, 0, 0))).contains("per_image"));
    assert!(msg(synthesize(&[], &[], &cfg(32, 1, 0))).contains("no normal images"));
    let empty = RgbImage::new(0, 5);
    assert!(msg(synthesize(&[ok[0].clone(), empty.clone()], &[], &cfg(32, 1, 0))).contains("normal image #1 is empty"));
    assert!(msg(synthesize(&ok, &[empty], &cfg(32, 1, 0))).contains("donor image #0"));
    assert!(msg(synthesize(&ok, &[], &cfg(32, MAX_OUTPUTS + 1, 0))).contains("per_image is more"));
    assert!(msg(synthesize(&ok, &[], &cfg(32, usize::MAX, 0))).contains("per_image is more"));
    // The smallest accepted size works.
    assert_eq!(synthesize(&ok, &[], &cfg(16, 1, 0)).unwrap().len(), 1);
}

#[test]
fn layout_tells_object_texture_and_flat_apart() {
    let object = Prepared::new(disc(128, 1));
    assert!(object.allowed.is_some() && object.centres.is_some());
    let tex = Prepared::new(texture(128, 1));
    assert!(tex.allowed.is_none() && tex.centres.is_some());
    let flat = Prepared::new(RgbImage::from_pixel(64, 64, Rgb([90, 90, 90])));
    assert!(flat.centres.is_none() && flat.allowed.is_none());
    // A dot under 2 % of the image: treated as flat (defects anywhere).
    let dot = Prepared::new(RgbImage::from_fn(64, 64, |x, y| {
        if (28..33).contains(&x) && (28..33).contains(&y) { Rgb([255; 3]) } else { Rgb([0; 3]) }
    }));
    assert!(dot.centres.is_none());
}

#[test]
fn morphology_round_trips_a_point() {
    let s = 9;
    let mut m = vec![false; s * s];
    m[4 * s + 4] = true;
    let d = dilate(&m, s, 1);
    assert_eq!(d.iter().filter(|&&v| v).count(), 9);
    assert!(d[3 * s + 3] && d[5 * s + 5] && !d[2 * s + 4]);
    assert_eq!(erode(&d, s, 1), m);
}

#[test]
fn names_and_serde() {
    assert_eq!(PseudoKind::ColourSpot.to_string(), "colour_spot");
    assert_eq!(serde_json::to_string(&PseudoKind::CutPaste).unwrap(), "\"cut_paste\"");
    let k: PseudoKind = serde_json::from_str("\"hole\"").unwrap();
    assert_eq!(k, PseudoKind::Hole);
    let c: PseudoAnomalyConfig = serde_json::from_str("{\"per_image\": 3}").unwrap();
    assert_eq!(c, PseudoAnomalyConfig { per_image: 3, ..Default::default() });
    assert_eq!(PseudoAnomalyConfig::default().size, 256);
    assert_eq!(PseudoAnomalyConfig::default().per_image, 2);
}

#[test]
fn defects_come_small_and_full_size() {
    // Half the defects are shrunk 3–16× in area: a set of 40 has both kinds, with areas spread
    // over more than a factor of 10.
    let normal = texture(256, 9);
    let out = synthesize(std::slice::from_ref(&normal), &[], &cfg(256, 40, 4)).unwrap();
    let fracs: Vec<f32> = out.iter().map(|a| check_mask(&normal, a) as f32 / a.mask.len() as f32).collect();
    let small = fracs.iter().filter(|&&f| f < 0.002).count();
    let large = fracs.iter().filter(|&&f| f > 0.004).count();
    assert!(small >= 8 && large >= 8, "{small} small and {large} large of 40: {fracs:?}");
    let (lo, hi) = fracs.iter().fold((1f32, 0f32), |(lo, hi), &f| (lo.min(f), hi.max(f)));
    assert!(hi / lo > 10.0, "areas {lo}..{hi}");
}

#[test]
fn hard_kinds_stay_subtle() {
    // One textured image, every kind once: the blemish changes no channel by more than
    // 20 grey levels x the 1.15 tint (plus rounding), and the warp only moves what is there,
    // so its pixels stay within the clean image's range of each channel.
    let img = texture(96, 3);
    let out = synthesize(std::slice::from_ref(&img), &[], &cfg(96, PseudoKind::ALL.len(), 11)).unwrap();
    let mut seen = HashSet::new();
    let (mut lo, mut hi) = ([255u8; 3], [0u8; 3]);
    for p in img.pixels() {
        for c in 0..3 {
            lo[c] = lo[c].min(p.0[c]);
            hi[c] = hi[c].max(p.0[c]);
        }
    }
    for a in &out {
        check_mask(&img, a);
        seen.insert(a.kind);
        let changed = a.image.pixels().zip(img.pixels()).zip(&a.mask).filter(|(_, m)| **m == 1).map(|(pq, _)| pq);
        match a.kind {
            PseudoKind::Blemish => {
                for (p, q) in changed {
                    let d = (0..3).map(|c| p.0[c].abs_diff(q.0[c])).max().unwrap();
                    assert!(d <= 24, "blemish changed a pixel by {d}");
                }
            }
            PseudoKind::Warp => {
                for (p, _) in changed {
                    assert!((0..3).all(|c| (lo[c]..=hi[c]).contains(&p.0[c])), "warp invented {:?}", p.0);
                }
            }
            _ => {}
        }
    }
    assert!(seen.contains(&PseudoKind::Warp) && seen.contains(&PseudoKind::Blemish), "{seen:?}");
}
