//! Unit tests of the PNPT modules against hand-worked or independent expectations.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::{Tensor, TensorData};
use pnpt_model::anomaly_map::{anomaly_map, gaussian_blur, gaussian_kernel, image_scores, raw_anomaly_map};
use pnpt_model::hpe::{Hpe, HpeInverse, patchify, unpatchify};
use pnpt_model::loss::{pnpt_loss, stream_loss};
use pnpt_model::{ConcatMode, FeatureSpec, ModelConfig, Pnpt, PnptConfig, Reconstruction, ScoreMode, Variant};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

mod common;
use common::*;

fn set_linear(linear: &mut Linear<B>, weight: Vec<f32>, d_in: usize, d_out: usize) {
    linear.weight = Param::from_tensor(Tensor::from_data(TensorData::new(weight, [d_in, d_out]), &dev()));
    linear.bias = Some(Param::from_tensor(Tensor::zeros([d_out], &dev())));
}

fn identity(n: usize) -> Vec<f32> {
    (0..n * n).map(|i| if i / n == i % n { 1.0 } else { 0.0 }).collect()
}

// ---------------------------------------------------------------- shapes

#[test]
fn patchify_layout_is_channel_major_and_inverts() {
    // 1 image, 1 channel, 4×4 → 2×2 grid of 2×2 patches.
    let x = t4((0..16).map(|v| v as f32).collect(), [1, 1, 4, 4]);
    let p = patchify(x.clone(), 2);
    assert_eq!(p.dims(), [1, 4, 4]);
    // First patch = rows 0-1, cols 0-1.
    assert_eq!(&vals(p.clone())[..4], &[0.0, 1.0, 4.0, 5.0]);
    assert_eq!(vals(unpatchify(p, 1, 2, [2, 2])), vals(x));
}

#[test]
fn every_module_has_the_documented_shapes() {
    let spec = small_spec();
    let cfg = small_config();
    for concat in [ConcatMode::Channels, ConcatMode::Tokens] {
        let hpe = Hpe::<B>::new(spec, cfg.hidden, concat, &dev());
        let inv = HpeInverse::<B>::new(spec, cfg.hidden, concat, &dev());
        let f = random_feats(&spec, 3, 1);
        let tokens = hpe.forward(&f, None);
        let l = if concat == ConcatMode::Channels { 4 } else { 12 };
        assert_eq!(tokens.dims(), [3, l, 16]);
        let back = inv.forward(tokens);
        for i in 0..3 {
            assert_eq!(back[i].dims(), f[i].dims());
        }
    }
    let model = Pnpt::<B>::new(&cfg, spec, &dev()).unwrap();
    let f = random_feats(&spec, 2, 2);
    let p = random_feats(&spec, 2, 3);
    let r = model.forward(&f, Some(&p)).unwrap();
    for (i, fi) in f.iter().enumerate() {
        assert_eq!(r.sample[i].dims(), fi.dims());
        assert_eq!(r.prior.as_ref().unwrap()[i].dims(), fi.dims());
    }
    let map = anomaly_map(&f, &r.fused(0.5), [32, 32], 4.0);
    assert_eq!(map.dims(), [2, 32, 32]);
    assert_eq!(image_scores(map, ScoreMode::Max).dims(), [2]);
}

#[test]
fn blocks_keep_token_shapes() {
    use pnpt_model::cscd::Cscd;
    use pnpt_model::sace::{SaceAggregation, SaceFusion};
    let cfg = pnpt_model::block::BlockConfig::from(&small_config());
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = pnpt_model::pnpt::standard_normal::<B, _>([2, 7, 16], &mut rng, &dev());
    let s = pnpt_model::pnpt::standard_normal::<B, _>([2, 4, 16], &mut rng, &dev());
    let (r, rs) = SaceAggregation::<B>::new(&cfg, &dev()).forward(x.clone(), Some(s.clone()));
    assert_eq!((r.dims(), rs.unwrap().dims()), ([2, 7, 16], [2, 4, 16]));
    assert_eq!(SaceFusion::<B>::new(&cfg, &dev()).forward(s.clone(), s.clone()).dims(), [2, 4, 16]);
    assert_eq!(Cscd::<B>::new(&cfg, &dev()).forward(x, s).dims(), [2, 7, 16]);
}

// ---------------------------------------------------------------- HPE⁻¹ ∘ HPE

