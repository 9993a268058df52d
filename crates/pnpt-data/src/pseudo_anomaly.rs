//! A validation set with synthetic anomalies, made from normal images only.
//!
//! Choosing hyper-parameters or score rules on the test split leaks its labels into the result.
//! Instead, [`synthesize`] pastes plausible defects ([`PseudoKind`]: cut-paste patches,
//! scratches, stains, holes, colour spots) into held-out *normal* images, with pixel-exact masks,
//! so image- and pixel-level metrics can be computed on data that never saw a test label.
//!
//! * Defects are plainly visible but small: each changes roughly 0.3 %–4 % of the image
//!   ([`MIN_AREA_FRACTION`], [`MAX_AREA_FRACTION`]), like most real industrial defects.
//! * On an object image they land on the object: the background colour is the median of the
//!   border pixels (refined to a plane, for lighting gradients), centres are drawn among pixels
//!   that differ from it clearly (> 30 grey levels summed over channels), and the defect is
//!   clipped to the (closed, slightly dilated) object. Textures, and images where under 2 % of
//!   the pixels qualify, take defects anywhere.
//! * The mask is exactly the set of changed pixels: every mask pixel differs from the clean
//!   resized image by at least [`MIN_DELTA`] in some channel, and no other pixel differs at all,
//!   so a pixel metric never rewards or punishes a detector for an invisible "defect".
//! * Everything derives from [`PseudoAnomalyConfig::seed`] through one ChaCha8 stream per
//!   (seed, source image, variant), so the output is byte-identical whatever the thread count.
//!
//! ```
//! use pnpt_data::image::{Rgb, RgbImage};
//! use pnpt_data::pseudo_anomaly::{resize_to, synthesize, PseudoAnomalyConfig};
//! // A bright, shaded disc on black: an "object" image of any size.
//! let normal = RgbImage::from_fn(96, 80, |x, y| {
//!     let (dx, dy) = (x as f32 - 48.0, y as f32 - 40.0);
//!     let d = (dx * dx + dy * dy).sqrt();
//!     if d < 30.0 { Rgb([200 - d as u8, 160, 120 + (x % 7) as u8 * 4]) } else { Rgb([0, 0, 0]) }
//! });
//! let cfg = PseudoAnomalyConfig { size: 64, per_image: 5, seed: 7 };
//! let out = synthesize(&[normal.clone()], &[], &cfg).unwrap();
//! assert_eq!(out.len(), 5); // one of each kind, in a fixed cycle
//! let clean = resize_to(&normal, 64); // what the anomalies were drawn on
//! for a in &out {
//!     assert_eq!(a.image.dimensions(), (64, 64));
//!     for (i, (p, q)) in a.image.pixels().zip(clean.pixels()).enumerate() {
//!         assert_eq!(a.mask[i] == 1, p != q); // the mask is exactly the changed pixels
//!     }
//! }
//! assert_eq!(synthesize(&[normal], &[], &cfg).unwrap(), out); // deterministic
//! ```
use std::fmt;

use image::RgbImage;
use image::imageops::FilterType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::DataError;

/// Minimum change (grey levels, max over channels) of every mask pixel: smaller changes are
/// undone, so the mask never claims a pixel nobody could see.
pub const MIN_DELTA: u8 = 6;

/// Smallest accepted output side.
pub const MIN_SIZE: u32 = 16;

/// Largest accepted output side (a guard against accidental huge allocations).
pub const MAX_SIZE: u32 = 8192;

/// Smallest share of the image a defect should change (0.3 %).
pub const MIN_AREA_FRACTION: f32 = 0.003;

/// Largest share of the image a defect should change (4 %).
pub const MAX_AREA_FRACTION: f32 = 0.04;

/// Most anomalies one call makes (each holds a full image: a guard against typos, not a need).
pub const MAX_OUTPUTS: usize = 1_000_000;

/// Summed absolute RGB difference from the border colour above which a pixel counts as object.
const FG_THRESHOLD: u32 = 30;

/// Below this share of object pixels the image is treated as empty/flat: defects go anywhere.
const MIN_FG_FRACTION: f32 = 0.02;

/// Drawing attempts per anomaly; the first [`SAME_KIND_ATTEMPTS`] keep the assigned kind.
const ATTEMPTS: usize = 12;
const SAME_KIND_ATTEMPTS: usize = 8;

/// Centre placements tried per attempt to keep the defect on the object.
const PLACEMENTS: usize = 8;

/// Kinds of pasted defects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PseudoKind {
    /// An irregular patch cut from another normal image (or elsewhere in the same one), slightly
    /// rotated and colour-jittered: a local structure that belongs to the category but not here.
    CutPaste,
    /// A thin bright or dark curve (quadratic Bézier), 1–3 px wide at 256 px.
    Scratch,
    /// A soft-edged blob that tints and darkens the surface (rust, oil, liquid).
    Stain,
    /// A dark irregular blob with a slightly brighter rim.
    Hole,
    /// A saturated colour blob (paint, contamination).
    ColourSpot,
}

impl PseudoKind {
    /// All kinds, in the order outputs cycle through them.
    pub const ALL: [PseudoKind; 5] = [
        PseudoKind::CutPaste,
        PseudoKind::Scratch,
        PseudoKind::Stain,
        PseudoKind::Hole,
        PseudoKind::ColourSpot,
    ];

    /// The snake_case name (as in serde and `Display`).
    pub fn name(self) -> &'static str {
        match self {
            PseudoKind::CutPaste => "cut_paste",
            PseudoKind::Scratch => "scratch",
            PseudoKind::Stain => "stain",
            PseudoKind::Hole => "hole",
            PseudoKind::ColourSpot => "colour_spot",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for PseudoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to synthesize. Missing JSON fields take their [`Default`] values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PseudoAnomalyConfig {
    /// Output side in pixels ([`MIN_SIZE`]..=[`MAX_SIZE`]); default 256, the usual model input.
    pub size: u32,
    /// Anomalies made from each normal image (at least 1); default 2.
    pub per_image: usize,
    /// Master seed; everything derives from it.
    pub seed: u64,
}

impl Default for PseudoAnomalyConfig {
    fn default() -> Self {
        Self {
            size: 256,
            per_image: 2,
            seed: 0x5053_4555_0001,
        }
    }
}

impl PseudoAnomalyConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), DataError> {
        if !(MIN_SIZE..=MAX_SIZE).contains(&self.size) {
            return Err(invalid(format!(
                "size {} is outside {MIN_SIZE}..={MAX_SIZE}",
                self.size
            )));
        }
        if self.per_image == 0 {
            return Err(invalid("per_image must be at least 1".into()));
        }
        Ok(())
    }
}

