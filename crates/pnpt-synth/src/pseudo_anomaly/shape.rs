//! Defect outlines (irregular blobs and rotated rectangles), their size, and their placement
//! on the object.
use super::layout::Prepared;
use crate::rnd::Rnd;

/// Centre placements tried per attempt to keep the defect on the object.
pub(super) const PLACEMENTS: usize = 8;

/// An irregular blob (an ellipse whose radius wobbles with the angle) or a rotated rectangle.
#[derive(Clone, Copy)]
pub(super) struct Shape {
    pub(super) cx: f32,
    pub(super) cy: f32,
    cos: f32,
    sin: f32,
    pub(super) ax: f32,
    pub(super) ay: f32,
    /// (amplitude, phase) of the 2nd, 3rd and 5th radial harmonics.
    wobble: [(f32, f32); 3],
    rect: bool,
}

const HARMONICS: [f32; 3] = [2.0, 3.0, 5.0];

impl Shape {
    /// A blob of about `area` pixels, elongated up to `max_aspect`.
    pub(super) fn blob(c: (f32, f32), area: f32, max_aspect: f32, rng: &mut Rnd) -> Self {
        let wobble = [
            (rng.range(0.0, 0.18), rng.range(0.0, std::f32::consts::TAU)),
            (rng.range(0.0, 0.12), rng.range(0.0, std::f32::consts::TAU)),
            (rng.range(0.0, 0.06), rng.range(0.0, std::f32::consts::TAU)),
        ];
        let gain = 1.0 + wobble.iter().map(|(a, _)| a * a / 2.0).sum::<f32>();
        let r = (area / (std::f32::consts::PI * gain)).sqrt();
        let e = rng.range(1.0, max_aspect).sqrt();
        Self::new(c, r * e, r / e, wobble, false, rng)
    }

    /// A rotated rectangle of about `area` pixels, aspect 1–2.5 (the classic CutPaste scar).
    pub(super) fn rect(c: (f32, f32), area: f32, rng: &mut Rnd) -> Self {
        let e = rng.range(1.0, 2.5).sqrt();
        let h = (area / 4.0).sqrt();
        Self::new(c, h * e, h / e, [(0.0, 0.0); 3], true, rng)
    }

    fn new(c: (f32, f32), ax: f32, ay: f32, wobble: [(f32, f32); 3], rect: bool, rng: &mut Rnd) -> Self {
        let a = rng.range(0.0, std::f32::consts::PI);
        Self { cx: c.0, cy: c.1, cos: a.cos(), sin: a.sin(), ax: ax.max(0.5), ay: ay.max(0.5), wobble, rect }
    }

    /// Normalised distance of point (x, y) from the centre: <= 1 inside, 1 on the outline.
    fn nd(&self, x: f32, y: f32) -> f32 {
        let (dx, dy) = (x - self.cx, y - self.cy);
        let u = (self.cos * dx + self.sin * dy) / self.ax;
        let v = (-self.sin * dx + self.cos * dy) / self.ay;
        if self.rect {
            return u.abs().max(v.abs());
        }
        let rho = (u * u + v * v).sqrt();
        if rho == 0.0 {
            return 0.0;
        }
        let th = v.atan2(u);
        let w = 1.0 + self.wobble.iter().zip(HARMONICS).map(|((a, p), h)| a * (h * th + p).sin()).sum::<f32>();
        rho / w
    }

    /// A radius enclosing the whole shape.
    pub(super) fn bound(&self) -> f32 {
        let k =
            if self.rect { std::f32::consts::SQRT_2 } else { 1.0 + self.wobble.iter().map(|(a, _)| a).sum::<f32>() };
        self.ax.max(self.ay) * k
    }

    /// Pixels (index, centre x, centre y, nd) with nd <= `max_nd`.
    pub(super) fn pixels(&self, s: usize, max_nd: f32) -> Vec<(usize, f32, f32, f32)> {
        let r = self.bound() * max_nd + 1.0;
        let lo = |v: f32| (v - r).floor().max(0.0) as usize;
        let hi = |v: f32| ((v + r).ceil().max(0.0) as usize).min(s);
        let mut out = Vec::new();
        for y in lo(self.cy)..hi(self.cy) {
            for x in lo(self.cx)..hi(self.cx) {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let d = self.nd(px, py);
                if d <= max_nd {
                    out.push((y * s + x, px, py, d));
                }
            }
        }
        out
    }

    /// Share of the shape (sampled on a grid) that the layout lets a defect change.
    fn coverage(&self, p: &Prepared) -> f32 {
        if p.allowed.is_none() {
            return 1.0;
        }
        let b = self.bound();
        let (mut inside, mut ok) = (0usize, 0usize);
        for j in 0..11 {
            for i in 0..11 {
                let x = self.cx - b + 2.0 * b * (i as f32 + 0.5) / 11.0;
                let y = self.cy - b + 2.0 * b * (j as f32 + 0.5) / 11.0;
                if self.nd(x, y) <= 1.0 {
                    inside += 1;
                    ok += p.allows(x, y) as usize;
                }
            }
        }
        if inside == 0 { 0.0 } else { ok as f32 / inside as f32 }
    }
}

/// Tries a few centres and keeps the shape lying most on the object (the first with 75 %).
pub(super) fn place_blob(p: &Prepared, rng: &mut Rnd, make: impl Fn(&mut Rnd, (f32, f32)) -> Shape) -> Shape {
    let mut best: Option<(f32, Shape)> = None;
    for _ in 0..PLACEMENTS {
        // Margin from a trial shape, so the centre keeps the defect mostly inside the image.
        let probe = make(rng, (0.0, 0.0));
        let c = p.pick_centre(rng, probe.bound() * 0.7);
        let shape = Shape { cx: c.0, cy: c.1, ..probe };
        let cov = shape.coverage(p);
        if best.as_ref().is_none_or(|(b, _)| cov > *b) {
            best = Some((cov, shape));
        }
        if cov >= 0.75 {
            break;
        }
    }
    best.map(|(_, s)| s).unwrap_or_else(|| make(rng, (0.0, 0.0)))
}

/// Typical area (pixels) of a blob defect: a share of the image drawn from `lo..hi`.
pub(super) fn area(rng: &mut Rnd, n: usize, lo: f32, hi: f32) -> f32 {
    rng.range(lo, hi) * n as f32
}
