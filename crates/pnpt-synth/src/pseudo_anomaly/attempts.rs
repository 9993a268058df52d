//! One anomaly: its own random stream, the assigned kind with its fallbacks, and the mask of
//! exactly the visibly changed pixels.
use image::RgbImage;

use super::canvas::Canvas;
use super::cut_paste::{blend, cut_paste};
use super::drawn::{colour_spot, hole, scratch, stain};
use super::layout::Prepared;
use super::subtle::{blemish, colour_shift, warp};
use super::{MAX_AREA_FRACTION, MIN_AREA_FRACTION, MIN_DELTA, PseudoAnomaly, PseudoAnomalyConfig, PseudoKind};
use crate::rnd::{Rnd, splitmix};
use pnpt_data::DataError;

/// Drawing attempts per anomaly; the first [`SAME_KIND_ATTEMPTS`] keep the assigned kind.
const ATTEMPTS: usize = 12;
const SAME_KIND_ATTEMPTS: usize = 8;

/// Seed of the stream of one (source, variant): independent of which thread renders it.
fn stream_seed(seed: u64, source: usize, variant: usize) -> u64 {
    splitmix(splitmix(splitmix(seed ^ 0x7073_6575_646f) ^ source as u64) ^ variant as u64)
}

/// Anomaly `variant` of normal `source`: the cycled kind first, then the others, until a
/// defect changes a share of the image within the area bounds (else the closest visible one).
pub(super) fn make_one(
    normals: &[Prepared],
    donors: &[Prepared],
    config: &PseudoAnomalyConfig,
    source: usize,
    variant: usize,
) -> Result<PseudoAnomaly, DataError> {
    let mut rng = Rnd::new(stream_seed(config.seed, source, variant));
    let p = &normals[source];
    let (lo, hi) = area_bounds(p.s * p.s);
    let scale = defect_scale(&mut rng);
    let base = PseudoKind::ALL[(source * config.per_image + variant) % PseudoKind::ALL.len()];
    // Best out-of-bounds result so far: (how far off, as a ratio >= 1; image; mask; kind).
    let mut best: Option<(f32, Vec<u8>, Vec<u8>, PseudoKind)> = None;
    for attempt in 0..ATTEMPTS {
        let kind = if attempt < SAME_KIND_ATTEMPTS {
            base
        } else {
            PseudoKind::ALL[(base.index() + 1 + attempt - SAME_KIND_ATTEMPTS) % PseudoKind::ALL.len()]
        };
        let mut cv = Canvas { p, out: p.img.as_raw().clone(), scale };
        draw(kind, &mut cv, source, normals, donors, &mut rng);
        let mut out = cv.out;
        let (mask, count) = finalize(p.img.as_raw(), &mut out);
        if count == 0 {
            continue;
        }
        let off = if count < lo {
            lo as f32 / count as f32
        } else if count > hi {
            count as f32 / hi as f32
        } else {
            best = Some((1.0, out, mask, kind));
            break;
        };
        if best.as_ref().is_none_or(|b| off < b.0) {
            best = Some((off, out, mask, kind));
        }
    }
    let Some((_, out, mask, kind)) = best else {
        return Err(DataError::NoVisibleDefect { index: source, variant, attempts: ATTEMPTS });
    };
    let s = p.s as u32;
    let image = RgbImage::from_raw(s, s, out).expect("buffer is size*size*3");
    Ok(PseudoAnomaly { image, mask, kind, source })
}

fn draw(kind: PseudoKind, cv: &mut Canvas<'_>, src: usize, normals: &[Prepared], donors: &[Prepared], rng: &mut Rnd) {
    match kind {
        PseudoKind::CutPaste => cut_paste(cv, src, normals, donors, rng),
        PseudoKind::Scratch => scratch(cv, rng),
        PseudoKind::Stain => stain(cv, rng),
        PseudoKind::Hole => hole(cv, rng),
        PseudoKind::ColourSpot => colour_spot(cv, rng),
        PseudoKind::Warp => warp(cv, rng),
        PseudoKind::Blemish => blemish(cv, rng),
        PseudoKind::ColourShift => colour_shift(cv, rng),
        PseudoKind::Blend => blend(cv, src, normals, donors, rng),
    }
}

/// Undoes changes below [`MIN_DELTA`] and returns the 0/1 mask of the remaining changed pixels
/// and their count.
fn finalize(clean: &[u8], out: &mut [u8]) -> (Vec<u8>, usize) {
    let n = clean.len() / 3;
    let mut mask = vec![0u8; n];
    let mut count = 0;
    for i in 0..n {
        let (a, b) = (&clean[3 * i..3 * i + 3], &mut out[3 * i..3 * i + 3]);
        let d = (0..3).map(|c| a[c].abs_diff(b[c])).max().unwrap_or(0);
        if d >= MIN_DELTA {
            mask[i] = 1;
            count += 1;
        } else if d > 0 {
            b.copy_from_slice(a);
        }
    }
    (mask, count)
}

/// Share of the anomalies drawn small ([`defect_scale`]).
const SMALL_SHARE: f32 = 0.5;

/// Area factor of one anomaly's defect: 1 (full size, 0.3–4 % of the image) or, for
/// [`SMALL_SHARE`] of them, log-uniform in 1/16–1/3: specks, pinholes, short scratches and small
/// patches of a few dozen to a few hundred pixels at 256 px. Real defects span both ranges, and
/// a validation set of large defects alone rewards maps smoothed too much to find small ones.
fn defect_scale(rng: &mut Rnd) -> f32 {
    if rng.chance(SMALL_SHARE) {
        let (lo, hi) = ((1.0f32 / 16.0).ln(), (1.0f32 / 3.0).ln());
        rng.range(lo, hi).exp()
    } else {
        1.0
    }
}

/// The defect area bounds in pixels for an `n`-pixel image.
fn area_bounds(n: usize) -> (usize, usize) {
    let lo = ((MIN_AREA_FRACTION * n as f32).ceil() as usize).max(1);
    let hi = ((MAX_AREA_FRACTION * n as f32).floor() as usize).max(lo);
    (lo, hi)
}
