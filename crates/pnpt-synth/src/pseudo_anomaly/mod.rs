//! A validation set with synthetic anomalies, made from normal images only.
//!
//! Choosing hyper-parameters or score rules on the test split leaks its labels into the result.
//! Instead, [`synthesize`] pastes plausible defects ([`PseudoKind`]: cut-paste patches and
//! seamless blends, scratches, stains, holes, colour spots, and the hard ones — structural
//! distortions, low-contrast blemishes, colour shifts) into held-out *normal* images, with
//! pixel-exact masks,
//! so image- and pixel-level metrics can be computed on data that never saw a test label.
//!
//! * Defects are plainly visible but small: half change roughly 0.3 %–4 % of the image, the
//!   other half are shrunk 3–16× in area (specks, pinholes, short scratches: a few dozen
//!   pixels at 256 px), within [`MIN_AREA_FRACTION`]–[`MAX_AREA_FRACTION`], like real
//!   industrial defects, which range from a few pixels to large areas.
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
//! use pnpt_synth::pseudo_anomaly::{resize_to, synthesize, PseudoAnomalyConfig};
//! // A bright, shaded disc on black: an "object" image of any size.
//! let normal = RgbImage::from_fn(96, 80, |x, y| {
//!     let (dx, dy) = (x as f32 - 48.0, y as f32 - 40.0);
//!     let d = (dx * dx + dy * dy).sqrt();
//!     if d < 30.0 { Rgb([200 - d as u8, 160, 120 + (x % 7) as u8 * 4]) } else { Rgb([0, 0, 0]) }
//! });
//! let cfg = PseudoAnomalyConfig { size: 64, per_image: 5, seed: 7 };
//! let out = synthesize(&[normal.clone()], &[], &cfg).unwrap();
//! assert_eq!(out.len(), 5); // the first five kinds, in a fixed cycle
//! let clean = resize_to(&normal, 64); // what the anomalies were drawn on
//! for a in &out {
//!     assert_eq!(a.image.dimensions(), (64, 64));
//!     for (i, (p, q)) in a.image.pixels().zip(clean.pixels()).enumerate() {
//!         assert_eq!(a.mask[i] == 1, p != q); // the mask is exactly the changed pixels
//!     }
//! }
//! assert_eq!(synthesize(&[normal], &[], &cfg).unwrap(), out); // deterministic
//! ```
mod attempts;
mod canvas;
mod cut_paste;
mod drawn;
mod layout;
mod shape;
mod subtle;
#[cfg(test)]
mod tests;

use std::fmt;

use image::RgbImage;
use image::imageops::FilterType;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use attempts::make_one;
use layout::Prepared;
use pnpt_data::DataError;

/// Minimum change (grey levels, max over channels) of every mask pixel: smaller changes are
/// undone, so the mask never claims a pixel nobody could see.
pub const MIN_DELTA: u8 = 6;

/// Smallest accepted output side.
pub const MIN_SIZE: u32 = 16;

/// Largest accepted output side (a guard against accidental huge allocations).
pub const MAX_SIZE: u32 = 8192;

/// Smallest share of the image a defect should change (0.02 %: 13 pixels at 256 px).
pub const MIN_AREA_FRACTION: f32 = 0.0002;

/// Largest share of the image a defect should change (4 %).
pub const MAX_AREA_FRACTION: f32 = 0.04;

/// Most anomalies one call makes (each holds a full image: a guard against typos, not a need).
pub const MAX_OUTPUTS: usize = 1_000_000;

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
    /// The content inside a blob pushed or twisted, fading out at the outline: a dent, a bent
    /// part, displaced structure; nothing foreign is added.
    Warp,
    /// A soft patch only 8–20 grey levels lighter or darker: a faint, low-contrast flaw.
    Blemish,
    /// The region's hue turned or drained at unchanged brightness: discolouration.
    ColourShift,
    /// A patch of another normal image blended in with feathered edges and its colour matched
    /// to the surroundings: a seamless misplaced structure.
    Blend,
}

impl PseudoKind {
    /// All kinds, in the order outputs cycle through them.
    pub const ALL: [PseudoKind; 9] = [
        PseudoKind::CutPaste,
        PseudoKind::Scratch,
        PseudoKind::Warp,
        PseudoKind::Stain,
        PseudoKind::Blemish,
        PseudoKind::Hole,
        PseudoKind::ColourShift,
        PseudoKind::ColourSpot,
        PseudoKind::Blend,
    ];

    /// The snake_case name (as in serde and `Display`).
    pub fn name(self) -> &'static str {
        match self {
            PseudoKind::CutPaste => "cut_paste",
            PseudoKind::Scratch => "scratch",
            PseudoKind::Stain => "stain",
            PseudoKind::Hole => "hole",
            PseudoKind::ColourSpot => "colour_spot",
            PseudoKind::Warp => "warp",
            PseudoKind::Blemish => "blemish",
            PseudoKind::ColourShift => "colour_shift",
            PseudoKind::Blend => "blend",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|&k| k == self).unwrap_or(0)
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
        Self { size: 256, per_image: 2, seed: 0x5053_4555_0001 }
    }
}

impl PseudoAnomalyConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), DataError> {
        if !(MIN_SIZE..=MAX_SIZE).contains(&self.size) {
            return Err(invalid(format!("size {} is outside {MIN_SIZE}..={MAX_SIZE}", self.size)));
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
/// Kinds cycle over the outputs (`(source * per_image + variant) % 9` in [`PseudoKind::ALL`]),
/// so every kind appears once nine anomalies are made. If a defect stays invisible (for example
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
        if let Some(i) = list.iter().position(|im| im.width() == 0 || im.height() == 0) {
            let (w, h) = list[i].dimensions();
            return Err(invalid(format!("{what} image #{i} is empty ({w}x{h})")));
        }
    }
    let total = normals.len().checked_mul(config.per_image).filter(|&t| t <= MAX_OUTPUTS).ok_or_else(|| {
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
        .map(|g| make_one(&normals, &donors, config, g / config.per_image, g % config.per_image))
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
