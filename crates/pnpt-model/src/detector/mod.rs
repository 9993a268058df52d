//! The trained artefact: an [`AnomalyModel`] that turns images into raw maps (backbone, CS-NPP
//! prompt pool, PNPT, patch memory) and a [`PostProcessor`] that owns everything after them
//! (standardisation, fusion, image score, thresholds, verdicts, masks).
//!
//! ```no_run
//! use burn::backend::Flex;
//! use pnpt_model::detector::Detector;
//!
//! let detector = Detector::<Flex>::load("pnpt-out/detector", &Default::default())?;
//! let image = pnpt_data::image::open("bottle.png").unwrap();
//! for p in detector.predict(&[image])? {
//!     println!("{}: score {:.3}, {}", p.category, p.score, p.verdict());
//! }
//! # Ok::<(), pnpt_model::Error>(())
//! ```
//!
//! **Thresholds.** Per category, the decision threshold is the `scoring.threshold_quantile`
//! quantile (linear interpolation; 0.99 by default, 1.0 = the maximum) of the image scores of
//! that category's held-out normal training images (`scoring.calibration_fraction` of
//! `train/good`, never trained on). At prediction time the threshold of the *retrieved*
//! category is used; a category without held-out images uses the quantile over all held-out
//! scores. Without any held-out image no image is flagged (`threshold = None`). The same
//! calibration sets each category's pixel threshold (defect masks) and raises its
//! retrieval-distance limit (unknown products), see [`prediction`].
//!
//! **Artefact folder** (each file written via temp + rename): `config.json`, `model.safetensors`
//! (float32, one tensor per parameter named by module path), `prompt_pool.safetensors`,
//! `thresholds.json`, and
//! `manifest.json` (architecture and parameter count the weights were saved with, and the
//! SHA-256 of every other file; loading verifies every checksum before it parses anything, then
//! compares the architecture with `config.json` and errors on any difference), and — when the scoring method
//! uses it — `patch_memory.safetensors` (one coreset bank per class, `pnpt-memory`) with
//! `normalization.json` (per-class map statistics for fusion, [`crate::fusion`]); and when it
//! has them, `positional.npy` (PNPT's per-position map statistics, classes listed in
//! `normalization.json`, [`crate::fusion::PositionalStats`]).
//!
//! **Scoring methods** (`scoring.method`): `pnpt` scores with PNPT's reconstruction map, `memory`
//! with the distance of each patch to the retrieved class's bank of normal patches (PatchCore),
//! `fused` with both maps standardised per class and summed (see [`crate::fusion`]).

mod model;
mod persistence;
mod post;
pub mod prediction;
mod thresholds;

use std::path::Path;

use burn::tensor::backend::Backend;
use image::DynamicImage;

use crate::{Error, PnptConfig, Result};

pub use model::{AnomalyModel, Components, Maps};
pub use persistence::{UNOPTIMISED, upgrade};
pub use post::PostProcessor;
pub use prediction::{BatchOutput, CategoryThresholds, PIXEL_QUANTILE, Prediction, RETRIEVAL_MARGIN};
pub use thresholds::{Thresholds, quantile_of};

/// File names inside a detector folder.
pub mod files {
    /// The full configuration.
    pub const CONFIG: &str = "config.json";
    /// Model weights: safetensors, one float32 tensor per parameter named by module path.
    pub const MODEL: &str = "model.safetensors";
    /// The CS-NPP prompt pool (safetensors, `pnpt_prompt::PromptPool::save`).
    pub const POOL: &str = "prompt_pool.safetensors";
    /// Per-category thresholds.
    pub const THRESHOLDS: &str = "thresholds.json";
    /// What the weights were saved with, and the SHA-256 of every other file.
    pub const MANIFEST: &str = "manifest.json";
    /// The SHA-256 of `manifest.json` itself, twice (`pnpt_io::checksum::write_sidecar`):
    /// the manifest cannot vouch for itself, and nothing inside the folder's files can turn
    /// the check off.
    pub const MANIFEST_CHECKSUM: &str = "manifest.sha256";
    /// The class-conditional patch memory (only when the detector has one; safetensors,
    /// `pnpt_memory::PatchMemory::save`).
    pub const MEMORY: &str = "patch_memory.safetensors";
    /// Per-class map statistics for fusion.
    pub const NORMALIZATION: &str = "normalization.json";
    /// Per-class, per-position statistics of PNPT's map (`classes × 2 × size × size` float32:
    /// mean, std), classes in the order of `normalization.json`'s `positional_classes`.
    pub const POSITIONAL: &str = "positional.npy";

