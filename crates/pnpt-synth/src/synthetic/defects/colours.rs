//! Defect colours: the palettes, and picking one that stands out from the surface under it.
use crate::rnd::Rnd;
use crate::synthetic::paint::{Stroke, max_diff, scale3};
use crate::synthetic::render::Scene;

/// Stain colours: rust, oil, mould, ink, dried white residue.
pub(super) const STAINS: [[f32; 3]; 5] =
    [[0.58, 0.27, 0.08], [0.16, 0.13, 0.10], [0.30, 0.52, 0.18], [0.18, 0.26, 0.62], [0.90, 0.89, 0.84]];
/// Colour-spot colours: saturated paints and black.
pub(super) const PAINTS: [[f32; 3]; 5] =
    [[0.85, 0.12, 0.10], [0.12, 0.28, 0.85], [0.15, 0.62, 0.22], [0.95, 0.82, 0.12], [0.06, 0.06, 0.07]];
/// Stray fibre colours.
pub(super) const FIBRES: [[f32; 3]; 5] =
    [[0.10, 0.12, 0.32], [0.05, 0.05, 0.05], [0.78, 0.12, 0.12], [0.94, 0.94, 0.92], [0.12, 0.50, 0.20]];

/// Picks a colour of `palette` that differs from `surface` by at least `min` in some channel
/// (the most different one if none does), so the defect stands out.
pub(super) fn contrasting(rng: &mut Rnd, palette: &[[f32; 3]], surface: [f32; 3], min: f32) -> [f32; 3] {
    let ok: Vec<[f32; 3]> = palette.iter().copied().filter(|&c| max_diff(c, surface) >= min).collect();
    if ok.is_empty() {
        palette
            .iter()
            .copied()
            .max_by(|a, b| max_diff(*a, surface).total_cmp(&max_diff(*b, surface)))
            .unwrap_or([0.0; 3])
    } else {
        ok[rng.below(ok.len())]
    }
}

fn mean_of(scene: &Scene, idx: impl Iterator<Item = usize>) -> [f32; 3] {
    let (mut sum, mut n) = ([0f32; 3], 0usize);
    for i in idx.filter(|&i| scene.on_object(i)) {
        for (acc, v) in sum.iter_mut().zip(scene.img[i]) {
            *acc += v;
        }
        n += 1;
    }
    if n == 0 { [0.5; 3] } else { scale3(sum, 1.0 / n as f32) }
}

/// Mean colour of the object under a stroke's points.
pub(super) fn mean_along(scene: &Scene, stroke: &Stroke) -> [f32; 3] {
    let s = scene.s as f32;
    mean_of(
        scene,
        stroke
            .pts
            .iter()
            .filter(|p| p.0 >= 0.0 && p.1 >= 0.0 && p.0 < s && p.1 < s)
            .map(|p| p.1 as usize * scene.s + p.0 as usize),
    )
}

/// Mean colour of the object within `r` of (cx, cy).
pub(super) fn mean_near(scene: &Scene, cx: f32, cy: f32, r: f32) -> [f32; 3] {
    let s = scene.s;
    let lo = |v: f32| ((v - r).floor().max(0.0) as usize).min(s);
    let hi = |v: f32| ((v + r).ceil().max(0.0) as usize).min(s);
    mean_of(scene, (lo(cy)..hi(cy)).flat_map(|y| (lo(cx)..hi(cx)).map(move |x| y * s + x)))
}
