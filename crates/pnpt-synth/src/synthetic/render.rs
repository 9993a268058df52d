//! Rendering one image: the scene (pattern or object, pose, lighting, sensor noise) and, for a
//! defective image, the defect on top.
use image::{GrayImage, RgbImage};

use super::objects::{self, Mods};
use super::{SynthKind, SynthSplit, SyntheticConfig, defects, textures};
use crate::rnd::{Rnd, splitmix};

/// One rendered image: the defect-free version, the written image and its mask (0/255).
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The image before the defect was applied (equal to `image` for normal images).
    pub clean: RgbImage,
    /// The image as written to disk.
    pub image: RgbImage,
    /// 255 on the defect, 0 elsewhere (all 0 for normal images).
    pub mask: GrayImage,
}

/// Renders one image; `generate` writes exactly these.
///
/// `index` counts within the folder (`test/<defect>/NNN.png` has index NNN). A defect the
/// category does not list (see [`SynthKind::defects`]) is drawn as the nearest kind it supports:
/// `bent` elsewhere than on the screw becomes `missing` on objects and `crack` on textures,
/// `print` elsewhere than on the capsule becomes `stain`, `missing` on a texture becomes `hole`.
pub fn render(cfg: &SyntheticConfig, kind: SynthKind, split: SynthSplit, index: usize) -> Rendered {
    let seed = splitmix(splitmix(splitmix(cfg.seed ^ splitmix(kind.id())) ^ split.id()) ^ index as u64);
    let mut rng = Rnd::new(seed);
    let s = cfg.size as usize;
    // A structural defect redraws the same scene with a fault; starting from this copy of the
    // stream gives it the same pose, lighting and noise.
    let scene_rng = rng.clone();
    let scene = render_scene(kind, s, &mut rng, &Mods::default());
    let clean = scene.quantised();
    let (image, mask) = match split {
        SynthSplit::TestDefect(defect) => defects::apply(&scene, &clean, defect, kind, index, &mut rng, &scene_rng),
        SynthSplit::Train | SynthSplit::TestGood => (clean.clone(), vec![0u8; s * s]),
    };
    let to_rgb = |v: Vec<u8>| RgbImage::from_raw(s as u32, s as u32, v).unwrap_or_default();
    Rendered {
        clean: to_rgb(clean),
        image: to_rgb(image),
        mask: GrayImage::from_raw(s as u32, s as u32, mask).unwrap_or_default(),
    }
}

/// A defect-free rendering in linear [0, 1] floats, with the background alone (for `missing`),
/// the object coverage (1 everywhere for textures) and the object's orientation.
pub(super) struct Scene {
    pub(super) s: usize,
    pub(super) img: Vec<[f32; 3]>,
    pub(super) bg: Vec<[f32; 3]>,
    pub(super) cover: Vec<f32>,
    /// Direction of the object's long axis in image coordinates (radians; 0 for textures), so
    /// scratches on the screw run along it as they do when screws rub in a feeder.
    pub(super) axis: f32,
}

pub(super) fn q(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

impl Scene {
    pub(super) fn quantised(&self) -> Vec<u8> {
        self.img.iter().flat_map(|p| [q(p[0]), q(p[1]), q(p[2])]).collect()
    }
    pub(super) fn on_object(&self, i: usize) -> bool {
        self.cover[i] > 0.5
    }
}

/// Per-image pose: rotation, shift and the pixel → pattern-space transform.
pub(super) struct Pose {
    c: f32,
    pub(super) angle: f32,
    cos: f32,
    sin: f32,
    dx: f32,
    dy: f32,
}

impl Pose {
    pub(super) fn new(s: usize, max_deg: f32, max_shift: f32, rng: &mut Rnd) -> Self {
        let a = rng.range(-max_deg, max_deg).to_radians();
        Self {
            c: s as f32 / 2.0,
            angle: a,
            cos: a.cos(),
            sin: a.sin(),
            dx: rng.range(-max_shift, max_shift),
            dy: rng.range(-max_shift, max_shift),
        }
    }
    /// Pixel (x, y) → object-centred, unrotated coordinates of its centre.
    pub(super) fn local(&self, x: usize, y: usize) -> (f32, f32) {
        self.local_at(x as f32 + 0.5, y as f32 + 0.5)
    }
    /// Image point (x, y) → object-centred, unrotated coordinates.
    pub(super) fn local_at(&self, x: f32, y: f32) -> (f32, f32) {
        let px = x - self.c - self.dx;
        let py = y - self.c - self.dy;
        (self.cos * px + self.sin * py, -self.sin * px + self.cos * py)
    }
}

/// Renders the normal scene of `kind`, or with `mods` the same scene with a structural fault
/// (the random stream is consumed identically either way, so pose, lighting and noise match).
pub(super) fn render_scene(kind: SynthKind, s: usize, rng: &mut Rnd, mods: &Mods) -> Scene {
    let n = s * s;
    let mut sc = Scene { s, img: vec![[0f32; 3]; n], bg: vec![[0f32; 3]; n], cover: vec![1f32; n], axis: 0.0 };
    match kind {
        SynthKind::Weave => textures::weave(&mut sc, rng),
        SynthKind::Wood => textures::wood(&mut sc, rng),
        SynthKind::Carpet => textures::carpet(&mut sc, rng),
        SynthKind::Bottle => objects::bottle(&mut sc, rng),
        SynthKind::Screw => objects::screw(&mut sc, rng, mods),
        SynthKind::Capsule => objects::capsule(&mut sc, rng, mods),
    }
    // Lighting (gain, white balance and a linear gradient) and sensor noise, shared by object
    // and background so a `missing` piece shows exactly the background the camera would have
    // seen.
    let gain = rng.range(0.9, 1.1);
    let wb = [rng.range(0.97, 1.03), 1.0, rng.range(0.97, 1.03)];
    let (gx, gy) = (rng.range(-0.12, 0.12), rng.range(-0.12, 0.12));
    let sigma = rng.range(0.008, 0.02) * if kind == SynthKind::Carpet { 2.0 } else { 1.0 };
    for y in 0..s {
        for x in 0..s {
            let i = y * s + x;
            let l = gain * (1.0 + gx * ((x as f32 + 0.5) / s as f32 - 0.5) + gy * ((y as f32 + 0.5) / s as f32 - 0.5));
            let nz = rng.gauss() * sigma;
            for (c, w) in wb.iter().enumerate() {
                sc.img[i][c] = sc.img[i][c] * l * w + nz;
                sc.bg[i][c] = sc.bg[i][c] * l * w + nz;
            }
        }
    }
    if kind.is_texture() {
        sc.bg.clone_from(&sc.img);
    }
    sc
}
