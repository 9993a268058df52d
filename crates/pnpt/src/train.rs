//! The training pipeline, top to bottom, in one place: hold-out split and validation set ->
//! backbone features -> CS-NPP prompt pool -> patch memory -> PNPT transformer -> per-position
//! statistics -> calibration -> model selection on pseudo-anomalies (never on test labels) ->
//! calibration of the rule chosen. `pnpt train` and `train_mvtec` call [`train`] once;
//! [`rescore`] redoes the steps after the transformer on a saved detector. Under
//! `train.run_budget_seconds` the transformer gets the time the other steps leave
//! ([`BudgetPlan`]).
//!
//! ```no_run
//! use pnpt::{backend::Cpu, data::Dataset, model::{PnptConfig, TrainOptions}, train::train, validation::ValidationOptions};
//! type B = pnpt::burn::backend::Autodiff<Cpu>;
//!
//! let dataset = Dataset::open("/data/mvtec_ad", None)?;
//! let validation = ValidationOptions::default();
//! let (detector, report) = train::<B>(&PnptConfig::cpu(), &dataset, &Default::default(), &TrainOptions::default(), Some(&validation))?;
//! if let Some(v) = &report.validation {
//!     println!("scoring with {} (validation image AUROC {:.3})", detector.config().scoring.method, v.best().image_auroc);
//! }
//! # Ok::<(), pnpt::Error>(())
//! ```

use std::time::Instant;

use burn::tensor::backend::{AutodiffBackend, Backend};
use pnpt_backbone::Backbone;
use pnpt_data::{Dataset, Sample};
use pnpt_model::train::{EpochStats, FeatureStorage, build_memory, build_training_set, split_holdout};
use pnpt_model::{
    AnomalyModel, Components, Detector, Maps, PnptConfig, PostProcessor, ScoringMethod, ScoringRule, TrainOptions,
    train_transformer,
};

use crate::validation::{Validation, ValidationOptions, ValidationSet, validate};
use crate::{Error, Result};

/// What [`train`] returns besides the detector: what each step took.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// Per-epoch loss and speed (and PNPT's validation AUROCs when measured).
    pub history: Vec<EpochStats>,
    /// Seconds computing backbone features and the pool.
    pub feature_seconds: f64,
    /// Seconds building the patch memory (0 without one).
    pub memory_seconds: f64,
    /// Seconds in the transformer's training loop.
    pub train_seconds: f64,
    /// Seconds computing the positional statistics of PNPT's map (0 without them).
    pub positional_seconds: f64,
    /// Seconds validating (per epoch and the final choice) and calibrating.
    pub validation_seconds: f64,
    /// Training images used.
    pub train_images: usize,
    /// Held-out normal images (calibration and validation).
    pub holdout_images: usize,
    /// Whether all epochs ran (false when stopped early by `stop_after_epoch`).
    pub completed: bool,
    /// How `train.run_budget_seconds` was shared out (`None` without a budget).
    pub budget: Option<BudgetPlan>,
    /// The validation of every scoring candidate (`None` without held-out images).
    pub validation: Option<Validation>,
}

/// How a run's time budget was shared out: the transformer gets what the steps before it took
/// and the steps after it are expected to take leave of the budget.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BudgetPlan {
    /// The whole run's budget (`train.run_budget_seconds`).
    pub budget_seconds: f64,
    /// Seconds given to the transformer's training loop.
    pub transformer_seconds: f64,
    /// Seconds expected after the loop (statistics, calibration, validation), from a probe pass.
    pub expected_after_seconds: f64,
}

impl BudgetPlan {
    /// Shares `budget` out after `spent` seconds, with `after` seconds expected after the loop.
    /// The transformer's share is never negative (the loop still runs one step).
    pub fn share(budget: f64, spent: f64, after: f64) -> Self {
        let transformer_seconds = (budget - spent - after).max(0.0);
        Self { budget_seconds: budget, transformer_seconds, expected_after_seconds: after }
    }
}

/// Safety margin on the probe's estimate of the steps after the training loop. The unscaled
/// estimate was 4 % above the actual time on the default synthetic set and 19 % above on ad13
/// (the probe's first pass pays some warm-up; docs/performance.md, *Time budget*).
const AFTER_FACTOR: f64 = 1.1;