#[test]
fn hpe_round_trip_with_identity_projections_token_mode() {
    // Patch dims 2·2² = 8, 8·1 = 8, 8·1 = 8 = hidden, so every projection can be the identity.
    let spec = FeatureSpec { channels: [2, 8, 8], sizes: [[4, 4], [2, 2], [2, 2]] };
    let mut hpe = Hpe::<B>::new(spec, 8, ConcatMode::Tokens, &dev());
    let mut inv = HpeInverse::<B>::new(spec, 8, ConcatMode::Tokens, &dev());
    for i in 0..3 {
        set_linear(&mut hpe.embed[i], identity(8), 8, 8);
        set_linear(&mut inv.project[i], identity(8), 8, 8);
    }
    hpe.position = Param::from_tensor(Tensor::zeros([1, 12, 8], &dev()));
    let f = random_feats(&spec, 2, 7);
    let back = inv.forward(hpe.forward(&f, None));
    for i in 0..3 {
        assert_eq!(max_abs_diff(vals(back[i].clone()), vals(f[i].clone())), 0.0, "scale {i}");
    }
}

#[test]
fn hpe_round_trip_with_block_projections_channel_mode() {
    // Hidden 24 = three slots of 8: embed_i writes its patch into slot i, merge (72 -> 24) sums
    // the three slot-i blocks, split (24 -> 72) copies, project_i reads slot i back.
    let spec = FeatureSpec { channels: [2, 8, 8], sizes: [[4, 4], [2, 2], [2, 2]] };
    let c = 24;
    let mut hpe = Hpe::<B>::new(spec, c, ConcatMode::Channels, &dev());
    let mut inv = HpeInverse::<B>::new(spec, c, ConcatMode::Channels, &dev());
    for i in 0..3 {
        let mut w = vec![0.0; 8 * c];
        let mut r = vec![0.0; c * 8];
        for k in 0..8 {
            w[k * c + i * 8 + k] = 1.0; // [in=8, out=24]
            r[(i * 8 + k) * 8 + k] = 1.0; // [in=24, out=8]
        }
        set_linear(&mut hpe.embed[i], w, 8, c);
        set_linear(&mut inv.project[i], r, c, 8);
    }
    let mut merge = vec![0.0; 3 * c * c];
    let mut split = vec![0.0; c * 3 * c];
    for s in 0..3 {
        for k in 0..c {
            merge[(s * c + k) * c + k] = 1.0; // sum the three copies' slots
            split[k * 3 * c + s * c + k] = 1.0; // copy to every scale's chunk
        }
    }
    set_linear(hpe.merge.as_mut().unwrap(), merge, 3 * c, c);
    set_linear(inv.split.as_mut().unwrap(), split, c, 3 * c);
    hpe.position = Param::from_tensor(Tensor::zeros([1, 4, c], &dev()));
    let f = random_feats(&spec, 2, 8);
    let back = inv.forward(hpe.forward(&f, None));
    for i in 0..3 {
        assert!(max_abs_diff(vals(back[i].clone()), vals(f[i].clone())) < 1e-6, "scale {i}");
    }
}

#[test]
fn jitter_scales_with_token_norm() {
    // One token [3, 4] (norm 5), C = 2 after identity embedding, scale 20: noise of 1 adds
    // 1 * 5 / 2 * 20 = 50 to each component.
    let spec = FeatureSpec { channels: [2, 2, 2], sizes: [[1, 1], [1, 1], [1, 1]] };
    let mut hpe = Hpe::<B>::new(spec, 2, ConcatMode::Tokens, &dev());
    for i in 0..3 {
        set_linear(&mut hpe.embed[i], identity(2), 2, 2);
    }
    hpe.position = Param::from_tensor(Tensor::zeros([1, 3, 2], &dev()));
    let f = [0, 1, 2].map(|_| t4(vec![3.0, 4.0], [1, 2, 1, 1]));
    let noise = Tensor::<B, 3>::ones([1, 3, 2], &dev());
    let out = vals(hpe.forward(&f, Some((noise, 20.0))));
    assert!(out.iter().zip([53.0, 54.0].iter().cycle()).all(|(a, b)| (a - b).abs() < 1e-4), "{out:?}");
}

// ---------------------------------------------------------------- loss

