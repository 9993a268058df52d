//! Where the time of one inference goes: each stage of `Detector::predict` timed on its own
//! (device synchronised before and after), with its MAC count and achieved GFLOP/s, against
//! the backend's own matrix-multiply peak measured in the same run.
//!
//! ```text
//! cargo run --release --example profile -- [--preset cpu|paper] [--batch 1] [--device cpu] [--reps 10]
//! ```
//!
//! The weights are random (ImageNet weights of the paper's wide_resnet50_2 are not bundled):
//! the arithmetic per image is the same as a trained detector's. Each row is the median of
//! `--reps` runs after two warm-ups (and 16 images through the whole detector first). Output is
//! a Markdown table, as in docs/performance.md (*Where the time goes*).
//!
//! `--json` prints one JSON object instead, with the headline medians that
//! `benches/compare_onnxruntime.py` sets beside ONNX Runtime's: `predict_ms` (`Detector::predict`,
//! one image, end to end, the preset's own scoring), `predict_batch8_ms_per_image`,
//! `backbone_ms`, `backbone_batch8_ms_per_image`, `train_step_ms` (batch 8: forward, loss,
//! backward, AdamW) and the per-stage rows, with the machine's load average before and after
//! (these machines are shared: a run on a loaded machine says so).

use std::process::ExitCode;
use std::time::Instant;

use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Distribution, Tensor, TensorData, backend::AutodiffBackend, backend::Backend};
use clap::Parser;
use pnpt::{
    backbone::{Backbone, MultiScale},
    backend::{BackendTask, DeviceSpec, run_on},
    data::image::{DynamicImage, Rgb, RgbImage},
    memory::{MemoryBuilder, MemoryConfig},
    model::{
        AnomalyModel, Detector, Pnpt, PnptConfig, PostProcessor, ScoringMethod, ScoringRule,
        anomaly_map::{gaussian_blur, host_image_score, raw_anomaly_map},
        loss::pnpt_loss,
        macs::{attention as attention_macs, ffn as ffn_macs, planned_forward_macs},
        train::adamw,
    },
    prompt::{Distance, PoolBuilder},
};
use rand::SeedableRng;
use serde::Serialize;

/// Where the time of one inference goes, stage by stage (random weights; a Markdown table).
#[derive(Debug, Parser)]
#[command(name = "profile")]
struct Args {
    /// Configuration preset: cpu or paper.
    #[arg(long, default_value = "cpu")]
    preset: String,
    /// Images per forward pass.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = positive)]
    batch: usize,
    /// Device: cpu, wgpu, wgpu:N, cuda or cuda:N (GPU backends need the matching cargo feature).
    #[arg(long, default_value = "cpu", value_name = "SPEC")]
    device: DeviceSpec,
    /// Timed runs per stage (the median is reported).
    #[arg(long, default_value_t = 10, value_name = "N", value_parser = positive)]
    reps: usize,
    /// Print one JSON object (headline medians and stages) instead of the Markdown table.
    #[arg(long)]
    json: bool,
}

/// `--batch` and `--reps`: a positive integer.
fn positive(v: &str) -> Result<usize, String> {
    v.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| format!("`{v}` is not a positive integer"))
}

/// Images run through the whole detector before anything is timed.
const WARM_UP_IMAGES: usize = 16;

/// One timed stage.
struct Row {
    name: &'static str,
    ms: f64,
    macs: u64,
}

/// Median milliseconds of `reps` runs of `f` after two warm-ups; `f` must leave its work
/// finished (it syncs).
fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    f();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

struct Profile {
    config: PnptConfig,
    batch: usize,
    reps: usize,
    json: bool,
}