/// Seconds the steps after the training loop will take, from a probe: PNPT's maps (and the
/// memory's) of a few training images with an untrained transformer of the same shape (the cost
/// does not depend on the weights), scaled to the per-position statistics over the training
/// images and to calibration and validation over the held-out and pseudo-anomalous images
/// (each also decoded and put through the backbone, at the feature stage's measured rate).
#[allow(clippy::too_many_arguments)]
fn expected_after<B: Backend>(
    config: &PnptConfig,
    backbone: &Backbone<B>,
    pool: &pnpt_prompt::PromptPool<B>,
    memory: Option<&pnpt_model::PatchMemory<B>>,
    features: &pnpt_model::train::FeatureSet<B>,
    decode_seconds: f64,
    holdout: usize,
    validation: Option<&ValidationOptions>,
) -> Result<f64> {
    let device = pool.codes().device();
    let probe = pnpt_model::train::untrained_model::<B>(config, &device)?;
    let mut model = AnomalyModel::new(config.clone(), backbone.clone(), pool.clone(), probe)?;
    if let Some(memory) = memory {
        model = model.with_memory(memory.clone())?;
    }
    let k = features.len().min(config.train.feature_batch.max(1));
    let rows: Vec<usize> = (0..k).collect();
    let sample = pnpt_model::train::FeatureSet::in_memory(
        features.select(&rows)?,
        features.categories[..k].to_vec(),
        features.prior_index[..k].to_vec(),
    )?;
    let time = |maps: Maps| -> Result<f64> {
        let t0 = Instant::now();
        model.feature_set_components(&sample, k, maps)?;
        Ok(t0.elapsed().as_secs_f64() / k.max(1) as f64)
    };
    let rule = config.scoring.rule();
    let pnpt = time(Maps::PNPT)?;
    let all = if memory.is_some() { time(Maps { pnpt: true, memory: true })? } else { pnpt };
    let decode = decode_seconds / features.len().max(1) as f64;
    let positional = if rule.uses_positional() { features.len() as f64 * pnpt } else { 0.0 };
    let validated = validation.map_or(0, |v| holdout * (1 + v.per_image));
    let passes = (holdout + validated) as f64 * (decode + all);
    Ok(AFTER_FACTOR * (positional + passes))
}

/// Whether the held-out split (`scoring.calibration_fraction` of each category's `train/good`,
/// at least one image always left for training) leaves normal images to calibrate thresholds
/// on. None at all is [`Error::Validation`]: every threshold would be missing (`"global":
/// null`) and no image could be judged anomalous. The categories left without a held-out
/// image of their own are returned, one message each, for a warning: they are judged by the
/// threshold of all the held-out images. Counts only; a job calls it before anything runs.
pub fn check_calibration(config: &PnptConfig, dataset: &Dataset) -> Result<Vec<String>> {
    let (_, holdout) = split_holdout(dataset, config.scoring.calibration_fraction, config.train.seed);
    if holdout.is_empty() {
        let fewest = dataset.categories.iter().map(|c| c.train.len()).min().unwrap_or(0);
        return Err(Error::Validation(format!(
            "{}: no held-out normal image to calibrate the thresholds on (scoring.calibration_fraction {} of train/good, at least one image kept for training; the smallest category has {fewest}): give each category at least 2 training images, or every threshold would be missing and no image judged anomalous",
            dataset.root.display(),
            config.scoring.calibration_fraction
        )));
    }
    Ok(dataset
        .categories
        .iter()
        .filter(|c| !holdout.iter().any(|s| s.category == c.name))
        .map(|c| {
            format!(
                "category {:?}: {} training image(s), none held out to calibrate its own threshold; it is judged by the threshold of all held-out images",
                c.name,
                c.train.len()
            )
        })
        .collect())
}