#[test]
fn loss_is_zero_for_identical_reconstruction() {
    let spec = small_spec();
    let f = random_feats(&spec, 3, 11);
    let recon = Reconstruction { prior: Some(f.clone()), sample: f.clone() };
    let loss = vals(pnpt_loss(&f, &recon))[0];
    assert!(loss.abs() < 1e-6, "{loss}");
    // Scaling the reconstruction does not matter either (cosine).
    let scaled = f.clone().map(|t| t.mul_scalar(3.0));
    assert!(vals(stream_loss(&f, &scaled))[0].abs() < 1e-6);
}

#[test]
fn loss_hand_worked_tiny_case() {
    // Image 0: scale 0 a=(1,0) b=(1,1): 1 - 1/√2; scale 1 a=(1,2) b=(2,4): 0; scale 2 a=(1,0)
    // b=(0,1): 1. Self stream = that; prior stream = exact (0). Image 1: identical (0).
    // Batch mean: (2 - 1/√2) / 2.
    let input = [
        t4(vec![1., 0., 5., 5.], [2, 2, 1, 1]),
        t4(vec![1., 2., 5., 5.], [2, 2, 1, 1]),
        t4(vec![1., 0., 5., 5.], [2, 2, 1, 1]),
    ];
    let sample = [
        t4(vec![1., 1., 5., 5.], [2, 2, 1, 1]),
        t4(vec![2., 4., 5., 5.], [2, 2, 1, 1]),
        t4(vec![0., 1., 5., 5.], [2, 2, 1, 1]),
    ];
    let recon = Reconstruction { prior: Some(input.clone()), sample };
    let expected = (2.0 - 1.0 / 2f32.sqrt()) / 2.0;
    let got = vals(pnpt_loss(&input, &recon))[0];
    assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    // The prior stream counts too: swap roles.
    let recon = Reconstruction { prior: Some(recon.sample.clone()), sample: recon.sample };
    assert!((vals(pnpt_loss(&input, &recon))[0] - 2.0 * expected).abs() < 1e-6);
}

// ---------------------------------------------------------------- anomaly map

#[test]
fn anomaly_map_of_identical_features_is_zero() {
    let spec = small_spec();
    let f = random_feats(&spec, 2, 13);
    let map = vals(anomaly_map(&f, &f, [32, 32], 4.0));
    assert!(map.iter().all(|v| v.abs() < 1e-5));
}

#[test]
fn anomaly_map_hand_worked_cosine_case() {
    // 1×1 maps: scale 0 a=(1,0) r=(1,1): 1 - 1/√2; scale 1 a=(1,0) r=(0,1): 1; scale 2
    // a=(1,0) r=(-1,0): 2. Upsampled constants sum to 4 - 1/√2 everywhere; blur keeps it.
    let a = [0, 1, 2].map(|_| t4(vec![1.0, 0.0], [1, 2, 1, 1]));
    let r = [t4(vec![1.0, 1.0], [1, 2, 1, 1]), t4(vec![0.0, 1.0], [1, 2, 1, 1]), t4(vec![-1.0, 0.0], [1, 2, 1, 1])];
    let expected = 4.0 - 1.0 / 2f32.sqrt();
    for sigma in [0.0, 4.0] {
        let map = vals(anomaly_map(&a, &r, [8, 8], sigma));
        assert!(map.iter().all(|v| (v - expected).abs() < 1e-5), "sigma {sigma}: {map:?}");
    }
    // Fusion weight: w = 1 uses the prior only (exact → 0), w = 0 the self stream only.
    let recon = Reconstruction { prior: Some(a.clone()), sample: r.clone() };
    assert!(vals(raw_anomaly_map(&a, &recon.fused(1.0), [2, 2])).iter().all(|v| v.abs() < 1e-6));
    assert!(vals(raw_anomaly_map(&a, &recon.fused(0.0), [2, 2])).iter().all(|v| (v - expected).abs() < 1e-5));
}

#[test]
fn bilinear_upsampling_is_half_pixel() {
    // A 1×2 map [0, 1] (as 1 - cos via a=(1,0), r=(1,0) | (0,1)) upsampled to 1×4 with
    // align_corners = false gives [0, 0.25, 0.75, 1].
    let a = [0, 1, 2].map(|_| t4(vec![1.0, 1.0, 0.0, 0.0], [1, 2, 1, 2]));
    let r0 = t4(vec![1.0, 0.0, 0.0, 1.0], [1, 2, 1, 2]);
    let r = [r0, a[1].clone(), a[2].clone()];
    let map = vals(raw_anomaly_map(&a, &r, [1, 4]));
    let expected = [0.0, 0.25, 0.75, 1.0];
    assert!(map.iter().zip(expected).all(|(g, e)| (g - e).abs() < 1e-5), "{map:?}");
}

