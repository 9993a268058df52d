//! Where a defect goes: a point on the object, or on its outline.
use crate::rnd::Rnd;
use crate::synthetic::render::Scene;

/// A random point on the object (any point for textures), away from the border.
pub(super) fn pick_point(scene: &Scene, rng: &mut Rnd, margin: f32) -> (f32, f32) {
    let s = scene.s as f32;
    let margin = margin.min(s / 4.0);
    for _ in 0..4000 {
        let (x, y) = (rng.range(margin, s - margin), rng.range(margin, s - margin));
        let i = (y as usize).min(scene.s - 1) * scene.s + (x as usize).min(scene.s - 1);
        if scene.on_object(i) {
            return (x, y);
        }
    }
    (s / 2.0, s / 2.0)
}

/// A random object pixel with a background 4-neighbour (outline), for `missing`.
pub(super) fn pick_outline(scene: &Scene, rng: &mut Rnd) -> (f32, f32) {
    let s = scene.s;
    let outline: Vec<usize> = (0..s * s)
        .filter(|&i| {
            let (x, y) = (i % s, i / s);
            scene.on_object(i)
                && x > 0
                && y > 0
                && x + 1 < s
                && y + 1 < s
                && [i - 1, i + 1, i - s, i + s].iter().any(|&j| !scene.on_object(j))
        })
        .collect();
    if outline.is_empty() {
        return (s as f32 / 2.0, s as f32 / 2.0);
    }
    let i = outline[rng.below(outline.len())];
    ((i % s) as f32 + 0.5, (i / s) as f32 + 0.5)
}