/// `--json`'s object. Times are medians in milliseconds.
#[derive(Serialize)]
struct Report {
    preset: String,
    device: String,
    reps: usize,
    /// Worker threads of the CPU backend's pool (rayon).
    threads: usize,
    /// 1-minute load average before and after the run (Linux; `null` elsewhere). Above the
    /// thread count, other jobs shared the cores and every time below is inflated.
    load_before: Option<f64>,
    load_after: Option<f64>,
    matmul_peak_gflops: f64,
    /// `Detector::predict`, one 256 x 256 image, end to end, with the preset's scoring (`fused`
    /// for `cpu`: PNPT's map and a patch memory of 4,096 patches per class).
    predict_ms: f64,
    /// The same with PNPT's map alone (no patch memory).
    predict_pnpt_ms: f64,
    /// `Detector::predict` on 8 images, per image (preset's scoring).
    predict_batch8_ms_per_image: f64,
    images_per_s_batch8: f64,
    /// The frozen backbone alone, batch 1 and batch 8 (per image).
    backbone_ms: f64,
    backbone_batch8_ms_per_image: f64,
    /// `Pnpt::forward_planned` for one image.
    pnpt_forward_ms: f64,
    /// One training step at batch 8: jittered forward of both streams, loss, backward, AdamW.
    train_step_ms: f64,
    train_images_per_s: f64,
    /// The per-stage table (`--batch` images per call, per image).
    stages: Vec<Stage>,
}

#[derive(Serialize)]
struct Stage {
    name: &'static str,
    ms: f64,
    macs: u64,
}

/// Milliseconds to three decimals: more than the run-to-run spread of any time here.
/// A detector around `model` scoring with `method` (no per-position statistics: none are fitted).
fn with_rule<B: Backend>(
    model: AnomalyModel<B>,
    method: ScoringMethod,
    config: &PnptConfig,
) -> pnpt::model::Result<Detector<B>> {
    let mut post = PostProcessor::new(model.categories().to_vec(), &config.scoring);
    let rule =
        ScoringRule { method, positional: false, positional_map: false, score_from: None, ..config.scoring.rule() };
    post.set_rule(rule)?;
    Detector::new(model, post)
}

fn r3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// The 1-minute load average (Linux).
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

impl BackendTask for Profile {
    type Output = Result<(), String>;

