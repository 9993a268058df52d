//! Heat maps a person reads in one look: per test image one PNG,
//! `image | overlay | ground truth` side by side (the ground-truth panel only for images with a
//! defect mask), with a colour bar under the overlay.
//!
//! **Colour scale, fixed per category by its decision threshold** ([`ColourScale`]): with the
//! category's image threshold `thr` (`Detector::thresholds().for_category`) and `lo` the median
//! pixel of the category's held-out normal images, stored at calibration (the score of a typical
//! normal pixel; the test maps' median for detectors saved before it was stored), the jet
//! colour map spans `[lo, 2·thr − lo]`. The threshold therefore always sits in the middle of
//! the bar (cyan-green; hotter colours are above it), and one colour means one score on every
//! image of the category. Without a threshold, or when the threshold is not above `lo`, the bar
//! spans the category's `min..max` and the reports say so.
//!
//! **Overlay**: the jet colour is alpha-blended over the image with an alpha that ramps
//! linearly from 0 at `lo` to [`MAX_ALPHA`] at the top of the bar, so normal regions stay
//! transparent and the product stays visible. The **threshold contour** (the 1-px inner edge
//! of the region where the map exceeds `thr`) is drawn in white; the ground-truth outline in
//! magenta, on the overlay and on the ground-truth panel (whose defect area is also tinted).
//! With the max as image score, an image is flagged exactly when a white contour exists; with a
//! top-k mean a small region above the contour can still leave the image score below `thr`.
//!
//! The overlay panel ([`overlay`]) with [`ColourScale::for_image`] is also the heat map of
//! `pnpt predict` and the service (`pnpt-cli`): one colour map for every picture pnpt draws.
//!
//! Panels are at least [`MIN_PANEL`] pixels wide: a smaller model input is upscaled by an
//! integer factor, the map and mask by nearest neighbour so one map cell stays one block and
//! the contours stay 1 px wide. Under the overlay a colour bar shows the scale, with a white
//! tick at the threshold.

use std::path::Path;

use pnpt_data::Sample;
use pnpt_data::image::{ImageFormat, Rgb, RgbImage, imageops};
use pnpt_io::write_atomic;
use pnpt_model::detector::quantile_of;

use crate::{Error, Result};

/// Smallest panel side in pixels (smaller inputs are upscaled by an integer factor).
pub const MIN_PANEL: usize = 256;
/// Quantile of the category's test-map pixels that is the bottom of the colour bar.
pub const LO_QUANTILE: f64 = 0.5;
/// Opacity of the colour at the top of the bar (it ramps linearly from 0 at the bottom).
pub const MAX_ALPHA: f32 = 0.85;
const GAP: u32 = 3;
const BAR_HEIGHT: u32 = 10;
const BACKGROUND: [u8; 3] = [24, 24, 24];
const CONTOUR: [u8; 3] = [255, 255, 255];
const TRUTH: [u8; 3] = [255, 0, 255];

/// The colour scale of one category's heat maps (see the module documentation for the rule).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColourScale {
    /// Score at the bottom of the bar (transparent, blue).
    pub lo: f32,
    /// Score at the top of the bar (red).
    pub hi: f32,
    /// The category's decision threshold, if one was calibrated (the white contour).
    pub threshold: Option<f32>,
    /// Whether the bar is centred on the threshold; `false` for the `min..max` fallback.
    pub centred: bool,
    /// Whether `lo` is the median held-out normal pixel stored at calibration (`false`: the
    /// median test-map pixel, for detectors saved before that statistic existed).
    pub held_out: bool,
}

impl ColourScale {
    /// The scale of a category from its threshold and `normal_median`, the median held-out
    /// normal pixel stored at calibration; `maps` (`n × size × size`, any order; non-finite
    /// values ignored) give the fallbacks: their median when `normal_median` is unknown, their
    /// min..max when there is no usable threshold.
    pub fn for_category(maps: &[f32], threshold: Option<f32>, normal_median: Option<f32>) -> Self {
        let (min, max) = maps
            .iter()
            .filter(|v| v.is_finite())
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let held_out = normal_median.is_some_and(f32::is_finite);
        let median = if held_out { normal_median } else { quantile_of(maps.to_vec(), LO_QUANTILE) };
        let Some(median) = median else {
            return Self { lo: 0.0, hi: 1.0, threshold, centred: false, held_out: false };
        };
        match threshold.filter(|t| t.is_finite() && *t > median) {
            Some(t) => Self { lo: median, hi: 2.0 * t - median, threshold, centred: true, held_out },
            None => Self { lo: min, hi: max, threshold, centred: false, held_out: false },
        }
    }

