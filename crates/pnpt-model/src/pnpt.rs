//! The PNPT model (PNPT.md §2, Algorithm 1): HPE, `M` SACE+CSCD layers over the prior and
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

/// The reconstructions `F*_prior` and `F*_self`, each `[B, C_i, H_i, W_i]` ×3.
#[derive(Debug, Clone)]
pub struct Reconstruction<B: Backend> {
    /// `F*_prior`; `None` in the single-stream ablation.
    pub prior: Option<[Tensor<B, 4>; 3]>,
    /// `F*_self`.
    pub sample: [Tensor<B, 4>; 3],
}

impl<B: Backend> Reconstruction<B> {
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
    /// Noise for the self stream, `[B, L, C]`.
    pub sample: Tensor<B, 3>,
    /// Noise for the prior stream, `[B, L, C]`.
    pub prior: Option<Tensor<B, 3>>,
    /// `scale` in `noise * ||token|| / C * scale`.
    pub scale: f64,
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
        if config.use_semantic_tokens && config.semantic_tokens == 0 {
            return Err(Error::Config("semantic_tokens must be >= 1 when use_semantic_tokens".into()));
        }
        let semantic_on = config.use_semantic_tokens;
        let two_sets = config.use_prior && !config.shared_streams;
        let layers = (0..config.layers)
            .map(|_| PnptLayer {
                sace: SaceAggregation::new(config, device),
                sace_prior: two_sets.then(|| SaceAggregation::new(config, device)),
                fusion: (config.use_prior && semantic_on).then(|| SaceFusion::new(config, device)),
                cscd: (semantic_on && config.use_cscd).then(|| Cscd::new(config, device)),
                cscd_prior: (two_sets && semantic_on && config.use_cscd).then(|| Cscd::new(config, device)),
            })
            .collect();
        let semantic = semantic_on
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
        let jitter = (scale > 0.0).then(|| {
            let shape = [input[0].dims()[0], self.sequence_length(), self.config.hidden];
            let device = input[0].device();
            let sample = standard_normal::<B, R>(shape, rng, &device);
            let prior = self.config.use_prior.then(|| standard_normal::<B, R>(shape, rng, &device));
            Jitter { sample, prior, scale }
        });
        self.forward_jittered(input, prior, jitter)
    }

    /// Forward with explicit jitter noise (`None` = inference).
    pub fn forward_jittered(
        &self,
        input: &[Tensor<B, 4>; 3],
        prior: Option<&[Tensor<B, 4>; 3]>,
        jitter: Option<Jitter<B>>,
    ) -> Result<Reconstruction<B>> {
        let b = self.spec.check("input features", input)?;
        let prior = if self.config.use_prior {
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
        let (noise_s, noise_p, scale) = match jitter {
            Some(j) => (Some(j.sample), j.prior, j.scale),
            None => (None, None, 0.0),
        };
        let x_self = self.hpe.forward(input, noise_s.map(|n| (n, scale)));
        let x_prior = prior.map(|p| self.hpe.forward(p, noise_p.map(|n| (n, scale))));
        let (x_self, x_prior) = self.run_layers(b, x_self, x_prior);

        Ok(Reconstruction {
            prior: x_prior.map(|x| self.hpe_inverse.forward(x)),
            sample: self.hpe_inverse.forward(x_self),
        })
    }

    /// The `M` SACE + CSCD layers over the embedded streams `[B, L, C]`.
    fn run_layers(
        &self,
        b: usize,
        mut x_self: Tensor<B, 3>,
        mut x_prior: Option<Tensor<B, 3>>,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 3>>) {
        let mut sem = self.semantic.as_ref().map(|s| {
            let [n, c] = s.dims();
            s.val().reshape([1, n, c]).repeat_dim(0, b)
        });

        for layer in &self.layers {
            // SACE (a), per stream.
            let ((r_self, rs_self), prior_out) = match (x_prior.take(), &layer.sace_prior) {
                (Some(xp), None) => {
                    let (a, b2) = run_shared(b, x_self, xp, sem.clone(), |x, s| layer.sace.forward(x, s));
                    (a, Some(b2))
                }
                (Some(xp), Some(own)) => (layer.sace.forward(x_self, sem.clone()), Some(own.forward(xp, sem.clone()))),
                (None, _) => (layer.sace.forward(x_self, sem.clone()), None),
            };
            // SACE (b): fuse the semantics (single stream: the self stream's own semantics).
            sem = match (&layer.fusion, &prior_out, rs_self) {
                (Some(fusion), Some((_, Some(rs_prior))), Some(rs_self)) => {
                    Some(fusion.forward(rs_prior.clone(), rs_self))
                }
                (_, _, rs_self) => rs_self,
            };
            // CSCD, per stream.
            let r_prior = prior_out.map(|(r, _)| r);
            match (&layer.cscd, &sem) {
                (Some(cscd), Some(s)) => match (r_prior, &layer.cscd_prior) {
                    (Some(rp), None) => {
                        let ((a, _), (p, _)) = run_shared(b, r_self, rp, Some(s.clone()), |x, s| {
                            (cscd.forward(x, s.expect("semantics present")), None)
                        });
                        x_self = a;
                        x_prior = Some(p);
                    }
                    (rp, own) => {
                        x_self = cscd.forward(r_self, s.clone());
                        x_prior = match (rp, own) {
                            (Some(rp), Some(own)) => Some(own.forward(rp, s.clone())),
                            (rp, _) => rp,
                        };
                    }
                },
                _ => {
                    x_self = r_self;
                    x_prior = r_prior;
                }
            }
        }
        (x_self, x_prior)
    }

    /// Precomputes what inference does not need to recompute per image (see [`InferencePlan`]);
    /// `priors` are the prompt pool's class-mean features `[K, C_i, H_i, W_i]` ×3 (ignored by a
    /// single-stream model).
    pub fn plan(&self, priors: &[Tensor<B, 4>; 3]) -> Result<InferencePlan<B>> {
        let hpe = self.hpe.folded();
        let prior_tokens = if self.config.use_prior {
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
        let (x_self, x_prior) = self.run_layers(b, x_self, x_prior);
        let inverse = |x: Tensor<B, 3>| match &plan.hpe_inverse {
            Some(folded) => folded.forward(x),
            None => self.hpe_inverse.forward(x),
        };
        Ok(Reconstruction { prior: x_prior.map(inverse), sample: inverse(x_self) })
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

type StreamOut<B> = (Tensor<B, 3>, Option<Tensor<B, 3>>);

/// Runs a shared block on both streams as one batch of `2B` and splits the result.
fn run_shared<B: Backend>(
    b: usize,
    x_self: Tensor<B, 3>,
    x_prior: Tensor<B, 3>,
    sem: Option<Tensor<B, 3>>,
    f: impl Fn(Tensor<B, 3>, Option<Tensor<B, 3>>) -> StreamOut<B>,
) -> (StreamOut<B>, StreamOut<B>) {
    let x = Tensor::cat(vec![x_self, x_prior], 0);
    let s = sem.map(|s| Tensor::cat(vec![s.clone(), s], 0));
    let (r, rs) = f(x, s);
    let split = |t: Tensor<B, 3>| (t.clone().narrow(0, 0, b), t.narrow(0, b, b));
    let (r_self, r_prior) = split(r);
    let (rs_self, rs_prior) = match rs.map(split) {
        Some((a, p)) => (Some(a), Some(p)),
        None => (None, None),
    };
    ((r_self, rs_self), (r_prior, rs_prior))
}
