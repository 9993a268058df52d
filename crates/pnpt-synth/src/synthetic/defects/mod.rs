//! Defects, drawn the way they occur in production and clearly visible.
//!
//! Surface defects (scratch, crack, hole, stain, color, thread) are painted over the clean
//! rendering with anti-aliased coverage, only where the object is; `missing` swaps a
//! broken-off piece of the object for the background; `bent` and `print` redraw the scene with
//! a structural fault ([`Mods`](super::objects::Mods)). [`apply`] then keeps exactly the pixels
//! that changed by at least [`MIN_DELTA`] and redraws the random shape until the defect reaches
//! the visibility floor ([`MIN_MEAN_DELTA`], [`MIN_AREA_FRACTION`]).
//!
//! `draw` holds one attempt per defect kind; `shapes` the random outlines and paths it uses,
//! `colours` the palettes and the surface colour under a defect, `placement` where it goes.
mod colours;
mod draw;
mod placement;
mod shapes;

use super::render::{Scene, q};
use super::{Defect, MIN_AREA_FRACTION, MIN_DELTA, MIN_MEAN_DELTA, SynthKind};
use crate::rnd::Rnd;
use draw::draw;

/// Shapes drawn per defect before the most visible one is kept anyway; the first or second
/// almost always passes.
const TRIES: usize = 24;

/// Draws `defect` on `scene` (whose quantised pixels are `clean`) and returns the image and its
/// 0/255 mask. `scene_rng` is the stream the scene was drawn from, for structural redraws;
/// `index` (the image's number in its folder) cycles a defect's variants, so a few images of a
/// kind already show all of them.
pub(super) fn apply(
    scene: &Scene,
    clean: &[u8],
    defect: Defect,
    kind: SynthKind,
    index: usize,
    rng: &mut Rnd,
    scene_rng: &Rnd,
) -> (Vec<u8>, Vec<u8>) {
    let s = scene.s;
    let defect = supported(kind, defect);
    let min_area = ((MIN_AREA_FRACTION * (s * s) as f32).ceil() as usize).max(4);
    let mut best: Option<(f32, Vec<u8>, Vec<u8>)> = None;
    for _ in 0..TRIES {
        let out = draw(scene, defect, kind, index, rng, scene_rng);
        let (image, mask, area, mean) = keep_changed(clean, &out);
        // A shape can end up too small (a scratch leaving a thin object, a crack running off
        // the image) or too faint (a stain on a surface of nearly its colour): draw another.
        let score = (area as f32 / min_area as f32).min(mean / MIN_MEAN_DELTA as f32);
        if score >= 1.0 {
            return (image, mask);
        }
        if best.as_ref().is_none_or(|b| score > b.0) {
            best = Some((score, image, mask));
        }
    }
    match best {
        Some((_, image, mask)) => (image, mask),
        None => (clean.to_vec(), vec![0; s * s]),
    }
}

/// The kind actually drawn: the nearest one `kind` supports (see [`super::render`]).
fn supported(kind: SynthKind, defect: Defect) -> Defect {
    match defect {
        Defect::Bent if kind != SynthKind::Screw => {
            if kind.is_texture() {
                Defect::Crack
            } else {
                Defect::Missing
            }
        }
        Defect::Print if kind != SynthKind::Capsule => Defect::Stain,
        Defect::Missing if kind.is_texture() => Defect::Hole,
        d => d,
    }
}

/// Quantises `out` and keeps the pixels that differ from `clean` by at least [`MIN_DELTA`]
/// (max over channels); smaller changes (anti-aliased fringes) are dropped so every masked pixel
/// is clearly changed and no unmasked one changed at all. Returns image, mask, area and mean
/// change over the mask.
fn keep_changed(clean: &[u8], out: &[[f32; 3]]) -> (Vec<u8>, Vec<u8>, usize, f32) {
    let mut image = clean.to_vec();
    let mut mask = vec![0u8; out.len()];
    let (mut area, mut sum) = (0usize, 0u64);
    for (i, p) in out.iter().enumerate() {
        let new = [q(p[0]), q(p[1]), q(p[2])];
        let old = &clean[3 * i..3 * i + 3];
        let d = (0..3).map(|c| new[c].abs_diff(old[c])).max().unwrap_or(0);
        if d >= MIN_DELTA {
            image[3 * i..3 * i + 3].copy_from_slice(&new);
            mask[i] = 255;
            area += 1;
            sum += d as u64;
        }
    }
    let mean = if area > 0 { sum as f32 / area as f32 } else { 0.0 };
    (image, mask, area, mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mask is exactly the pixels changed by [`MIN_DELTA`] or more in some channel; smaller
    /// changes are reverted, so no unmasked pixel differs from the clean image.
    #[test]
    fn keep_changed_masks_exactly_the_clearly_changed_pixels() {
        let clean = vec![100u8; 9];
        let px = |v: [u8; 3]| v.map(|c| c as f32 / 255.0);
        let out = [px([100, 100, 100]), px([100, 100 + MIN_DELTA - 1, 100]), px([100, 100, 100 - MIN_DELTA])];
        let (image, mask, area, mean) = keep_changed(&clean, &out);
        assert_eq!(mask, [0, 0, 255]);
        assert_eq!(image, [100, 100, 100, 100, 100, 100, 100, 100, 100 - MIN_DELTA]);
        assert_eq!((area, mean), (1, MIN_DELTA as f32));
    }
}