    /// The scale of one image's overlay, without its category's test maps (`pnpt predict`, the
    /// service): centred on `threshold` from `normal_median` as in the reports when both are
    /// known and the threshold is above the median, else the image's own min..max (`0..1` for
    /// a flat map).
    pub fn for_image(map: &[f32], threshold: Option<f32>, normal_median: Option<f32>) -> Self {
        if let (Some(t), Some(m)) = (threshold, normal_median)
            && t > m
        {
            return Self { lo: m, hi: 2.0 * t - m, threshold, centred: true, held_out: true };
        }
        let (lo, hi) = map.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (0.0, 1.0) };
        Self { lo, hi, threshold, centred: false, held_out: false }
    }

    /// `v` mapped to `[0, 1]` along the bar (clamped).
    pub fn normalise(&self, v: f32) -> f32 {
        let span = self.hi - self.lo;
        if span > 0.0 { ((v - self.lo) / span).clamp(0.0, 1.0) } else { 0.0 }
    }

    /// One line stating the scale's numbers and the rule that chose them (for the reports).
    pub fn describe(&self) -> String {
        match (self.threshold, self.centred) {
            (Some(t), true) => format!(
                "lo {:.4} (median {} pixel), threshold {t:.4} (middle of the bar), hi {:.4} (2·threshold − lo)",
                self.lo,
                if self.held_out { "held-out normal" } else { "test-map" },
                self.hi
            ),
            (Some(t), false) => format!(
                "threshold {t:.4} is not above the median test-map pixel: min..max of the test maps, {:.4}..{:.4}",
                self.lo, self.hi
            ),
            (None, _) => format!("no decision threshold: min..max of the test maps, {:.4}..{:.4}", self.lo, self.hi),
        }
    }
}

