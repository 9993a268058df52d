//! The training loop of one device: initialisation or resume, then the epochs (the paper's
//! training setup: AdamW on the dual-stream loss of Eq. 7). In a data-parallel run every
//! device runs this loop on its share of each batch ([`Rank`]).

use std::sync::Mutex;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use pnpt_prompt::PromptPool;
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::checkpoint::{CheckpointFile, read_checkpoint, resumable, resume_note, same_dataset, save_checkpoint};
use super::parallel::Rank;
use super::{
    CHECKPOINT_FILE, EpochHook, EpochStats, FeatureSet, TrainOptions, TrainOutput, adamw, clip_grad_norm, epoch_len,
    epoch_order, learning_rate,
};
use crate::config::LrSchedule;
use crate::loss::pnpt_loss;
use crate::pnpt::Pnpt;
use crate::{Error, PnptConfig, Result};

/// Seeding the backend and initialising the model happen together, and no replica reseeds the
/// backend meanwhile: replicas sharing a device (two CPU ranks) share its one generator.
static INIT: Mutex<()> = Mutex::new(());

/// A randomly initialised model of `config`'s shape for what does not depend on its weights
/// (timing a forward pass), made under the lock of the trainings' seeding and initialisation:
/// its draws from the backend's generator never fall between another training's seeding and
/// its initialisation, so that training's weights stay those of its seed.
pub fn untrained_model<B: burn::tensor::backend::Backend>(config: &PnptConfig, device: &B::Device) -> Result<Pnpt<B>> {
    let _init = INIT.lock().unwrap_or_else(|e| e.into_inner());
    Pnpt::new(&config.model, config.feature_spec(), device)
}

/// Held by every training of the process while a step builds its autodiff graph and while it
/// runs the backward pass. Burn 0.21 keeps every thread's autodiff graphs in one registry, and
/// each `backward()` ends by sweeping all of them for nodes that no tensor holds. A sweep that
/// runs while another thread is inside an operation (its inputs let go, its output not yet
/// registered) frees a step that operation still needs, and a parameter of that thread's model
/// silently gets part of its gradient or none: two trainings at once in one process then end
/// with other weights now and then. With this lock no sweep meets a graph being built. Between
/// the two phases a graph is safe: its loss holds it.
static AUTODIFF: Mutex<()> = Mutex::new(());

/// One device's training state.
pub(super) struct Run<'a, B: AutodiffBackend> {
    config: &'a PnptConfig,
    options: &'a TrainOptions,
    device: B::Device,
    model: Pnpt<B>,
    optim: OptimizerAdaptor<AdamW, Pnpt<B>, B>,
    rng: ChaCha8Rng,
    history: Vec<EpochStats>,
    start_epoch: usize,
    /// The run's epoch count: `epochs`, or with a time budget unknown until the first epoch
    /// has been timed (the schedule plans for `epochs` meanwhile).
    planned: Option<usize>,
    checkpoint: Option<CheckpointFile>,
    /// `None`: the only device. Otherwise this device's place in the data-parallel run.
    rank: Option<Rank>,
}