    /// The names of detectors saved before manifest format 5, read by
    /// [`upgrade`](super::upgrade) where the current names are absent.
    pub mod legacy {
        /// Model weights as a Burn named MessagePack record (full precision).
        pub const MODEL: &str = "model.mpk";
        /// The prompt pool in the pnpt container (`PNPTPOOL`).
        pub const POOL: &str = "prompt_pool.bin";
        /// The patch memory in the pnpt container (`PNPTMEM1`).
        pub const MEMORY: &str = "patch_memory.bin";
    }
}

/// A trained PNPT anomaly detector: a model and its post-processor. On the CPU backend it is
/// `Send + Sync`: one detector serves many threads (prediction takes `&self`).
#[derive(Debug)]
pub struct Detector<B: Backend> {
    model: AnomalyModel<B>,
    post: PostProcessor,
}

impl<B: Backend> Detector<B> {
    /// Assembles a detector, checking that the post-processor fits the model: the same
    /// categories, and a patch memory where the rule reads its map.
    pub fn new(mut model: AnomalyModel<B>, post: PostProcessor) -> Result<Self> {
        if post.categories() != model.categories() {
            return Err(Error::Config(format!(
                "the post-processor's categories {:?} differ from the model's {:?}",
                post.categories(),
                model.categories()
            )));
        }
        let rule = post.rule();
        for method in [rule.method, rule.score_source().method] {
            if method.uses_memory() && model.memory().is_none() {
                return Err(Error::Config(format!(
                    "scoring method `{method}` needs a patch memory, and this detector has none (it was trained with `pnpt` scoring)"
                )));
            }
        }
        // One configuration per detector: the rule and quantile are the post-processor's.
        let scoring = &mut model.config_mut().scoring;
        scoring.set_rule(rule);
        scoring.threshold_quantile = post.threshold_quantile();
        Ok(Self { model, post })
    }

    /// The model and the post-processor, e.g. to re-fit or re-calibrate the latter and
    /// assemble a new detector with [`new`](Self::new).
    pub fn into_parts(self) -> (AnomalyModel<B>, PostProcessor) {
        (self.model, self.post)
    }

    /// Scores decoded images (any size; resized to `input_size`), each judged as its retrieved
    /// category.
    pub fn predict(&self, images: &[DynamicImage]) -> Result<Vec<Prediction>> {
        self.predict_images(images, None)
    }

    /// [`predict`](Self::predict) with every image judged as `category` (no retrieval): its
    /// prior, memory bank and thresholds decide; `unknown_category` still tells whether the
    /// image looks like it.
    pub fn predict_as(&self, images: &[DynamicImage], category: &str) -> Result<Vec<Prediction>> {
        self.predict_images(images, Some(self.model.category_index(category)?))
    }

    fn predict_images(&self, images: &[DynamicImage], category: Option<usize>) -> Result<Vec<Prediction>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let parts = self.model.image_components(images, images.len(), Maps::of(&self.post.rule()), category)?;
        self.post.predictions(self.post.combine(&parts)?)
    }

    /// The configuration (its scoring rule is the post-processor's).
    pub fn config(&self) -> &PnptConfig {
        self.model.config()
    }
    /// Category names the detector knows (pool order).
    pub fn categories(&self) -> &[String] {
        self.model.categories()
    }
    /// The model: images to raw maps.
    pub fn model(&self) -> &AnomalyModel<B> {
        &self.model
    }
    /// The post-processor: raw maps to scores, maps and verdicts.
    pub fn post(&self) -> &PostProcessor {
        &self.post
    }

    /// Loads an artefact folder written by [`save`](Self::save); the backbone weights come
    /// from the saved configuration (bundled for EfficientNet-Lite0).
    pub fn load(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        persistence::load(dir.as_ref(), None, device)
    }

    /// [`load`](Self::load), taking the backbone weights from `weights` (e.g. a `.pth` moved
    /// since training).
    pub fn load_with_backbone_weights(dir: impl AsRef<Path>, weights: &Path, device: &B::Device) -> Result<Self> {
        persistence::load(dir.as_ref(), Some(weights), device)
    }

    /// Writes the artefact folder. The files are written into a staging folder beside `dir`,
    /// which then replaces `dir` by renames, so an interrupted save never leaves a mix of old
    /// and new files, and an existing detector survives until the new one is complete.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        persistence::save(self, dir.as_ref())
    }
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
}
