//! Prediction on unlabelled images, beyond [`Detector::predict`]: a category given by the caller
//! instead of retrieved, thresholds a caller reads and sets per category, binary defect masks
//! from a pixel threshold, and a flag for images of a product the detector never saw.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use pnpt_model::{detector::Detector, predict::CategoryThresholds};
//!
//! let mut detector = Detector::<Flex>::load("pnpt-out/detector", &Default::default())?;
//! let image = pnpt_data::image::open("part.png").unwrap();
//! let p = detector.predict_as(&image, "bottle")?; // no retrieval: judged as a bottle
//! let mask = p.defect_mask();                      // Some(0/1 per pixel) when calibrated
//! let t = detector.category_thresholds("bottle")?;
//! detector.set_category_thresholds("bottle", CategoryThresholds { image: t.image.map(|v| v * 1.1), ..t })?;
//! # Ok::<(), pnpt_model::Error>(())
//! ```
//!
//! **Pixel threshold** (per category, computed with the image thresholds by
//! [`Detector::calibrate`]): the [`PIXEL_QUANTILE`] quantile of the final map's values over
//! every pixel of the category's held-out normal images; a pixel above it is a defect pixel.
//!
//! **Unknown category.** Retrieval always answers with the nearest class, also for a product
//! the detector never saw. Per class the detector keeps a retrieval-distance limit,
//! [`RETRIEVAL_MARGIN`] × the largest distance any normal image reached: images of the class to
//! its own coding and images retrieved as the class to its coding, over the training images
//! (at [`fit`](crate::fit)) and the held-out ones (at calibration). A prediction whose
//! distance exceeds the limit of its class is `unknown_category`: unlike every trained
//! product's normal images. A large defect can do that to a known product too, so read the
//! flag with the verdict. Detectors saved before the limits existed have none and never flag
//! ([`Detector::calibrate`] adds limits from held-out images alone, which are tighter).

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::DynamicImage;
use pnpt_prompt::PromptPool;
use serde::{Deserialize, Serialize};

use crate::detector::{Components, Detector, Prediction, quantile_of};
use crate::{Error, Result};

/// Quantile of the held-out normal pixels that is a category's pixel threshold.
pub const PIXEL_QUANTILE: f64 = 0.99;

/// A class's retrieval-distance limit is this factor × the largest distance its normal images
/// reached. Provisional: it was read off an ad13 detector's distances, as multiples of that
/// largest distance, on foreign products (the six synthetic kinds, 5.9–163) and on ad13 *test*
/// images (normal 0.4–1.24 with one paper_fvn01 image at 11.7; broken bottles up to 17.6) —
/// test data, which should not pick it. To be re-chosen on training normals alone (cross-fitted
/// limits) and foreign images. At 3: 1 of 212 normal test images flagged, every foreign image.
pub const RETRIEVAL_MARGIN: f32 = 3.0;

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

impl<B: Backend> Detector<B> {
    /// The pool index of `category`, or an error listing the known ones.
    pub fn category_index(&self, category: &str) -> Result<usize> {
        self.categories().iter().position(|c| c == category).ok_or_else(|| {
            Error::Invalid(format!(
                "unknown category `{category}`: this detector knows {}",
                self.categories().join(", ")
            ))
        })
    }

    /// Scores one image as `category` (no retrieval): its prior and memory bank are used and its
    /// thresholds decide. `unknown_category` still tells whether the image looks like it.
    pub fn predict_as(&self, image: &DynamicImage, category: &str) -> Result<Prediction> {
        Ok(self.predict_batch_as(std::slice::from_ref(image), Some(category))?.remove(0))
    }