/// Trains one detector on every category of `dataset`, validates every scoring candidate on
/// pseudo-anomalies made from the held-out normal images and, when `validation.select` is set,
/// switches the detector to the best one and recalibrates its thresholds for it. Without
/// `validation` the detector keeps the configured rule (nothing is validated).
pub fn train<B: AutodiffBackend>(
    config: &PnptConfig,
    dataset: &Dataset,
    device: &B::Device,
    options: &TrainOptions,
    validation: Option<&ValidationOptions>,
) -> Result<(Detector<B::InnerBackend>, TrainReport)> {
    let started = Instant::now();
    config.validate()?;
    // Refuse what cannot fit before the backbone, the feature cache or the model is allocated
    // (features kept on disk take no memory).
    let images = dataset.num_train();
    let in_memory = options.feature_storage_for(config, images) == FeatureStorage::Memory;
    config.check_memory(if in_memory { images } else { 0 }, pnpt_model::config::available_memory())?;
    for warning in check_calibration(config, dataset)? {
        log::warn!("{warning}");
    }
    let (train_set, holdout) = split_holdout(dataset, config.scoring.calibration_fraction, config.train.seed);
    if train_set.is_empty() {
        return Err(pnpt_model::Error::Invalid(format!(
            "{}: no normal training images (train/good)",
            dataset.root.display()
        ))
        .into());
    }
    // Built once, before training: the per-epoch validation and the final choice use the
    // same images.
    let set = match validation {
        Some(v) if !holdout.is_empty() => Some((ValidationSet::build(&holdout, &train_set, config.input_size, v)?, v)),
        _ => None,
    };

    // Features and prompt pool: the frozen backbone runs once per training image.
    let inner = device.clone();
    let backbone = Backbone::<B::InnerBackend>::load(config.backbone, config.backbone_weights.as_deref(), &inner)?;
    let t0 = Instant::now();
    let (features, pool) = build_training_set(config, &backbone, &train_set, &inner, options)?;
    let feature_seconds = t0.elapsed().as_secs_f64();

    // Patch memory: built before training so that a problem with it ends the run before the
    // long part.
    let t0 = Instant::now();
    let memory = if config.scoring.rule().uses_memory() {
        Some(build_memory(config, &features, &pool, &options.progress_sink)?)
    } else {
        None
    };
    let memory_seconds = t0.elapsed().as_secs_f64();

    // The transformer's share of the run's time budget.
    let budget = match config.train.run_budget_seconds {
        Some(budget) => {
            let validated = set.as_ref().map(|(_, v)| *v);
            let after = expected_after(
                config,
                &backbone,
                &pool,
                memory.as_ref(),
                &features,
                feature_seconds,
                holdout.len(),
                validated,
            )?;
            let plan = BudgetPlan::share(budget, started.elapsed().as_secs_f64(), after);
            if options.progress {
                log::info!(
                    "time budget {budget:.0} s: {:.0} s spent, about {after:.0} s needed after training: the transformer gets {:.0} s",
                    started.elapsed().as_secs_f64(),
                    plan.transformer_seconds
                );
            }
            if plan.transformer_seconds <= 0.0 {
                log::warn!("the time budget leaves the transformer no time: it trains one step (raise --time-budget)");
            }
            Some(plan)
        }
        None => None,
    };
    let options = &match budget {
        Some(plan) => options.clone().with_time_limit(Some(plan.transformer_seconds), plan.expected_after_seconds),
        None => options.clone(),
    };

    // Transformer; after every epoch but the last, PNPT's map alone on the validation set (the
    // last epoch's score comes from the final validation below: same images, rule and map).
    let mut epoch_seconds = 0.0;
    let mut on_epoch = |transformer: &pnpt_model::Pnpt<B::InnerBackend>, last: bool| -> pnpt_model::Result<_> {
        let Some((set, validation)) = set.as_ref().filter(|(_, v)| v.per_epoch && !last) else { return Ok(None) };
        let t0 = Instant::now();
        let mut cfg = config.clone();
        cfg.scoring.set_rule(pnpt_only(config));
        let model = AnomalyModel::new(cfg.clone(), backbone.clone(), pool.clone(), transformer.clone())?;
        let post = PostProcessor::new(model.categories().to_vec(), &cfg.scoring);
        let scores = set
            .score_pnpt(&Detector::new(model, post)?, validation.batch_size)
            .map_err(|e| pnpt_model::Error::Invalid(format!("per-epoch validation: {e}")))?;
        epoch_seconds += t0.elapsed().as_secs_f64();
        Ok(Some(scores))
    };
    let out = train_transformer::<B>(config, &features, &pool, device, options, Some(&mut on_epoch))?;

    let mut model = AnomalyModel::new(config.clone(), backbone, pool, out.model)?;
    if let Some(memory) = memory {
        model = model.with_memory(memory)?;
    }
    let mut post = PostProcessor::new(model.categories().to_vec(), &config.scoring);
    post.raise_retrieval_limits(&model.retrieval_limits(&features)?);

    // Per-position statistics of PNPT's map, from the cached training features.
    let t0 = Instant::now();
    if config.scoring.rule().uses_positional() {
        post.fit_positional(&model.feature_set_components(&features, config.train.feature_batch, Maps::PNPT)?)?;
    }
    let positional_seconds = t0.elapsed().as_secs_f64();
    drop(features);

    // Calibration, model selection, calibration of the rule chosen.
    let t0 = Instant::now();
    let held_out = holdout_components(&model, &holdout)?;
    post.calibrate(&held_out, &truth(&holdout))?;
    let mut detector = Detector::new(model, post)?;
    let result = match &set {
        Some((set, validation)) => Some(validate(&detector, set, validation)?),
        None => None,
    };
    let select = validation.is_some_and(|v| v.select);
    if let Some(best) = result.as_ref().map(|v| v.best().rule).filter(|r| select && *r != detector.post().rule()) {
        detector = recalibrate(detector, best, &holdout, Some(&held_out))?;
    }
    let mut history = out.history;
    let per_epoch = validation.is_some_and(|v| v.per_epoch);
    if let (Some(v), Some(last), true, true) = (&result, history.last_mut(), per_epoch, out.completed) {
        let own = v.candidates.iter().find(|c| {
            c.rule.method == ScoringMethod::Pnpt && !c.rule.positional && c.rule.score == config.scoring.score
        });
        last.validation = own.map(|c| (c.image_auroc, c.pixel_auroc));
    }
    let validation_seconds = t0.elapsed().as_secs_f64() + epoch_seconds;
    let report = TrainReport {
        history,
        feature_seconds,
        memory_seconds,
        train_seconds: out.seconds,
        positional_seconds,
        validation_seconds,
        train_images: train_set.len(),
        holdout_images: holdout.len(),
        completed: out.completed,
        budget,
        validation: result,
    };
    Ok((detector, report))
}

