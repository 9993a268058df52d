//! The PNPT model (the paper's Algorithm 1): HPE, `M` SACE+CSCD layers over the prior and
//! self streams with learned semantic tokens `E_S(0)`, and HPE⁻¹.
//!
//! ```text
//! E_prior, E_self = HPE(F_prior), HPE(F_self)        (+ jitter in training)
//! for l in 1..=M:
//!     R_X, R_S(X) = SACE_a(E_X, E_S)   for X in {prior, self}
//!     E_S         = SACE_b(R_S(p), R_S(s))
//!     E_X         = CSCD(R_X, E_S)
//! F*_prior, F*_self = HPE⁻¹(E_prior), HPE⁻¹(E_self)
//! ```
//! With shared stream weights (the default) both streams go through each block as one batch
//! of `2B`, which is the same arithmetic as two calls but fewer, larger kernels.

use burn::module::{Initializer, Module, Param};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use rand::Rng;

use crate::block::BlockConfig;
use crate::config::ModelConfig;
use crate::cscd::Cscd;
use crate::hpe::{FeatureSpec, FoldedHpe, FoldedHpeInverse, Hpe, HpeInverse, sequence_length};
use crate::sace::{SaceAggregation, SaceFusion};
use crate::{Error, Result};

/// One SACE+CSCD layer pair.
#[derive(Module, Debug)]
pub struct PnptLayer<B: Backend> {
    /// SACE (a) of the self stream, and of the prior stream too when weights are shared.
    pub sace: SaceAggregation<B>,
    /// SACE (a) of the prior stream when stream weights are not shared.
    pub sace_prior: Option<SaceAggregation<B>>,
    /// SACE (b), present with both the prior stream and semantic tokens.
    pub fusion: Option<SaceFusion<B>>,
    /// CSCD of the self stream (and of the prior stream when shared).
    pub cscd: Option<Cscd<B>>,
    /// CSCD of the prior stream when stream weights are not shared.
    pub cscd_prior: Option<Cscd<B>>,
}

/// Something per stream of Algorithm 1: the self (sample) stream, and the prior stream unless
/// the model is the single-stream variant.
#[derive(Debug, Clone)]
pub struct Streams<T> {
    /// The self stream's.
    pub sample: T,
    /// The prior stream's; `None` in the single-stream variant.
    pub prior: Option<T>,
}

impl<T> Streams<T> {
    /// Applies `f` to each stream.
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> Streams<U> {
        Streams { sample: f(self.sample), prior: self.prior.map(f) }
    }
}

impl<T, U> Streams<(T, U)> {
    /// Splits per-stream pairs into a pair of streams.
    pub fn unzip(self) -> (Streams<T>, Streams<U>) {
        let (s0, s1) = self.sample;
        let (p0, p1) = self.prior.map_or((None, None), |(a, b)| (Some(a), Some(b)));
        (Streams { sample: s0, prior: p0 }, Streams { sample: s1, prior: p1 })
    }
}

/// A block's input or output that can carry both streams as one batch: `join` stacks two
/// along the batch axis, `split` undoes it at `b`.
trait Batched: Sized {
    fn join(a: Self, b: Self) -> Self;
    fn split(self, b: usize) -> (Self, Self);
}

impl<B: Backend> Batched for Tensor<B, 3> {
    fn join(a: Self, b: Self) -> Self {
        Tensor::cat(vec![a, b], 0)
    }
    fn split(self, b: usize) -> (Self, Self) {
        (self.clone().narrow(0, 0, b), self.narrow(0, b, b))
    }
}

impl<T: Batched> Batched for Option<T> {
    fn join(a: Self, b: Self) -> Self {
        a.zip(b).map(|(a, b)| T::join(a, b))
    }
    fn split(self, b: usize) -> (Self, Self) {
        self.map(|t| t.split(b)).unzip()
    }
}

impl<T: Batched, U: Batched> Batched for (T, U) {
    fn join(a: Self, b: Self) -> Self {
        (T::join(a.0, b.0), U::join(a.1, b.1))
    }
    fn split(self, b: usize) -> (Self, Self) {
        let ((t0, t1), (u0, u1)) = (self.0.split(b), self.1.split(b));
        ((t0, u0), (t1, u1))
    }
}

