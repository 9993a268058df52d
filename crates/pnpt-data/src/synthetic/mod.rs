//! A deterministic synthetic defect dataset in MVTec AD layout.
//!
//! Six categories, three textures and three objects:
//!
//! | category  | what it shows                                              | defects                                 |
//! |-----------|------------------------------------------------------------|-----------------------------------------|
//! | `weave`   | woven fabric, over-under threads on a slightly rotated grid | hole, stain, color, thread              |
//! | `wood`    | wood grain with fine streaks                               | scratch, crack, hole, stain, color      |
//! | `carpet`  | multi-octave tufted noise with speckle                      | hole, stain, color, thread              |
//! | `bottle`  | a bottle seen from above: bright rim, dark glass, on black  | missing, crack, scratch, stain          |
//! | `screw`   | a threaded screw with a slotted head on a light table       | scratch, bent, missing, stain           |
//! | `capsule` | a two-tone capsule printed "250", on a dark tray           | print, crack, missing, color, stain     |
//!
//! Normal images vary the way a real line's do: lighting gain, gradient and white balance, sensor
//! noise, texture phase and orientation, object position and rotation, small colour and size
//! tolerances. So normal and defective images are not separable by a global statistic: a defect
//! changes a small patch (0.3–5 % of the image), the lighting changes every pixel.
//!
//! Defects ([`Defect`]) are drawn the way they occur in production and are meant to be seen at a
//! glance: textures get surface defects, objects also structural ones (a piece broken off, a bent
//! tip, a faulty print), which are rendered by drawing the same object (same pose, lighting and
//! noise) with the fault and keeping the pixels that changed. Every defect image changes its masked
//! pixels by [`MIN_MEAN_DELTA`] grey levels or more on average over at least
//! [`MIN_AREA_FRACTION`] of the image (its random shape is redrawn until it does). Each mask is
//! exactly the set of changed pixels: every masked pixel differs from the defect-free rendering by
//! at least [`MIN_DELTA`] grey levels in some channel, and no other pixel differs.
//!
//! Everything derives from [`SyntheticConfig::seed`] through ChaCha8 streams keyed by
//! (category, split, index), so images can be rendered in parallel and the files are
//! byte-identical for the same configuration.
mod defects;
mod objects;
mod textures;

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
pub const GENERATOR_VERSION: u32 = 2;

/// Name of the stamp file written last into a complete dataset.
pub const STAMP_FILE: &str = "pnpt-synthetic.json";

/// Minimum change (grey levels, max over channels) of every defect pixel, so a mask never
/// covers an unchanged pixel. Anti-aliased fringe pixels that would change by less are left
/// unchanged instead.
pub const MIN_DELTA: u8 = 6;

/// Visibility floor: the mean change over a defect's mask (grey levels, max over channels per
/// pixel) that every defect image reaches, so a person sees the defect at a glance.
pub const MIN_MEAN_DELTA: u8 = 40;

/// Visibility floor: the fraction of the image a defect's mask covers at least (0.3 %, 50 pixels
/// at 128×128; never fewer than 4 pixels).
pub const MIN_AREA_FRACTION: f32 = 0.003;

/// The synthetic categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SynthKind {
    /// Woven fabric: over-under threads with uneven yarn on a slightly rotated grid.
    Weave,
    /// Wood grain: wavy stripes with fine streaks.
    Wood,
    /// Carpet: multi-octave value noise with speckle.
    Carpet,
    /// Bottle seen from above: a bright rim around a dark glass disc on black, any rotation and a
    /// small shift.
    Bottle,
    /// Screw: a threaded shaft with a slotted head on a light table, rotated and shifted a little
    /// per image.
    Screw,
    /// Capsule: a red and white two-piece capsule printed "250" on its white half, lying on a dark
    /// tray with a soft shadow, rotated and shifted a little per image.
    Capsule,
}

impl SynthKind {
    /// All six, in category order (the three textures, then the three objects).
    pub const ALL: [SynthKind; 6] = [
        SynthKind::Weave,
        SynthKind::Wood,
        SynthKind::Carpet,
        SynthKind::Bottle,
        SynthKind::Screw,
        SynthKind::Capsule,
    ];

    /// Folder name of the category.
    pub fn name(self) -> &'static str {
        match self {
            SynthKind::Weave => "weave",
            SynthKind::Wood => "wood",
            SynthKind::Carpet => "carpet",
            SynthKind::Bottle => "bottle",
            SynthKind::Screw => "screw",
            SynthKind::Capsule => "capsule",
        }
    }

    /// Whether it is a stationary texture (defects anywhere) rather than an object.
    pub fn is_texture(self) -> bool {
        matches!(self, SynthKind::Weave | SynthKind::Wood | SynthKind::Carpet)
    }

    /// The defect kinds of this category's test split (test images cycle through them).
    ///
    /// Textures get surface defects; objects also structural ones: the bottle's rim breaks,
    /// the screw's tip bends, the capsule's print fails.
    pub fn defects(self) -> &'static [Defect] {
        use Defect::*;
        match self {
            SynthKind::Weave => &[Hole, Stain, Color, Thread],
            SynthKind::Wood => &[Scratch, Crack, Hole, Stain, Color],
            SynthKind::Carpet => &[Hole, Stain, Color, Thread],
            SynthKind::Bottle => &[Missing, Crack, Scratch, Stain],
            SynthKind::Screw => &[Scratch, Bent, Missing, Stain],
            SynthKind::Capsule => &[Print, Crack, Missing, Color, Stain],
        }
    }

    fn id(self) -> u64 {
        self as u64 + 1
    }
}

