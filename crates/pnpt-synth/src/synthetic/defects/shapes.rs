//! Random outlines and paths: a jagged crack, a curling fibre, an irregular blob.
use std::f32::consts::TAU;

use crate::rnd::Rnd;

/// Box of half-side `r` around (cx, cy).
pub(super) fn square(cx: f32, cy: f32, r: f32) -> [f32; 4] {
    [cx - r - 1.0, cy - r - 1.0, cx + r + 1.0, cy + r + 1.0]
}

/// A jagged random walk of `len` from `start`: the heading jitters at every step.
pub(super) fn walk(
    start: (f32, f32),
    heading: f32,
    len: f32,
    step: f32,
    jitter: f32,
    rng: &mut Rnd,
) -> Vec<(f32, f32)> {
    let n = (len / step).ceil().max(1.0) as usize;
    let (mut x, mut y, mut h) = (start.0, start.1, heading);
    let mut pts = vec![(x, y)];
    for _ in 0..n {
        h += rng.gauss() * jitter;
        x += step * h.cos();
        y += step * h.sin();
        pts.push((x, y));
    }
    pts
}

/// A smoothly curling path of `len` from `start`: the curvature itself wanders, as a loose
/// fibre's does.
pub(super) fn curl(start: (f32, f32), heading: f32, len: f32, step: f32, rng: &mut Rnd) -> Vec<(f32, f32)> {
    let n = (len / step).ceil().max(1.0) as usize;
    let (mut x, mut y, mut h, mut kappa) = (start.0, start.1, heading, 0.0f32);
    let mut pts = vec![(x, y)];
    for _ in 0..n {
        kappa = (kappa + rng.gauss() * 0.05).clamp(-0.16, 0.16);
        h += kappa;
        x += step * h.cos();
        y += step * h.sin();
        pts.push((x, y));
    }
    pts
}

/// An irregular blob: a radius that wobbles with the angle (a few random harmonics).
pub(super) struct Blob {
    r0: f32,
    harmonics: [(f32, f32, f32); 4],
}

impl Blob {
    /// `rough` is the total relative wobble of the radius.
    pub(super) fn new(r0: f32, rough: f32, rng: &mut Rnd) -> Self {
        let mut harmonics = [(0.0, 0.0, 0.0); 4];
        for (h, (f, share)) in harmonics.iter_mut().zip([(2.0, 0.35), (3.0, 0.3), (5.0, 0.2), (7.0, 0.15)]) {
            *h = (rough * share * rng.range(0.3, 1.0), f, rng.range(0.0, TAU));
        }
        Self { r0, harmonics }
    }
    fn radius(&self, th: f32) -> f32 {
        self.r0 * (1.0 + self.harmonics.iter().map(|&(a, f, p)| a * (f * th + p).sin()).sum::<f32>())
    }
    /// Largest radius.
    pub(super) fn reach(&self) -> f32 {
        self.r0 * (1.0 + self.harmonics.iter().map(|h| h.0).sum::<f32>())
    }
    /// Approximate signed distance to the edge (negative inside).
    pub(super) fn sd(&self, dx: f32, dy: f32) -> f32 {
        dx.hypot(dy) - self.radius(dy.atan2(dx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `reach` bounds the radius at every angle, so `square(cx, cy, reach)` holds the whole blob.
    #[test]
    fn blob_reach_bounds_its_radius() {
        let mut rng = Rnd::new(7);
        for _ in 0..20 {
            let blob = Blob::new(rng.range(2.0, 10.0), 0.35, &mut rng);
            assert!(blob.sd(0.0, 0.0) < 0.0);
            for deg in 0..360 {
                let th = (deg as f32).to_radians();
                assert!(blob.radius(th) <= blob.reach() + 1e-4);
                assert!(blob.sd(1.01 * blob.reach() * th.cos(), 1.01 * blob.reach() * th.sin()) > 0.0);
            }
        }
    }
}
