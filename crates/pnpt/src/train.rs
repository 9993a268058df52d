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

use burn::tensor::backend::{AutodiffBackend, Backend};
use pnpt_data::{Dataset, Sample};
use pnpt_model::train::FitReport;
use pnpt_model::train::split_holdout;
use pnpt_model::{Detector, PnptConfig, ScoringMethod, TrainOptions, fit_with};

use crate::Result;
use crate::validation::{Validation, ValidationOptions, ValidationSet, validate};

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
    // Refuse what cannot fit before the backbone, the feature cache or the model is allocated
    // (features kept on disk take no memory).
    let images = dataset.num_train();
    let in_memory = options.feature_storage_for(config, images) == pnpt_model::train::FeatureStorage::Memory;
    config.check_memory(if in_memory { images } else { 0 }, pnpt_model::config::available_memory())?;
    let (train_set, holdout) = split_holdout(dataset, config.scoring.calibration_fraction, config.train.seed);
    // Built once, before training: the per-epoch validation and the final choice use the
    // same images.
    let set = if holdout.is_empty() {
        None
    } else {
        Some(ValidationSet::build(&holdout, &train_set, config.input_size, validation)?)
    };
    let mut epoch_seconds = 0.0;
    // The last epoch's model is the detector's: its score comes from the final validation below
    // (the same images, rule and map), not from a second pass.
    let mut on_epoch = |d: &Detector<B::InnerBackend>, last: bool| -> pnpt_model::Result<Option<(f64, f64)>> {
        match (&set, validation.per_epoch && !last) {
            (Some(set), true) => {
                let t0 = std::time::Instant::now();
                let scores = set
                    .score_pnpt(d, validation.batch_size)
                    .map_err(|e| pnpt_model::Error::Invalid(format!("per-epoch validation: {e}")))?;
                epoch_seconds += t0.elapsed().as_secs_f64();
                Ok(Some(scores))
            }
            _ => Ok(None),
        }
    };
    let (mut detector, mut fit_report) = fit_with::<B>(config, dataset, device, options, &mut on_epoch)?;
    let t0 = std::time::Instant::now();
    let result = choose(&mut detector, &holdout, set.as_ref(), validation)?;
    if let (Some(v), Some(last), true, true) =
        (&result, fit_report.history.last_mut(), validation.per_epoch, fit_report.completed)
    {
        let own = v
            .candidates
            .iter()
            .find(|c| c.method == ScoringMethod::Pnpt && !c.positional && c.score == config.scoring.score);
        last.validation = own.map(|c| (c.image_auroc, c.pixel_auroc));
    }
    let validation_seconds = t0.elapsed().as_secs_f64() + epoch_seconds;
    Ok((detector, TrainReport { fit: fit_report, validation: result, validation_seconds }))
}

/// Validates every candidate on the held-out images and, when `options.select` is set,
/// switches to the best and recalibrates the thresholds for it.
fn choose<B: Backend>(
    detector: &mut Detector<B>,
    holdout: &[Sample],
    set: Option<&ValidationSet>,
    options: &ValidationOptions,
) -> Result<Option<Validation>> {
    let result = match set {
        Some(set) => Some(validate(detector, set, options)?),
        None => None,
    };
    if let (Some(v), true) = (&result, options.select) {
        let best = v.best().rule();
        if best != detector.config().scoring.rule() {
            detector.set_rule(best)?;
            detector.calibrate(holdout)?;
        }
    }
    Ok(result)
}

/// Re-fits a trained detector's scoring on the dataset it was trained on, without retraining:
/// the positional statistics of PNPT's map from the training split (the same split training
/// used: `scoring.calibration_fraction` and `train.seed` decide it), the per-class statistics
/// and thresholds from the held-out split, then the choice among the candidates as in
/// [`train`]. For detectors saved before positional statistics existed; the weights are
/// untouched, so the result is what training with this version would have given.
pub fn rescore<B: Backend>(
    detector: &mut Detector<B>,
    dataset: &Dataset,
    validation: &ValidationOptions,
) -> Result<Option<Validation>> {
    let config = detector.config().clone();
    let (train_set, holdout) = split_holdout(dataset, config.scoring.calibration_fraction, config.train.seed);
    let known = detector.categories().to_vec();
    if let Some(c) = train_set.iter().find(|s| !known.contains(&s.category)) {
        return Err(crate::Error::Validation(format!(
            "category `{}` of {} is not one the detector was trained on",
            c.category,
            dataset.root.display()
        )));
    }
    let parts = detector.sample_components(&train_set, config.train.feature_batch, true, false)?;
    detector.fit_positional(&parts)?;
    detector.calibrate(&holdout)?;
    let set = if holdout.is_empty() {
        None
    } else {
        Some(ValidationSet::build(&holdout, &train_set, config.input_size, validation)?)
    };
    choose(detector, &holdout, set.as_ref(), validation)
}
