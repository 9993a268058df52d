//! Training a detector end to end: [`pnpt_model::fit`] (features, prompt pool, patch memory,
//! PNPT training, calibration), then the choice of the scoring method on the validation set of
//! [`crate::validation`] — never on test labels — and the thresholds of the method chosen.
//!
//! ```no_run
//! use pnpt::{backend::Cpu, data::Dataset, model::{PnptConfig, TrainOptions}, train::train, validation::ValidationOptions};
//! type B = pnpt::burn::backend::Autodiff<Cpu>;
//!
//! let dataset = Dataset::open("/data/mvtec_ad", None)?;
//! let (detector, report) = train::<B>(&PnptConfig::cpu(), &dataset, &Default::default(), &TrainOptions::default(), &ValidationOptions::default())?;
//! if let Some(v) = &report.validation {
//!     println!("scoring with {} (validation image AUROC {:.3})", detector.config().scoring.method, v.best().image_auroc);
//! }
//! # Ok::<(), pnpt::Error>(())
//! ```

use burn::tensor::backend::AutodiffBackend;
use pnpt_data::Dataset;
use pnpt_model::detector::FitReport;
use pnpt_model::train::split_holdout;
use pnpt_model::{fit, Detector, PnptConfig, TrainOptions};

use crate::validation::{validate, Validation, ValidationOptions};
use crate::Result;

/// What [`train`] returns besides the detector.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// Training and calibration.
    pub fit: FitReport,
    /// The validation of every scoring candidate (`None` without held-out images).
    pub validation: Option<Validation>,
    /// Seconds spent validating.
    pub validation_seconds: f64,
}

/// Trains one detector on every category of `dataset`, validates every scoring candidate on
/// pseudo-anomalies made from the held-out normal images and, when `validation.select` is set,
/// switches the detector to the best one and recalibrates its thresholds for it.
pub fn train<B: AutodiffBackend>(
    config: &PnptConfig,
    dataset: &Dataset,
    device: &B::Device,
    options: &TrainOptions,
    validation: &ValidationOptions,
) -> Result<(Detector<B::InnerBackend>, TrainReport)> {
    // Refuse what cannot fit before the backbone, the feature cache or the model is allocated.
    config.check_memory(dataset.num_train(), pnpt_model::config::available_memory())?;
    let (mut detector, fit_report) = fit::<B>(config, dataset, device, options)?;
    let (train_set, holdout) = split_holdout(dataset, config.scoring.calibration_fraction, config.train.seed);
    let t0 = std::time::Instant::now();
    let result = if holdout.is_empty() { None } else { Some(validate(&detector, &holdout, &train_set, validation)?) };
    if let (Some(v), true) = (&result, validation.select) {
        let best = v.best();
        let scoring = &detector.config().scoring;
        if (best.method, best.memory_weight, best.score) != (scoring.method, scoring.memory_weight, scoring.score) {
            detector.set_scoring_rule(best.method, best.memory_weight, best.score)?;
            detector.calibrate(&holdout)?;
        }
    }
    let validation_seconds = t0.elapsed().as_secs_f64();
    Ok((detector, TrainReport { fit: fit_report, validation: result, validation_seconds }))
}
