//! A deterministic synthetic defect dataset in MVTec AD layout.
//!
//! Three textures (`weave`, `wood`, `carpet`) and two objects (`bottle`, a disc seen from above,
//! and `screw`, a threaded bar with pose jitter). Normal images vary in texture phase, lighting,
//! position and rotation, so normal and defective are not separable by a global statistic.
//! Defects (`scratch`, `spot`, `hole`, `missing`, `stain`) range from subtle to clear, and each
//! mask is exactly the set of pixels the defect changed: every masked pixel differs from the
//! defect-free rendering by at least [`MIN_DELTA`] grey levels in some channel, and no other pixel
//! differs.
//!
//! Everything derives from [`SyntheticConfig::seed`] through ChaCha8 streams keyed by
//! (category, split, index), so images can be rendered in parallel and the files are
//! byte-identical for the same configuration.
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::{ExtendedColorType, GrayImage, ImageEncoder, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::DataError;

/// Version of the rendering code. Bump it whenever the output bytes change, so cached copies
/// made by [`ensure_synthetic`] are regenerated.
pub const GENERATOR_VERSION: u32 = 1;

/// Name of the stamp file written last into a complete dataset.
pub const STAMP_FILE: &str = "pnpt-synthetic.json";

/// Minimum change (grey levels, max over channels) of every defect pixel, so a mask never
/// covers an unchanged pixel.
pub const MIN_DELTA: u8 = 6;

/// The synthetic categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SynthKind {
    /// Woven fabric: over-under threads on a slightly rotated grid.
    Weave,
    /// Wood grain: wavy stripes with fine streaks.
    Wood,
    /// Carpet: multi-octave value noise with speckle.
    Carpet,
    /// Bottle seen from above: a bright rim around a dark glass disc on black.
    Bottle,
    /// Screw: a threaded bar with a head, rotated and shifted a little per image.
    Screw,
}

impl SynthKind {
    /// All five, in category order.
    pub const ALL: [SynthKind; 5] = [
        SynthKind::Weave,
        SynthKind::Wood,
        SynthKind::Carpet,
        SynthKind::Bottle,
        SynthKind::Screw,
    ];

    /// Folder name of the category.
    pub fn name(self) -> &'static str {
        match self {
            SynthKind::Weave => "weave",
            SynthKind::Wood => "wood",
            SynthKind::Carpet => "carpet",
            SynthKind::Bottle => "bottle",
            SynthKind::Screw => "screw",
        }
    }

    /// Whether it is a stationary texture (defects anywhere) rather than an object.
    pub fn is_texture(self) -> bool {
        matches!(self, SynthKind::Weave | SynthKind::Wood | SynthKind::Carpet)
    }

    /// The defect kinds of this category's test split (test images cycle through them).
    pub fn defects(self) -> &'static [Defect] {
        if self.is_texture() {
            &[Defect::Scratch, Defect::Spot, Defect::Hole, Defect::Stain]
        } else {
            &[
                Defect::Scratch,
                Defect::Spot,
                Defect::Missing,
                Defect::Stain,
            ]
        }
    }

    fn id(self) -> u64 {
        self as u64 + 1
    }
}

/// The defect kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Defect {
    /// A thin curved line, brighter or darker than the surface.
    Scratch,
    /// A small dark ellipse (dirt, contamination).
    Spot,
    /// An irregular dark hole through a texture.
    Hole,
    /// A piece bitten out of an object's outline (background shows through).
    Missing,
    /// An irregular colour cast (rust, liquid), often subtle.
    Stain,
}

impl Defect {
    /// Folder name of the defect.
    pub fn name(self) -> &'static str {
        match self {
            Defect::Scratch => "scratch",
            Defect::Spot => "spot",
            Defect::Hole => "hole",
            Defect::Missing => "missing",
            Defect::Stain => "stain",
        }
    }

    fn id(self) -> u64 {
        self as u64 + 10
    }
}

/// Which image of a category to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SynthSplit {
    /// A normal training image (`train/good`).
    Train,
    /// A normal test image (`test/good`).
    TestGood,
    /// A defective test image (`test/<defect>`).
    TestDefect(Defect),
}

impl SynthSplit {
    fn id(self) -> u64 {
        match self {
            SynthSplit::Train => 1,
            SynthSplit::TestGood => 2,
            SynthSplit::TestDefect(d) => d.id(),
        }
    }
}

/// What to generate. `Default` is the embedded dataset of the `train_mvtec` example and the
/// integration tests: 5 categories × (48 train + 10 good + 16 defective test) at 128×128.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyntheticConfig {
    /// Master seed; everything derives from it.
    pub seed: u64,
    /// Square image side in pixels (32..=1024); defect and pattern sizes scale with it.
    pub size: u32,
    /// Normal training images per category.
    pub train_good: usize,
    /// Normal test images per category.
    pub test_good: usize,
    /// Defective test images per category, spread evenly over the category's defect kinds.
    pub test_defective: usize,
    /// Categories to generate, in this order.
    pub categories: Vec<SynthKind>,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            seed: 0x5EED_0001,
            size: 128,
            train_good: 48,
            test_good: 10,
            test_defective: 16,
            categories: SynthKind::ALL.to_vec(),
        }
    }
}

