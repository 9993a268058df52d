//! What the renderers paint with: value noise, colour arithmetic and anti-aliased strokes.
use crate::rnd::Rnd;

/// A periodic lattice of random values for smooth value noise.
pub(super) struct Lattice {
    w: usize,
    h: usize,
    v: Vec<f32>,
}

impl Lattice {
    pub(super) fn new(w: usize, h: usize, rng: &mut Rnd) -> Self {
        let v = (0..w * h).map(|_| rng.range(-1.0, 1.0)).collect();
        Self { w, h, v }
    }
    /// The value at lattice point (i, j); the lattice wraps around.
    pub(super) fn at(&self, i: i64, j: i64) -> f32 {
        let i = i.rem_euclid(self.w as i64) as usize;
        let j = j.rem_euclid(self.h as i64) as usize;
        self.v[j * self.w + i]
    }
    /// Smoothstep-interpolated value at lattice coordinates (x, y), in [-1, 1].
    pub(super) fn sample(&self, x: f32, y: f32) -> f32 {
        let (fx, fy) = (x.floor(), y.floor());
        let (tx, ty) = (smooth(x - fx), smooth(y - fy));
        let (i, j) = (fx as i64, fy as i64);
        let a = lerp(self.at(i, j), self.at(i + 1, j), tx);
        let b = lerp(self.at(i, j + 1), self.at(i + 1, j + 1), tx);
        lerp(a, b, ty)
    }
}

pub(super) fn smooth(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}
pub(super) fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}
pub(super) fn mix3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [lerp(a[0], b[0], t), lerp(a[1], b[1], t), lerp(a[2], b[2], t)]
}
pub(super) fn scale3(a: [f32; 3], k: f32) -> [f32; 3] {
    [a[0] * k, a[1] * k, a[2] * k]
}
pub(super) fn add3(a: [f32; 3], k: f32) -> [f32; 3] {
    [a[0] + k, a[1] + k, a[2] + k]
}
pub(super) fn luma(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}
/// Largest per-channel difference.
pub(super) fn max_diff(a: [f32; 3], b: [f32; 3]) -> f32 {
    (0..3).map(|c| (a[c] - b[c]).abs()).fold(0.0, f32::max)
}
pub(super) fn tint(base: [f32; 3], rng: &mut Rnd, amount: f32) -> [f32; 3] {
    let g = rng.range(-amount, amount);
    [base[0] + g + rng.range(-amount, amount) * 0.5, base[1] + g, base[2] + g + rng.range(-amount, amount) * 0.5]
}

/// A polyline with a half-width per vertex (interpolated along each segment): scratches,
/// cracks, threads and printed characters.
#[derive(Clone, Default)]
pub(super) struct Stroke {
    pub(super) pts: Vec<(f32, f32, f32)>,
}

impl Stroke {
    /// Signed distance to the stroke's edge (negative inside).
    pub(super) fn sd(&self, x: f32, y: f32) -> f32 {
        let mut best = f32::MAX;
        for w in self.pts.windows(2) {
            let ((ax, ay, ha), (bx, by, hb)) = (w[0], w[1]);
            let (vx, vy) = (bx - ax, by - ay);
            let len2 = vx * vx + vy * vy;
            let t = if len2 > 0.0 { (((x - ax) * vx + (y - ay) * vy) / len2).clamp(0.0, 1.0) } else { 0.0 };
            let (dx, dy) = (x - ax - t * vx, y - ay - t * vy);
            best = best.min((dx * dx + dy * dy).sqrt() - lerp(ha, hb, t));
        }
        best
    }
    /// Anti-aliased coverage of the pixel centred at (x, y).
    pub(super) fn alpha(&self, x: f32, y: f32) -> f32 {
        (0.5 - self.sd(x, y)).clamp(0.0, 1.0)
    }
    /// Bounding box (x0, y0, x1, y1) including the widest half-width and a pixel of margin.
    pub(super) fn bbox(&self) -> [f32; 4] {
        let hw = self.pts.iter().map(|p| p.2).fold(0.0, f32::max) + 1.0;
        self.pts.iter().fold([f32::MAX, f32::MAX, f32::MIN, f32::MIN], |b, &(x, y, _)| {
            [b[0].min(x - hw), b[1].min(y - hw), b[2].max(x + hw), b[3].max(y + hw)]
        })
    }
}

/// Smallest box holding all `boxes` (x0, y0, x1, y1), each grown by `grow`; empty (x0 > x1)
/// when there are none.
pub(super) fn union_bbox(boxes: impl Iterator<Item = [f32; 4]>, grow: f32) -> [f32; 4] {
    boxes.fold([f32::MAX, f32::MAX, f32::MIN, f32::MIN], |b, g| {
        [b[0].min(g[0] - grow), b[1].min(g[1] - grow), b[2].max(g[2] + grow), b[3].max(g[3] + grow)]
    })
}