fn invalid(reason: String) -> DataError {
    DataError::InvalidPseudoAnomaly { reason }
}

/// One synthetic anomaly.
#[derive(Debug, Clone, PartialEq)]
pub struct PseudoAnomaly {
    /// The corrupted image, `size` × `size`.
    pub image: RgbImage,
    /// `size * size` values, row-major: 1 = defect (changed) pixel, 0 = normal (unchanged).
    pub mask: Vec<u8>,
    /// The kind actually drawn (normally the cycled one; another if that one stayed invisible).
    pub kind: PseudoKind,
    /// Index into `normals` of the image it was made from.
    pub source: usize,
}

/// Makes `per_image` anomalies from each normal image, in order (source-major, then variant).
///
/// `normals`: the normal images to corrupt (any sizes; resized to `size` with a Triangle filter
/// first, see [`resize_to`]).
/// `donors`: other normal images of the SAME category, the cut-paste sources (may be empty: then
/// [`PseudoKind::CutPaste`] takes its patch from another normal, or from the same image at
/// another place). Donors from another category would make cut-paste trivially detectable.
///
/// Kinds cycle over the outputs (`(source * per_image + variant) % 5` in [`PseudoKind::ALL`]),
/// so every kind appears once five anomalies are made. If a defect stays invisible (for example
/// a colour spot of the surface's own colour) or misses the area bounds, other placements and
/// then other kinds are tried; an image on which nothing visible can be drawn is an error.
pub fn synthesize(
    normals: &[RgbImage],
    donors: &[RgbImage],
    config: &PseudoAnomalyConfig,
) -> Result<Vec<PseudoAnomaly>, DataError> {
    config.validate()?;
    if normals.is_empty() {
        return Err(invalid("no normal images given".into()));
    }
    for (what, list) in [("normal", normals), ("donor", donors)] {
        if let Some(i) = list
            .iter()
            .position(|im| im.width() == 0 || im.height() == 0)
        {
            let (w, h) = list[i].dimensions();
            return Err(invalid(format!("{what} image #{i} is empty ({w}x{h})")));
        }
    }
    let total = normals
        .len()
        .checked_mul(config.per_image)
        .filter(|&t| t <= MAX_OUTPUTS)
        .ok_or_else(|| {
            invalid(format!(
                "{} normals x {} per_image is more than {MAX_OUTPUTS} anomalies",
                normals.len(),
                config.per_image
            ))
        })?;
    let prepare = |im: &RgbImage| Prepared::new(resize_to(im, config.size));
    let normals: Vec<Prepared> = normals.par_iter().map(prepare).collect();
    let donors: Vec<Prepared> = donors.par_iter().map(prepare).collect();
    let results: Vec<Result<PseudoAnomaly, DataError>> = (0..total)
        .into_par_iter()
        .map(|g| {
            make_one(
                &normals,
                &donors,
                config,
                g / config.per_image,
                g % config.per_image,
            )
        })
        .collect();
    // Sequential, so the reported error is the first in output order, not the first finished.
    results.into_iter().collect()
}

/// The resize used by [`synthesize`] (Triangle filter; a copy when already `size` × `size`), so
/// a caller can score the clean normals at exactly the same size.
pub fn resize_to(image: &RgbImage, size: u32) -> RgbImage {
    if image.dimensions() == (size, size) {
        return image.clone();
    }
    image::imageops::resize(image, size, size, FilterType::Triangle)
}

// ---------------------------------------------------------------------------------------------
// Random helpers

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seed of the stream of one (source, variant): independent of which thread renders it.
fn stream_seed(seed: u64, source: usize, variant: usize) -> u64 {
    splitmix(splitmix(splitmix(seed ^ 0x7073_6575_646f) ^ source as u64) ^ variant as u64)
}

struct Rnd(ChaCha8Rng);