/// Runs `block` on both streams with the same semantics `sem`. Shared weights (`own_prior`
/// absent): one call on a batch of `2B`, the same arithmetic as two calls but fewer, larger
/// kernels. Separate weights: the prior stream goes through `own_prior`.
fn per_stream<B: Backend, M, S: Batched + Clone, O: Batched>(
    b: usize,
    x: Streams<Tensor<B, 3>>,
    sem: S,
    block: &M,
    own_prior: Option<&M>,
    f: impl Fn(&M, Tensor<B, 3>, S) -> O,
) -> Streams<O> {
    match (x.prior, own_prior) {
        (Some(prior), None) => {
            let (sample, prior) = f(block, Batched::join(x.sample, prior), S::join(sem.clone(), sem)).split(b);
            Streams { sample, prior: Some(prior) }
        }
        (prior, own) => {
            Streams { sample: f(block, x.sample, sem.clone()), prior: prior.map(|p| f(own.unwrap_or(block), p, sem)) }
        }
    }
}

/// The reconstructions `F*_prior` and `F*_self`, each `[B, C_i, H_i, W_i]` ×3.
pub type Reconstruction<B> = Streams<[Tensor<B, 4>; 3]>;

impl<B: Backend> Streams<[Tensor<B, 4>; 3]> {
    /// Eq. 8: `F*_fuse = w F*_prior + (1 - w) F*_self` (just `F*_self` without a prior stream).
    pub fn fused(&self, w: f64) -> [Tensor<B, 4>; 3] {
        match &self.prior {
            Some(p) => [0, 1, 2].map(|i| p[i].clone().mul_scalar(w) + self.sample[i].clone().mul_scalar(1.0 - w)),
            None => self.sample.clone(),
        }
    }
}

/// Standard-normal noise for the feature jitter, drawn on the host from `rng` so training is
/// reproducible from the run's own RNG state (and resumable) whatever the backend.
#[derive(Debug, Clone)]
pub struct Jitter<B: Backend> {
    /// Noise per stream, `[B, L, C]` each.
    pub noise: Streams<Tensor<B, 3>>,
    /// `scale` in `noise * ||token|| / C * scale`.
    pub scale: f64,
}

impl<B: Backend> Jitter<B> {
    /// Images `start..start + len` of the batch's noise (a data-parallel rank's slice).
    pub fn narrow(self, start: usize, len: usize) -> Self {
        Jitter { noise: self.noise.map(|n| n.narrow(0, start, len)), scale: self.scale }
    }
}