    fn run<A: AutodiffBackend>(self, device: A::Device) -> Self::Output {
        type B<A> = <A as AutodiffBackend>::InnerBackend;
        let Profile { mut config, batch: n, reps, json } = self;
        let load_before = load_average();
        let preset_scoring = config.scoring.method;
        // The stages below are PNPT's; `--json` adds the preset's own scoring end to end.
        config.scoring.method = ScoringMethod::Pnpt;
        B::<A>::seed(&device, 0);
        let sync = || B::<A>::sync(&device).expect("device sync");
        let size = config.input_size as usize;
        let spec = config.feature_spec();
        let macs = planned_forward_macs(&config.model, &spec);
        let err = |e: &dyn std::fmt::Display| e.to_string();

        // Backend peak: a square matrix product large enough to run at full speed.
        let k = 1024;
        let a = Tensor::<B<A>, 2>::random([k, k], Distribution::Normal(0.0, 1.0), &device);
        let b = Tensor::<B<A>, 2>::random([k, k], Distribution::Normal(0.0, 1.0), &device);
        let peak_ms = median_ms(reps, || {
            let _ = a.clone().matmul(b.clone());
            sync();
        });
        let peak_gflops = 2.0 * (k * k * k) as f64 / peak_ms / 1e6;

        let model = Pnpt::<B<A>>::new(&config.model, spec, &device).map_err(|e| err(&e))?;
        let mut pool = PoolBuilder::new();
        for name in ["a", "b", "c"] {
            let feats: [Tensor<B<A>, 4>; 3] = [0, 1, 2].map(|i| {
                let [h, w] = spec.sizes[i];
                Tensor::random([2, spec.channels[i], h, w], Distribution::Normal(0.0, 1.0), &device)
            });
            pool.add(name, &feats).map_err(|e| err(&e))?;
        }
        let pool = pool.build(Distance::Euclidean).map_err(|e| err(&e))?;
        let backbone = Backbone::<B<A>>::random(config.backbone, &device);
        let anomaly_model = AnomalyModel::new(config.clone(), backbone, pool, model).map_err(|e| err(&e))?;
        let detector = with_rule(anomaly_model, ScoringMethod::Pnpt, &config).map_err(|e| err(&e))?;
        let (backbone, pool, model) =
            (detector.model().backbone(), detector.model().pool(), detector.model().transformer());

        let pre = backbone.preprocess();
        let image = DynamicImage::ImageRgb8(RgbImage::from_fn(300, 300, |x, y| Rgb([x as u8, y as u8, (x ^ y) as u8])));
        let images: Vec<DynamicImage> = vec![image; n];
        let upload = || {
            let mut flat = Vec::with_capacity(n * pre.len());
            for img in &images {
                flat.extend(pnpt::data::to_chw(img, &pre));
            }
            Tensor::<B<A>, 4>::from_data(TensorData::new(flat, [n, 3, size, size]), &device)
        };
        // Steady state: glibc's malloc serves large buffers with fresh pages from the OS until
        // its mmap threshold has adapted to the sizes in use, which takes a few images.
        for _ in 0..WARM_UP_IMAGES.div_ceil(n) {
            detector.predict(&images).map_err(|e| err(&e))?;
        }
        let x = upload();
        let feats: [Tensor<B<A>, 4>; 3] = backbone.features(x.clone()).map_err(|e| err(&e))?.maps;
        let (classes, _) = pool.nearest(&feats).map_err(|e| err(&e))?;
        let plan = model.plan(pool.priors()).map_err(|e| err(&e))?;
        let hpe = model.hpe.folded().ok_or("profile needs channel-concat HPE")?;
        let hpe_inverse = model.hpe_inverse.folded().ok_or("profile needs channel-concat HPE")?;
        // Both streams stacked, as the shared-weight layers run them.
        let tokens = Tensor::cat(vec![hpe.forward(&feats), hpe.forward(&feats)], 0);
        let [_, l, c] = tokens.dims();
        let sem_n = config.model.semantic_tokens;
        let semantic = Tensor::<B<A>, 3>::random([2 * n, sem_n, c], Distribution::Normal(0.0, 1.0), &device);
        let joined = Tensor::cat(vec![tokens.clone(), semantic.clone()], 1);
        let half = semantic.clone().narrow(0, 0, n);
        let layer = &model.layers[0];
        let recon = model.forward_planned(&plan, &feats, &classes).map_err(|e| err(&e))?;
        let fused = recon.fused(config.scoring.fusion_weight);
        let raw = raw_anomaly_map(&feats, &fused, [size, size]);
        let smooth = gaussian_blur(raw.clone(), config.scoring.sigma);

        let m = config.model.layers as u64;
        let (cc, r) = (c as u64, config.model.ffn_ratio as u64);
        let (l64, t64, n64) = (l as u64, (l + sem_n) as u64, sem_n as u64);
        // Both streams, all M layers, from the same formulas as `planned_forward_macs`.
        let ffn = |tokens: u64| 2 * m * ffn_macs(tokens, cc, r);
        let sace_attention = 2 * m * attention_macs(t64, t64, cc);
        let cscd_attention = 2 * m * attention_macs(l64, n64, cc);
        let mut rows: Vec<Row> = Vec::new();
        let mut time = |name: &'static str, macs: u64, f: &mut dyn FnMut()| {
            let ms = median_ms(reps, &mut *f) / n as f64;
            rows.push(Row { name, ms, macs });
        };
        time("decode + resize + normalise (host)", 0, &mut || {
            let _ = upload();
            sync();
        });
        time("backbone", config.backbone.macs(size), &mut || {
            let _: MultiScale<B<A>> = backbone.features(x.clone()).expect("backbone");
            sync();
        });
        time("CS-NPP retrieval", 0, &mut || {
            let _ = pool.nearest(&feats).expect("retrieval");
        });
        time("HPE (self stream, folded)", macs.hpe, &mut || {
            let _ = hpe.forward(&feats);
            sync();
        });
        time("SACE (a) attention", sace_attention, &mut || {
            for _ in 0..m {
                let _ = layer.sace.attention.forward_self(joined.clone());
            }
            sync();
        });
        time("SACE (a) FFN", ffn(t64), &mut || {
            for _ in 0..m {
                let _ = layer.sace.ffn.forward(joined.clone());
            }
            sync();
        });
        if let Some(fusion) = &layer.fusion {
            time("SACE (b) fusion", macs.fusion, &mut || {
                for _ in 0..m {
                    let _ = fusion.forward(half.clone(), half.clone());
                }
                sync();
            });
        }
        if let Some(cscd) = &layer.cscd {
            time("CSCD attention", cscd_attention, &mut || {
                for _ in 0..m {
                    let _ = cscd.attention.forward(tokens.clone(), semantic.clone());
                }
                sync();
            });
            time("CSCD FFN", ffn(l64), &mut || {
                for _ in 0..m {
                    let _ = cscd.ffn.forward(tokens.clone());
                }
                sync();
            });
        }
        time("HPE⁻¹ (both streams, folded)", macs.hpe_inverse, &mut || {
            let _ = hpe_inverse.forward(tokens.clone());
            sync();
        });
        time("per-scale 1 - cos + bilinear upsampling", 0, &mut || {
            let _ = raw_anomaly_map(&feats, &fused, [size, size]);
            sync();
        });
        time("Gaussian smoothing", 0, &mut || {
            let _ = gaussian_blur(raw.clone(), config.scoring.sigma);
            sync();
        });
        time("read back + image score (host)", 0, &mut || {
            let maps: Vec<f32> = smooth.clone().into_data().iter::<f32>().collect();
            for map in maps.chunks(size * size) {
                let _ = host_image_score(map, config.scoring.score);
            }
        });
        let stages: f64 = rows.iter().map(|r| r.ms).sum();
        let whole_model = median_ms(reps, || {
            let _ = model.forward_planned(&plan, &feats, &classes).expect("forward");
            sync();
        }) / n as f64;
        let end_to_end = median_ms(reps, || {
            let _ = detector.predict(&images).expect("predict");
        }) / n as f64;