/// Jet-like colour of `x` in [0, 1] (blue → cyan → yellow → red).
pub fn jet(x: f32) -> [u8; 3] {
    let x = x.clamp(0.0, 1.0);
    let channel = |c: f32| ((1.5 - (4.0 * x - c).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    [channel(3.0), channel(2.0), channel(1.0)]
}

/// Whether `(x, y)` is inside a region and on its edge: a 4-neighbour lies outside the region
/// or outside the `side × side` grid (so regions touching the border are closed too).
fn on_edge(side: usize, x: usize, y: usize, inside: impl Fn(usize, usize) -> bool) -> bool {
    inside(x, y)
        && (x == 0
            || y == 0
            || x + 1 == side
            || y + 1 == side
            || !inside(x - 1, y)
            || !inside(x + 1, y)
            || !inside(x, y - 1)
            || !inside(x, y + 1))
}

fn blend(base: [u8; 3], colour: [u8; 3], alpha: f32) -> Rgb<u8> {
    Rgb([0, 1, 2].map(|k| (base[k] as f32 * (1.0 - alpha) + colour[k] as f32 * alpha).round() as u8))
}

/// The side of a panel for a `size × size` map and the integer factor it is upscaled by.
fn panel_side(size: usize) -> (usize, usize) {
    let k = MIN_PANEL.div_ceil(size.max(1)).max(1);
    (size * k, k)
}

/// The overlay panel alone: `size × size` `map` in jet colours over `image` (resized to the
/// panel), with the threshold contour in white and, with a `mask` (non-zero = defect), the
/// ground-truth outline in magenta. The panel of [`render`], and the overlay that `pnpt predict`
/// and the service return. Maps and masks shorter than `size²` read as 0 rather than panicking.
pub fn overlay(image: &RgbImage, map: &[f32], mask: Option<&[u8]>, size: usize, scale: &ColourScale) -> RgbImage {
    let (side, _) = panel_side(size);
    let base = imageops::resize(image, side as u32, side as u32, imageops::FilterType::Triangle);
    overlay_resized(&base, map, mask, size, scale)
}

/// [`overlay`] on an image already at the panel's side.
fn overlay_resized(base: &RgbImage, map: &[f32], mask: Option<&[u8]>, size: usize, scale: &ColourScale) -> RgbImage {
    let (side, k) = panel_side(size);
    let cell = |x: usize, y: usize| (y / k) * size + x / k;
    let value = |x, y| map.get(cell(x, y)).copied().unwrap_or(0.0);
    let hot = |x, y| scale.threshold.is_some_and(|t| value(x, y) > t);
    let truth = |x, y| mask.is_some_and(|m| m.get(cell(x, y)).is_some_and(|&v| v != 0));
    RgbImage::from_fn(side as u32, side as u32, |px, py| {
        let (x, y) = (px as usize, py as usize);
        if on_edge(side, x, y, hot) {
            Rgb(CONTOUR)
        } else if on_edge(side, x, y, truth) {
            Rgb(TRUTH)
        } else {
            let t = scale.normalise(value(x, y));
            blend(base.get_pixel(px, py).0, jet(t), MAX_ALPHA * t)
        }
    })
}

/// The heat map of one image: `size × size` `map` and `mask` (non-zero = defect) at the model
/// input size; `mask = None` leaves out the ground-truth panel. Maps and masks shorter than
/// `size²` read as 0 rather than panicking.
pub fn render(image: &RgbImage, map: &[f32], mask: Option<&[u8]>, size: usize, scale: &ColourScale) -> RgbImage {
    let (side, k) = panel_side(size);
    let base = imageops::resize(image, side as u32, side as u32, imageops::FilterType::Triangle);
    let over = overlay_resized(&base, map, mask, size, scale);
    let cell = |x: usize, y: usize| (y / k) * size + x / k;
    let truth = |x, y| mask.is_some_and(|m| m.get(cell(x, y)).is_some_and(|&v| v != 0));
    let panels = if mask.is_some() { 3 } else { 2 };
    let (s, gap) = (side as u32, GAP);
    let mut out = RgbImage::from_pixel(panels * s + (panels - 1) * gap, s + gap + BAR_HEIGHT, Rgb(BACKGROUND));
    for y in 0..side {
        for x in 0..side {
            let (px, py) = (x as u32, y as u32);
            let b = base.get_pixel(px, py).0;
            out.put_pixel(px, py, Rgb(b));
            out.put_pixel(s + gap + px, py, *over.get_pixel(px, py));
            if mask.is_some() {
                let gt = if on_edge(side, x, y, truth) {
                    Rgb(TRUTH)
                } else {
                    blend(b, TRUTH, if truth(x, y) { 0.35 } else { 0.0 })
                };
                out.put_pixel(2 * (s + gap) + px, py, gt);
            }
        }
    }
    // The colour bar under the overlay, with a 3-px white tick at the threshold.
    let tick = scale.threshold.map(|t| (scale.normalise(t) * (side - 1) as f32).round() as i64);
    for x in 0..side {
        let colour = match tick {
            Some(c) if (x as i64 - c).abs() <= 1 => CONTOUR,
            _ => jet(x as f32 / (side - 1).max(1) as f32),
        };
        for y in 0..BAR_HEIGHT {
            out.put_pixel(s + gap + x as u32, s + gap + y, Rgb(colour));
        }
    }
    out
}

/// The heat map's file of `sample` of `category`, relative to the report folder
/// (`heatmaps/<category>/<defect>_<stem>.png`), with the image's exact stem (any bytes the OS
/// allows, so two images never share a heat map through a lossy name; the reports write it
/// lossily, the page links it by its bytes).
pub fn relative_file(category: &str, sample: &Sample) -> std::path::PathBuf {
    let mut name = std::ffi::OsString::from(format!("{}_", sample.defect));
    name.push(sample.file_stem());
    name.push(".png");
    Path::new("heatmaps").join(category).join(name)
}

/// Writes the heat map of every sample of `category` under `out_dir` at [`relative_file`]
/// (temp + rename each). `maps` and `masks` are `samples.len() × size × size`, as the detector
/// and `pnpt_data::load_masks` return them.
pub fn write_category(
    out_dir: &Path,
    category: &str,
    samples: &[Sample],
    maps: &[f32],
    masks: &[u8],
    size: usize,
    scale: &ColourScale,
) -> Result<()> {
    let px = size * size;
    for (i, s) in samples.iter().enumerate() {
        let path = out_dir.join(relative_file(category, s));
        let (Some(map), Some(mask)) = (maps.get(i * px..(i + 1) * px), masks.get(i * px..(i + 1) * px)) else {
            return Err(Error::Image { path, reason: format!("no {size}×{size} map or mask for image {i}") });
        };
        let image = pnpt_data::decode_rgb(&s.path)?;
        let img = render(&image, map, (!s.masks.is_empty()).then_some(mask), size, scale);
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_to(&mut bytes, ImageFormat::Png)
            .map_err(|e| Error::Image { path: path.clone(), reason: e.to_string() })?;
        write_atomic(&path, bytes.get_ref())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jet_endpoints() {
        assert_eq!(jet(0.0), [0, 0, 128]);
        assert_eq!(jet(1.0), [128, 0, 0]);
        assert_eq!(jet(0.5), [128, 255, 128]);
    }

    #[test]
    fn scale_centres_the_threshold_or_falls_back_to_min_max() {
        let maps = [0.0, 1.0, 1.0, 1.0, 2.0, 5.0];
        let s = ColourScale::for_category(&maps, Some(3.0), None);
        assert_eq!((s.lo, s.hi, s.centred), (1.0, 5.0, true));
        // The held-out median, when the detector has one, is the bottom instead of the test maps'.
        let h = ColourScale::for_category(&maps, Some(3.0), Some(2.0));
        assert_eq!((h.lo, h.hi, h.centred, h.held_out), (2.0, 4.0, true, true));
        assert!(h.describe().contains("held-out normal"), "{}", h.describe());
        assert_eq!(s.normalise(3.0), 0.5, "the threshold is the middle of the bar");
        assert_eq!((s.normalise(-9.0), s.normalise(9.0)), (0.0, 1.0));
        assert!(s.describe().contains("threshold 3.0000 (middle of the bar)"), "{}", s.describe());
        for t in [None, Some(0.5)] {
            let s = ColourScale::for_category(&maps, t, None);
            assert_eq!((s.lo, s.hi, s.centred), (0.0, 5.0, false), "{t:?}");
            assert!(s.describe().contains("min..max"));
        }
        let empty = ColourScale::for_category(&[f32::NAN], Some(1.0), None);
        assert_eq!((empty.normalise(0.5), empty.centred), (0.5, false));
    }

    #[test]
    fn image_scale_centres_the_threshold_or_spans_the_map() {
        let map = [0.0, 0.0, 0.0, 3.0];
        let s = ColourScale::for_image(&map, Some(1.0), Some(0.0));
        assert_eq!((s.lo, s.hi, s.centred), (0.0, 2.0, true));
        for (t, m) in [(Some(1.0), None), (None, Some(0.0)), (Some(1.0), Some(2.0))] {
            let s = ColourScale::for_image(&map, t, m);
            assert_eq!((s.lo, s.hi, s.centred), (0.0, 3.0, false), "{t:?} {m:?}: min..max");
        }
        let flat = ColourScale::for_image(&[0.5; 4], None, None);
        assert_eq!((flat.lo, flat.hi), (0.0, 1.0), "a flat map");
    }

    #[test]
    fn render_lays_out_panels_and_draws_contour_truth_and_bar() {
        // 4×4 map upscaled ×64 to 256-px panels; the right half is above the threshold 1.0.
        let size = 4;
        let map: Vec<f32> = (0..16).map(|i| if i % 4 >= 2 { 2.0 } else { 0.0 }).collect();
        let mut mask = vec![0u8; 16];
        mask[5] = 1; // cell (1, 1)
        let scale = ColourScale { lo: 0.0, hi: 2.0, threshold: Some(1.0), centred: true, held_out: true };
        let img = RgbImage::from_pixel(8, 8, Rgb([0, 0, 0]));
        let with_gt = render(&img, &map, Some(&mask), size, &scale);
        let (s, g) = (256u32, GAP);
        assert_eq!(with_gt.dimensions(), (3 * s + 2 * g, s + g + BAR_HEIGHT));
        assert_eq!(render(&img, &map, None, size, &scale).width(), 2 * s + g, "no ground-truth panel without a mask");
        let over = |x: u32, y: u32| with_gt.get_pixel(s + g + x, y).0;
        assert_eq!(over(128, 100), CONTOUR, "left edge of the hot region");
        assert_eq!(over(200, 100), jet(1.0).map(|c| (c as f32 * MAX_ALPHA).round() as u8), "hot interior");
        assert_eq!(over(10, 10), [0, 0, 0], "below lo: fully transparent");
        assert_eq!(over(64, 100), TRUTH, "ground-truth outline on the overlay");
        assert_eq!(with_gt.get_pixel(2 * (s + g) + 64, 100).0, TRUTH, "and on its own panel");
        assert_eq!(with_gt.get_pixel(2 * (s + g) + 100, 100).0, [89, 0, 89], "tinted defect area");
        assert_eq!(with_gt.get_pixel(s + g + 128, s + g + 2).0, CONTOUR, "threshold tick mid-bar");
        assert_eq!(with_gt.get_pixel(s + g, s + g + 2).0, jet(0.0));
        assert_eq!(with_gt.get_pixel(s + 1, 5).0, BACKGROUND, "gap between panels");
        // Short inputs render (as zeros) instead of panicking.
        assert_eq!(render(&img, &[], Some(&[]), size, &scale).width(), 3 * s + 2 * g);
    }
}
