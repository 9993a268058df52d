//! The cut-paste defect: an irregular patch of another normal image of the category (or of
//! another place in the same one), slightly rotated and colour-jittered; and its seamless
//! variant, blended in with feathered edges and the colour of its surroundings.
use image::RgbImage;

use super::canvas::{Canvas, mix3, smoothstep};
use super::layout::Prepared;
use super::shape::{Shape, area, place_blob};
use crate::rnd::Rnd;

pub(super) fn cut_paste(cv: &mut Canvas<'_>, src: usize, normals: &[Prepared], donors: &[Prepared], rng: &mut Rnd) {
    paste(cv, src, normals, donors, rng, false);
}

/// A patch with no edge to find: alpha feathered over the outer half of the shape and the
/// patch's mean colour moved to the destination's, so only the structure inside is foreign.
pub(super) fn blend(cv: &mut Canvas<'_>, src: usize, normals: &[Prepared], donors: &[Prepared], rng: &mut Rnd) {
    paste(cv, src, normals, donors, rng, true);
}

fn paste(cv: &mut Canvas<'_>, src: usize, normals: &[Prepared], donors: &[Prepared], rng: &mut Rnd, seamless: bool) {
    let p = cv.p;
    let n = p.s * p.s;
    let a = area(rng, n, 0.008, 0.025) * cv.scale;
    let rect = rng.chance(1.0 / 3.0);
    let dst = place_blob(p, rng, |r, c| if rect { Shape::rect(c, a, r) } else { Shape::blob(c, a, 2.5, r) });
    let (donor, same) = if !donors.is_empty() {
        (&donors[rng.below_u64(donors.len())], false)
    } else if normals.len() > 1 {
        let j = (src + 1 + rng.below_u64(normals.len() - 1)) % normals.len();
        (&normals[j], false)
    } else {
        (&normals[src], true)
    };
    // Source centre: on the donor's object, far enough from the destination when it is the
    // same image so the patch really moves.
    let b = dst.bound();
    let mut from = donor.pick_centre(rng, b);
    if same {
        for _ in 0..16 {
            if (from.0 - dst.cx).hypot(from.1 - dst.cy) >= 1.5 * b {
                break;
            }
            from = donor.pick_centre(rng, b);
        }
    }
    let theta = rng.range(-20.0f32, 20.0).to_radians();
    let (ct, st) = (theta.cos(), theta.sin());
    let g = 1.0 + rng.sign() * rng.range(0.06, 0.15);
    let mut gain = [g + rng.range(-0.03, 0.03), g + rng.range(-0.03, 0.03), g + rng.range(-0.03, 0.03)];
    let pixels = dst.pixels(p.s, 1.0);
    let source_of = |x: f32, y: f32| {
        let (ox, oy) = (x - dst.cx, y - dst.cy);
        bilinear(&donor.img, from.0 + ct * ox - st * oy - 0.5, from.1 + st * ox + ct * oy - 0.5)
    };
    if seamless {
        let here = cv.mean(pixels.iter().map(|q| q.0));
        let (mut there, n) = ([0f32; 3], pixels.len().max(1) as f32);
        for &(_, x, y, _) in &pixels {
            let v = source_of(x, y);
            (0..3).for_each(|k| there[k] += v[k] / n);
        }
        gain = [0, 1, 2].map(|k| if there[k] > 1e-3 { (here[k] / there[k]).clamp(0.5, 2.0) } else { 1.0 });
    }
    for (i, x, y, d) in pixels {
        let v = source_of(x, y);
        let v = [v[0] * gain[0], v[1] * gain[1], v[2] * gain[2]];
        let v = if seamless { mix3(cv.clean(i), v, 1.0 - smoothstep(0.5, 1.0, d)) } else { v };
        cv.put(i, v);
    }
}

/// Bilinear sample in [0, 1], coordinates clamped to the image.
pub(super) fn bilinear(img: &RgbImage, x: f32, y: f32) -> [f32; 3] {
    let s = img.width() as usize;
    let raw = img.as_raw();
    let x = x.clamp(0.0, (s - 1) as f32);
    let y = y.clamp(0.0, (s - 1) as f32);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(s - 1), (y0 + 1).min(s - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |xx: usize, yy: usize, c: usize| raw[3 * (yy * s + xx) + c] as f32 / 255.0;
    let mut out = [0f32; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let top = at(x0, y0, c) * (1.0 - fx) + at(x1, y0, c) * fx;
        let bot = at(x0, y1, c) * (1.0 - fx) + at(x1, y1, c) * fx;
        *o = top * (1.0 - fy) + bot * fy;
    }
    out
}
