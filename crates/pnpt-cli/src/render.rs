//! What one prediction becomes on disk and on the wire: the heat-map overlay and the binary
//! defect mask as PNG bytes, and the JSON object of `predictions.jsonl` and `/v1/predict` ([`PredictionRecord`]).
//!
//! **Overlay colours** are the evaluation heat maps' ([`pnpt::heatmap`], one implementation):
//! the jet colour scale spans `[lo, 2·t − lo]`, with `t` the category's pixel threshold and
//! `lo` its median held-out normal pixel, so the threshold is the middle of the scale whatever
//! the image, as in the evaluation reports; the colour is blended over the image with an
//! opacity growing from 0 at `lo`, and the white contour encloses the defect mask. A detector
//! without pixel statistics falls back to the image's own min..max.

use std::io::Cursor;

use pnpt::data::image::{DynamicImage, GrayImage, ImageFormat, Luma, RgbImage, imageops};
use pnpt::heatmap::{self, ColourScale};
use pnpt::model::Prediction;
use serde::Serialize;
use serde_json::Value;

/// The overlay of `p` on `image` ([`pnpt::heatmap::overlay`] with the image's own scale,
/// [`ColourScale::for_image`]), at the map's size scaled to at least
/// [`MIN_PANEL`](pnpt::heatmap::MIN_PANEL) pixels.
pub fn overlay(image: &DynamicImage, p: &Prediction, median: Option<f32>) -> RgbImage {
    let scale = ColourScale::for_image(&p.anomaly_map, p.pixel_threshold, median);
    heatmap::overlay(&image.to_rgb8(), &p.anomaly_map, None, p.width.max(1), &scale)
}

/// The defect mask of `p` (255 = defect) at `width × height` (nearest-neighbour from the map);
/// `None` without a pixel threshold.
pub fn mask(p: &Prediction, width: u32, height: u32) -> Option<GrayImage> {
    let m = p.defect_mask()?;
    let small =
        GrayImage::from_fn(p.width as u32, p.height as u32, |x, y| Luma([m[y as usize * p.width + x as usize] * 255]));
    Some(imageops::resize(&small, width.max(1), height.max(1), imageops::FilterType::Nearest))
}

/// PNG bytes of an image.
pub fn png<I: Into<DynamicImage>>(image: I) -> Result<Vec<u8>, String> {
    let mut out = Cursor::new(Vec::new());
    image.into().write_to(&mut out, ImageFormat::Png).map_err(|e| format!("PNG encoding failed: {e}"))?;
    Ok(out.into_inner())
}

/// Fraction of the map's pixels in the defect mask (`None` without a pixel threshold).
pub fn defect_fraction(p: &Prediction) -> Option<f64> {
    let t = p.pixel_threshold?;
    let n = p.anomaly_map.iter().filter(|&&v| v > t).count();
    Some(n as f64 / p.anomaly_map.len().max(1) as f64)
}

/// The JSON object of one prediction: the fields of `predictions.jsonl` and `/v1/predict`
/// besides the path, the maps and the timing (which [`crate::predict`] and [`crate::serve`]
/// add around it with `#[serde(flatten)]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PredictionRecord {
    /// The retrieved (or given) category.
    pub category: String,
    /// Whether the caller named the category (no retrieval).
    pub category_given: bool,
    /// Distance to the category's prompt.
    pub retrieval_distance: f32,
    /// The distance is beyond the category's limit: an unknown product.
    pub unknown_category: bool,
    /// Image anomaly score.
    pub score: f32,
    /// The category's image threshold (`null`: uncalibrated).
    pub threshold: Option<f32>,
    /// `score / threshold`.
    pub normalized_score: Option<f32>,
    /// `anomalous`, `normal` or `uncalibrated`.
    pub verdict: &'static str,
    /// The verdict as a boolean.
    pub anomalous: bool,
    /// The category's pixel threshold.
    pub pixel_threshold: Option<f32>,
    /// [`defect_fraction`].
    pub defect_fraction: Option<f64>,
}

impl PredictionRecord {
    /// The record of `p`; `category_given` when the caller named the category.
    pub fn new(p: &Prediction, category_given: bool) -> Self {
        Self {
            category: p.category.clone(),
            category_given,
            retrieval_distance: p.retrieval_distance,
            unknown_category: p.unknown_category,
            score: p.score,
            threshold: p.threshold,
            normalized_score: p.normalized_score,
            verdict: p.verdict(),
            anomalous: p.is_anomalous,
            pixel_threshold: p.pixel_threshold,
            defect_fraction: defect_fraction(p),
        }
    }
}

/// `value` as a [`Value`], whose objects sort their keys: written out, the keys come in the
/// order the hand-built objects these types replaced had (`null` if it is not representable,
/// which a struct with string-keyed maps always is).
pub fn sorted_json(value: &impl Serialize) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use pnpt::data::image::Rgb;

    use super::*;

    fn prediction(map: Vec<f32>, pixel: Option<f32>) -> Prediction {
        Prediction {
            score: 1.0,
            anomaly_map: map,
            height: 2,
            width: 2,
            category: "a".into(),
            is_anomalous: true,
            threshold: Some(0.5),
            normalized_score: Some(2.0),
            pixel_threshold: pixel,
            retrieval_distance: 0.1,
            unknown_category: false,
        }
    }

    #[test]
    fn overlay_mask_and_json() {
        let p = prediction(vec![0.0, 0.0, 0.0, 3.0], Some(1.0));
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(10, 7, Rgb([0, 0, 0])));
        let o = overlay(&img, &p, Some(0.0));
        assert_eq!(o.dimensions(), (256, 256));
        // The defect cell (bottom right) is outlined in white; a normal cell keeps the image.
        assert_eq!(o.get_pixel(128, 128).0, [255, 255, 255]);
        assert_eq!(o.get_pixel(10, 10).0, [0, 0, 0]);
        let m = mask(&p, 4, 4).unwrap();
        assert_eq!(m.get_pixel(3, 3).0, [255]);
        assert_eq!(m.get_pixel(0, 0).0, [0]);
        assert!(mask(&prediction(vec![0.0; 4], None), 4, 4).is_none());
        let j = sorted_json(&PredictionRecord::new(&p, false));
        assert_eq!(j["verdict"], "anomalous");
        assert_eq!(j["defect_fraction"], 0.25);
        assert!(png(o).unwrap().starts_with(b"\x89PNG"));
    }
}