        if json {
            let image = &images[0];
            let eight: Vec<DynamicImage> = vec![image.clone(); 8];
            let x1 = x.clone().narrow(0, 0, 1);
            let x8 = Tensor::<B<A>, 4>::cat(vec![x1.clone(); 8], 0);
            let backbone_ms = median_ms(reps, || {
                let _ = backbone.features(x1.clone()).expect("backbone");
                sync();
            });
            let backbone_batch8 = median_ms(reps, || {
                let _ = backbone.features(x8.clone()).expect("backbone");
                sync();
            }) / 8.0;
            let pnpt_forward_ms = median_ms(reps, || {
                let one = feats.clone().map(|f| f.narrow(0, 0, 1));
                let _ = model.forward_planned(&plan, &one, &classes[..1]).expect("forward");
                sync();
            });
            let predict_pnpt_ms = median_ms(reps, || {
                let _ = detector.predict(std::slice::from_ref(image)).expect("predict");
            });
            // The preset's scoring: for `fused`/`memory`, a patch memory of 4,096 patches per
            // class (4 images of 32 x 32 patches kept whole, about ad13's 10 % coreset).
            let mut detector = detector;
            if preset_scoring != ScoringMethod::Pnpt {
                let mut memory = MemoryBuilder::new(MemoryConfig { coreset_ratio: 1.0, ..Default::default() })
                    .map_err(|e| err(&e))?;
                for name in ["a", "b", "c"] {
                    let feats: [Tensor<B<A>, 4>; 3] = [0, 1, 2].map(|i| {
                        let [h, w] = spec.sizes[i];
                        Tensor::random([4, spec.channels[i], h, w], Distribution::Normal(0.0, 1.0), &device)
                    });
                    memory.add_class(name, &[feats]).map_err(|e| err(&e))?;
                }
                let model = detector.into_parts().0.with_memory(memory.build().map_err(|e| err(&e))?);
                detector = model.and_then(|m| with_rule(m, preset_scoring, &config)).map_err(|e| err(&e))?;
                for _ in 0..2 {
                    detector.predict(&eight).map_err(|e| err(&e))?;
                }
            }
            let predict_ms = median_ms(reps, || {
                let _ = detector.predict(std::slice::from_ref(image)).expect("predict");
            });
            let predict_batch8 = median_ms(reps, || {
                let _ = detector.predict(&eight).expect("predict");
            }) / 8.0;
            let train_step_ms = train_step_ms::<A>(&config, reps, &device).map_err(|e| err(&e))?;
            let report = Report {
                preset: config.preset.clone(),
                device: format!("{device:?}"),
                reps,
                threads: rayon::current_num_threads(),
                load_before,
                load_after: load_average(),
                matmul_peak_gflops: r3(peak_gflops),
                predict_ms: r3(predict_ms),
                predict_pnpt_ms: r3(predict_pnpt_ms),
                predict_batch8_ms_per_image: r3(predict_batch8),
                images_per_s_batch8: r3(1e3 / predict_batch8),
                backbone_ms: r3(backbone_ms),
                backbone_batch8_ms_per_image: r3(backbone_batch8),
                pnpt_forward_ms: r3(pnpt_forward_ms),
                train_step_ms: r3(train_step_ms),
                train_images_per_s: r3(8e3 / train_step_ms),
                stages: rows.iter().map(|r| Stage { name: r.name, ms: r3(r.ms), macs: r.macs }).collect(),
            };
            println!("{}", serde_json::to_string_pretty(&report).map_err(|e| err(&e))?);
            return Ok(());
        }