/// The detector's own rule with PNPT's map alone, per class standardised: what is validated
/// after every epoch (no memory, no positional statistics exist yet).
fn pnpt_only(config: &PnptConfig) -> ScoringRule {
    ScoringRule {
        method: ScoringMethod::Pnpt,
        positional: false,
        positional_map: false,
        score_from: None,
        ..config.scoring.rule()
    }
}

fn truth(samples: &[Sample]) -> Vec<String> {
    samples.iter().map(|s| s.category.clone()).collect()
}

/// Every raw map the model has, of the held-out normal images: what calibration reads.
fn holdout_components<B: Backend>(model: &AnomalyModel<B>, holdout: &[Sample]) -> Result<Components> {
    let maps = Maps { pnpt: true, memory: model.memory().is_some() };
    Ok(model.sample_components(holdout, model.config().train.feature_batch, maps)?)
}

/// Switches `detector` to `rule` and recalibrates its statistics and thresholds on the held-out
/// normal images (`parts`: their raw maps when already computed).
pub fn recalibrate<B: Backend>(
    detector: Detector<B>,
    rule: ScoringRule,
    holdout: &[Sample],
    parts: Option<&Components>,
) -> Result<Detector<B>> {
    let (model, mut post) = detector.into_parts();
    post.set_rule(rule)?;
    let computed;
    let parts = match parts {
        Some(p) => p,
        None => {
            computed = holdout_components(&model, holdout)?;
            &computed
        }
    };
    post.calibrate(parts, &truth(holdout))?;
    Ok(Detector::new(model, post)?)
}

/// Re-fits a trained detector's scoring on the dataset it was trained on, without retraining:
/// the positional statistics of PNPT's map from the training split (the same split training
/// used: `scoring.calibration_fraction` and `train.seed` decide it), the per-class statistics
/// and thresholds from the held-out split, then the choice among the candidates as in
/// [`train`]. The weights are untouched, so the result is what training with this version
/// would have given.
pub fn rescore<B: Backend>(
    detector: Detector<B>,
    dataset: &Dataset,
    validation: &ValidationOptions,
) -> Result<(Detector<B>, Option<Validation>)> {
    let config = detector.config().clone();
    check_calibration(&config, dataset)?;
    let (train_set, holdout) = split_holdout(dataset, config.scoring.calibration_fraction, config.train.seed);
    if let Some(c) = train_set.iter().find(|s| !detector.categories().contains(&s.category)) {
        return Err(Error::Validation(format!(
            "category `{}` of {} is not one the detector was trained on",
            c.category,
            dataset.root.display()
        )));
    }
    let (model, mut post) = detector.into_parts();
    post.fit_positional(&model.sample_components(&train_set, config.train.feature_batch, Maps::PNPT)?)?;
    let held_out = holdout_components(&model, &holdout)?;
    post.calibrate(&held_out, &truth(&holdout))?;
    let detector = Detector::new(model, post)?;
    if holdout.is_empty() {
        return Ok((detector, None));
    }
    let set = ValidationSet::build(&holdout, &train_set, config.input_size, validation)?;
    let result = validate(&detector, &set, validation)?;
    let best = result.best().rule;
    let detector = if validation.select && best != detector.post().rule() {
        recalibrate(detector, best, &holdout, Some(&held_out))?
    } else {
        detector
    };
    Ok((detector, Some(result)))
}

#[cfg(test)]
mod tests {
    use super::BudgetPlan;

    #[test]
    fn the_transformer_gets_what_the_other_steps_leave() {
        // 900 s in all, 100 s spent on features and memory, 300 s expected after: 500 s.
        let plan = BudgetPlan::share(900.0, 100.0, 300.0);
        assert_eq!((plan.budget_seconds, plan.transformer_seconds, plan.expected_after_seconds), (900.0, 500.0, 300.0));
        // Nothing left: no negative share (the loop still runs its first step).
        assert_eq!(BudgetPlan::share(100.0, 80.0, 50.0).transformer_seconds, 0.0);
    }
}
