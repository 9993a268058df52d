//! The job's work on the chosen backend: load or train, save, evaluate, with progress lines.

use pnpt::backend::BackendTask;
use pnpt::burn::tensor::backend::{AutodiffBackend, DeviceId};
use pnpt::data::Dataset;
use pnpt::evaluate::{EvaluateOptions, evaluate};
use pnpt::model::train::split_holdout;
use pnpt::model::{Detector, TrainOptions};
use pnpt::synth::synthetic::SyntheticConfig;
use pnpt::train::train;
use pnpt::validation::ValidationOptions;

use super::out_dir::{check_earlier_run, prepare_out};
use super::record::{BankRecord, MemoryRecord, RunRecord, StageSeconds};
use super::{JobKind, JobOptions, JobOutput};
use crate::{CliError, Result};

/// The job as a [`BackendTask`], so [`super::run_job`] can run it on the backend of its device.
pub(super) struct Job(pub(super) JobOptions, pub(super) Vec<DeviceId>);

/// Prints every validation candidate, marking the chosen one.
fn log_validation(log: &impl Fn(String), v: &pnpt::validation::Validation) {
    log(format!(
        "validation on {} held-out normal and {} pseudo-anomalous images (image AUROC / pixel AUROC / AUPRO):",
        v.normal_images, v.anomalous_images
    ));
    for (i, c) in v.candidates.iter().enumerate() {
        let mark = if i == v.chosen { "  <- chosen" } else { "" };
        log(format!(
            "  {:<36}: {:.4} / {:.4} / {:.4}{mark}",
            c.rule.to_string(),
            c.image_auroc,
            c.pixel_auroc,
            c.aupro
        ));
    }
}