#[test]
fn gaussian_kernel_sums_to_one_and_blur_preserves_mass() {
    for sigma in [0.5, 1.0, 4.0] {
        let k = gaussian_kernel(sigma);
        assert_eq!(k.len(), 2 * (4.0 * sigma + 0.5).floor() as usize + 1);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(k.iter().zip(k.iter().rev()).all(|(a, b)| a == b));
    }
    // σ = 4: centre weight = 1 / Σ_{x=-16..16} exp(-x²/32).
    let z: f64 = (-16i32..=16).map(|x| (-(x * x) as f64 / 32.0).exp()).sum();
    assert!((gaussian_kernel(4.0)[16] as f64 - 1.0 / z).abs() < 1e-7);
    // An impulse far from the borders keeps its mass; the peak becomes the 2-D centre weight.
    let mut v = vec![0.0f32; 41 * 41];
    v[20 * 41 + 20] = 1.0;
    let map = Tensor::<B, 3>::from_data(TensorData::new(v, [1, 41, 41]), &dev());
    let out = vals(gaussian_blur(map, 4.0));
    assert!((out.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    assert!((out[20 * 41 + 20] as f64 - 1.0 / (z * z)).abs() < 1e-6);
    // Edge replicate: a constant map stays constant, borders included.
    let out = vals(gaussian_blur(Tensor::<B, 3>::full([1, 10, 10], 2.5, &dev()), 4.0));
    assert!(out.iter().all(|v| (v - 2.5).abs() < 1e-5));
}

#[test]
fn image_score_modes() {
    let map = Tensor::<B, 3>::from_data(TensorData::new(vec![1.0, 5.0, 3.0, 2.0], [1, 2, 2]), &dev());
    assert_eq!(vals(image_scores(map.clone(), ScoreMode::Max)), vec![5.0]);
    assert_eq!(vals(image_scores(map.clone(), ScoreMode::TopKMean(2))), vec![4.0]);
    assert_eq!(vals(image_scores(map, ScoreMode::TopKMean(100))), vec![2.75]);
}

// ---------------------------------------------------------------- model behaviour

#[test]
fn noise_only_in_training() {
    let spec = small_spec();
    let model = Pnpt::<B>::new(&small_config(), spec, &dev()).unwrap();
    let f = random_feats(&spec, 2, 21);
    let p = random_feats(&spec, 2, 22);
    let a = model.forward(&f, Some(&p)).unwrap();
    let b = model.forward(&f, Some(&p)).unwrap();
    assert_eq!(vals(a.sample[0].clone()), vals(b.sample[0].clone()), "inference is deterministic");
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let t = model.forward_train(&f, Some(&p), 20.0, &mut rng).unwrap();
    assert!(max_abs_diff(vals(t.sample[0].clone()), vals(a.sample[0].clone())) > 1e-3, "training adds jitter");
    let t0 = model.forward_train(&f, Some(&p), 0.0, &mut rng).unwrap();
    assert_eq!(vals(t0.sample[0].clone()), vals(a.sample[0].clone()), "scale 0 = no jitter");
}

#[test]
fn images_do_not_leak_across_the_batch_or_streams() {
    let spec = small_spec();
    for shared in [true, false] {
        let cfg = ModelConfig { shared_streams: shared, ..small_config() };
        let model = Pnpt::<B>::new(&cfg, spec, &dev()).unwrap();
        let f = random_feats(&spec, 2, 31);
        let p = random_feats(&spec, 2, 32);
        let both = model.forward(&f, Some(&p)).unwrap();
        let one =
            model.forward(&f.clone().map(|t| t.narrow(0, 1, 1)), Some(&p.clone().map(|t| t.narrow(0, 1, 1)))).unwrap();
        for i in 0..3 {
            let d1 = max_abs_diff(vals(both.sample[i].clone().narrow(0, 1, 1)), vals(one.sample[i].clone()));
            let d2 = max_abs_diff(
                vals(both.prior.as_ref().unwrap()[i].clone().narrow(0, 1, 1)),
                vals(one.prior.as_ref().unwrap()[i].clone()),
            );
            assert!(d1 < 1e-4 && d2 < 1e-4, "shared={shared} scale {i}: {d1} {d2}");
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let spec = small_spec();
    let model = Pnpt::<B>::new(&small_config(), spec, &dev()).unwrap();
    let f = random_feats(&spec, 2, 41);
    assert!(model.forward(&f, None).is_err(), "prior missing");
    let wrong = FeatureSpec { channels: [4, 6, 9], ..spec };
    let err = model.forward(&random_feats(&wrong, 2, 1), Some(&f)).unwrap_err();
    assert!(err.to_string().contains("scale 2"), "{err}");
    assert!(model.forward(&f, Some(&random_feats(&spec, 1, 1))).is_err(), "batch mismatch");
    let bad_spec = FeatureSpec { channels: [4, 6, 8], sizes: [[8, 8], [3, 3], [2, 2]] };
    assert!(Pnpt::<B>::new(&small_config(), bad_spec, &dev()).is_err());
    assert!(Pnpt::<B>::new(&ModelConfig { heads: 3, ..small_config() }, spec, &dev()).is_err());
}

// ---------------------------------------------------------------- parameter counts

fn linear(i: usize, o: usize) -> usize {
    i * o + o
}

/// Independent parameter count from the architecture's description.
fn expected_params(cfg: &ModelConfig, spec: &FeatureSpec) -> usize {
    let c = cfg.hidden;
    let ln = 2 * c;
    let attn = 4 * linear(c, c) + ln;
    let ffn = linear(c, cfg.ffn_ratio * c) + linear(cfg.ffn_ratio * c, c) + ln;
    let sace = attn + ffn;
    let fusion = 2 * attn + ffn;
    let cscd = attn + ffn;
    let dims = spec.patch_dims();
    let grid = spec.grid_tokens();
    let (hpe, inv) = match cfg.concat {
        ConcatMode::Channels => (
            dims.iter().map(|&d| linear(d, c)).sum::<usize>() + linear(3 * c, c) + grid * c,
            linear(c, 3 * c) + dims.iter().map(|&d| linear(c, d)).sum::<usize>(),
        ),
        ConcatMode::Tokens => (
            dims.iter().map(|&d| linear(d, c)).sum::<usize>() + 3 * grid * c,
            dims.iter().map(|&d| linear(c, d)).sum::<usize>(),
        ),
    };
    // Which blocks each variant has, written out here rather than taken from `Variant`.
    let (prior, sem, has_cscd) = match cfg.variant {
        Variant::Full => (true, true, true),
        Variant::SingleStream => (false, true, true),
        Variant::NoSemanticTokens => (true, false, false),
        Variant::NoCscd => (true, true, false),
    };
    let two = prior && !cfg.shared_streams;
    let per_layer = sace
        + if two { sace } else { 0 }
        + if prior && sem { fusion } else { 0 }
        + if has_cscd { cscd * if two { 2 } else { 1 } } else { 0 };
    hpe + inv + if sem { cfg.semantic_tokens * c } else { 0 } + cfg.layers * per_layer
}

#[test]
fn reference_size_matches_section_8() {
    // The reference run: C = 256, N = 16, 8 heads, M = 2 on EfficientNet-Lite0 features: 6.07 M parameters.
    let cfg = PnptConfig::cpu();
    let model = Pnpt::<B>::new(&cfg.model, cfg.feature_spec(), &dev()).unwrap();
    let n = model.num_params();
    assert_eq!(n, expected_params(&cfg.model, &cfg.feature_spec()));
    assert!((6_060_000..6_080_000).contains(&n), "{n}");
}

#[test]
fn ablation_switches_change_the_parameter_count_as_expected() {
    let spec = small_spec();
    let base = small_config();
    let count = |cfg: &ModelConfig| Pnpt::<B>::new(cfg, spec, &dev()).unwrap().num_params();
    let full = count(&base);
    assert_eq!(full, expected_params(&base, &spec));
    let variants = [
        ModelConfig { variant: Variant::SingleStream, ..base.clone() },
        ModelConfig { variant: Variant::NoSemanticTokens, ..base.clone() },
        ModelConfig { variant: Variant::NoCscd, ..base.clone() },
        ModelConfig { shared_streams: false, ..base.clone() },
        ModelConfig { concat: ConcatMode::Tokens, ..base.clone() },
        ModelConfig { layers: 1, ..base.clone() },
    ];
    let c = base.hidden;
    let attn = 4 * linear(c, c) + 2 * c;
    let ffn = linear(c, 4 * c) + linear(4 * c, c) + 2 * c;
    for (i, cfg) in variants.iter().enumerate() {
        let n = count(cfg);
        assert_eq!(n, expected_params(cfg, &spec), "variant {i}");
        assert_ne!(n, full, "variant {i} must change the count");
    }
    // Spelled out for the two main ablations: single stream drops M fusion blocks, no-CSCD
    // drops M CSCD blocks.
    assert_eq!(full - count(&variants[0]), base.layers * (2 * attn + ffn));
    assert_eq!(full - count(&variants[2]), base.layers * (attn + ffn));
    // Single-stream and no-semantic models run without a prior / semantic tokens.
    for cfg in &variants[..3] {
        let model = Pnpt::<B>::new(cfg, spec, &dev()).unwrap();
        let f = random_feats(&spec, 1, 51);
        let r = model.forward(&f, Some(&f)).unwrap();
        assert_eq!(r.prior.is_some(), cfg.variant != Variant::SingleStream);
    }
}

// ---------------------------------------------------------------- inference plan

/// The planned forward (folded HPE / HPE⁻¹, pre-embedded priors) computes the same function as
/// the plain forward with the selected priors, in both concat modes and without a prior stream.
#[test]
fn planned_forward_equals_plain_forward() {
    let spec = small_spec();
    for (concat, use_prior) in [(ConcatMode::Channels, true), (ConcatMode::Tokens, true), (ConcatMode::Channels, false)]
    {
        let variant = if use_prior { Variant::Full } else { Variant::SingleStream };
        let cfg = ModelConfig { concat, variant, ..small_config() };
        let model = Pnpt::<B>::new(&cfg, spec, &dev()).unwrap();
        let pool = random_feats(&spec, 3, 51); // three classes
        let input = random_feats(&spec, 2, 52);
        let classes = [2usize, 0];
        let idx = Tensor::<B, 1, burn::tensor::Int>::from_data(TensorData::new(vec![2i64, 0], [2]), &dev());
        let prior = pool.clone().map(|t| t.select(0, idx.clone()));
        let plain = model.forward(&input, Some(&prior)).unwrap();
        let plan = model.plan(&pool).unwrap();
        let planned = model.forward_planned(&plan, &input, &classes).unwrap();
        for i in 0..3 {
            let scale = vals(plain.sample[i].clone()).iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = max_abs_diff(vals(plain.sample[i].clone()), vals(planned.sample[i].clone()));
            assert!(d <= 1e-5 * scale.max(1.0), "{concat:?} prior={use_prior} sample scale {i}: {d}");
            match (&plain.prior, &planned.prior) {
                (Some(a), Some(b)) => {
                    let d = max_abs_diff(vals(a[i].clone()), vals(b[i].clone()));
                    assert!(d <= 1e-5 * scale.max(1.0), "{concat:?} prior scale {i}: {d}");
                }
                (None, None) => assert!(!use_prior),
                _ => panic!("prior stream present in one forward only"),
            }
        }
        if use_prior {
            assert!(model.forward_planned(&plan, &input, &[0]).is_err(), "one class for two images");
            assert!(model.forward_planned(&plan, &input, &[0, 3]).is_err(), "class out of range");
        }
    }
}

/// The host score equals the tensor score (topk / max on the device) on random maps.
#[test]
fn host_image_score_matches_tensor_score() {
    use pnpt_model::anomaly_map::host_image_score;
    let mut rng = ChaCha8Rng::seed_from_u64(61);
    let maps = pnpt_model::pnpt::standard_normal::<B, _>([3, 32, 32], &mut rng, &dev());
    let host = vals(maps.clone());
    for mode in [ScoreMode::Max, ScoreMode::TopKMean(1), ScoreMode::TopKMean(100), ScoreMode::TopKMean(5000)] {
        let device = vals(image_scores(maps.clone(), mode));
        for (i, chunk) in host.chunks(32 * 32).enumerate() {
            let h = host_image_score(chunk, mode);
            assert!((h - device[i]).abs() <= 1e-5, "{mode:?} map {i}: host {h} vs tensor {}", device[i]);
        }
    }
    assert!(host_image_score(&[1.0, f32::NAN], ScoreMode::Max).is_nan());
}

/// The tests run in the workspace's dev profile, optimised at `opt-level = 3`: the build script
/// must not take it for an unoptimised build (which would make `Detector::load` warn).
#[test]
#[allow(clippy::assertions_on_constants)] // the constant is what the build script decided
fn the_optimised_test_profile_is_not_flagged_unoptimised() {
    assert!(!pnpt_model::detector::UNOPTIMISED);
}
