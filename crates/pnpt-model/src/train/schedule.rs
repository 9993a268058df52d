//! The optimiser, the learning-rate schedule, each epoch's order (class-balanced or not) and
//! global-norm gradient clipping.

use std::collections::HashSet;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::PnptConfig;
use crate::config::{LrSchedule, TrainConfig};

/// The AdamW of a configuration, every value set explicitly.
pub fn adamw(config: &PnptConfig) -> AdamWConfig {
    let t = &config.train;
    AdamWConfig::new()
        .with_beta_1(t.beta1 as f32)
        .with_beta_2(t.beta2 as f32)
        .with_epsilon(t.eps as f32)
        .with_weight_decay(t.weight_decay as f32)
        .with_cautious_weight_decay(false)
        .with_amsgrad(false)
        .with_grad_clipping(None)
}

/// Learning rate of the 0-based global optimizer step `step` of a run of `total_steps` steps
/// (`epochs * steps_per_epoch`, planned for the whole run, so that a resumed run follows the
/// same schedule).
///
/// * `Constant`: `lr`.
/// * `WarmupCosine` with `w = warmup_steps`, `s = step + 1`: `lr * s / w` while `s <= w`, then
///   `lr_min + (lr - lr_min) * (1 + cos(pi * p)) / 2` with `p = (s - w) / (total_steps - w)`
///   (clamped to 1) and `lr_min = lr * min_lr_ratio`: `lr` at the end of the warm-up,
///   `lr_min` at the last step.
pub fn learning_rate(config: &TrainConfig, step: usize, total_steps: usize) -> f64 {
    match config.schedule {
        LrSchedule::Constant => config.lr,
        LrSchedule::WarmupCosine => {
            let (s, w) = (step + 1, config.warmup_steps);
            if s <= w {
                return config.lr * s as f64 / w as f64;
            }
            let p = if total_steps > w { ((s - w) as f64 / (total_steps - w) as f64).min(1.0) } else { 1.0 };
            let lr_min = config.lr * config.min_lr_ratio;
            lr_min + (config.lr - lr_min) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
        }
    }
}

/// Indices of each category's images, categories in order of first appearance.
fn category_groups(categories: &[String]) -> Vec<Vec<usize>> {
    let mut names: Vec<&str> = Vec::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, c) in categories.iter().enumerate() {
        match names.iter().position(|n| *n == c.as_str()) {
            Some(g) => groups[g].push(i),
            None => {
                names.push(c);
                groups.push(vec![i]);
            }
        }
    }
    groups
}

/// Number of images an epoch visits: `n`, or balanced `k * ceil(n / k)` for `k` categories.
pub fn epoch_len(categories: &[String], balanced: bool) -> usize {
    let n = categories.len();
    if !balanced || n == 0 {
        return n;
    }
    let k = category_groups(categories).len();
    k * n.div_ceil(k)
}

/// The order of one epoch's images (indices into `categories`).
///
/// * Not balanced: a shuffled permutation of `0..n` (exactly the draws of earlier versions).
/// * Balanced: from each category (in order of first appearance) `ceil(n / k)` of its images,
///   drawn without replacement from a fresh shuffle of them, reshuffled and drawn again each
///   time a small category runs out; then all of them shuffled together. Every category
///   appears equally often; the length is [`epoch_len`].
pub fn epoch_order(categories: &[String], balanced: bool, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let n = categories.len();
    if !balanced {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(rng);
        return order;
    }
    let groups = category_groups(categories);
    let per = n.div_ceil(groups.len().max(1));
    let mut order = Vec::with_capacity(per * groups.len());
    for members in &groups {
        let mut left = per;
        while left > 0 {
            let mut cycle = members.clone();
            cycle.shuffle(rng);
            let take = left.min(cycle.len());
            order.extend_from_slice(&cycle[..take]);
            left -= take;
        }
    }
    order.shuffle(rng);
    order
}

/// Sum of squares of every parameter's gradient (each parameter once).
struct GradSquares<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    seen: HashSet<ParamId>,
    sum: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradSquares<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let sq = g.square().sum();
            self.sum = Some(match self.sum.take() {
                Some(acc) => acc + sq,
                None => sq,
            });
        }
    }
}