impl<'a, B: AutodiffBackend> Run<'a, B> {
    /// A fresh model from `train.seed`, or the checkpoint's state when `options.resume` finds one.
    pub(super) fn start(
        config: &'a PnptConfig,
        device: &B::Device,
        options: &'a TrainOptions,
        rank: Option<Rank>,
    ) -> Result<Self> {
        let t = &config.train;
        let spec = config.feature_spec();
        let mut rng = ChaCha8Rng::seed_from_u64(t.seed);
        let mut model = {
            let _init = INIT.lock().unwrap_or_else(|e| e.into_inner());
            B::seed(device, rng.next_u64());
            Pnpt::<B>::new(&config.model, spec, device)?
        };
        let mut optim = adamw(config).init::<B, Pnpt<B>>();
        let mut history: Vec<EpochStats> = Vec::new();
        let mut start_epoch = 0;
        let mut planned: Option<usize> = if t.time_budget_seconds.is_some() { None } else { Some(t.epochs) };
        let leader = rank.as_ref().is_none_or(Rank::is_leader);

        let checkpoint = options
            .checkpoint_dir
            .as_ref()
            .map(|d| CheckpointFile { path: d.join(CHECKPOINT_FILE), dataset: options.dataset.clone() });
        if let (true, Some(CheckpointFile { path, .. })) = (options.resume, &checkpoint)
            && path.exists()
        {
            let checkpoint = read_checkpoint(path)?;
            let header = &checkpoint.header;
            resumable(&header.config, config)
                .map_err(|d| Error::Mismatch { path: path.clone(), reason: format!("differs in {d}") })?;
            same_dataset(path, header.dataset.as_ref(), options.dataset.as_ref(), options.progress && leader)?;
            // Fewer epochs than done would keep the longer run's weights under a smaller count.
            if header.epoch > t.epochs {
                return Err(Error::EpochsTooFew { path: path.clone(), requested: t.epochs, done: header.epoch });
            }
            let bad = |reason: String| Error::Artefact { path: path.clone(), reason };
            (model, optim) = checkpoint.restore(path, model, optim, device)?;
            let pos: u128 = header.rng_word_pos.parse().map_err(|_| bad("rng position".into()))?;
            if header.rng_seed != t.seed {
                return Err(Error::Mismatch {
                    path: path.clone(),
                    reason: format!("seed {} vs {}", header.rng_seed, t.seed),
                });
            }
            rng.set_word_pos(pos);
            start_epoch = header.epoch;
            history = header.history.clone();
            if t.time_budget_seconds.is_some() {
                // Keep the plan chosen from the first epoch's time (without a budget the plan
                // is the configuration's `epochs`, which may be raised to extend a run).
                planned = header.planned_epochs;
            }
            if options.progress && leader {
                log::info!("{}", resume_note(start_epoch, planned.unwrap_or(t.epochs).min(t.epochs), path));
            }
        }
        Ok(Self {
            config,
            options,
            device: device.clone(),
            model,
            optim,
            rng,
            history,
            start_epoch,
            planned,
            checkpoint,
            rank,
        })
    }

