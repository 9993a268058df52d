//! The painted defects: scratch, stain, hole and colour spot, drawn over the clean image.
use super::canvas::{Canvas, hsv, luma, mix3, smoothstep};
use super::shape::{PLACEMENTS, Shape, area, place_blob};
use crate::rnd::Rnd;

fn dist_to_segment(px: f32, py: f32, a: (f32, f32), b: (f32, f32)) -> f32 {
    let (vx, vy) = (b.0 - a.0, b.1 - a.1);
    let len2 = vx * vx + vy * vy;
    let t = if len2 > 0.0 { (((px - a.0) * vx + (py - a.1) * vy) / len2).clamp(0.0, 1.0) } else { 0.0 };
    (px - a.0 - t * vx).hypot(py - a.1 - t * vy)
}

pub(super) fn scratch(cv: &mut Canvas<'_>, rng: &mut Rnd) {
    let p = cv.p;
    let (s, n) = (p.s, p.s * p.s);
    let sf = s as f32;
    // 1–3 px wide at 256 px (never under 1.4 px, so diagonal curves stay connected).
    let width = rng.range(1.4, 3.0) * (sf / 256.0).max(1.0);
    let hw = width / 2.0;
    let len = (area(rng, n, 0.0045, 0.012) * cv.scale / width).clamp(0.2 * cv.scale.sqrt() * sf, 0.8 * sf);
    let curve = |rng: &mut Rnd, m: (f32, f32)| {
        let ang = rng.range(0.0, std::f32::consts::PI);
        let (ux, uy) = (ang.cos(), ang.sin());
        let bend = rng.sign() * rng.range(0.1, 0.35) * len;
        let p0 = (m.0 - ux * len / 2.0, m.1 - uy * len / 2.0);
        let p2 = (m.0 + ux * len / 2.0, m.1 + uy * len / 2.0);
        // Control point pulled sideways so the curve passes near `m` bent by ~bend/2.
        let p1 = (m.0 - uy * bend, m.1 + ux * bend);
        (0..=48)
            .map(|k| {
                let t = k as f32 / 48.0;
                let w = [(1.0 - t) * (1.0 - t), 2.0 * t * (1.0 - t), t * t];
                (w[0] * p0.0 + w[1] * p1.0 + w[2] * p2.0, w[0] * p0.1 + w[1] * p1.1 + w[2] * p2.1)
            })
            .collect::<Vec<_>>()
    };
    let mut best: Option<(f32, Vec<(f32, f32)>)> = None;
    // More tries than blobs: on a thin object only curves running along it fit.
    for _ in 0..2 * PLACEMENTS {
        let m = p.pick_centre(rng, 0.15 * len);
        let pts = curve(rng, m);
        let cov = pts.iter().filter(|q| p.allows(q.0, q.1)).count() as f32 / pts.len() as f32;
        if best.as_ref().is_none_or(|(b, _)| cov > *b) {
            best = Some((cov, pts));
        }
        if cov >= 0.75 {
            break;
        }
    }
    let Some((_, pts)) = best else { return };
    // Distance field over the curve's bounding box, segment by segment.
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for q in &pts {
        (x0, y0, x1, y1) = (x0.min(q.0), y0.min(q.1), x1.max(q.0), y1.max(q.1));
    }
    let clip = |v: f32| (v.max(0.0) as usize).min(s);
    let (bx0, by0) = (clip((x0 - hw - 1.0).floor()), clip((y0 - hw - 1.0).floor()));
    let (bx1, by1) = (clip((x1 + hw + 1.0).ceil()), clip((y1 + hw + 1.0).ceil()));
    if bx1 <= bx0 || by1 <= by0 {
        return;
    }
    let bw = bx1 - bx0;
    let mut dist = vec![f32::MAX; bw * (by1 - by0)];
    for seg in pts.windows(2) {
        let (a, b) = (seg[0], seg[1]);
        let sx0 = clip((a.0.min(b.0) - hw - 1.0).floor()).max(bx0);
        let sx1 = clip((a.0.max(b.0) + hw + 1.0).ceil()).min(bx1);
        let sy0 = clip((a.1.min(b.1) - hw - 1.0).floor()).max(by0);
        let sy1 = clip((a.1.max(b.1) + hw + 1.0).ceil()).min(by1);
        for y in sy0..sy1 {
            for x in sx0..sx1 {
                let d = dist_to_segment(x as f32 + 0.5, y as f32 + 0.5, a, b);
                let slot = &mut dist[(y - by0) * bw + (x - bx0)];
                *slot = slot.min(d);
            }
        }
    }
    // Bright on dark surfaces, dark on bright ones (sometimes the other way in mid tones).
    let on: Vec<usize> = (by0..by1)
        .flat_map(|y| (bx0..bx1).map(move |x| (x, y)))
        .filter(|&(x, y)| dist[(y - by0) * bw + (x - bx0)] <= hw)
        .map(|(x, y)| y * s + x)
        .collect();
    let l = luma(cv.mean(on.iter().copied()));
    let mut bright = l < 0.5;
    if (0.25..0.75).contains(&l) && rng.chance(0.2) {
        bright = !bright;
    }
    let strength = rng.range(0.45, 0.8);
    for i in on {
        let (x, y) = (i % s, i / s);
        let d = dist[(y - by0) * bw + (x - bx0)];
        let a = strength * (1.0 - 0.35 * (d / hw).powi(2));
        let c = cv.clean(i);
        let v = if bright { mix3(c, [1.0; 3], a) } else { mix3(c, [0.0; 3], a) };
        cv.put(i, v);
    }
}