/// `[d0, d1, d2]` standard normal values (Box–Muller) from `rng`.
pub fn standard_normal<B: Backend, R: Rng>(shape: [usize; 3], rng: &mut R, device: &B::Device) -> Tensor<B, 3> {
    let n: usize = shape.iter().product();
    let mut values = Vec::with_capacity(n + 1);
    while values.len() < n {
        // u1 in (0, 1] so ln is finite.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        values.push((r * t.cos()) as f32);
        values.push((r * t.sin()) as f32);
    }
    values.truncate(n);
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// The PNPT transformer.
#[derive(Module, Debug)]
pub struct Pnpt<B: Backend> {
    /// Hierarchical patch embedding.
    pub hpe: Hpe<B>,
    /// Its inverse.
    pub hpe_inverse: HpeInverse<B>,
    /// Learned semantic tokens `E_S(0)`, `[N, C]` (absent in the no-semantic-token ablation).
    pub semantic: Option<Param<Tensor<B, 2>>>,
    /// The `M` layers.
    pub layers: Vec<PnptLayer<B>>,
    /// Architecture it was built with.
    pub config: ModelConfig,
    /// Feature shapes it was built for.
    pub spec: FeatureSpec,
}

impl<B: Backend> Pnpt<B> {
    /// Builds a randomly initialised model (draws from the backend RNG: seed it first).
    pub fn new(config: &ModelConfig, spec: FeatureSpec, device: &B::Device) -> Result<Self> {
        spec.validate()?;
        if config.hidden == 0 || config.heads == 0 || !config.hidden.is_multiple_of(config.heads) || config.layers == 0
        {
            return Err(Error::Config(format!(
                "hidden ({}) must be a positive multiple of heads ({}) and layers ({}) >= 1",
                config.hidden, config.heads, config.layers
            )));
        }
        let variant = config.variant;
        if variant.has_semantic_tokens() && config.semantic_tokens == 0 {
            return Err(Error::Config("semantic_tokens must be >= 1 unless the variant is no_semantic_tokens".into()));
        }
        let block = BlockConfig::from(config);
        // Separate SACE/CSCD weights for the prior stream only when it exists and is not shared.
        let own_prior = variant.has_prior() && !config.shared_streams;
        let layers = (0..config.layers)
            .map(|_| PnptLayer {
                sace: SaceAggregation::new(&block, device),
                sace_prior: own_prior.then(|| SaceAggregation::new(&block, device)),
                fusion: variant.has_fusion().then(|| SaceFusion::new(&block, device)),
                cscd: variant.has_cscd().then(|| Cscd::new(&block, device)),
                cscd_prior: (own_prior && variant.has_cscd()).then(|| Cscd::new(&block, device)),
            })
            .collect();
        let semantic = variant
            .has_semantic_tokens()
            .then(|| Initializer::Normal { mean: 0.0, std: 1.0 }.init([config.semantic_tokens, config.hidden], device));
        let model = Self {
            hpe: Hpe::new(spec, config.hidden, config.concat, device),
            hpe_inverse: HpeInverse::new(spec, config.hidden, config.concat, device),
            semantic,
            layers,
            config: config.clone(),
            spec,
        };
        Ok(model.materialize())
    }

    /// Initialises every lazily-initialised parameter now, in a fixed order, so the values
    /// depend only on the backend seed, not on when each parameter is first used.
    fn materialize(self) -> Self {
        struct Touch;
        impl<B: Backend> burn::module::ModuleVisitor<B> for Touch {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let _ = param.val();
            }
        }
        self.visit(&mut Touch);
        self
    }

    /// Tokens per stream `L`.
    pub fn sequence_length(&self) -> usize {
        sequence_length(&self.spec, self.config.concat)
    }

    /// Inference forward (no jitter). `prior` is required unless the model is single-stream
    /// (then it is ignored).
    pub fn forward(&self, input: &[Tensor<B, 4>; 3], prior: Option<&[Tensor<B, 4>; 3]>) -> Result<Reconstruction<B>> {
        self.forward_jittered(input, prior, None)
    }

    /// Training forward: draws the jitter noise from `rng` (skipped when `scale` is 0).
    pub fn forward_train<R: Rng>(
        &self,
        input: &[Tensor<B, 4>; 3],
        prior: Option<&[Tensor<B, 4>; 3]>,
        scale: f64,
        rng: &mut R,
    ) -> Result<Reconstruction<B>> {
        let jitter = self.draw_jitter(input[0].dims()[0], scale, rng, &input[0].device());
        self.forward_jittered(input, prior, jitter)
    }

    /// The jitter noise [`forward_train`](Self::forward_train) draws for a batch of `batch`
    /// images (`None`, drawing nothing, when `scale` is 0): the sample stream's `[B, L, C]`,
    /// then the prior stream's.
    pub fn draw_jitter<R: Rng>(&self, batch: usize, scale: f64, rng: &mut R, device: &B::Device) -> Option<Jitter<B>> {
        (scale > 0.0).then(|| {
            let shape = [batch, self.sequence_length(), self.config.hidden];
            let sample = standard_normal::<B, R>(shape, rng, device);
            let prior = self.config.variant.has_prior().then(|| standard_normal::<B, R>(shape, rng, device));
            Jitter { noise: Streams { sample, prior }, scale }
        })
    }

    /// Forward with explicit jitter noise (`None` = inference).
    pub fn forward_jittered(
        &self,
        input: &[Tensor<B, 4>; 3],
        prior: Option<&[Tensor<B, 4>; 3]>,
        jitter: Option<Jitter<B>>,
    ) -> Result<Reconstruction<B>> {
        let b = self.spec.check("input features", input)?;
        let prior = if self.config.variant.has_prior() {
            let p = prior.ok_or_else(|| {
                Error::Invalid("this model has a prior stream: pass the retrieved prior features".into())
            })?;
            if self.spec.check("prior features", p)? != b {
                return Err(Error::Shape(format!("prior batch {} differs from input batch {b}", p[0].dims()[0])));
            }
            Some(p)
        } else {
            None
        };
        let (noise, scale) = match jitter {
            Some(j) => (j.noise.map(Some), j.scale),
            None => (Streams { sample: None, prior: None }, 0.0),
        };
        let embed = |f: &[Tensor<B, 4>; 3], n: Option<Tensor<B, 3>>| self.hpe.forward(f, n.map(|n| (n, scale)));
        let x = Streams { sample: embed(input, noise.sample), prior: prior.map(|p| embed(p, noise.prior.flatten())) };
        Ok(self.run_layers(b, x).map(|x| self.hpe_inverse.forward(x)))
    }

    /// The `M` SACE + CSCD layers over the embedded streams `[B, L, C]`.
    fn run_layers(&self, b: usize, mut x: Streams<Tensor<B, 3>>) -> Streams<Tensor<B, 3>> {
        let mut sem = self.semantic.as_ref().map(|s| {
            let [n, c] = s.dims();
            s.val().reshape([1, n, c]).repeat_dim(0, b)
        });
        for layer in &self.layers {
            // SACE (a), per stream: patch tokens R_X and that stream's semantics R_S(X).
            let (r, r_sem) =
                per_stream(b, x, sem, &layer.sace, layer.sace_prior.as_ref(), |m, x, s| m.forward(x, s)).unzip();
            // SACE (b) fuses the two streams' semantics into E_S(l); a single stream keeps its own.
            sem = match (&layer.fusion, r_sem.prior.flatten(), r_sem.sample) {
                (Some(fusion), Some(prior), Some(sample)) => Some(fusion.forward(prior, sample)),
                (_, _, sample) => sample,
            };
            // CSCD, per stream, conditioned on E_S(l).
            x = match (&layer.cscd, &sem) {
                (Some(cscd), Some(s)) => {
                    per_stream(b, r, s.clone(), cscd, layer.cscd_prior.as_ref(), |m, x, s| m.forward(x, s))
                }
                _ => r,
            };
        }
        x
    }

    /// Precomputes what inference does not need to recompute per image (see [`InferencePlan`]);
    /// `priors` are the prompt pool's class-mean features `[K, C_i, H_i, W_i]` ×3 (ignored by a
    /// single-stream model).
    pub fn plan(&self, priors: &[Tensor<B, 4>; 3]) -> Result<InferencePlan<B>> {
        let hpe = self.hpe.folded();
        let prior_tokens = if self.config.variant.has_prior() {
            self.spec.check("prompt pool priors", priors)?;
            Some(match &hpe {
                Some(folded) => folded.forward(priors),
                None => self.hpe.forward(priors, None),
            })
        } else {
            None
        };
        Ok(InferencePlan { hpe, hpe_inverse: self.hpe_inverse.folded(), prior_tokens })
    }

    /// Inference forward with a [`plan`](Self::plan): the same function as [`Self::forward`]
    /// with the prior of image `i` being pool class `prior_classes[i]`.
    pub fn forward_planned(
        &self,
        plan: &InferencePlan<B>,
        input: &[Tensor<B, 4>; 3],
        prior_classes: &[usize],
    ) -> Result<Reconstruction<B>> {
        let b = self.spec.check("input features", input)?;
        let x_prior = match &plan.prior_tokens {
            Some(tokens) => {
                let k = tokens.dims()[0];
                if prior_classes.len() != b || prior_classes.iter().any(|&i| i >= k) {
                    return Err(Error::Invalid(format!(
                        "need one prior class below {k} per image, got {prior_classes:?} for a batch of {b}"
                    )));
                }
                let idx = prior_classes.iter().map(|&i| i as i64).collect::<Vec<_>>();
                let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [b]), &tokens.device());
                Some(tokens.clone().select(0, idx))
            }
            None => None,
        };
        let x_self = match &plan.hpe {
            Some(folded) => folded.forward(input),
            None => self.hpe.forward(input, None),
        };
        let x = self.run_layers(b, Streams { sample: x_self, prior: x_prior });
        Ok(x.map(|x| match &plan.hpe_inverse {
            Some(folded) => folded.forward(x),
            None => self.hpe_inverse.forward(x),
        }))
    }
}

/// What inference with a trained model can compute once instead of per image: HPE and HPE⁻¹
/// folded into single linear maps ([`FoldedHpe`], [`FoldedHpeInverse`]), and the prior stream's
/// embedded tokens of every pool class — the class-mean features never change, so neither does
/// their embedding. Built by [`Pnpt::plan`]; rebuild it if the weights or the pool change.
#[derive(Debug, Clone)]
pub struct InferencePlan<B: Backend> {
    hpe: Option<FoldedHpe<B>>,
    hpe_inverse: Option<FoldedHpeInverse<B>>,
    /// `[K, L, C]`, absent for a single-stream model.
    prior_tokens: Option<Tensor<B, 3>>,
}