impl SyntheticConfig {
    /// Checks the ranges; `path` only labels the error.
    pub fn validate(&self, path: &Path) -> Result<(), DataError> {
        let bad = |reason: String| {
            Err(DataError::InvalidConfig {
                path: path.to_path_buf(),
                reason,
            })
        };
        if !(32..=1024).contains(&self.size) {
            return bad(format!("synthetic size {} is outside 32..=1024", self.size));
        }
        if self.train_good == 0 {
            return bad("synthetic train_good must be at least 1".into());
        }
        if self.categories.is_empty() {
            return bad("synthetic categories must not be empty".into());
        }
        let mut seen = self.categories.clone();
        seen.sort_by_key(|k| k.id());
        seen.dedup();
        if seen.len() != self.categories.len() {
            return bad("synthetic categories contain a duplicate".into());
        }
        if self.train_good + self.test_good + self.test_defective > 100_000 {
            return bad("synthetic image counts are unreasonably large (> 100000)".into());
        }
        Ok(())
    }

    /// Folder name used by [`ensure_synthetic`]: version, seed, size and a hash of the whole
    /// configuration, so different configurations never share a cache entry.
    pub fn folder_name(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        format!(
            "synthetic-v{GENERATOR_VERSION}-seed{}-{}px-{:016x}",
            self.seed,
            self.size,
            fnv1a(json.as_bytes())
        )
    }

    /// Number of PNG files (images and masks) a complete dataset holds.
    pub fn file_count(&self) -> usize {
        self.categories.len() * (self.train_good + self.test_good + 2 * self.test_defective)
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x1000_0000_01b3)
    })
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

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
/// `index` counts within the folder (`test/<defect>/NNN.png` has index NNN).
pub fn render(cfg: &SyntheticConfig, kind: SynthKind, split: SynthSplit, index: usize) -> Rendered {
    let seed =
        splitmix(splitmix(splitmix(cfg.seed ^ splitmix(kind.id())) ^ split.id()) ^ index as u64);
    let mut rng = Rnd(ChaCha8Rng::seed_from_u64(seed));
    let s = cfg.size as usize;
    let scene = render_scene(kind, s, &mut rng);
    let clean = scene.quantised();
    let mut image = clean.clone();
    let mut mask = vec![0u8; s * s];
    if let SynthSplit::TestDefect(defect) = split {
        apply_defect(
            &scene, &clean, &mut image, &mut mask, defect, kind, &mut rng,
        );
    }
    let to_rgb = |v: Vec<u8>| RgbImage::from_raw(s as u32, s as u32, v).unwrap_or_default();
    Rendered {
        clean: to_rgb(clean),
        image: to_rgb(image),
        mask: GrayImage::from_raw(s as u32, s as u32, mask).unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------------------
// Random helpers

struct Rnd(ChaCha8Rng);

impl Rnd {
    fn u(&mut self) -> f32 {
        self.0.random::<f32>()
    }
    fn range(&mut self, a: f32, b: f32) -> f32 {
        a + (b - a) * self.u()
    }
    /// Approximately standard normal (Irwin–Hall of 4), cheap and deterministic.
    fn gauss(&mut self) -> f32 {
        (self.u() + self.u() + self.u() + self.u() - 2.0) * 1.732_050_8
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.u() * n as f32) as usize).min(n.saturating_sub(1))
    }
    fn sign(&mut self) -> f32 {
        if self.u() < 0.5 { -1.0 } else { 1.0 }
    }
}

/// A periodic lattice of random values for smooth value noise.
struct Lattice {
    w: usize,
    h: usize,
    v: Vec<f32>,
}

impl Lattice {
    fn new(w: usize, h: usize, rng: &mut Rnd) -> Self {
        let v = (0..w * h).map(|_| rng.range(-1.0, 1.0)).collect();
        Self { w, h, v }
    }
    fn at(&self, i: i64, j: i64) -> f32 {
        let i = i.rem_euclid(self.w as i64) as usize;
        let j = j.rem_euclid(self.h as i64) as usize;
        self.v[j * self.w + i]
    }
    /// Smoothstep-interpolated value at lattice coordinates (x, y), in [-1, 1].
    fn sample(&self, x: f32, y: f32) -> f32 {
        let (fx, fy) = (x.floor(), y.floor());
        let (tx, ty) = (smooth(x - fx), smooth(y - fy));
        let (i, j) = (fx as i64, fy as i64);
        let a = lerp(self.at(i, j), self.at(i + 1, j), tx);
        let b = lerp(self.at(i, j + 1), self.at(i + 1, j + 1), tx);
        lerp(a, b, ty)
    }
}

