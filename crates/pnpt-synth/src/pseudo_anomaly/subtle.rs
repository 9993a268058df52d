//! The defects that real inspection finds hardest, because nothing foreign is added: a local
//! structural distortion (a bent lead, a dented rim, a pushed fibre), a low-contrast blemish
//! (a faint watermark, a shading flaw), and a colour shift (discolouration, a wrong dye lot).
//! Scratches, holes and bright spots are easy for every detector; a validation set of them
//! alone ranks scoring rules by how well they find the obvious.
use super::canvas::{Canvas, luma, mix3, smoothstep};
use super::cut_paste::bilinear;
use super::shape::{Shape, area, place_blob};
use crate::rnd::Rnd;

/// Structural distortion: the content inside a blob is pushed sideways (a dent, a bent part)
/// or twisted, smoothly fading to nothing at the outline, so the surface stays continuous and
/// only its geometry is wrong. Flat regions show no change (and get no mask pixel).
pub(super) fn warp(cv: &mut Canvas<'_>, rng: &mut Rnd) {
    let p = cv.p;
    let a = area(rng, p.s * p.s, 0.01, 0.03) * cv.scale;
    let shape = place_blob(p, rng, |r, c| Shape::blob(c, a, 2.0, r));
    let r = shape.ax.min(shape.ay);
    let twist = rng.chance(0.5);
    // Push: up to half the blob's short radius; twist: up to 0.9 rad at the centre.
    let amount = if twist { rng.sign() * rng.range(0.5, 0.9) } else { rng.range(0.3, 0.5) * r };
    let dir = rng.range(0.0, std::f32::consts::TAU);
    let (ux, uy) = (dir.cos(), dir.sin());
    for (i, x, y, d) in shape.pixels(p.s, 1.0) {
        let w = 1.0 - smoothstep(0.0, 1.0, d);
        let (sx, sy) = if twist {
            let (dx, dy) = (x - shape.cx, y - shape.cy);
            let t = amount * w * w;
            let (c, s) = (t.cos(), t.sin());
            (shape.cx + c * dx - s * dy, shape.cy + s * dx + c * dy)
        } else {
            (x - ux * amount * w, y - uy * amount * w)
        };
        // Pixel centres sit at +0.5.
        let v = bilinear(&p.img, sx - 0.5, sy - 0.5);
        cv.put(i, v);
    }
}

/// Low-contrast blemish: a soft patch 8–20 grey levels lighter or darker, slightly tinted —
/// near the visibility floor of the mask, as the faint flaws that reach a line are.
pub(super) fn blemish(cv: &mut Canvas<'_>, rng: &mut Rnd) {
    let p = cv.p;
    let a = area(rng, p.s * p.s, 0.008, 0.03) * cv.scale;
    let shape = place_blob(p, rng, |r, c| Shape::blob(c, a, 2.2, r));
    let delta = rng.sign() * rng.range(8.0, 20.0) / 255.0;
    let tint = [rng.range(0.85, 1.15), rng.range(0.85, 1.15), rng.range(0.85, 1.15)];
    for (i, _, _, d) in shape.pixels(p.s, 1.0) {
        let w = 1.0 - smoothstep(0.6, 1.0, d);
        let c = cv.clean(i);
        cv.put(i, [c[0] + delta * tint[0] * w, c[1] + delta * tint[1] * w, c[2] + delta * tint[2] * w]);
    }
}

/// Colour shift: the region keeps its brightness and texture but its hue turns (channels
/// rotated towards a neighbour's, or the colour drained to grey), as a discoloured part does.
pub(super) fn colour_shift(cv: &mut Canvas<'_>, rng: &mut Rnd) {
    let p = cv.p;
    let a = area(rng, p.s * p.s, 0.01, 0.03) * cv.scale;
    let shape = place_blob(p, rng, |r, c| Shape::blob(c, a, 2.0, r));
    let mode = rng.below_u64(3);
    let strength = rng.range(0.5, 0.9);
    for (i, _, _, d) in shape.pixels(p.s, 1.0) {
        let w = strength * (1.0 - smoothstep(0.7, 1.0, d));
        let c = cv.clean(i);
        let l = luma(c);
        let target = match mode {
            0 => [c[1], c[2], c[0]],
            1 => [c[2], c[0], c[1]],
            // Grey surfaces have no hue to turn: those get a warm cast instead of a drain.
            _ if (c[0] - c[1]).abs() + (c[1] - c[2]).abs() < 0.08 => [l * 1.25, l * 1.05, l * 0.7],
            _ => [l; 3],
        };
        cv.put(i, mix3(c, target, w));
    }
}