    /// The epochs left.
    pub(super) fn train(
        self,
        set: &FeatureSet<B::InnerBackend>,
        pool: &PromptPool<B::InnerBackend>,
        on_epoch: EpochHook<'_, B::InnerBackend>,
    ) -> Result<TrainOutput<B::InnerBackend>> {
        let Run {
            config,
            options,
            device,
            mut model,
            mut optim,
            mut rng,
            mut history,
            start_epoch,
            mut planned,
            checkpoint,
            rank,
        } = self;
        let t = &config.train;
        let started = Instant::now();
        let epoch_images = epoch_len(&set.categories, t.class_balanced);
        let steps = epoch_images.div_ceil(t.batch_size);
        if t.time_budget_seconds.is_some() && t.schedule == LrSchedule::WarmupCosine && t.warmup_steps > steps {
            return Err(Error::Config(format!(
                "train.warmup_steps ({}) must fit in the first epoch ({steps} steps) with train.time_budget_seconds",
                t.warmup_steps
            )));
        }
        let leader = rank.as_ref().is_none_or(Rank::is_leader);
        // When the loop must stop: `train.time_budget_seconds` also plans the epochs (below), a
        // caller's limit only stops the loop. Every device stops at the same step: they agree
        // on the limit (each process derives its own share of a run budget) and on the time.
        let deadline = match (loop_budget(t, options), &rank) {
            (Some(b), Some(rank)) => Some(rank.mean::<B::InnerBackend>(b, &device)?),
            (b, _) => b,
        };
        let mut completed = true;
        // Set when the budget ends an epoch early: that epoch is the run's last.
        let mut cut = false;
        let mut epoch = start_epoch;
        let mut steps_done = 0;
        'epochs: loop {
            let run_epochs = planned.unwrap_or(t.epochs).min(t.epochs);
            if epoch >= run_epochs {
                break;
            }
            if options.stop_after().is_some_and(|stop| epoch >= stop) {
                completed = false;
                break;
            }
            let total_steps = run_epochs * steps;
            let epoch_start = Instant::now();
            {
                // Not while another replica on this device seeds and initialises its model.
                let _init = INIT.lock().unwrap_or_else(|e| e.into_inner());
                B::seed(&device, rng.next_u64());
            }
            let order = epoch_order(&set.categories, t.class_balanced, &mut rng);
            let label = format!("epoch {}/{}", epoch + 1, run_epochs);
            let stage = leader.then(|| options.progress_sink.stage(&label, steps));
            let mut total = 0.0f64;
            let mut lr = t.lr;
            let mut run_steps = 0;
            for (step, batch) in order.chunks(t.batch_size).enumerate() {
                if options.step_limit().is_some_and(|limit| steps_done >= limit) {
                    completed = false;
                    break 'epochs;
                }
                if let Some(deadline) = deadline.filter(|_| step > 0) {
                    let spent = started.elapsed().as_secs_f64();
                    let spent = match &rank {
                        Some(rank) => rank.mean::<B::InnerBackend>(spent, &device)?,
                        None => spent,
                    };
                    if spent >= deadline {
                        cut = true;
                        break;
                    }
                }
                run_steps += 1;
                steps_done += 1;
                let (value, mut grads) =
                    step_grads(config, &model, &mut rng, &device, rank.as_ref(), set, pool, batch)?;
                if !value.is_finite() {
                    return Err(Error::NonFinite { epoch: epoch + 1, step: step + 1, value });
                }
                if let Some(max_norm) = t.grad_clip_norm {
                    grads = clip_grad_norm::<B, _>(&model, grads, max_norm);
                }
                lr = learning_rate(t, epoch * steps + step, total_steps);
                model = optim.step(lr, model, grads);
                total += value as f64;
                let secs = epoch_start.elapsed().as_secs_f64().max(1e-9);
                if let Some(stage) = &stage {
                    stage.advance(1, || {
                        // With a budget, the time left to the end of the whole run.
                        let left = deadline.map(|b| {
                            let loop_left = (b - started.elapsed().as_secs_f64()).max(0.0);
                            format!(", {} left", minutes((loop_left + options.seconds_after).round()))
                        });
                        Some(format!(
                            "loss {:.4} {:.1} img/s{}",
                            total / (step + 1) as f64,
                            ((step * t.batch_size + batch.len()) as f64) / secs,
                            left.unwrap_or_default()
                        ))
                    });
                }
            }
            drop(stage);
            let seconds = epoch_start.elapsed().as_secs_f64();
            if cut {
                planned = Some(epoch + 1);
            } else if planned.is_none() {
                // First timed epoch of a budgeted run: as many epochs as the budget holds
                // (every device plans with the same, averaged, time).
                let timed = match &rank {
                    Some(rank) => rank.mean::<B::InnerBackend>(seconds, &device)?,
                    None => seconds,
                };
                let budget = t.time_budget_seconds.unwrap_or(f64::INFINITY);
                let fit = (budget / timed.max(1e-9)).floor() as usize; // saturating cast
                planned = Some(fit.max(1).min(t.epochs));
            }
            let run_epochs = planned.unwrap_or(t.epochs).min(t.epochs);
            // Timed apart from the epoch, so a time budget plans with training time only.
            let validation = if leader { on_epoch(&model.valid(), epoch + 1 == run_epochs)? } else { None };
            let images = (run_steps * t.batch_size).min(epoch_images);
            history.push(EpochStats {
                epoch: epoch + 1,
                steps: run_steps,
                loss: total / run_steps.max(1) as f64,
                seconds,
                images_per_second: images as f64 / seconds.max(1e-9),
                lr,
                planned_epochs: run_epochs,
                validation,
            });
            if options.progress && leader {
                // A plain line per epoch (the bar is cleared, and invisible when stderr is not a
                // terminal, e.g. in logs and CI), as a `log` event: the program's logger prints it.
                let e = &history[history.len() - 1];
                let v = e.validation.map(|(i, p)| format!(", validation {i:.4} / {p:.4}")).unwrap_or_default();
                let part = if cut { format!(" (time budget: {run_steps} of {steps} steps)") } else { String::new() };
                log::info!(
                    "epoch {}/{}{part}: loss {:.5}, lr {:.3e}, {:.1} s, {:.2} img/s{v}",
                    e.epoch,
                    run_epochs,
                    e.loss,
                    e.lr,
                    e.seconds,
                    e.images_per_second
                );
            }
            if let (Some(path), true) = (&checkpoint, leader) {
                save_checkpoint(path, config, &model, &optim, epoch + 1, &rng, &history, planned)?;
            }
            epoch += 1;
        }
        let planned_epochs = planned.unwrap_or(t.epochs).min(t.epochs);
        Ok(TrainOutput {
            model: model.valid(),
            history,
            seconds: started.elapsed().as_secs_f64(),
            completed,
            planned_epochs,
        })
    }
}

