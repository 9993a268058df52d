//! The attention sublayer shared by SACE and CSCD against an independent f64 computation.

mod common;

use burn::nn::Linear;
use common::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// `LN(q + MHA(q, kv, kv))` computed on the host in f64 from the sublayer's own weights.
fn host_attention_sublayer(
    layer: &pnpt_model::block::AttentionSublayer<B>,
    q: &[f32],
    kv: &[f32],
    shape: [usize; 4],
) -> Vec<f32> {
    let [batch, lq, lk, c] = shape;
    let mha = &layer.attention;
    let (h, d) = (mha.n_heads, mha.d_k);
    let lin = |l: &Linear<B>, x: &[f32], rows: usize| -> Vec<f64> {
        let w: Vec<f32> = vals(l.weight.val());
        let b: Vec<f32> = vals(l.bias.as_ref().expect("bias").val());
        let mut out = vec![0.0f64; rows * c];
        for r in 0..rows {
            for o in 0..c {
                out[r * c + o] = b[o] as f64 + (0..c).map(|i| x[r * c + i] as f64 * w[i * c + o] as f64).sum::<f64>();
            }
        }
        out
    };
    let (qp, kp, vp) = (lin(&mha.query, q, batch * lq), lin(&mha.key, kv, batch * lk), lin(&mha.value, kv, batch * lk));
    let mut context = vec![0.0f32; batch * lq * c];
    for b in 0..batch {
        for head in 0..h {
            for i in 0..lq {
                let at = |m: &[f64], l: usize, row: usize, k: usize| m[(b * l + row) * c + head * d + k];
                let scores: Vec<f64> = (0..lk)
                    .map(|j| (0..d).map(|k| at(&qp, lq, i, k) * at(&kp, lk, j, k)).sum::<f64>() / (d as f64).sqrt())
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for k in 0..d {
                    let v: f64 = (0..lk).map(|j| e[j] / sum * at(&vp, lk, j, k)).sum();
                    context[(b * lq + i) * c + head * d + k] = v as f32;
                }
            }
        }
    }
    let out = lin(&mha.output, &context, batch * lq);
    let (gamma, beta) = (vals(layer.norm.gamma.val()), vals(layer.norm.beta.as_ref().expect("beta").val()));
    let mut y = vec![0.0f32; batch * lq * c];
    for r in 0..batch * lq {
        let x: Vec<f64> = (0..c).map(|o| q[r * c + o] as f64 + out[r * c + o]).collect();
        let mean = x.iter().sum::<f64>() / c as f64;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / c as f64;
        for o in 0..c {
            y[r * c + o] = ((x[o] - mean) / (var + 1e-5).sqrt() * gamma[o] as f64 + beta[o] as f64) as f32;
        }
    }
    y
}

#[test]
fn attention_matches_a_host_reference() {
    let cfg = pnpt_model::block::BlockConfig {
        layer_norm_eps: 1e-5,
        ..pnpt_model::block::BlockConfig::from(&small_config())
    };
    let layer = cfg.attention::<B>(&dev());
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    // Short sequences, and longer ones than SACE's 272 tokens (the path a fused or tiled
    // attention kernel would take, should the sublayer move to one).
    for [batch, lq, lk] in [[2, 5, 7], [1, 530, 530]] {
        let q = pnpt_model::pnpt::standard_normal::<B, _>([batch, lq, cfg.hidden], &mut rng, &dev());
        let kv = pnpt_model::pnpt::standard_normal::<B, _>([batch, lk, cfg.hidden], &mut rng, &dev());
        let expected =
            host_attention_sublayer(&layer, &vals(q.clone()), &vals(kv.clone()), [batch, lq, lk, cfg.hidden]);
        let got = vals(layer.forward(q.clone(), kv));
        assert!(max_abs_diff(got, expected) < 1e-4, "cross-attention, {lq} x {lk}");
        if lq == lk {
            let expected =
                host_attention_sublayer(&layer, &vals(q.clone()), &vals(q.clone()), [batch, lq, lq, cfg.hidden]);
            assert!(max_abs_diff(vals(layer.forward_self(q)), expected) < 1e-4, "self-attention, {lq}");
        }
    }
}