fn smooth(t: f32) -> f32 {
    t * t * (3.0 - 2.0 * t)
}
fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}
fn mix3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        lerp(a[0], b[0], t),
        lerp(a[1], b[1], t),
        lerp(a[2], b[2], t),
    ]
}
fn scale3(a: [f32; 3], k: f32) -> [f32; 3] {
    [a[0] * k, a[1] * k, a[2] * k]
}
fn tint(base: [f32; 3], rng: &mut Rnd, amount: f32) -> [f32; 3] {
    let g = rng.range(-amount, amount);
    [
        base[0] + g + rng.range(-amount, amount) * 0.5,
        base[1] + g,
        base[2] + g + rng.range(-amount, amount) * 0.5,
    ]
}

// ---------------------------------------------------------------------------------------------
// Normal scenes

/// A defect-free rendering in linear [0, 1] floats, with the background alone (for `missing`)
/// and the object coverage (1 everywhere for textures).
struct Scene {
    s: usize,
    img: Vec<[f32; 3]>,
    bg: Vec<[f32; 3]>,
    cover: Vec<f32>,
}

fn q(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

impl Scene {
    fn quantised(&self) -> Vec<u8> {
        self.img
            .iter()
            .flat_map(|p| [q(p[0]), q(p[1]), q(p[2])])
            .collect()
    }
    fn on_object(&self, i: usize) -> bool {
        self.cover[i] > 0.5
    }
}

/// Per-image pose: rotation, shift and the pixel → pattern-space transform.
struct Pose {
    c: f32,
    cos: f32,
    sin: f32,
    dx: f32,
    dy: f32,
}

impl Pose {
    fn new(s: usize, max_deg: f32, max_shift: f32, rng: &mut Rnd) -> Self {
        let a = rng.range(-max_deg, max_deg).to_radians();
        Self {
            c: s as f32 / 2.0,
            cos: a.cos(),
            sin: a.sin(),
            dx: rng.range(-max_shift, max_shift),
            dy: rng.range(-max_shift, max_shift),
        }
    }
    /// Pixel (x, y) → object-centred, unrotated coordinates.
    fn local(&self, x: usize, y: usize) -> (f32, f32) {
        let px = x as f32 + 0.5 - self.c - self.dx;
        let py = y as f32 + 0.5 - self.c - self.dy;
        (
            self.cos * px + self.sin * py,
            -self.sin * px + self.cos * py,
        )
    }
}

fn render_scene(kind: SynthKind, s: usize, rng: &mut Rnd) -> Scene {
    let k = s as f32 / 128.0;
    let n = s * s;
    let mut img = vec![[0f32; 3]; n];
    let mut bg = vec![[0f32; 3]; n];
    let mut cover = vec![1f32; n];
    match kind {
        SynthKind::Weave => {
            let pose = Pose::new(s, 4.0, 0.0, rng);
            let p = 11.0 * k * rng.range(0.95, 1.05);
            let (ox, oy) = (rng.range(0.0, 2.0 * p), rng.range(0.0, 2.0 * p));
            let warp = tint([0.78, 0.70, 0.52], rng, 0.04);
            let weft = tint([0.70, 0.64, 0.50], rng, 0.04);
            for y in 0..s {
                for x in 0..s {
                    let (lx, ly) = pose.local(x, y);
                    let (cx, cy) = ((lx + ox) / p, (ly + oy) / p);
                    let (i, j) = (cx.floor() as i64, cy.floor() as i64);
                    let (fx, fy) = (cx - cx.floor(), cy - cy.floor());
                    let pi = std::f32::consts::PI;
                    // Over-under: the thread on top alternates like a checkerboard.
                    let (col, across, along) = if (i + j).rem_euclid(2) == 0 {
                        (warp, fy, fx)
                    } else {
                        (weft, fx, fy)
                    };
                    let v =
                        (0.55 + 0.45 * (pi * across).sin()) * (0.85 + 0.15 * (pi * along).sin());
                    img[y * s + x] = scale3(col, v);
                }
            }
        }
        SynthKind::Wood => {
            let pose = Pose::new(s, 5.0, 0.0, rng);
            let p = rng.range(10.0, 14.0) * k;
            let (a1, l1, f1) = (
                rng.range(0.3, 0.8),
                rng.range(60.0, 180.0) * k,
                rng.range(0.0, 6.3),
            );
            let (a2, l2, f2) = (
                rng.range(0.05, 0.25),
                rng.range(15.0, 40.0) * k,
                rng.range(0.0, 6.3),
            );
            let off = rng.range(0.0, 1.0);
            let light = tint([0.78, 0.57, 0.35], rng, 0.03);
            let dark = tint([0.52, 0.33, 0.18], rng, 0.03);
            let streaks = Lattice::new(97, 7, rng);
            let tau = std::f32::consts::TAU;
            for y in 0..s {
                for x in 0..s {
                    let (lx, ly) = pose.local(x, y);
                    let t = lx / p
                        + a1 * (tau * ly / l1 + f1).sin()
                        + a2 * (tau * ly / l2 + f2).sin()
                        + off;
                    let ring = 0.5 + 0.5 * (tau * t).sin();
                    let st = streaks.sample(lx / (1.7 * k), ly / (30.0 * k));
                    let v = (ring * ring * 0.85 + 0.08 * st + 0.07).clamp(0.0, 1.0);
                    img[y * s + x] = mix3(light, dark, v);
                }
            }
        }
        SynthKind::Carpet => {
            let base = tint([0.46, 0.38, 0.55], rng, 0.04);
            let octaves: Vec<(Lattice, f32, f32)> = [(3.0, 0.30), (7.0, 0.22), (16.0, 0.15)]
                .iter()
                .map(|&(cell, amp)| {
                    let m = ((s as f32 / (cell * k)).ceil() as usize).max(2);
                    (Lattice::new(m, m, rng), cell * k, amp)
                })
                .collect();
            for y in 0..s {
                for x in 0..s {
                    let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
                    let v: f32 = octaves
                        .iter()
                        .map(|(l, c, a)| a * l.sample(fx / c, fy / c))
                        .sum();
                    img[y * s + x] = scale3(base, 1.0 + v);
                }
            }
        }
        SynthKind::Bottle => {
            let pose = Pose::new(s, 180.0, 2.5 * k, rng);
            let r_out = 0.40 * s as f32 * rng.range(0.98, 1.02);
            let glass = tint([0.26, 0.31, 0.22], rng, 0.03);
            let rim = tint([0.62, 0.66, 0.55], rng, 0.03);
            let back = [0.07, 0.07, 0.08];
            let hl_angle = rng.range(0.0, std::f32::consts::TAU);
            for y in 0..s {
                for x in 0..s {
                    let (lx, ly) = pose.local(x, y);
                    let r = (lx * lx + ly * ly).sqrt();
                    let t = r / r_out;
                    let col = if t > 0.82 {
                        let v = 0.55
                            + 0.45 * (std::f32::consts::PI * ((t - 0.82) / 0.18).min(1.0)).sin();
                        let hl = 0.25 * (ly.atan2(lx) - hl_angle).cos().max(0.0).powi(8);
                        scale3(rim, v + hl)
                    } else if t > 0.45 {
                        scale3(glass, 0.9 + 0.12 * (std::f32::consts::TAU * t * 6.0).cos())
                    } else {
                        scale3(glass, 1.2 + 0.5 * (1.0 - t / 0.45))
                    };
                    let i = y * s + x;
                    cover[i] = (r_out - r + 0.5).clamp(0.0, 1.0);
                    bg[i] = back;
                    img[i] = mix3(back, col, cover[i]);
                }
            }
        }
        SynthKind::Screw => {
            let pose = Pose::new(s, 10.0, 3.0 * k, rng);
            let sf = s as f32;
            let (a0, a_tip, a1) = (-0.28 * sf, 0.20 * sf, 0.30 * sf);
            let w = 0.055 * sf * rng.range(0.95, 1.05);
            let (head0, head_w) = (-0.36 * sf, 0.11 * sf);
            let pitch = sf / 22.0;
            let phase = rng.range(0.0, std::f32::consts::TAU);
            let metal = tint([0.50, 0.51, 0.54], rng, 0.03);
            let back = tint([0.84, 0.83, 0.80], rng, 0.02);
            for y in 0..s {
                for x in 0..s {
                    let (a, b) = pose.local(x, y);
                    // Shaft half-width tapers to a point over the tip.
                    let hw = if a > a_tip {
                        w * (1.0 - (a - a_tip) / (a1 - a_tip)).max(0.05)
                    } else {
                        w
                    };
                    let sd_shaft = (b.abs() - hw).max(a0 - a).max(a - a1);
                    let sd_head = (b.abs() - head_w).max(head0 - a).max(a - a0);
                    let c_shaft = (0.5 - sd_shaft).clamp(0.0, 1.0);
                    let c_head = (0.5 - sd_head).clamp(0.0, 1.0);
                    let c = c_shaft.max(c_head);
                    let col = if c_head > c_shaft {
                        let slot = if b.abs() < 0.015 * sf { 0.55 } else { 1.0 };
                        scale3(metal, (1.1 - 0.3 * (b / head_w).powi(2)) * slot)
                    } else {
                        let cyl = 0.7
                            + 0.3 * (std::f32::consts::FRAC_PI_2 * (b / w).clamp(-1.0, 1.0)).cos();
                        let thread = 0.85
                            + 0.2 * (std::f32::consts::TAU * a / pitch + phase + b * 0.15).sin();
                        scale3(metal, cyl * thread)
                    };
                    let i = y * s + x;
                    cover[i] = c;
                    bg[i] = back;
                    img[i] = mix3(back, col, c);
                }
            }
        }
    }
    // Lighting (gain and a linear gradient) and sensor noise, shared by object and background so
    // a `missing` piece shows exactly the background the camera would have seen.
    let gain = rng.range(0.9, 1.1);
    let (gx, gy) = (rng.range(-0.12, 0.12), rng.range(-0.12, 0.12));
    let sigma = rng.range(0.008, 0.02) * if kind == SynthKind::Carpet { 2.0 } else { 1.0 };
    for y in 0..s {
        for x in 0..s {
            let i = y * s + x;
            let l = gain
                * (1.0
                    + gx * ((x as f32 + 0.5) / s as f32 - 0.5)
                    + gy * ((y as f32 + 0.5) / s as f32 - 0.5));
            let nz = rng.gauss() * sigma;
            for c in 0..3 {
                img[i][c] = img[i][c] * l + nz;
                bg[i][c] = bg[i][c] * l + nz;
            }
        }
    }
    if kind.is_texture() {
        bg.clone_from(&img);
    }
    Scene { s, img, bg, cover }
}

// ---------------------------------------------------------------------------------------------
// Defects

/// Pixels of a shape: those inside the bounding box whose centre satisfies `inside`.
fn region(
    s: usize,
    cx: f32,
    cy: f32,
    radius: f32,
    inside: impl Fn(f32, f32) -> bool,
) -> Vec<usize> {
    let lo = |v: f32| ((v - radius - 1.0).floor().max(0.0)) as usize;
    let hi = |v: f32| ((v + radius + 1.0).ceil().max(0.0) as usize).min(s);
    let mut out = Vec::new();
    for y in lo(cy)..hi(cy) {
        for x in lo(cx)..hi(cx) {
            if inside(x as f32 + 0.5, y as f32 + 0.5) {
                out.push(y * s + x);
            }
        }
    }
    out
}

/// A random point on the object (any point for textures), away from the border.
fn pick_point(scene: &Scene, rng: &mut Rnd, margin: f32) -> (f32, f32) {
    let s = scene.s as f32;
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
fn pick_outline(scene: &Scene, rng: &mut Rnd) -> (f32, f32) {
    let s = scene.s;
    let outline: Vec<usize> = (0..s * s)
        .filter(|&i| {
            let (x, y) = (i % s, i / s);
            scene.on_object(i)
                && x > 0
                && y > 0
                && x + 1 < s
                && y + 1 < s
                && [i - 1, i + 1, i - s, i + s]
                    .iter()
                    .any(|&j| !scene.on_object(j))
        })
        .collect();
    if outline.is_empty() {
        return (s as f32 / 2.0, s as f32 / 2.0);
    }
    let i = outline[rng.below(outline.len())];
    ((i % s) as f32 + 0.5, (i / s) as f32 + 0.5)
}

/// Irregular blob: radius wobbles with the angle.
fn blob(r0: f32, rng: &mut Rnd) -> impl Fn(f32, f32) -> bool + use<> {
    let (a1, f1, a2, f2) = (
        rng.range(0.1, 0.3),
        rng.range(0.0, 6.3),
        rng.range(0.0, 0.12),
        rng.range(0.0, 6.3),
    );
    move |dx: f32, dy: f32| {
        let th = dy.atan2(dx);
        let r = r0 * (1.0 + a1 * (3.0 * th + f1).sin() + a2 * (5.0 * th + f2).sin());
        dx * dx + dy * dy <= r * r
    }
}

fn dist_to_segment(px: f32, py: f32, a: (f32, f32), b: (f32, f32)) -> f32 {
    let (vx, vy) = (b.0 - a.0, b.1 - a.1);
    let len2 = vx * vx + vy * vy;
    let t = if len2 > 0.0 {
        (((px - a.0) * vx + (py - a.1) * vy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (dx, dy) = (px - a.0 - t * vx, py - a.1 - t * vy);
    (dx * dx + dy * dy).sqrt()
}

/// Shape of one defect: its pixels, plus a per-pixel recolouring of the clean value.
fn defect_shape(
    scene: &Scene,
    defect: Defect,
    kind: SynthKind,
    rng: &mut Rnd,
) -> (Vec<usize>, Recolor) {
    let s = scene.s;
    let k = s as f32 / 128.0;
    // Strength in [0, 1]: 0 = barely visible, 1 = obvious; drawn per image for a subtle-to-clear mix.
    let strength = rng.u();
    match defect {
        Defect::Scratch => {
            let (mx, my) = pick_point(scene, rng, 6.0 * k);
            let len = if kind.is_texture() {
                rng.range(20.0, 50.0)
            } else {
                rng.range(12.0, 30.0)
            } * k;
            let ang = rng.range(0.0, std::f32::consts::PI);
            let (ux, uy) = (ang.cos(), ang.sin());
            let bend = rng.range(-0.15, 0.15) * len;
            let p0 = (mx - ux * len / 2.0, my - uy * len / 2.0);
            let p2 = (mx + ux * len / 2.0, my + uy * len / 2.0);
            let p1 = (mx - uy * bend, my + ux * bend);
            let pts: Vec<(f32, f32)> = (0..=16)
                .map(|i| {
                    let t = i as f32 / 16.0;
                    let w = [(1.0 - t) * (1.0 - t), 2.0 * t * (1.0 - t), t * t];
                    (
                        w[0] * p0.0 + w[1] * p1.0 + w[2] * p2.0,
                        w[0] * p0.1 + w[1] * p1.1 + w[2] * p2.1,
                    )
                })
                .collect();
            let hw = [0.6, 0.9, 1.4][rng.below(3)] * k.max(1.0);
            let px = region(s, mx, my, len / 2.0 + len.abs() * 0.2 + hw, |x, y| {
                pts.windows(2)
                    .any(|w| dist_to_segment(x, y, w[0], w[1]) <= hw)
            });
            let amount = (0.05 + 0.30 * strength) * rng.sign();
            (px, Recolor::Add(amount))
        }
        Defect::Spot => {
            let (cx, cy) = pick_point(scene, rng, 6.0 * k);
            let (rx, ry) = (rng.range(1.5, 5.0) * k, rng.range(1.5, 5.0) * k);
            let a = rng.range(0.0, std::f32::consts::PI);
            let (ca, sa) = (a.cos(), a.sin());
            let px = region(s, cx, cy, rx.max(ry), |x, y| {
                let (dx, dy) = (x - cx, y - cy);
                let (u, v) = (ca * dx + sa * dy, -sa * dx + ca * dy);
                (u / rx).powi(2) + (v / ry).powi(2) <= 1.0
            });
            let dark = [
                rng.range(0.05, 0.2),
                rng.range(0.04, 0.15),
                rng.range(0.02, 0.1),
            ];
            (px, Recolor::Toward(dark, 0.2 + 0.65 * strength))
        }
        Defect::Hole => {
            let (cx, cy) = pick_point(scene, rng, 10.0 * k);
            let r0 = rng.range(3.0, 8.0) * k;
            let inside = blob(r0, rng);
            let px = region(s, cx, cy, r0 * 1.5, |x, y| inside(x - cx, y - cy));
            (
                px,
                Recolor::Hole {
                    cx,
                    cy,
                    r: r0 * 1.5,
                },
            )
        }
        Defect::Missing => {
            let (cx, cy) = pick_outline(scene, rng);
            let r0 = rng.range(4.0, 10.0) * k;
            let px = region(s, cx, cy, r0, |x, y| {
                (x - cx).powi(2) + (y - cy).powi(2) <= r0 * r0
            });
            (px, Recolor::Background)
        }
        Defect::Stain => {
            let (cx, cy) = pick_point(scene, rng, 8.0 * k);
            let r0 = rng.range(4.0, 12.0) * k;
            let inside = blob(r0, rng);
            let px = region(s, cx, cy, r0 * 1.5, |x, y| inside(x - cx, y - cy));
            let hues = [
                [1.0, 0.55, 0.30],
                [0.55, 0.85, 0.40],
                [0.45, 0.55, 1.0],
                [0.9, 0.85, 0.35],
            ];
            let hue = hues[rng.below(hues.len())];
            (px, Recolor::Tint(hue, 0.12 + 0.45 * strength))
        }
    }
}

/// How a defect recolours a pixel, from its clean value in [0, 1].
enum Recolor {
    Add(f32),
    Toward([f32; 3], f32),
    Hole { cx: f32, cy: f32, r: f32 },
    Background,
    Tint([f32; 3], f32),
}

fn apply_defect(
    scene: &Scene,
    clean: &[u8],
    image: &mut [u8],
    mask: &mut [u8],
    defect: Defect,
    kind: SynthKind,
    rng: &mut Rnd,
) {
    let s = scene.s;
    // Retry until the shape has a few pixels on the object (a scratch may leave a thin screw).
    let mut shape = None;
    for _ in 0..32 {
        let (px, rc) = defect_shape(scene, defect, kind, rng);
        let px: Vec<usize> = px.into_iter().filter(|&i| scene.on_object(i)).collect();
        if px.len() >= 4 {
            shape = Some((px, rc));
            break;
        }
    }
    // Fallback that always works: a 3×3 dark patch at an object point.
    let (px, rc) = shape.unwrap_or_else(|| {
        let (cx, cy) = pick_point(scene, rng, 2.0);
        let px = region(s, cx, cy, 2.0, |x, y| {
            (x - cx).abs() <= 1.5 && (y - cy).abs() <= 1.5
        });
        (px, Recolor::Toward([0.1, 0.1, 0.1], 0.6))
    });
    for i in px {
        let c = [
            clean[3 * i] as f32 / 255.0,
            clean[3 * i + 1] as f32 / 255.0,
            clean[3 * i + 2] as f32 / 255.0,
        ];
        let new = match &rc {
            Recolor::Add(a) => [c[0] + a, c[1] + a, c[2] + a],
            Recolor::Toward(col, a) => mix3(c, *col, *a),
            Recolor::Hole { cx, cy, r } => {
                let (x, y) = ((i % s) as f32 + 0.5, (i / s) as f32 + 0.5);
                let d = (((x - cx).powi(2) + (y - cy).powi(2)).sqrt() / r).min(1.0);
                let v = 0.03 + 0.10 * d;
                [v, v * 0.95, v * 0.9]
            }
            Recolor::Background => scene.bg[i],
            Recolor::Tint(hue, a) => {
                let l = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
                mix3(
                    c,
                    [l * hue[0] * 1.2, l * hue[1] * 1.2, l * hue[2] * 1.2],
                    *a,
                )
            }
        };
        let mut out = [q(new[0]), q(new[1]), q(new[2])];
        enforce_min_delta(&clean[3 * i..3 * i + 3], &mut out, &new, &c);
        image[3 * i..3 * i + 3].copy_from_slice(&out);
        mask[i] = 255;
    }
}

/// Makes sure the pixel changed by at least [`MIN_DELTA`] in some channel, moving all channels
/// in the direction the defect intended (brighter or darker), or the other way at the clamp.
fn enforce_min_delta(clean: &[u8], out: &mut [u8; 3], want: &[f32; 3], was: &[f32; 3]) {
    let max_delta = (0..3)
        .map(|c| (out[c] as i16 - clean[c] as i16).abs())
        .max()
        .unwrap_or(0);
    if max_delta >= MIN_DELTA as i16 {
        return;
    }
    let intent: f32 = (0..3).map(|c| want[c] - was[c]).sum();
    let mut dir: i16 = if intent > 0.0 { 1 } else { -1 };
    for _ in 0..2 {
        let cand: Vec<i16> = clean
            .iter()
            .map(|&v| (v as i16 + dir * MIN_DELTA as i16).clamp(0, 255))
            .collect();
        if (0..3).any(|c| (cand[c] - clean[c] as i16).abs() >= MIN_DELTA as i16) {
            for c in 0..3 {
                out[c] = cand[c] as u8;
            }
            return;
        }
        dir = -dir;
    }
}

// ---------------------------------------------------------------------------------------------
// Writing

fn write_png(
    path: &Path,
    w: u32,
    h: u32,
    data: &[u8],
    color: ExtendedColorType,
) -> Result<(), DataError> {
    let file = fs::File::create(path).map_err(|e| DataError::io(path, e))?;
    let mut out = BufWriter::new(file);
    PngEncoder::new_with_quality(&mut out, CompressionType::Fast, PngFilter::Adaptive)
        .write_image(data, w, h, color)
        .map_err(|e| DataError::Encode {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    out.flush().map_err(|e| DataError::io(path, e))
}

#[derive(Serialize, Deserialize)]
struct Stamp {
    generator: String,
    version: u32,
    files: usize,
    config: SyntheticConfig,
}

/// Writes the dataset into `root` (created if needed) in MVTec AD layout:
/// `<cat>/train/good/NNN.png`, `<cat>/test/{good,<defect>}/NNN.png`,
/// `<cat>/ground_truth/<defect>/NNN_mask.png` (0/255), a `readme.txt`, and last the stamp
/// file [`STAMP_FILE`]. Images are rendered and encoded in parallel.
///
/// ```
/// use pnpt_data::synthetic::{generate, SynthKind, SyntheticConfig};
/// let dir = tempfile::tempdir().unwrap();
/// let cfg = SyntheticConfig { size: 64, train_good: 2, test_good: 1, test_defective: 4,
///     categories: vec![SynthKind::Wood, SynthKind::Screw], ..Default::default() };
/// generate(dir.path(), &cfg).unwrap();
/// let ds = pnpt_data::Dataset::open(dir.path(), None).unwrap();
/// assert_eq!(ds.names(), ["screw", "wood"]);
/// assert_eq!(ds.categories[0].test.len(), 5);
/// ```
pub fn generate(root: &Path, cfg: &SyntheticConfig) -> Result<(), DataError> {
    cfg.validate(root)?;
    let mut jobs: Vec<(SynthKind, SynthSplit, usize, PathBuf, Option<PathBuf>)> = Vec::new();
    for &kind in &cfg.categories {
        let cat = root.join(kind.name());
        let dir = |p: PathBuf| -> Result<PathBuf, DataError> {
            fs::create_dir_all(&p).map_err(|e| DataError::io(&p, e))?;
            Ok(p)
        };
        let train = dir(cat.join("train").join("good"))?;
        let test_good = dir(cat.join("test").join("good"))?;
        for i in 0..cfg.train_good {
            jobs.push((
                kind,
                SynthSplit::Train,
                i,
                train.join(format!("{i:03}.png")),
                None,
            ));
        }
        for i in 0..cfg.test_good {
            jobs.push((
                kind,
                SynthSplit::TestGood,
                i,
                test_good.join(format!("{i:03}.png")),
                None,
            ));
        }
        let defects = kind.defects();
        for d in 0..cfg.test_defective {
            let defect = defects[d % defects.len()];
            let i = d / defects.len();
            let img_dir = dir(cat.join("test").join(defect.name()))?;
            let gt_dir = dir(cat.join("ground_truth").join(defect.name()))?;
            jobs.push((
                kind,
                SynthSplit::TestDefect(defect),
                i,
                img_dir.join(format!("{i:03}.png")),
                Some(gt_dir.join(format!("{i:03}_mask.png"))),
            ));
        }
    }
    let results: Vec<Result<(), DataError>> = jobs
        .par_iter()
        .map(|(kind, split, i, img_path, mask_path)| {
            let r = render(cfg, *kind, *split, *i);
            write_png(
                img_path,
                cfg.size,
                cfg.size,
                r.image.as_raw(),
                ExtendedColorType::Rgb8,
            )?;
            if let Some(mp) = mask_path {
                write_png(
                    mp,
                    cfg.size,
                    cfg.size,
                    r.mask.as_raw(),
                    ExtendedColorType::L8,
                )?;
            }
            Ok(())
        })
        .collect();
    results.into_iter().collect::<Result<(), _>>()?;
    let readme = root.join("readme.txt");
    fs::write(
        &readme,
        format!(
            "Synthetic defect dataset generated by pnpt-data (generator v{GENERATOR_VERSION}).\n\
             MVTec AD layout; masks are 0 (normal) / 255 (defect) and cover exactly the changed pixels.\n\
             Configuration: {}\n",
            serde_json::to_string(cfg).unwrap_or_default()
        ),
    )
    .map_err(|e| DataError::io(&readme, e))?;
    // The stamp goes last: its presence means every file above was written.
    let stamp = Stamp {
        generator: "pnpt-data synthetic".into(),
        version: GENERATOR_VERSION,
        files: cfg.file_count(),
        config: cfg.clone(),
    };
    let stamp_path = root.join(STAMP_FILE);
    let json = serde_json::to_string_pretty(&stamp).map_err(|e| DataError::Encode {
        path: stamp_path.clone(),
        reason: e.to_string(),
    })?;
    fs::write(&stamp_path, json).map_err(|e| DataError::io(&stamp_path, e))
}

fn count_pngs(dir: &Path) -> usize {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                count_pngs(&p)
            } else {
                (p.extension().is_some_and(|x| x == "png")) as usize
            }
        })
        .sum()
}

/// Whether `dir` holds a complete dataset generated by this generator version for exactly
/// this configuration (stamp present and matching, expected number of PNG files on disk).
pub fn is_complete(dir: &Path, cfg: &SyntheticConfig) -> bool {
    let Ok(text) = fs::read_to_string(dir.join(STAMP_FILE)) else {
        return false;
    };
    let Ok(stamp) = serde_json::from_str::<Stamp>(&text) else {
        return false;
    };
    stamp.version == GENERATOR_VERSION
        && &stamp.config == cfg
        && stamp.files == cfg.file_count()
        && count_pngs(dir) == stamp.files
}

/// Returns `dir/<cfg.folder_name()>`, generating it first unless a complete, version-stamped
/// copy is already there.
///
/// Generation goes into a temporary sibling folder that is renamed into place only when
/// complete, so an interrupted run never leaves a half dataset under the final name; a stale or
/// incomplete copy is replaced. When two processes race, the loser uses the winner's copy.
///
/// ```
/// use pnpt_data::synthetic::{ensure_synthetic, SyntheticConfig};
/// let cache = tempfile::tempdir().unwrap();
/// let cfg = SyntheticConfig { size: 32, train_good: 1, test_good: 1, test_defective: 1, ..Default::default() };
/// let root = ensure_synthetic(cache.path(), &cfg).unwrap();
/// assert_eq!(ensure_synthetic(cache.path(), &cfg).unwrap(), root); // second call: cached
/// assert_eq!(pnpt_data::Dataset::open(&root, None).unwrap().categories.len(), 5);
/// ```
pub fn ensure_synthetic(dir: &Path, cfg: &SyntheticConfig) -> Result<PathBuf, DataError> {
    cfg.validate(dir)?;
    let target = dir.join(cfg.folder_name());
    if is_complete(&target, cfg) {
        return Ok(target);
    }
    fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".synthetic-partial-")
        .tempdir_in(dir)
        .map_err(|e| DataError::io(dir, e))?;
    generate(tmp.path(), cfg)?;
    if target.exists() {
        // Stale (older version) or incomplete: replace it.
        if let Err(e) = fs::remove_dir_all(&target) {
            if is_complete(&target, cfg) {
                return Ok(target);
            }
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(DataError::io(&target, e));
            }
        }
    }
    let tmp_path = tmp.keep();
    match fs::rename(&tmp_path, &target) {
        Ok(()) => Ok(target),
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp_path);
            if is_complete(&target, cfg) {
                Ok(target)
            } else {
                Err(DataError::io(&target, e))
            }
        }
    }
}