/// The defect kinds. Each is drawn clearly visible (see [`MIN_MEAN_DELTA`], [`MIN_AREA_FRACTION`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Defect {
    /// A thin, slightly curved line tapering at both ends: bright (exposed material, a light
    /// reflex) on dark surfaces, dark on light ones.
    Scratch,
    /// A jagged dark line with one to three branches (bright on dark glass, where a crack
    /// catches the light).
    Crack,
    /// An irregular hole with a shadowed rim: the dark backing shows through.
    Hole,
    /// Contamination: an irregular blot of rust, oil, ink, mould or white residue, a clearly
    /// visible colour change with a darker drying ring; the surface shows through it.
    Stain,
    /// A small saturated colour spot (a paint drop, a wrongly coloured speck).
    Color,
    /// A stray fibre of a foreign colour lying on the surface, curling, with a faint shadow.
    Thread,
    /// A piece broken off the object's outline: the background shows through.
    Missing,
    /// A bent part: the screw's tip is bent sideways by 14–28°.
    Bent,
    /// A faulty print on the capsule: characters missing, the ink smeared, or the whole print
    /// misplaced by 6–10 px (in turn by image index).
    Print,
}

impl Defect {
    /// All defect kinds.
    pub const ALL: [Defect; 9] = [
        Defect::Scratch,
        Defect::Crack,
        Defect::Hole,
        Defect::Stain,
        Defect::Color,
        Defect::Thread,
        Defect::Missing,
        Defect::Bent,
        Defect::Print,
    ];

