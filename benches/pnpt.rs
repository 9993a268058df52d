//! PNPT benches, once per backend compiled in (`cargo bench --bench pnpt`, add
//! `--features wgpu,cuda` for GPUs):
//!
//! * `forward/<preset>`: inference forward of the transformer (both streams, HPE to HPE⁻¹, as
//!   `Detector` runs it: `Pnpt::forward_planned`) on one image's backbone features, for the
//!   `cpu` preset (EfficientNet-Lite0 shapes) and the `paper` preset (wide_resnet50_2 shapes).
//! * `train_step/cpu`: one training step of the `cpu` preset at batch 8: jittered forward, the
//!   dual-stream loss, backward and an AdamW update.
//! * `predict/cpu`: `Detector::predict` end to end on one 256 x 256 image (preprocessing,
//!   backbone, prompt retrieval, PNPT, anomaly map, smoothing, score) with the `cpu` preset's
//!   scoring (`fused`: PNPT's map and the patch memory's, one bank of 4,096 patches per class,
//!   about ad13's 10 % coreset); `predict_pnpt/cpu` and `predict_memory/cpu` with one map each.
//!
//! * `attention_core/<burn|host>/<batch>`: the attention core (softmax(Q Kᵀ/√d) V, 8 heads of
//!   32) of SACE's self-attention at the `cpu` preset's size, 272 tokens per sequence, batch 2
//!   (both streams of one image) and 16: Burn's operators (as `MultiHeadAttention`) against the
//!   host kernels CPU inference uses (`pnpt::model::attention`).
//!
//! Without `--bench` (as in `cargo test --benches`) each benchmark runs once, as a smoke test.

use std::hint::black_box;

use burn::{
    nn::attention::{MultiHeadAttention, MultiHeadAttentionConfig},
    optim::{GradientsParams, Optimizer},
    tensor::{Distribution, Tensor, backend::AutodiffBackend},
};
use criterion::{Criterion, criterion_group, criterion_main};
use pnpt::{
    backbone::{Backbone, BackboneKind},
    backend::{BackendTask, DeviceSpec, run_on},
    data::image::{DynamicImage, Rgb, RgbImage},
    memory::{MemoryBuilder, MemoryConfig},
    model::{
        AnomalyModel, Detector, Pnpt, PnptConfig, PostProcessor, ScoringMethod, ScoringRule, attention,
        loss::pnpt_loss, train::adamw,
    },
    prompt::{Distance, PoolBuilder},
};
use rand::SeedableRng;

/// An attention core: `(mha, q, k, v) -> context`.
type Core<B> = fn(&MultiHeadAttention<B>, Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) -> Tensor<B, 3>;

fn features<B: burn::tensor::backend::Backend>(
    config: &PnptConfig,
    batch: usize,
    device: &B::Device,
) -> [Tensor<B, 4>; 3] {
    let spec = config.feature_spec();
    [0, 1, 2].map(|i| {
        let [h, w] = spec.sizes[i];
        Tensor::random([batch, spec.channels[i], h, w], Distribution::Normal(0.0, 1.0), device)
    })
}

struct Bench<'a> {
    c: &'a mut Criterion,
    label: String,
}