/// The loss of `batch` (every device's share summed in a data-parallel run) and its
/// gradients (all-reduced likewise).
#[allow(clippy::too_many_arguments)]
fn step_grads<B: AutodiffBackend>(
    config: &PnptConfig,
    model: &Pnpt<B>,
    rng: &mut ChaCha8Rng,
    device: &B::Device,
    rank: Option<&Rank>,
    set: &FeatureSet<B::InnerBackend>,
    pool: &PromptPool<B::InnerBackend>,
    batch: &[usize],
) -> Result<(f32, GradientsParams)> {
    let t = &config.train;
    let n = batch.len();
    // This device's rows: all of them, or its contiguous share. A device left without a row
    // (a last batch smaller than the devices) runs the first row with weight 0, so that it
    // still takes part in every all-reduce.
    let (start, len, weight) = match rank {
        None => (0, n, 1.0),
        Some(rank) => match rank.share(n) {
            (_, 0) => (0, 1, 0.0),
            (start, len) => (start, len, len as f64 / n as f64),
        },
    };
    let rows = &batch[start..start + len];
    let graph = AUTODIFF.lock().unwrap_or_else(|e| e.into_inner());
    let input = set.select(rows)?.map(Tensor::<B, 4>::from_inner);
    let prior = if config.model.variant.has_prior() {
        let idx: Vec<usize> = rows.iter().map(|&i| set.prior_index[i]).collect();
        Some(pool.prior_of(&idx)?.map(Tensor::<B, 4>::from_inner))
    } else {
        None
    };
    // Always draw, so the RNG stream does not depend on the outcome. Every device draws the
    // whole batch's noise (the stream stays that of a one-device run) and keeps its rows.
    let jitter_draw: f64 = rng.random();
    let scale = if jitter_draw < t.jitter_prob { t.jitter_scale } else { 0.0 };
    let mut jitter = model.draw_jitter(n, scale, rng, device);
    if rank.is_some() {
        jitter = jitter.map(|j| j.narrow(start, len));
    }
    let recon = model.forward_jittered(&input, prior.as_ref(), jitter)?;
    let mut loss = pnpt_loss(&input, &recon);
    let Some(rank) = rank else {
        let grads = loss.backward();
        drop(graph);
        let value: f32 = loss.into_scalar().elem();
        return Ok((value, GradientsParams::from_grads(grads, model)));
    };
    // The batch mean is the sum of the shares' means weighted by their sizes.
    loss = loss.mul_scalar(weight);
    // Released for the sums: the other devices build their graphs before they join them.
    drop(graph);
    let value: f32 = rank.sum::<B::InnerBackend>(loss.clone().inner())?.into_scalar().elem();
    let grads = {
        let _graph = AUTODIFF.lock().unwrap_or_else(|e| e.into_inner());
        loss.backward()
    };
    let grads = GradientsParams::from_grads(grads, model);
    Ok((value, rank.sum_gradients::<B, _>(model, grads)?))
}

/// The training loop's budget: the smaller of `train.time_budget_seconds` and the caller's
/// [`TrainOptions::time_limit`].
fn loop_budget(t: &crate::TrainConfig, options: &TrainOptions) -> Option<f64> {
    match (t.time_budget_seconds, options.time_limit) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `95 s`, `12 min`: a rounded duration for the progress line.
fn minutes(seconds: f64) -> String {
    if seconds < 120.0 { format!("{seconds:.0} s") } else { format!("{:.0} min", seconds / 60.0) }
}