    /// Folder name of the defect.
    pub fn name(self) -> &'static str {
        match self {
            Defect::Scratch => "scratch",
            Defect::Crack => "crack",
            Defect::Hole => "hole",
            Defect::Stain => "stain",
            Defect::Color => "color",
            Defect::Thread => "thread",
            Defect::Missing => "missing",
            Defect::Bent => "bent",
            Defect::Print => "print",
        }
    }

    fn id(self) -> u64 {
        // Offset so no defect id equals a normal split's id (1, 2).
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
/// integration tests: 6 categories × (48 train + 10 good + 20 defective test) at 128×128.
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
            // Divisible by 4 and 5: every category has 4 or 5 defect kinds, each equally often.
            test_defective: 20,
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
/// `index` counts within the folder (`test/<defect>/NNN.png` has index NNN). A defect the
/// category does not list (see [`SynthKind::defects`]) is drawn as the nearest kind it supports:
/// `bent` elsewhere than on the screw becomes `missing` on objects and `crack` on textures,
/// `print` elsewhere than on the capsule becomes `stain`, `missing` on a texture becomes `hole`.
pub fn render(cfg: &SyntheticConfig, kind: SynthKind, split: SynthSplit, index: usize) -> Rendered {
    let seed =
        splitmix(splitmix(splitmix(cfg.seed ^ splitmix(kind.id())) ^ split.id()) ^ index as u64);
    let mut rng = Rnd(ChaCha8Rng::seed_from_u64(seed));
    let s = cfg.size as usize;
    // A structural defect redraws the same scene with a fault; starting from this copy of the
    // stream gives it the same pose, lighting and noise.
    let scene_rng = rng.clone();
    let scene = render_scene(kind, s, &mut rng, &objects::Mods::default());
    let clean = scene.quantised();
    let (image, mask) = match split {
        SynthSplit::TestDefect(defect) => {
            defects::apply(&scene, &clean, defect, kind, index, &mut rng, &scene_rng)
        }
        SynthSplit::Train | SynthSplit::TestGood => (clean.clone(), vec![0u8; s * s]),
    };
    let to_rgb = |v: Vec<u8>| RgbImage::from_raw(s as u32, s as u32, v).unwrap_or_default();
    Rendered {
        clean: to_rgb(clean),
        image: to_rgb(image),
        mask: GrayImage::from_raw(s as u32, s as u32, mask).unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------------------------
// Random and geometry helpers shared by the renderers

#[derive(Clone)]
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
fn add3(a: [f32; 3], k: f32) -> [f32; 3] {
    [a[0] + k, a[1] + k, a[2] + k]
}
fn luma(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}
/// Largest per-channel difference.
fn max_diff(a: [f32; 3], b: [f32; 3]) -> f32 {
    (0..3).map(|c| (a[c] - b[c]).abs()).fold(0.0, f32::max)
}
fn tint(base: [f32; 3], rng: &mut Rnd, amount: f32) -> [f32; 3] {
    let g = rng.range(-amount, amount);
    [
        base[0] + g + rng.range(-amount, amount) * 0.5,
        base[1] + g,
        base[2] + g + rng.range(-amount, amount) * 0.5,
    ]
}

/// A polyline with a half-width per vertex (interpolated along each segment): scratches,
/// cracks, threads and printed characters.
#[derive(Clone, Default)]
struct Stroke {
    pts: Vec<(f32, f32, f32)>,
}

impl Stroke {
    /// Signed distance to the stroke's edge (negative inside).
    fn sd(&self, x: f32, y: f32) -> f32 {
        let mut best = f32::MAX;
        for w in self.pts.windows(2) {
            let ((ax, ay, ha), (bx, by, hb)) = (w[0], w[1]);
            let (vx, vy) = (bx - ax, by - ay);
            let len2 = vx * vx + vy * vy;
            let t = if len2 > 0.0 {
                (((x - ax) * vx + (y - ay) * vy) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (dx, dy) = (x - ax - t * vx, y - ay - t * vy);
            best = best.min((dx * dx + dy * dy).sqrt() - lerp(ha, hb, t));
        }
        best
    }
    /// Anti-aliased coverage of the pixel centred at (x, y).
    fn alpha(&self, x: f32, y: f32) -> f32 {
        (0.5 - self.sd(x, y)).clamp(0.0, 1.0)
    }
    /// Bounding box (x0, y0, x1, y1) including the widest half-width and a pixel of margin.
    fn bbox(&self) -> [f32; 4] {
        let hw = self.pts.iter().map(|p| p.2).fold(0.0, f32::max) + 1.0;
        self.pts
            .iter()
            .fold([f32::MAX, f32::MAX, f32::MIN, f32::MIN], |b, &(x, y, _)| {
                [
                    b[0].min(x - hw),
                    b[1].min(y - hw),
                    b[2].max(x + hw),
                    b[3].max(y + hw),
                ]
            })
    }
}

/// Smallest box holding all `boxes` (x0, y0, x1, y1), each grown by `grow`; empty (x0 > x1)
/// when there are none.
fn union_bbox(boxes: impl Iterator<Item = [f32; 4]>, grow: f32) -> [f32; 4] {
    boxes.fold([f32::MAX, f32::MAX, f32::MIN, f32::MIN], |b, g| {
        [
            b[0].min(g[0] - grow),
            b[1].min(g[1] - grow),
            b[2].max(g[2] + grow),
            b[3].max(g[3] + grow),
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// Scenes

/// A defect-free rendering in linear [0, 1] floats, with the background alone (for `missing`),
/// the object coverage (1 everywhere for textures) and the object's orientation.
struct Scene {
    s: usize,
    img: Vec<[f32; 3]>,
    bg: Vec<[f32; 3]>,
    cover: Vec<f32>,
    /// Direction of the object's long axis in image coordinates (radians; 0 for textures), so
    /// scratches on the screw run along it as they do when screws rub in a feeder.
    axis: f32,
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
    angle: f32,
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
            angle: a,
            cos: a.cos(),
            sin: a.sin(),
            dx: rng.range(-max_shift, max_shift),
            dy: rng.range(-max_shift, max_shift),
        }
    }
    /// Pixel (x, y) → object-centred, unrotated coordinates of its centre.
    fn local(&self, x: usize, y: usize) -> (f32, f32) {
        self.local_at(x as f32 + 0.5, y as f32 + 0.5)
    }
    /// Image point (x, y) → object-centred, unrotated coordinates.
    fn local_at(&self, x: f32, y: f32) -> (f32, f32) {
        let px = x - self.c - self.dx;
        let py = y - self.c - self.dy;
        (
            self.cos * px + self.sin * py,
            -self.sin * px + self.cos * py,
        )
    }
}

/// Renders the normal scene of `kind`, or with `mods` the same scene with a structural fault
/// (the random stream is consumed identically either way, so pose, lighting and noise match).
fn render_scene(kind: SynthKind, s: usize, rng: &mut Rnd, mods: &objects::Mods) -> Scene {
    let n = s * s;
    let mut sc = Scene {
        s,
        img: vec![[0f32; 3]; n],
        bg: vec![[0f32; 3]; n],
        cover: vec![1f32; n],
        axis: 0.0,
    };
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
            let l = gain
                * (1.0
                    + gx * ((x as f32 + 0.5) / s as f32 - 0.5)
                    + gy * ((y as f32 + 0.5) / s as f32 - 0.5));
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
/// assert_eq!(pnpt_data::Dataset::open(&root, None).unwrap().categories.len(), 6);
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