    /// [`predict_batch`](Self::predict_batch), every image judged as `category` when given.
    pub fn predict_batch_as(&self, images: &[DynamicImage], category: Option<&str>) -> Result<Vec<Prediction>> {
        let forced = category.map(|c| self.category_index(c)).transpose()?;
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let rule = self.config().scoring.rule();
        let parts = self.image_components_as(images, images.len(), rule.uses_pnpt(), rule.uses_memory(), forced)?;
        Ok(self.to_predictions(self.combine_with(&parts, &rule)?))
    }

    /// [`image_components`](Self::image_components) with the class given instead of retrieved.
    pub fn image_components_as(
        &self,
        images: &[DynamicImage],
        batch: usize,
        pnpt: bool,
        memory: bool,
        category: Option<usize>,
    ) -> Result<Components> {
        let pre = self.preprocess();
        let size = pre.size as usize;
        let mut all = Components { size, ..Default::default() };
        for chunk in images.chunks(batch.max(1)) {
            let mut flat = Vec::with_capacity(chunk.len() * pre.len());
            for img in chunk {
                flat.extend(pnpt_data::to_chw(img, &pre));
            }
            let x = Tensor::<B, 4>::from_data(TensorData::new(flat, [chunk.len(), 3, size, size]), &self.device);
            all.extend(self.components_as(x, pnpt, memory, category)?);
        }
        Ok(all)
    }

    /// The thresholds `category` is judged by.
    pub fn category_thresholds(&self, category: &str) -> Result<CategoryThresholds> {
        self.category_index(category)?;
        let t = &self.thresholds;
        Ok(CategoryThresholds {
            image: t.for_category(category),
            pixel: t.pixel.get(category).copied(),
            retrieval: t.retrieval.get(category).copied(),
        })
    }

    /// Replaces the thresholds of `category` (`None` removes one). A later
    /// [`calibrate`](Self::calibrate) overwrites the image and pixel thresholds.
    pub fn set_category_thresholds(&mut self, category: &str, new: CategoryThresholds) -> Result<()> {
        self.category_index(category)?;
        for (what, v) in [("image", new.image), ("pixel", new.pixel), ("retrieval", new.retrieval)] {
            if v.is_some_and(|v| !v.is_finite()) {
                return Err(Error::Invalid(format!(
                    "category `{category}`: the {what} threshold must be finite, got {v:?}"
                )));
            }
        }
        let t = &mut self.thresholds;
        let set = |map: &mut BTreeMap<String, f32>, v: Option<f32>| match v {
            Some(v) => map.insert(category.to_string(), v),
            None => map.remove(category),
        };
        set(&mut t.per_category, new.image);
        set(&mut t.pixel, new.pixel);
        set(&mut t.retrieval, new.retrieval);
        Ok(())
    }
}

/// Per image, the nearest class and its distance, or the distance to `forced` when given.
pub(crate) fn retrieve<B: Backend>(
    pool: &PromptPool<B>,
    feats: &[Tensor<B, 4>; 3],
    forced: Option<usize>,
) -> Result<(Vec<usize>, Vec<f32>)> {
    let Some(class) = forced else { return Ok(pool.nearest(feats)?) };
    let k = pool.len();
    if class >= k {
        return Err(Error::Invalid(format!("class index {class} out of range for a pool of {k} classes")));
    }
    let dist: Vec<f32> = pool.distances(feats)?.into_data().iter::<f32>().collect();
    let d: Vec<f32> = dist.chunks(k).map(|row| row[class]).collect();
    if d.iter().any(|v| !v.is_finite()) {
        return Err(Error::Invalid("query features give a non-finite retrieval distance (NaN features?)".into()));
    }
    Ok((vec![class; d.len()], d))
}

fn raise(limits: &mut BTreeMap<String, f32>, class: &str, distance: f32) {
    let v = distance * RETRIEVAL_MARGIN;
    if v.is_finite() {
        let e = limits.entry(class.to_string()).or_insert(v);
        *e = e.max(v);
    }
}