        println!(
            "preset `{}` ({}, C = {}, N = {}, M = {}), batch {n}, median of {reps} runs\n",
            config.preset, config.backbone, config.model.hidden, config.model.semantic_tokens, config.model.layers
        );
        println!("| stage | ms / image | share | MMAC / image | GFLOP/s |");
        println!("|---|---|---|---|---|");
        let rate = |macs: u64, ms: f64| 2.0 * macs as f64 / ms / 1e6;
        for row in &rows {
            let (mmac, gflops) = match row.macs {
                0 => ("-".to_string(), "-".to_string()),
                macs => (format!("{:.0}", macs as f64 / 1e6), format!("{:.1}", rate(macs, row.ms))),
            };
            println!("| {} | {:.2} | {:.0} % | {mmac} | {gflops} |", row.name, row.ms, 100.0 * row.ms / stages);
        }
        let total_macs = config.backbone.macs(size) + macs.total();
        println!(
            "| **sum of stages** | {stages:.2} | 100 % | {:.0} | {:.1} |",
            total_macs as f64 / 1e6,
            rate(total_macs, stages)
        );
        println!();
        println!(
            "* PNPT forward as one call (`forward_planned`): {whole_model:.2} ms / image ({:.0} MMAC, {:.1} GFLOP/s)",
            macs.total() as f64 / 1e6,
            rate(macs.total(), whole_model)
        );
        println!(
            "* end to end (`Detector::predict`, a batch: preprocessing, backbone, retrieval, PNPT, map, score): {end_to_end:.2} ms / image, {:.1} images/s, {:.1} GFLOP/s",
            1e3 / end_to_end,
            rate(total_macs, end_to_end)
        );
        println!(
            "* backend peak ({k}x{k}x{k} matmul): {peak_ms:.2} ms = {peak_gflops:.1} GFLOP/s; end to end reaches {:.0} % of it",
            100.0 * rate(total_macs, end_to_end) / peak_gflops
        );
        Ok(())
    }
}

/// Median of `reps` training steps of the preset's transformer at batch 8 (random features,
/// as `cargo bench --bench pnpt`'s `train_step`).
fn train_step_ms<A: AutodiffBackend>(
    config: &PnptConfig,
    reps: usize,
    device: &A::Device,
) -> Result<f64, pnpt::model::Error> {
    let spec = config.feature_spec();
    let features = || -> [Tensor<A, 4>; 3] {
        [0, 1, 2].map(|i| {
            let [h, w] = spec.sizes[i];
            Tensor::random([8, spec.channels[i], h, w], Distribution::Normal(0.0, 1.0), device)
        })
    };
    let (x, prior) = (features(), features());
    let mut model = Some(Pnpt::<A>::new(&config.model, spec, device)?);
    let mut optimizer = adamw(config).init::<A, Pnpt<A>>();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut failure = None;
    let ms = median_ms(reps, || {
        let Some(m) = model.take() else { return };
        match m.forward_train(&x, Some(&prior), config.train.jitter_scale, &mut rng) {
            Ok(recon) => {
                let grads = GradientsParams::from_grads(pnpt_loss(&x, &recon).backward(), &m);
                model = Some(optimizer.step(config.train.lr, m, grads));
                A::sync(device).expect("device sync");
            }
            Err(e) => failure = Some(e),
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(ms),
    }
}

fn main() -> ExitCode {
    // Bad arguments: clap prints its message and exits 2.
    let args = Args::parse();
    let config = match PnptConfig::preset(&args.preset) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run_on(&args.device, Profile { config, batch: args.batch, reps: args.reps, json: args.json }) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