impl Rnd {
    fn u(&mut self) -> f32 {
        self.0.random::<f32>()
    }
    fn range(&mut self, a: f32, b: f32) -> f32 {
        a + (b - a) * self.u()
    }
    /// Uniform in `0..n` (`n` > 0); the modulo bias is irrelevant here.
    fn below(&mut self, n: usize) -> usize {
        (self.0.random::<u64>() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, p: f32) -> bool {
        self.u() < p
    }
    fn sign(&mut self) -> f32 {
        if self.chance(0.5) { -1.0 } else { 1.0 }
    }
}

fn smoothstep(a: f32, b: f32, x: f32) -> f32 {
    let t = ((x - a) / (b - a)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

fn mix3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn luma(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = h.rem_euclid(1.0) * 6.0;
    let f = h6 - h6.floor();
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match h6 as u32 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

fn quantise(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}

// ---------------------------------------------------------------------------------------------
// Where defects may go

/// A resized image with its placement maps.
struct Prepared {
    img: RgbImage,
    s: usize,
    /// Pixels that differ clearly from the background: where centres are drawn. `None` when
    /// fewer than [`MIN_FG_FRACTION`] qualify (flat or empty image): anywhere.
    centres: Option<Vec<bool>>,
    centre_count: usize,
    /// Object images only: the pixels a defect may change (the object, closed to fill small
    /// gaps and dilated a little so edge defects look natural). `None` for textures.
    allowed: Option<Vec<bool>>,
}

impl Prepared {
    fn new(img: RgbImage) -> Self {
        let s = img.width() as usize;
        let n = s * s;
        // A 3×3 mean first, so sensor noise does not pass for object pixels.
        let smooth = box3(img.as_raw(), s);
        let border: Vec<usize> = (0..n)
            .filter(|&i| {
                let (x, y) = (i % s, i / s);
                x == 0 || y == 0 || x + 1 == s || y + 1 == s
            })
            .collect();
        let bg = background(&smooth, s, &border);
        let raw_fg: Vec<bool> = (0..n)
            .map(|i| {
                let (x, y) = (i % s, i / s);
                let d: f32 = (0..3)
                    .map(|c| (smooth[i][c] - bg.at(c, x, y, s)).abs())
                    .sum();
                d > FG_THRESHOLD as f32
            })
            .collect();
        // Opening drops specks thinner than 3 px (noise, dust) that would scatter centres.
        let fg = dilate(&erode(&raw_fg, s, 1), s, 1);
        let count = fg.iter().filter(|&&f| f).count();
        if (count as f32) < MIN_FG_FRACTION * n as f32 {
            return Self {
                img,
                s,
                centres: None,
                centre_count: 0,
                allowed: None,
            };
        }
        // Object or texture? A stationary texture differs from its border colour as often on
        // the border as inside; an object on a background mostly does not reach the border.
        let on_border = border.iter().filter(|&&i| fg[i]).count();
        let border_frac = on_border as f32 / border.len() as f32;
        let object = border_frac <= 0.5 * count as f32 / n as f32;
        let allowed = object.then(|| {
            let r = ((s as f32 / 128.0).round() as usize).max(1);
            let closed = erode(&dilate(&fg, s, 2 * r), s, 2 * r);
            dilate(&closed, s, r)
        });
        Self {
            img,
            s,
            centres: Some(fg),
            centre_count: count,
            allowed,
        }
    }

    /// Whether a defect may change the pixel at (x, y) (pixel coordinates, centre at +0.5).
    fn allows(&self, x: f32, y: f32) -> bool {
        if x < 0.0 || y < 0.0 || x >= self.s as f32 || y >= self.s as f32 {
            return false;
        }
        match &self.allowed {
            None => true,
            Some(a) => a[y as usize * self.s + x as usize],
        }
    }

    /// A defect centre: a clearly-non-background pixel, at least `margin` from the border when
    /// possible; anywhere on a flat image.
    fn pick_centre(&self, rng: &mut Rnd, margin: f32) -> (f32, f32) {
        let s = self.s as f32;
        let m = margin.clamp(0.0, s / 4.0);
        let Some(c) = &self.centres else {
            return (rng.range(m, s - m), rng.range(m, s - m));
        };
        for _ in 0..2000 {
            let (x, y) = (rng.range(m, s - m), rng.range(m, s - m));
            let i = (y as usize).min(self.s - 1) * self.s + (x as usize).min(self.s - 1);
            if c[i] {
                return (x, y);
            }
        }
        // Objects hugging the border (or tiny ones): any qualifying pixel.
        let k = rng.below(self.centre_count);
        let i = c
            .iter()
            .enumerate()
            .filter(|(_, f)| **f)
            .nth(k)
            .map_or(0, |(i, _)| i);
        ((i % self.s) as f32 + rng.u(), (i / self.s) as f32 + rng.u())
    }
}

/// 3×3 mean (edges replicated), in grey levels.
fn box3(raw: &[u8], s: usize) -> Vec<[f32; 3]> {
    let mut out = vec![[0f32; 3]; s * s];
    for y in 0..s {
        for x in 0..s {
            let mut acc = [0f32; 3];
            for yy in y.saturating_sub(1)..(y + 2).min(s) {
                for xx in x.saturating_sub(1)..(x + 2).min(s) {
                    for c in 0..3 {
                        acc[c] += raw[3 * (yy * s + xx) + c] as f32;
                    }
                }
            }
            let k = ((x.min(1) + (x + 1 < s) as usize + 1) * (y.min(1) + (y + 1 < s) as usize + 1))
                as f32;
            out[y * s + x] = [acc[0] / k, acc[1] / k, acc[2] / k];
        }
    }
    out
}

/// The background colour as a plane per channel, `a + b·u + c·v` with u, v in [-0.5, 0.5].
struct Plane([[f32; 3]; 3]);

impl Plane {
    fn at(&self, c: usize, x: usize, y: usize, s: usize) -> f32 {
        let (u, v) = (
            (x as f32 + 0.5) / s as f32 - 0.5,
            (y as f32 + 0.5) / s as f32 - 0.5,
        );
        let p = self.0[c];
        p[0] + p[1] * u + p[2] * v
    }
}

/// Background colour from the border: the per-channel median, refined to a least-squares plane
/// over the border pixels near that median, so a lighting gradient across a plain background
/// is not taken for an object. Falls back to the median when too few border pixels agree.
fn background(smooth: &[[f32; 3]], s: usize, border: &[usize]) -> Plane {
    let mut med = [0f32; 3];
    for (c, m) in med.iter_mut().enumerate() {
        let mut v: Vec<f32> = border.iter().map(|&i| smooth[i][c]).collect();
        let mid = v.len() / 2;
        *m = *v.select_nth_unstable_by(mid, f32::total_cmp).1;
    }
    let flat = Plane([[med[0], 0.0, 0.0], [med[1], 0.0, 0.0], [med[2], 0.0, 0.0]]);
    let inliers: Vec<usize> = border
        .iter()
        .copied()
        .filter(|&i| {
            (0..3).map(|c| (smooth[i][c] - med[c]).abs()).sum::<f32>() <= 2.0 * FG_THRESHOLD as f32
        })
        .collect();
    if inliers.len() < border.len() / 2 {
        return flat;
    }
    // Normal equations of the 3-parameter fit, shared by the channels.
    let mut m = [[0f64; 3]; 3];
    let mut rhs = [[0f64; 3]; 3];
    for &i in &inliers {
        let (u, v) = (
            ((i % s) as f64 + 0.5) / s as f64 - 0.5,
            ((i / s) as f64 + 0.5) / s as f64 - 0.5,
        );
        let f = [1.0, u, v];
        for r in 0..3 {
            for k in 0..3 {
                m[r][k] += f[r] * f[k];
            }
            for c in 0..3 {
                rhs[c][r] += f[r] * smooth[i][c] as f64;
            }
        }
    }
    let det = |a: &[[f64; 3]; 3]| {
        a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
    };
    let d = det(&m);
    if d.abs() < 1e-9 {
        return flat;
    }
    let mut out = [[0f32; 3]; 3];
    for c in 0..3 {
        for k in 0..3 {
            // Cramer's rule: column k replaced by the right-hand side.
            let mut a = m;
            for r in 0..3 {
                a[r][k] = rhs[c][r];
            }
            out[c][k] = (det(&a) / d) as f32;
        }
    }
    Plane(out)
}

/// Binary dilation by a (2r+1)² square, separable with running counts (O(n) whatever r).
fn dilate(m: &[bool], s: usize, r: usize) -> Vec<bool> {
    if r == 0 {
        return m.to_vec();
    }
    let pass = |src: &[bool], horizontal: bool| {
        let mut out = vec![false; s * s];
        for line in 0..s {
            let at = |t: usize| {
                if horizontal {
                    line * s + t
                } else {
                    t * s + line
                }
            };
            let mut count = (0..r.min(s)).filter(|&t| src[at(t)]).count();
            for t in 0..s {
                if t + r < s && src[at(t + r)] {
                    count += 1;
                }
                if t > r && src[at(t - r - 1)] {
                    count -= 1;
                }
                out[at(t)] = count > 0;
            }
        }
        out
    };
    let h = pass(m, true);
    pass(&h, false)
}

/// Binary erosion by a (2r+1)² square (outside the image counts as set).
fn erode(m: &[bool], s: usize, r: usize) -> Vec<bool> {
    let inv: Vec<bool> = m.iter().map(|&v| !v).collect();
    dilate(&inv, s, r).into_iter().map(|v| !v).collect()
}

// ---------------------------------------------------------------------------------------------
// Shapes

/// An irregular blob (an ellipse whose radius wobbles with the angle) or a rotated rectangle.
#[derive(Clone, Copy)]
struct Shape {
    cx: f32,
    cy: f32,
    cos: f32,
    sin: f32,
    ax: f32,
    ay: f32,
    /// (amplitude, phase) of the 2nd, 3rd and 5th radial harmonics.
    wobble: [(f32, f32); 3],
    rect: bool,
}

const HARMONICS: [f32; 3] = [2.0, 3.0, 5.0];

impl Shape {
    /// A blob of about `area` pixels, elongated up to `max_aspect`.
    fn blob(c: (f32, f32), area: f32, max_aspect: f32, rng: &mut Rnd) -> Self {
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
    fn rect(c: (f32, f32), area: f32, rng: &mut Rnd) -> Self {
        let e = rng.range(1.0, 2.5).sqrt();
        let h = (area / 4.0).sqrt();
        Self::new(c, h * e, h / e, [(0.0, 0.0); 3], true, rng)
    }

    fn new(
        c: (f32, f32),
        ax: f32,
        ay: f32,
        wobble: [(f32, f32); 3],
        rect: bool,
        rng: &mut Rnd,
    ) -> Self {
        let a = rng.range(0.0, std::f32::consts::PI);
        Self {
            cx: c.0,
            cy: c.1,
            cos: a.cos(),
            sin: a.sin(),
            ax: ax.max(0.5),
            ay: ay.max(0.5),
            wobble,
            rect,
        }
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
        let w = 1.0
            + self
                .wobble
                .iter()
                .zip(HARMONICS)
                .map(|((a, p), h)| a * (h * th + p).sin())
                .sum::<f32>();
        rho / w
    }

    /// A radius enclosing the whole shape.
    fn bound(&self) -> f32 {
        let k = if self.rect {
            std::f32::consts::SQRT_2
        } else {
            1.0 + self.wobble.iter().map(|(a, _)| a).sum::<f32>()
        };
        self.ax.max(self.ay) * k
    }

    /// Pixels (index, centre x, centre y, nd) with nd <= `max_nd`.
    fn pixels(&self, s: usize, max_nd: f32) -> Vec<(usize, f32, f32, f32)> {
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
        if inside == 0 {
            0.0
        } else {
            ok as f32 / inside as f32
        }
    }
}

/// Tries a few centres and keeps the shape lying most on the object (the first with 75 %).
fn place_blob(p: &Prepared, rng: &mut Rnd, make: impl Fn(&mut Rnd, (f32, f32)) -> Shape) -> Shape {
    let mut best: Option<(f32, Shape)> = None;
    for _ in 0..PLACEMENTS {
        // Margin from a trial shape, so the centre keeps the defect mostly inside the image.
        let probe = make(rng, (0.0, 0.0));
        let c = p.pick_centre(rng, probe.bound() * 0.7);
        let shape = Shape {
            cx: c.0,
            cy: c.1,
            ..probe
        };
        let cov = shape.coverage(p);
        if best.as_ref().is_none_or(|(b, _)| cov > *b) {
            best = Some((cov, shape));
        }
        if cov >= 0.75 {
            break;
        }
    }
    best.map(|(_, s)| s)
        .unwrap_or_else(|| make(rng, (0.0, 0.0)))
}

// ---------------------------------------------------------------------------------------------
// Drawing

/// The image being corrupted; writes outside the allowed region are ignored.
struct Canvas<'a> {
    p: &'a Prepared,
    out: Vec<u8>,
}

impl Canvas<'_> {
    fn clean(&self, i: usize) -> [f32; 3] {
        let r = self.p.img.as_raw();
        [
            r[3 * i] as f32 / 255.0,
            r[3 * i + 1] as f32 / 255.0,
            r[3 * i + 2] as f32 / 255.0,
        ]
    }
    fn put(&mut self, i: usize, v: [f32; 3]) {
        if let Some(a) = &self.p.allowed
            && !a[i]
        {
            return;
        }
        for c in 0..3 {
            self.out[3 * i + c] = quantise(v[c]);
        }
    }
    /// Mean clean colour over some pixels (for choosing a contrasting colour or direction).
    fn mean(&self, px: impl Iterator<Item = usize>) -> [f32; 3] {
        let (mut m, mut n) = ([0f32; 3], 0usize);
        for i in px {
            let c = self.clean(i);
            for k in 0..3 {
                m[k] += c[k];
            }
            n += 1;
        }
        let n = n.max(1) as f32;
        [m[0] / n, m[1] / n, m[2] / n]
    }
}

/// Typical area (pixels) of a blob defect: a share of the image drawn from `lo..hi`.
fn area(rng: &mut Rnd, n: usize, lo: f32, hi: f32) -> f32 {
    rng.range(lo, hi) * n as f32
}

fn draw(
    kind: PseudoKind,
    cv: &mut Canvas<'_>,
    src: usize,
    normals: &[Prepared],
    donors: &[Prepared],
    rng: &mut Rnd,
) {
    match kind {
        PseudoKind::CutPaste => cut_paste(cv, src, normals, donors, rng),
        PseudoKind::Scratch => scratch(cv, rng),
        PseudoKind::Stain => stain(cv, rng),
        PseudoKind::Hole => hole(cv, rng),
        PseudoKind::ColourSpot => colour_spot(cv, rng),
    }
}

fn cut_paste(
    cv: &mut Canvas<'_>,
    src: usize,
    normals: &[Prepared],
    donors: &[Prepared],
    rng: &mut Rnd,
) {
    let p = cv.p;
    let n = p.s * p.s;
    let a = area(rng, n, 0.008, 0.025);
    let rect = rng.chance(1.0 / 3.0);
    let dst = place_blob(p, rng, |r, c| {
        if rect {
            Shape::rect(c, a, r)
        } else {
            Shape::blob(c, a, 2.5, r)
        }
    });
    let (donor, same) = if !donors.is_empty() {
        (&donors[rng.below(donors.len())], false)
    } else if normals.len() > 1 {
        let j = (src + 1 + rng.below(normals.len() - 1)) % normals.len();
        (&normals[j], false)
    } else {
        (&normals[src], true)
    };
    // Source centre: on the donor's object, far enough from the destination when it is the
    // same image so the patch really moves.
    let b = dst.bound();
    let mut from = donor.pick_centre(rng, b);
    if same {
        for _ in 0..16 {
            if (from.0 - dst.cx).hypot(from.1 - dst.cy) >= 1.5 * b {
                break;
            }
            from = donor.pick_centre(rng, b);
        }
    }
    let theta = rng.range(-20.0f32, 20.0).to_radians();
    let (ct, st) = (theta.cos(), theta.sin());
    let g = 1.0 + rng.sign() * rng.range(0.06, 0.15);
    let gain = [
        g + rng.range(-0.03, 0.03),
        g + rng.range(-0.03, 0.03),
        g + rng.range(-0.03, 0.03),
    ];
    for (i, x, y, _) in dst.pixels(p.s, 1.0) {
        let (ox, oy) = (x - dst.cx, y - dst.cy);
        let sx = from.0 + ct * ox - st * oy;
        let sy = from.1 + st * ox + ct * oy;
        let v = bilinear(&donor.img, sx - 0.5, sy - 0.5);
        cv.put(i, [v[0] * gain[0], v[1] * gain[1], v[2] * gain[2]]);
    }
}

/// Bilinear sample in [0, 1], coordinates clamped to the image.
fn bilinear(img: &RgbImage, x: f32, y: f32) -> [f32; 3] {
    let s = img.width() as usize;
    let raw = img.as_raw();
    let x = x.clamp(0.0, (s - 1) as f32);
    let y = y.clamp(0.0, (s - 1) as f32);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(s - 1), (y0 + 1).min(s - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |xx: usize, yy: usize, c: usize| raw[3 * (yy * s + xx) + c] as f32 / 255.0;
    let mut out = [0f32; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let top = at(x0, y0, c) * (1.0 - fx) + at(x1, y0, c) * fx;
        let bot = at(x0, y1, c) * (1.0 - fx) + at(x1, y1, c) * fx;
        *o = top * (1.0 - fy) + bot * fy;
    }
    out
}

fn dist_to_segment(px: f32, py: f32, a: (f32, f32), b: (f32, f32)) -> f32 {
    let (vx, vy) = (b.0 - a.0, b.1 - a.1);
    let len2 = vx * vx + vy * vy;
    let t = if len2 > 0.0 {
        (((px - a.0) * vx + (py - a.1) * vy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    (px - a.0 - t * vx).hypot(py - a.1 - t * vy)
}

fn scratch(cv: &mut Canvas<'_>, rng: &mut Rnd) {
    let p = cv.p;
    let (s, n) = (p.s, p.s * p.s);
    let sf = s as f32;
    // 1–3 px wide at 256 px (never under 1.4 px, so diagonal curves stay connected).
    let width = rng.range(1.4, 3.0) * (sf / 256.0).max(1.0);
    let hw = width / 2.0;
    let len = (area(rng, n, 0.0045, 0.012) / width).clamp(0.2 * sf, 0.8 * sf);
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
                (
                    w[0] * p0.0 + w[1] * p1.0 + w[2] * p2.0,
                    w[0] * p0.1 + w[1] * p1.1 + w[2] * p2.1,
                )
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
        let v = if bright {
            mix3(c, [1.0; 3], a)
        } else {
            mix3(c, [0.0; 3], a)
        };
        cv.put(i, v);
    }
}

fn stain(cv: &mut Canvas<'_>, rng: &mut Rnd) {
    let p = cv.p;
    let a = area(rng, p.s * p.s, 0.01, 0.028);
    let shape = place_blob(p, rng, |r, c| Shape::blob(c, a, 2.0, r));
    // Rust, oil/dirt, yellowish residue, greenish film: darken and tint.
    let tints = [
        [0.80, 0.48, 0.26],
        [0.45, 0.42, 0.38],
        [0.90, 0.80, 0.40],
        [0.55, 0.68, 0.45],
    ];
    let tint = tints[rng.below(tints.len())];
    let dark = rng.range(0.35, 0.65);
    let amax = rng.range(0.7, 0.95);
    let f = std::f32::consts::TAU / (shape.bound() * 0.6).max(2.0);
    let (ph1, ph2) = (rng.range(0.0, 6.3), rng.range(0.0, 6.3));
    for (i, x, y, d) in shape.pixels(p.s, 1.0) {
        let mottle = 0.85 + 0.15 * (x * f + ph1).sin() * (y * f + ph2).sin();
        let alpha = amax * (1.0 - smoothstep(0.5, 1.0, d)) * mottle;
        let c = cv.clean(i);
        let target = [
            c[0] * tint[0] * dark,
            c[1] * tint[1] * dark,
            c[2] * tint[2] * dark,
        ];
        cv.put(i, mix3(c, target, alpha));
    }
}

fn hole(cv: &mut Canvas<'_>, rng: &mut Rnd) {
    let p = cv.p;
    let a = area(rng, p.s * p.s, 0.005, 0.02);
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

fn colour_spot(cv: &mut Canvas<'_>, rng: &mut Rnd) {
    let p = cv.p;
    let a = area(rng, p.s * p.s, 0.004, 0.018);
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

/// Undoes changes below [`MIN_DELTA`] and returns the 0/1 mask of the remaining changed pixels
/// and their count.
fn finalize(clean: &[u8], out: &mut [u8]) -> (Vec<u8>, usize) {
    let n = clean.len() / 3;
    let mut mask = vec![0u8; n];
    let mut count = 0;
    for i in 0..n {
        let (a, b) = (&clean[3 * i..3 * i + 3], &mut out[3 * i..3 * i + 3]);
        let d = (0..3).map(|c| a[c].abs_diff(b[c])).max().unwrap_or(0);
        if d >= MIN_DELTA {
            mask[i] = 1;
            count += 1;
        } else if d > 0 {
            b.copy_from_slice(a);
        }
    }
    (mask, count)
}

/// The defect area bounds in pixels for an `n`-pixel image.
fn area_bounds(n: usize) -> (usize, usize) {
    let lo = ((MIN_AREA_FRACTION * n as f32).ceil() as usize).max(1);
    let hi = ((MAX_AREA_FRACTION * n as f32).floor() as usize).max(lo);
    (lo, hi)
}

fn make_one(
    normals: &[Prepared],
    donors: &[Prepared],
    config: &PseudoAnomalyConfig,
    source: usize,
    variant: usize,
) -> Result<PseudoAnomaly, DataError> {
    let mut rng = Rnd(ChaCha8Rng::seed_from_u64(stream_seed(
        config.seed,
        source,
        variant,
    )));
    let p = &normals[source];
    let (lo, hi) = area_bounds(p.s * p.s);
    let base = PseudoKind::ALL[(source * config.per_image + variant) % PseudoKind::ALL.len()];
    // Best out-of-bounds result so far: (how far off, as a ratio >= 1; image; mask; kind).
    let mut best: Option<(f32, Vec<u8>, Vec<u8>, PseudoKind)> = None;
    for attempt in 0..ATTEMPTS {
        let kind = if attempt < SAME_KIND_ATTEMPTS {
            base
        } else {
            PseudoKind::ALL
                [(base.index() + 1 + attempt - SAME_KIND_ATTEMPTS) % PseudoKind::ALL.len()]
        };
        let mut cv = Canvas {
            p,
            out: p.img.as_raw().clone(),
        };
        draw(kind, &mut cv, source, normals, donors, &mut rng);
        let mut out = cv.out;
        let (mask, count) = finalize(p.img.as_raw(), &mut out);
        if count == 0 {
            continue;
        }
        let off = if count < lo {
            lo as f32 / count as f32
        } else if count > hi {
            count as f32 / hi as f32
        } else {
            best = Some((1.0, out, mask, kind));
            break;
        };
        if best.as_ref().is_none_or(|b| off < b.0) {
            best = Some((off, out, mask, kind));
        }
    }
    let Some((_, out, mask, kind)) = best else {
        return Err(DataError::NoVisibleDefect {
            index: source,
            variant,
            attempts: ATTEMPTS,
        });
    };
    let s = p.s as u32;
    let image = RgbImage::from_raw(s, s, out).expect("buffer is size*size*3");
    Ok(PseudoAnomaly {
        image,
        mask,
        kind,
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use image::Rgb;

    use super::*;

    fn hash(x: u32, y: u32, k: u32) -> u32 {
        let mut h =
            x.wrapping_mul(0x9E37_79B1) ^ y.wrapping_mul(0x85EB_CA77) ^ k.wrapping_mul(0xC2B2_AE3D);
        h ^= h >> 15;
        h = h.wrapping_mul(0x2C1B_3C6D);
        h ^ (h >> 12)
    }

    /// A colourful stationary texture (stripes, waves and noise) filling the image.
    fn texture(s: u32, k: u32) -> RgbImage {
        RgbImage::from_fn(s, s, |x, y| {
            let (fx, fy) = (x as f32, y as f32);
            let n = (hash(x, y, k) % 21) as f32 - 10.0;
            Rgb([
                (120.0 + 50.0 * (fx * 0.4 + k as f32).sin() + n) as u8,
                (110.0 + 40.0 * (fy * 0.3).sin() + n) as u8,
                (90.0 + 30.0 * ((fx + fy) * 0.2).sin() + n) as u8,
            ])
        })
    }

    const DISC_R: f32 = 0.35;

    /// A shaded, slightly textured bright disc of radius `DISC_R * s` at the centre, on a noisy
    /// near-black background.
    fn disc(s: u32, k: u32) -> RgbImage {
        let c = s as f32 / 2.0;
        let r = DISC_R * s as f32;
        RgbImage::from_fn(s, s, |x, y| {
            let (dx, dy) = (x as f32 + 0.5 - c, y as f32 + 0.5 - c);
            let d = dx.hypot(dy);
            let n = (hash(x, y, k) % 5) as u8;
            if d <= r {
                let shade = 1.0 - 0.3 * d / r;
                Rgb([
                    (210.0 * shade) as u8 + n,
                    (185.0 * shade + 10.0 * (x as f32 * 0.5).sin()) as u8 + n,
                    (150.0 * shade) as u8 + n,
                ])
            } else {
                Rgb([n, n, n])
            }
        })
    }

    fn cfg(size: u32, per_image: usize, seed: u64) -> PseudoAnomalyConfig {
        PseudoAnomalyConfig {
            size,
            per_image,
            seed,
        }
    }

    /// Checks the mask invariants against the clean image; returns the number of mask pixels.
    fn check_mask(clean: &RgbImage, a: &PseudoAnomaly) -> usize {
        assert_eq!(a.image.dimensions(), clean.dimensions());
        let n = (clean.width() * clean.height()) as usize;
        assert_eq!(a.mask.len(), n);
        let mut count = 0;
        for (i, (p, q)) in a.image.pixels().zip(clean.pixels()).enumerate() {
            let d = (0..3).map(|c| p.0[c].abs_diff(q.0[c])).max().unwrap();
            match a.mask[i] {
                0 => assert_eq!(d, 0, "{} changed pixel {i} outside its mask", a.kind),
                1 => {
                    assert!(
                        d >= MIN_DELTA,
                        "{} mask pixel {i} changed by only {d}",
                        a.kind
                    );
                    count += 1;
                }
                v => panic!("mask value {v} is not 0/1"),
            }
        }
        count
    }

    fn check_area(a: &PseudoAnomaly, count: usize) {
        let frac = count as f32 / a.mask.len() as f32;
        assert!(
            (MIN_AREA_FRACTION..=MAX_AREA_FRACTION).contains(&frac),
            "{} covers {:.3} % of the image",
            a.kind,
            100.0 * frac
        );
    }

    #[test]
    fn same_seed_same_bytes_whatever_the_thread_count() {
        let normals = [texture(128, 1), disc(128, 2)];
        let donors = [texture(128, 3)];
        let c = cfg(128, 3, 11);
        let a = synthesize(&normals, &donors, &c).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let b = pool.install(|| synthesize(&normals, &donors, &c)).unwrap();
        assert_eq!(a.len(), 6);
        assert_eq!(a, b);
    }

    #[test]
    fn another_seed_gives_other_output() {
        let normals = [texture(128, 1), disc(128, 2)];
        let a = synthesize(&normals, &[], &cfg(128, 3, 11)).unwrap();
        let b = synthesize(&normals, &[], &cfg(128, 3, 12)).unwrap();
        let differing = a.iter().zip(&b).filter(|(x, y)| x.image != y.image).count();
        assert!(differing >= 5, "only {differing} of 6 images differ");
        // Same cycle of kinds: the seed moves the defects, not the kind schedule.
        let kinds = |v: &[PseudoAnomaly]| v.iter().map(|x| x.kind).collect::<Vec<_>>();
        assert_eq!(kinds(&a), kinds(&b));
    }

    #[test]
    fn texture_masks_are_exactly_the_changes_and_sized() {
        let normal = texture(128, 5);
        let out = synthesize(&[normal.clone()], &[], &cfg(128, 10, 3)).unwrap();
        assert_eq!(out.len(), 10);
        for a in &out {
            assert_eq!(a.source, 0);
            let count = check_mask(&normal, a);
            check_area(a, count);
        }
    }

    #[test]
    fn object_masks_are_exactly_the_changes_sized_and_on_the_object() {
        let s = 128u32;
        let normals = [disc(s, 1), disc(s, 2)];
        let out = synthesize(&normals, &[], &cfg(s, 10, 5)).unwrap();
        assert_eq!(out.len(), 20);
        let c = s as f32 / 2.0;
        let r = DISC_R * s as f32 + 3.0;
        for a in &out {
            let count = check_mask(&normals[a.source], a);
            check_area(a, count);
            let on = a
                .mask
                .iter()
                .enumerate()
                .filter(|&(i, &m)| {
                    let (x, y) = ((i as u32 % s) as f32 + 0.5, (i as u32 / s) as f32 + 0.5);
                    m == 1 && (x - c).hypot(y - c) <= r
                })
                .count();
            assert!(
                on as f32 >= 0.9 * count as f32,
                "{}: only {on} of {count} mask pixels on the disc",
                a.kind
            );
        }
    }

    #[test]
    fn small_object_on_black_gets_its_defects() {
        // A disc far from the centre and much smaller: placement must find it, not the middle.
        let s = 128u32;
        let img = RgbImage::from_fn(s, s, |x, y| {
            let d = (x as f32 + 0.5 - 96.0).hypot(y as f32 + 0.5 - 36.0);
            if d <= 20.0 {
                Rgb([180, 200, 90])
            } else {
                Rgb([0, 0, 0])
            }
        });
        let out = synthesize(&[img.clone()], &[], &cfg(s, 5, 9)).unwrap();
        for a in &out {
            let count = check_mask(&img, a);
            let on = (0..a.mask.len())
                .filter(|&i| {
                    let (x, y) = ((i as u32 % s) as f32 + 0.5, (i as u32 / s) as f32 + 0.5);
                    a.mask[i] == 1 && (x - 96.0).hypot(y - 36.0) <= 23.0
                })
                .count();
            assert!(on as f32 >= 0.9 * count as f32, "{}: {on}/{count}", a.kind);
        }
    }

    #[test]
    fn every_kind_appears_and_outputs_are_in_source_order() {
        let all: HashSet<PseudoKind> = PseudoKind::ALL.into_iter().collect();
        for (n_img, per) in [(5usize, 1usize), (1, 5), (3, 2)] {
            let normals: Vec<RgbImage> = (0..n_img as u32).map(|k| texture(64, k)).collect();
            let out = synthesize(&normals, &[], &cfg(64, per, 1)).unwrap();
            assert_eq!(out.len(), n_img * per);
            for (g, a) in out.iter().enumerate() {
                assert_eq!(a.source, g / per);
                check_mask(&normals[a.source], a);
            }
            let kinds: HashSet<PseudoKind> = out.iter().map(|a| a.kind).collect();
            assert_eq!(kinds, all, "{n_img} images x {per}");
        }
    }

    #[test]
    fn invisible_kind_is_replaced_by_a_visible_one() {
        // On pure black, cut-paste (black onto black, any gain) cannot change anything.
        let black = RgbImage::new(64, 64);
        let out = synthesize(&[black.clone()], &[], &cfg(64, 5, 2)).unwrap();
        assert_eq!(out.len(), 5);
        assert_ne!(out[0].kind, PseudoKind::CutPaste);
        for a in &out {
            assert!(check_mask(&black, a) > 0);
        }
    }

    #[test]
    fn cut_paste_takes_its_patch_from_a_donor() {
        // A flat grey surface and a saturated red donor: pasted pixels must be red.
        let grey = RgbImage::from_fn(64, 64, |x, y| {
            let n = (hash(x, y, 1) % 9) as u8;
            Rgb([120 + n, 120 + n, 120 + n])
        });
        let red = RgbImage::from_pixel(64, 64, Rgb([220, 30, 30]));
        let out = synthesize(&[grey.clone()], &[red], &cfg(64, 1, 4)).unwrap();
        let a = &out[0];
        assert_eq!(a.kind, PseudoKind::CutPaste);
        let count = check_mask(&grey, a);
        let red_px = a
            .image
            .pixels()
            .zip(&a.mask)
            .filter(|(p, m)| **m == 1 && p.0[0] as i32 > p.0[1] as i32 + 100)
            .count();
        assert!(red_px as f32 >= 0.9 * count as f32, "{red_px}/{count}");
    }

    #[test]
    fn any_input_size_is_resized_first() {
        let img = disc(100, 3);
        let wide = image::imageops::resize(&img, 150, 90, FilterType::Nearest);
        let r = resize_to(&wide, 64);
        assert_eq!(r.dimensions(), (64, 64));
        assert_eq!(resize_to(&r, 64), r);
        let out = synthesize(&[wide], &[img], &cfg(64, 3, 8)).unwrap();
        for a in &out {
            check_mask(&r, a);
        }
    }

    #[test]
    fn bad_configs_are_errors() {
        let ok = [texture(32, 1)];
        let msg = |r: Result<Vec<PseudoAnomaly>, DataError>| match r {
            Err(e @ DataError::InvalidPseudoAnomaly { .. }) => e.to_string(),
            other => panic!("expected InvalidPseudoAnomaly, got {other:?}"),
        };
        assert!(msg(synthesize(&ok, &[], &cfg(15, 1, 0))).contains("size 15"));
        assert!(msg(synthesize(&ok, &[], &cfg(8193, 1, 0))).contains("size 8193"));
        assert!(msg(synthesize(&ok, &[], &cfg(32, 0, 0))).contains("per_image"));
        assert!(msg(synthesize(&[], &[], &cfg(32, 1, 0))).contains("no normal images"));
        let empty = RgbImage::new(0, 5);
        assert!(
            msg(synthesize(
                &[ok[0].clone(), empty.clone()],
                &[],
                &cfg(32, 1, 0)
            ))
            .contains("normal image #1 is empty")
        );
        assert!(msg(synthesize(&ok, &[empty], &cfg(32, 1, 0))).contains("donor image #0"));
        assert!(
            msg(synthesize(&ok, &[], &cfg(32, MAX_OUTPUTS + 1, 0))).contains("per_image is more")
        );
        assert!(msg(synthesize(&ok, &[], &cfg(32, usize::MAX, 0))).contains("per_image is more"));
        // The smallest accepted size works.
        assert_eq!(synthesize(&ok, &[], &cfg(16, 1, 0)).unwrap().len(), 1);
    }

    #[test]
    fn layout_tells_object_texture_and_flat_apart() {
        let object = Prepared::new(disc(128, 1));
        assert!(object.allowed.is_some() && object.centres.is_some());
        let tex = Prepared::new(texture(128, 1));
        assert!(tex.allowed.is_none() && tex.centres.is_some());
        let flat = Prepared::new(RgbImage::from_pixel(64, 64, Rgb([90, 90, 90])));
        assert!(flat.centres.is_none() && flat.allowed.is_none());
        // A dot under 2 % of the image: treated as flat (defects anywhere).
        let dot = Prepared::new(RgbImage::from_fn(64, 64, |x, y| {
            if (28..33).contains(&x) && (28..33).contains(&y) {
                Rgb([255; 3])
            } else {
                Rgb([0; 3])
            }
        }));
        assert!(dot.centres.is_none());
    }

    #[test]
    fn morphology_round_trips_a_point() {
        let s = 9;
        let mut m = vec![false; s * s];
        m[4 * s + 4] = true;
        let d = dilate(&m, s, 1);
        assert_eq!(d.iter().filter(|&&v| v).count(), 9);
        assert!(d[3 * s + 3] && d[5 * s + 5] && !d[2 * s + 4]);
        assert_eq!(erode(&d, s, 1), m);
    }

    #[test]
    fn names_and_serde() {
        assert_eq!(PseudoKind::ColourSpot.to_string(), "colour_spot");
        assert_eq!(
            serde_json::to_string(&PseudoKind::CutPaste).unwrap(),
            "\"cut_paste\""
        );
        let k: PseudoKind = serde_json::from_str("\"hole\"").unwrap();
        assert_eq!(k, PseudoKind::Hole);
        let c: PseudoAnomalyConfig = serde_json::from_str("{\"per_image\": 3}").unwrap();
        assert_eq!(
            c,
            PseudoAnomalyConfig {
                per_image: 3,
                ..Default::default()
            }
        );
        assert_eq!(PseudoAnomalyConfig::default().size, 256);
        assert_eq!(PseudoAnomalyConfig::default().per_image, 2);
    }
}