impl BackendTask for Job {
    type Output = Result<JobOutput>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<JobOutput> {
        let Job(args, device_ids) = self;
        // Progress lines as `log` events (the binaries print them: `crate::logging`).
        let log = |msg: String| {
            if args.verbose {
                log::info!("{msg}");
            }
        };
        let warn = |msg: String| {
            if args.verbose {
                log::warn!("{msg}");
            }
        };
        let root = match &args.data {
            Some(dir) => dir.clone(),
            None => {
                let cache = pnpt::synth::default_cache_dir();
                log(format!("no data folder: using the synthetic dataset (cache {})", cache.display()));
                pnpt::synth::ensure_synthetic(&cache, &SyntheticConfig::default())?
            }
        };
        let dataset = Dataset::open(&root, args.categories.as_deref())?;
        if dataset.categories.is_empty() {
            return Err(pnpt::data::DataError::EmptyDataset { path: root }.into());
        }
        // What would otherwise fail only at the end, said before anything is created or
        // trained: nothing to evaluate, nothing to calibrate thresholds on, an earlier run in
        // --out.
        pnpt::evaluate::check_evaluable(&dataset)?;
        let resume = args.kind == (JobKind::Train { resume: true });
        if let JobKind::Train { .. } = args.kind {
            pnpt::train::check_calibration(&args.config, &dataset)?;
        }
        check_earlier_run(&args.out, args.overwrite || resume)?;
        // Before `prepare_out`: a misspelled --resume folder must not be created (or cleared).
        if resume {
            let checkpoint = args.out.join("checkpoint").join(pnpt::model::train::CHECKPOINT_FILE);
            if !checkpoint.is_file() {
                return Err(CliError::Resume {
                    path: checkpoint,
                    reason: "no checkpoint to resume from (start without --resume)".into(),
                });
            }
            log(format!("resuming from {}", checkpoint.display()));
        }
        prepare_out(&args.out, args.overwrite)?;
        // Every file the run will read, before the first epoch; all problems at once.
        let t0 = std::time::Instant::now();
        let audit = dataset.audit();
        for w in &audit.warnings {
            warn(w.clone());
        }
        let mut problems = audit.problems;
        match problems.len() {
            0 => log(format!("checked every image and mask in {:.1} s", t0.elapsed().as_secs_f64())),
            1 => return Err(problems.remove(0).into()),
            _ => return Err(pnpt::data::DataError::Problems { root: dataset.root.clone(), problems }.into()),
        }
        log(format!(
            "{} categories, {} training images, {} test images; preset {}, {} epochs, device {}",
            dataset.categories.len(),
            dataset.num_train(),
            dataset.num_test(),
            args.config.preset,
            args.config.train.epochs,
            args.device
        ));
        let mut record = RunRecord::default();
        let (detector, train_seconds, detector_dir) = match &args.kind {
            JobKind::Evaluate { detector: dir, rescore } => {
                let mut detector = Detector::<B::InnerBackend>::load(dir, &device)?;
                log(format!("evaluating the saved detector {}", dir.display()));
                let unseen: Vec<String> =
                    dataset.names().into_iter().filter(|n| !detector.categories().contains(n)).collect();
                if !unseen.is_empty() {
                    warn(format!(
                        "the detector was not trained on {}: their images are scored against the nearest trained class",
                        unseen.join(", ")
                    ));
                    record.unseen_categories = Some(unseen);
                }
                if let Some(m) = args.method {
                    let c = detector.config().clone();
                    let post = detector.post();
                    // Per-position standardisation stays as configured where the detector has
                    // its statistics, and is off where it has none (it could not apply).
                    let positional = c.scoring.positional && !post.positional().is_empty();
                    let rule = pnpt::model::ScoringRule {
                        method: m,
                        positional,
                        positional_map: positional && c.scoring.positional_map,
                        score_from: None,
                        ..post.rule()
                    };
                    pnpt::train::check_calibration(&c, &dataset)?;
                    let (_, holdout) = split_holdout(&dataset, c.scoring.calibration_fraction, c.train.seed);
                    detector = pnpt::train::recalibrate(detector, rule, &holdout, None)?;
                    log(format!(
                        "scoring method {m}; thresholds recalibrated on {} held-out images of the data",
                        holdout.len()
                    ));
                }
                if *rescore {
                    let t0 = std::time::Instant::now();
                    let validation = ValidationOptions::default()
                        .with_seed(detector.config().train.seed)
                        .with_select(args.method.is_none());
                    let (rescored, result) = pnpt::train::rescore(detector, &dataset, &validation)?;
                    detector = rescored;
                    if let Some(v) = result {
                        log_validation(&log, &v);
                        record.validation = Some(v);
                    }
                    let detector_dir = args.out.join("detector");
                    detector.save(&detector_dir)?;
                    log(format!(
                        "scoring re-fitted in {:.1} s ({}); detector saved to {}",
                        t0.elapsed().as_secs_f64(),
                        detector.config().scoring.rule(),
                        detector_dir.display()
                    ));
                    (detector, 0.0, Some(detector_dir))
                } else {
                    (detector, 0.0, None)
                }
            }
            JobKind::Train { resume } => {
                // Recorded in every checkpoint; a resumed run on other data is refused.
                let fingerprint = pnpt::data::fingerprint::Fingerprint::of(&dataset)?;
                let options = TrainOptions::default()
                    .with_checkpoint_dir(Some(args.out.join("checkpoint")))
                    .with_resume(*resume)
                    .with_progress(args.verbose)
                    .with_progress_sink(if args.verbose { crate::logging::progress_bars() } else { Default::default() })
                    .with_dataset(Some(fingerprint))
                    .with_devices(device_ids)
                    .with_nodes(args.nodes.clone())
                    .with_feature_storage(args.feature_storage)
                    .with_feature_memory(args.feature_memory)
                    // Beside the run's other files (the system's temporary folder may be
                    // memory-backed); removed when training ends.
                    .with_feature_dir(Some(args.out.clone()));
                let validation =
                    ValidationOptions::default().with_seed(args.config.train.seed).with_select(args.method.is_none());
                let (detector, report) = train::<B>(&args.config, &dataset, &device, &options, Some(&validation))?;
                let fit = &report;
                let total = fit.feature_seconds
                    + fit.memory_seconds
                    + fit.train_seconds
                    + fit.positional_seconds
                    + fit.validation_seconds;
                for e in &fit.history {
                    let v =
                        e.validation.map(|(i, p)| format!("  validation (pnpt) {i:.4} / {p:.4}")).unwrap_or_default();
                    log(format!(
                        "epoch {:>3}: loss {:.5}  {:.1} s  {:.2} img/s{v}",
                        e.epoch, e.loss, e.seconds, e.images_per_second
                    ));
                }
                log(format!(
                    "features {:.1} s, patch memory {:.1} s, training {:.1} s, positional statistics {:.1} s, validation {:.1} s, {:.0} s in all ({} train, {} held-out images)",
                    fit.feature_seconds,
                    fit.memory_seconds,
                    fit.train_seconds,
                    fit.positional_seconds,
                    fit.validation_seconds,
                    total,
                    fit.train_images,
                    fit.holdout_images
                ));
                if let Some(v) = &report.validation {
                    log_validation(&log, v);
                    record.validation = Some(v.clone());
                }
                record.memory = detector.model().memory().map(|m| MemoryRecord {
                    dim: m.dim(),
                    seconds: fit.memory_seconds,
                    classes: m
                        .names()
                        .iter()
                        .zip(m.sizes())
                        .zip(m.candidates())
                        .map(|((n, bank), &patches)| (n.clone(), BankRecord { bank, patches }))
                        .collect(),
                });
                record.history = Some(fit.history.clone());
                record.seconds = Some(StageSeconds {
                    features: fit.feature_seconds,
                    memory: fit.memory_seconds,
                    training: fit.train_seconds,
                    positional: fit.positional_seconds,
                    validation: fit.validation_seconds,
                    total,
                });
                record.budget = fit.budget;
                let detector_dir = args.out.join("detector");
                detector.save(&detector_dir)?;
                log(format!("detector saved to {}", detector_dir.display()));
                (detector, total, Some(detector_dir))
            }
        };
        let config = detector.config().clone();
        let validation = record.validation.clone();
        let eval = EvaluateOptions::default()
            .with_batch_size(config.train.batch_size)
            .with_out_dir(Some(args.out.clone()))
            .with_heatmaps(args.heatmaps)
            .with_preset(config.preset.clone())
            .with_seed(config.train.seed)
            .with_device(args.device.to_string())
            .with_train_seconds(train_seconds)
            .with_extra(record.into_extra())
            .with_validation(validation);
        let report = evaluate(&detector, &dataset, &eval)?;
        crate::html::write(&report, &args.out)?;
        log(format!("report written to {}", args.out.join("report.md").display()));
        Ok(JobOutput { report, detector_dir })
    }
}