/// Multiplies every parameter's gradient (each once) by `coef` (shape `[1]`).
struct GradScale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    seen: HashSet<ParamId>,
    coef: Tensor<B::InnerBackend, 1>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradScale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let coef: Tensor<B::InnerBackend, D> = self.coef.clone().unsqueeze();
            self.grads.register(param.id, g.mul(coef));
        }
    }
}

/// Scales the gradients so that their global L2 norm over all parameters is at most
/// `max_norm`, as PyTorch's `clip_grad_norm_`: `g *= min(1, max_norm / (norm + 1e-6))`.
///
/// Burn's `GradientClippingConfig::Norm` (AdamW's `with_grad_clipping`) clips each parameter
/// tensor by its *own* norm, which changes the direction of the update; this keeps it. It
/// stays on the device (no read-back).
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: GradientsParams,
    max_norm: f64,
) -> GradientsParams {
    let mut squares = GradSquares::<B> { grads: &grads, seen: HashSet::new(), sum: None };
    model.visit(&mut squares);
    let Some(sum) = squares.sum else { return grads };
    let coef = sum.sqrt().add_scalar(1e-6).recip().mul_scalar(max_norm).clamp_max(1.0);
    let mut grads = grads;
    let mut scale = GradScale::<B> { grads: &mut grads, seen: HashSet::new(), coef };
    model.visit(&mut scale);
    grads
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;
    use rand::SeedableRng;

    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    fn cosine(lr: f64, warmup_steps: usize, min_lr_ratio: f64) -> TrainConfig {
        TrainConfig { lr, schedule: LrSchedule::WarmupCosine, warmup_steps, min_lr_ratio, ..PnptConfig::cpu().train }
    }

    #[test]
    fn warmup_cosine_by_hand() {
        // lr 1e-3, 4 warm-up steps, 14 steps in all, floor 1e-4: decay over steps 5..=14
        // (1-based), p = (s - 4) / 10.
        let c = cosine(1e-3, 4, 0.1);
        let lr = |step| learning_rate(&c, step, 14);
        assert!(close(lr(0), 2.5e-4), "first step: lr / warmup = {}", lr(0));
        assert!(close(lr(1), 5e-4));
        assert!(close(lr(3), 1e-3), "end of warm-up: the peak, {}", lr(3));
        // s = 6: p = 0.2, cos(0.2 pi) = 0.80901699...: 1e-4 + 9e-4 * 0.5 * 1.80901699
        assert!(close(lr(5), 1e-4 + 9e-4 * 0.5 * (1.0 + 0.8090169943749475)), "{}", lr(5));
        // s = 9: p = 0.5, halfway between peak and floor.
        assert!(close(lr(8), 5.5e-4), "middle of the cosine: {}", lr(8));
        assert!(close(lr(13), 1e-4), "last step: the floor, {}", lr(13));
        for s in 0..13 {
            if s >= 3 {
                assert!(lr(s + 1) < lr(s), "decreasing after the warm-up at {s}");
            } else {
                assert!(lr(s + 1) > lr(s), "increasing in the warm-up at {s}");
            }
        }
        // No warm-up: the cosine starts at the first step; still the floor at the last one.
        let c0 = cosine(1e-3, 0, 0.0);
        assert!(close(learning_rate(&c0, 4, 10), 0.5e-3));
        assert!(close(learning_rate(&c0, 9, 10), 0.0));
    }

    #[test]
    fn constant_ignores_step_and_total() {
        let c = TrainConfig { lr: 3e-4, warmup_steps: 5, ..PnptConfig::cpu().train };
        assert_eq!(c.schedule, LrSchedule::Constant, "the default is constant");
        for (step, total) in [(0, 1), (4, 10), (9, 10), (1000, 10)] {
            assert_eq!(learning_rate(&c, step, total), 3e-4);
        }
    }

    fn cats(spec: &[(&str, usize)]) -> Vec<String> {
        // Interleaved, so that first appearance and position differ.
        let mut out = Vec::new();
        let mut left: Vec<usize> = spec.iter().map(|s| s.1).collect();
        while left.iter().any(|&l| l > 0) {
            for (i, (name, _)) in spec.iter().enumerate() {
                if left[i] > 0 {
                    out.push(name.to_string());
                    left[i] -= 1;
                }
            }
        }
        out
    }

    #[test]
    fn balanced_order_counts_and_cycles() {
        let c = cats(&[("big", 9), ("mid", 4), ("tiny", 1)]);
        let n = c.len(); // 14 -> ceil(14 / 3) = 5 per category
        assert_eq!(epoch_len(&c, true), 15);
        assert_eq!(epoch_len(&c, false), n);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..5 {
            let order = epoch_order(&c, true, &mut rng);
            assert_eq!(order.len(), 15);
            let mut per_image = vec![0usize; n];
            for &i in &order {
                per_image[i] += 1;
            }
            for name in ["big", "mid", "tiny"] {
                let count: usize = (0..n).filter(|&i| c[i] == name).map(|i| per_image[i]).sum();
                assert_eq!(count, 5, "{name}");
            }
            // Without replacement within a cycle: the big category's 5 are distinct, the mid
            // one's 4 images each once plus one again, the tiny one's image 5 times.
            assert!((0..n).filter(|&i| c[i] == "big").all(|i| per_image[i] <= 1));
            let mut mid: Vec<usize> = (0..n).filter(|&i| c[i] == "mid").map(|i| per_image[i]).collect();
            mid.sort();
            assert_eq!(mid, vec![1, 1, 1, 2]);
            assert!((0..n).filter(|&i| c[i] == "tiny").all(|i| per_image[i] == 5));
        }
    }

    #[test]
    fn unbalanced_order_is_the_old_shuffle() {
        let c = cats(&[("a", 6), ("b", 3)]);
        let mut r1 = ChaCha8Rng::seed_from_u64(11);
        let mut r2 = ChaCha8Rng::seed_from_u64(11);
        let order = epoch_order(&c, false, &mut r1);
        let mut old: Vec<usize> = (0..c.len()).collect();
        old.shuffle(&mut r2);
        assert_eq!(order, old);
        assert_eq!(r1.get_word_pos(), r2.get_word_pos(), "same number of draws");
        let mut sorted = order.clone();
        sorted.sort();
        assert_eq!(sorted, (0..c.len()).collect::<Vec<_>>());
    }

    #[test]
    fn global_norm_clipping_keeps_the_direction() {
        use burn::backend::{Autodiff, Flex};
        use burn::nn::LinearConfig;
        type A = Autodiff<Flex<f32>>;
        let dev = Default::default();
        let model = LinearConfig::new(3, 2).init::<A>(&dev);
        let x = Tensor::<A, 2>::from_data(TensorData::new(vec![1.0f32, -2.0, 3.0, 0.5, 4.0, -1.0], [2, 3]), &dev);
        let grads_of =
            || GradientsParams::from_grads(model.forward(x.clone()).sum().mul_scalar(10.0).backward(), &model);
        let read = |g: &GradientsParams| -> Vec<f32> {
            let w: Tensor<Flex<f32>, 2> = g.get(model.weight.id).unwrap();
            let b: Tensor<Flex<f32>, 1> = g.get(model.bias.as_ref().unwrap().id).unwrap();
            w.into_data().iter::<f32>().chain(b.into_data().iter::<f32>()).collect()
        };
        let raw = read(&grads_of());
        let norm = raw.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        assert!(norm > 1.0);
        // Above the norm: untouched.
        assert_eq!(read(&clip_grad_norm::<A, _>(&model, grads_of(), 2.0 * norm)), raw);
        // Below: scaled as a whole to the limit.
        let clipped = read(&clip_grad_norm::<A, _>(&model, grads_of(), norm / 4.0));
        let coef = (norm / 4.0) / (norm + 1e-6);
        for (c, r) in clipped.iter().zip(&raw) {
            assert!((*c as f64 - *r as f64 * coef).abs() <= 1e-5 * r.abs().max(1.0) as f64, "{c} vs {r} * {coef}");
        }
        let new_norm = clipped.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        assert!((new_norm - norm / 4.0).abs() < 1e-4 * norm, "{new_norm} vs {}", norm / 4.0);
    }
}