pub(super) fn stain(cv: &mut Canvas<'_>, rng: &mut Rnd) {
    let p = cv.p;
    let a = area(rng, p.s * p.s, 0.01, 0.028) * cv.scale;
    let shape = place_blob(p, rng, |r, c| Shape::blob(c, a, 2.0, r));
    // Rust, oil/dirt, yellowish residue, greenish film: darken and tint.
    let tints = [[0.80, 0.48, 0.26], [0.45, 0.42, 0.38], [0.90, 0.80, 0.40], [0.55, 0.68, 0.45]];
    let tint = tints[rng.below_u64(tints.len())];
    let dark = rng.range(0.35, 0.65);
    let amax = rng.range(0.7, 0.95);
    let f = std::f32::consts::TAU / (shape.bound() * 0.6).max(2.0);
    let (ph1, ph2) = (rng.range(0.0, 6.3), rng.range(0.0, 6.3));
    for (i, x, y, d) in shape.pixels(p.s, 1.0) {
        let mottle = 0.85 + 0.15 * (x * f + ph1).sin() * (y * f + ph2).sin();
        let alpha = amax * (1.0 - smoothstep(0.5, 1.0, d)) * mottle;
        let c = cv.clean(i);
        let target = [c[0] * tint[0] * dark, c[1] * tint[1] * dark, c[2] * tint[2] * dark];
        cv.put(i, mix3(c, target, alpha));
    }
}

pub(super) fn hole(cv: &mut Canvas<'_>, rng: &mut Rnd) {
    let p = cv.p;
    let a = area(rng, p.s * p.s, 0.005, 0.02) * cv.scale;
    let shape = place_blob(p, rng, |r, c| Shape::blob(c, a, 1.8, r));
    let rim = (1.0f32).max(0.12 * shape.ax.min(shape.ay)) / shape.ax.min(shape.ay);
    let depth = rng.range(0.03, 0.08);
    let warm = rng.range(0.85, 1.0);
    let lift = rng.range(0.2, 0.35);
    for (i, _, _, d) in shape.pixels(p.s, 1.0 + rim) {
        let c = cv.clean(i);
        let v = if d <= 1.0 {
            // Darkest in the middle, a little lighter towards the wall.
            let v = depth + 0.08 * d * d;
            [v, v * warm, v * warm * warm]
        } else {
            mix3(c, [1.0; 3], lift)
        };
        cv.put(i, v);
    }
}

pub(super) fn colour_spot(cv: &mut Canvas<'_>, rng: &mut Rnd) {
    let p = cv.p;
    let a = area(rng, p.s * p.s, 0.004, 0.018) * cv.scale;
    let shape = place_blob(p, rng, |r, c| Shape::blob(c, a, 1.6, r));
    let px = shape.pixels(p.s, 1.0);
    let mean = cv.mean(px.iter().map(|q| q.0));
    let mut hue = rng.u();
    let (sat, val) = (rng.range(0.8, 1.0), rng.range(0.6, 0.95));
    let far = |h: f32| {
        let c = hsv(h, sat, val);
        (0..3).map(|k| (c[k] - mean[k]).abs()).sum::<f32>()
    };
    // Complementary hue when the surface already has this colour.
    if far(hue) < 0.6 {
        hue += 0.5;
    }
    let col = hsv(hue, sat, val);
    let amax = rng.range(0.75, 0.95);
    for (i, _, _, d) in px {
        let c = cv.clean(i);
        // Keep a little of the surface shading so the spot sits on it.
        let shade = 0.85 + 0.3 * luma(c);
        let target = [col[0] * shade, col[1] * shade, col[2] * shade];
        cv.put(i, mix3(c, target, amax * (1.0 - smoothstep(0.7, 1.0, d))));
    }
}
