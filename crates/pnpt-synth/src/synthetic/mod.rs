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
mod cache;
mod config;
mod defects;
mod objects;
mod paint;
mod render;
mod textures;
mod write;

use serde::{Deserialize, Serialize};

pub use cache::{ensure_synthetic, is_complete};
pub use config::SyntheticConfig;
pub use render::{Rendered, render};
pub use write::generate;

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
    pub const ALL: [SynthKind; 6] =
        [SynthKind::Weave, SynthKind::Wood, SynthKind::Carpet, SynthKind::Bottle, SynthKind::Screw, SynthKind::Capsule];

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
