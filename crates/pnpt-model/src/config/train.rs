//! Optimisation settings.

use serde::{Deserialize, Serialize};

use super::PnptConfig;

/// How the learning rate changes over a training run (see `train::learning_rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// `lr` at every step (the paper gives a single learning rate; the default keeps old runs exact).
    #[default]
    Constant,
    /// Linear warm-up from `lr / warmup_steps` (first step) to `lr` (step `warmup_steps`),
    /// then a half cosine down to `lr * min_lr_ratio` at the run's last step. Large early
    /// steps on freshly initialised attention are what warm-up avoids; the cosine tail lets a
    /// short (CPU-budget) run settle instead of stopping mid-stride at the peak rate.
    WarmupCosine,
}

/// Optimisation settings. AdamW's values are all set explicitly: Burn's defaults (eps 1e-5)
/// differ from PyTorch's (1e-8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// AdamW (peak) learning rate (1e-4); constant unless `schedule` says otherwise.
    pub lr: f64,
    /// Learning-rate schedule (`constant`, the paper's setting; `warmup_cosine` converges better
    /// in the few epochs a CPU budget allows).
    pub schedule: LrSchedule,
    /// Optimizer steps of linear warm-up for `warmup_cosine` (100). With
    /// `time_budget_seconds` they must fit in the first epoch, so that the warm-up does not
    /// depend on the number of epochs, which is only known after it.
    pub warmup_steps: usize,
    /// Final learning rate of `warmup_cosine` as a fraction of `lr` (0.01): not 0, so the
    /// last steps still move, but small enough to settle.
    pub min_lr_ratio: f64,
    /// Draw every epoch the same number of images, `ceil(n / categories)`, from each category
    /// (cycling through a small category's images) instead of one pass over all images
    /// (false). In a multi-class model a category with few images is otherwise seen
    /// rarely and reconstructed worst. Only the sampling uses the true category.
    pub class_balanced: bool,
    /// Clip the gradient to this global L2 norm over all parameters before each AdamW step,
    /// as PyTorch's `clip_grad_norm_` (None = off). Guards the early, high-lr steps against
    /// the occasional spike of the cosine loss.
    pub grad_clip_norm: Option<f64>,
    /// Wall-clock seconds for the training loop (None = run all `epochs`). After the first
    /// epoch the run sets its epoch count to `max(1, floor(budget / first epoch's time))`,
    /// at most `epochs`, and plans the schedule for it, so that the cosine ends when the
    /// time does; the choice is saved in the checkpoint and kept on resume.
    pub time_budget_seconds: Option<f64>,
    /// Wall-clock seconds for the whole training run of `pnpt::train` — features, patch memory,
    /// transformer, statistics, validation — (None = no limit). The transformer gets what the
    /// other steps leave: the pipeline times the steps before it, estimates the ones after it
    /// from a probe pass, and the training loop stops, mid-epoch if need be, when its share is
    /// spent. A run that fits trains exactly as without a budget. Not part of the model: a
    /// checkpoint resumes under another budget.
    pub run_budget_seconds: Option<f64>,
    /// AdamW decoupled weight decay (1e-4).
    pub weight_decay: f64,
    /// AdamW beta 1 (0.9).
    pub beta1: f64,
    /// AdamW beta 2 (0.999).
    pub beta2: f64,
    /// AdamW epsilon (1e-8, PyTorch's).
    pub eps: f64,
    /// Images per step (8).
    pub batch_size: usize,
    /// Passes over the training images (the maximum when `time_budget_seconds` or
    /// `run_budget_seconds` is set).
    pub epochs: usize,
    /// Seed of everything random: initialisation, shuffling, jitter, calibration split.
    pub seed: u64,
    /// Feature jitter in training (as UniAD): token += N(0,1) * ||token|| / C * scale; 0 = off.
    pub jitter_scale: f64,
    /// Probability that a batch gets jitter (1.0 = always, as the reference run).
    pub jitter_prob: f64,
    /// Images per backbone forward when caching features (memory only; no effect on results).
    pub feature_batch: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        PnptConfig::cpu().train
    }
}