/// Raises the limits with images retrieved as `categories[i]` at `distances[i]`.
pub(crate) fn raise_retrieval_limits(
    limits: &mut BTreeMap<String, f32>,
    names: &[String],
    categories: &[usize],
    distances: &[f32],
) {
    for (&c, &d) in categories.iter().zip(distances) {
        raise(limits, &names[c], d);
    }
}

/// Retrieval limits from the training images' features: each image raises its own class (by
/// its distance to that class) and its retrieved class (by the nearest distance).
pub(crate) fn training_retrieval_limits<B: Backend>(
    pool: &PromptPool<B>,
    set: &crate::train::FeatureSet<B>,
) -> Result<BTreeMap<String, f32>> {
    let truth = &set.categories;
    let (names, k) = (pool.names(), pool.len());
    let mut limits = BTreeMap::new();
    for start in (0..truth.len()).step_by(64) {
        let len = (truth.len() - start).min(64);
        let dist: Vec<f32> = pool.distances(&set.rows(start, len)?)?.into_data().iter::<f32>().collect();
        for (row, t) in dist.chunks(k).zip(&truth[start..start + len]) {
            if let Some(own) = names.iter().position(|n| n == t) {
                raise(&mut limits, t, row[own]);
            }
            let (best, d) =
                row.iter().copied().enumerate().fold((0, f32::INFINITY), |a, (i, d)| if d < a.1 { (i, d) } else { a });
            raise(&mut limits, &names[best], d);
        }
    }
    Ok(limits)
}

/// Per category ([`PIXEL_QUANTILE`] quantile, median) of the pixels of `maps` (`px` per image,
/// grouped by `truth`).
pub(crate) fn pixel_statistics(
    maps: &[f32],
    truth: &[String],
    px: usize,
) -> (BTreeMap<String, f32>, BTreeMap<String, f32>) {
    let mut by_cat: BTreeMap<&str, Vec<f32>> = BTreeMap::new();
    for (i, c) in truth.iter().enumerate() {
        if let Some(m) = maps.get(i * px..(i + 1) * px) {
            by_cat.entry(c).or_default().extend_from_slice(m);
        }
    }
    let (mut high, mut median) = (BTreeMap::new(), BTreeMap::new());
    for (c, v) in by_cat {
        if let (Some(h), Some(m)) = (quantile_of(v.clone(), PIXEL_QUANTILE), quantile_of(v, 0.5)) {
            high.insert(c.to_string(), h);
            median.insert(c.to_string(), m);
        }
    }
    (high, median)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One detector serves many threads on the CPU backend (the HTTP service shares one).
    #[test]
    fn detector_is_send_and_sync_on_the_cpu_backend() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Detector<burn::backend::Flex>>();
        assert_send_sync::<Prediction>();
    }

    #[test]
    fn pixel_statistics_per_category() {
        // Two images of `a` (values 0..99 and 100..199), one of `b` (all 5).
        let mut maps: Vec<f32> = (0..200).map(|v| v as f32).collect();
        maps.extend([5.0; 100]);
        let truth = ["a", "a", "b"].map(String::from);
        let (high, median) = pixel_statistics(&maps, &truth, 100);
        assert!((high["a"] - 197.01).abs() < 1e-3, "{}", high["a"]);
        assert_eq!(median["a"], 99.5);
        assert_eq!((high["b"], median["b"]), (5.0, 5.0));
        // A short map list never panics: the missing image is skipped.
        assert_eq!(pixel_statistics(&maps[..150], &truth, 100).0.len(), 1);
    }

    #[test]
    fn limits_take_the_margin_and_the_maximum() {
        let names = ["a", "b"].map(String::from);
        let mut limits = BTreeMap::new();
        raise_retrieval_limits(&mut limits, &names, &[0, 0, 1], &[1.0, 2.0, f32::NAN]);
        assert_eq!(limits.get("a"), Some(&(2.0 * RETRIEVAL_MARGIN)));
        assert_eq!(limits.get("b"), None, "a NaN distance sets no limit");
    }
}