impl BackendTask for Bench<'_> {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device) {
        B::seed(&device, 0);
        let mut group = self.c.benchmark_group("pnpt");
        group.sample_size(10);

        for (name, config) in [("cpu", PnptConfig::cpu()), ("paper", PnptConfig::paper())] {
            let model = Pnpt::<B::InnerBackend>::new(&config.model, config.feature_spec(), &device).expect("model");
            let x = features::<B::InnerBackend>(&config, 1, &device);
            // As a detector runs it: folded HPE, priors of a 13-class pool embedded once.
            let plan = model.plan(&features::<B::InnerBackend>(&config, 13, &device)).expect("plan");
            group.bench_function(format!("forward/{name}/{}", self.label), |b| {
                b.iter(|| {
                    let out = model.forward_planned(&plan, &x, &[7]).expect("forward");
                    black_box(out.sample[0].clone().into_data());
                })
            });
        }

        let config = PnptConfig::cpu();
        let mha =
            MultiHeadAttentionConfig::new(config.model.hidden, config.model.heads).init::<B::InnerBackend>(&device);
        for batch in [2, 16] {
            let qkv = [0; 3].map(|_| {
                Tensor::<B::InnerBackend, 3>::random(
                    [batch, 272, config.model.hidden],
                    Distribution::Normal(0.0, 1.0),
                    &device,
                )
            });
            for (name, core) in [
                ("burn", attention::burn_core::<B::InnerBackend> as Core<B::InnerBackend>),
                ("host", attention::host_core),
            ] {
                group.bench_function(format!("attention_core/{name}/{batch}/{}", self.label), |b| {
                    b.iter(|| {
                        let [q, k, v] = qkv.clone();
                        black_box(core(&mha, q, k, v).into_data())
                    })
                });
            }
        }

        let mut model = Pnpt::<B>::new(&config.model, config.feature_spec(), &device).expect("model");
        let mut optimizer = adamw(&config).init::<B, Pnpt<B>>();
        let x = features::<B>(&config, 8, &device);
        let prior = features::<B>(&config, 8, &device);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        group.bench_function(format!("train_step/cpu/{}", self.label), |b| {
            b.iter(|| {
                let recon =
                    model.forward_train(&x, Some(&prior), config.train.jitter_scale, &mut rng).expect("forward");
                let loss = pnpt_loss(&x, &recon);
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optimizer.step(config.train.lr, model.clone(), grads);
                B::sync(&device).expect("device sync");
            })
        });

        // A detector with the bundled backbone, a two-class pool of random priors and a fresh
        // transformer: the same work per image as a trained one.
        let backbone =
            Backbone::<B::InnerBackend>::load(BackboneKind::EfficientNetLite0, None, &device).expect("backbone");
        let mut pool = PoolBuilder::new();
        for category in ["a", "b"] {
            pool.add(category, &features::<B::InnerBackend>(&config, 2, &device)).expect("pool");
        }
        let pool = pool.build(Distance::Euclidean).expect("pool");
        let model = Pnpt::new(&config.model, config.feature_spec(), &device).expect("model");
        // 4 images × 32 × 32 patches kept whole: 4,096 rows per class.
        let mut memory = MemoryBuilder::new(MemoryConfig { coreset_ratio: 1.0, ..Default::default() }).expect("memory");
        for category in ["a", "b"] {
            memory.add_class(category, &[features::<B::InnerBackend>(&config, 4, &device)]).expect("memory");
        }
        let model = AnomalyModel::new(config.clone(), backbone, pool, model)
            .and_then(|m| m.with_memory(memory.build().expect("memory")))
            .expect("model");
        let image = DynamicImage::ImageRgb8(RgbImage::from_fn(256, 256, |x, y| Rgb([x as u8, y as u8, (x ^ y) as u8])));
        for (name, method) in [
            ("predict", ScoringMethod::Fused),
            ("predict_pnpt", ScoringMethod::Pnpt),
            ("predict_memory", ScoringMethod::Memory),
        ] {
            let rule = ScoringRule {
                method,
                memory_weight: PnptConfig::cpu().scoring.memory_weight,
                positional: false,
                positional_map: false,
                score_from: None,
                ..config.scoring.rule()
            };
            let mut post = PostProcessor::new(model.categories().to_vec(), &config.scoring);
            post.set_rule(rule).expect("rule");
            let detector = Detector::new(model.clone(), post).expect("detector");
            let images = std::slice::from_ref(&image);
            group.bench_function(format!("{name}/cpu/{}", self.label), |b| {
                b.iter(|| black_box(detector.predict(images).expect("predict")))
            });
        }
        group.finish();
    }
}

fn pnpt_benches(c: &mut Criterion) {
    for spec in DeviceSpec::compiled() {
        if let Err(e) = run_on(&spec, Bench { c, label: spec.to_string() }) {
            eprintln!("skipping {spec}: {e}");
        }
    }
}

criterion_group!(benches, pnpt_benches);
criterion_main!(benches);
