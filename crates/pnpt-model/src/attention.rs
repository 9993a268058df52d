//! Multi-head attention for SACE and CSCD (the paper's Eq. 4-6 use standard scaled dot-product
//! attention), computed from the weights of Burn's [`MultiHeadAttention`].
//!
//! Two ways to the same result:
//! * **Burn's operators**, exactly the sequence of `MultiHeadAttention::forward` (projections,
//!   heads split with `swap_dims`, batched `Q Kᵀ`, softmax, batched product with `V`). Training
//!   (autodiff) and GPU backends always take it.
//! * **Host kernels** on the CPU backends without autodiff (inference): the projections stay
//!   Burn's, but the attention core reads the heads in place from the `[B, L, C]` projections
//!   with strided matrix products, one task per (batch, head), and never materialises the
//!   `[B, H, L, d]` copies that `swap_dims` costs Flex. Measured (examples/profile.rs,
//!   docs/performance.md): Flex runs the batched `Q Kᵀ` with 32-wide heads at 13-14 GFLOP/s.
//!
//! Both are checked against each other and against `MultiHeadAttention::forward` in the tests.

use burn::nn::attention::MultiHeadAttention;
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use rayon::prelude::*;

/// `MHA(q, k, v)`: `q: [B, Lq, C]`, `k`, `v: [B, Lk, C]` → `[B, Lq, C]` (the context, before the
/// sublayer's residual and norm).
pub fn multi_head<B: Backend>(
    mha: &MultiHeadAttention<B>,
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
) -> Tensor<B, 3> {
    let device = q.device();
    let q = mha.query.forward(q);
    let k = mha.key.forward(k);
    let v = mha.value.forward(v);
    let context = if host_core_applies::<B>(&device) { host_core(mha, q, k, v) } else { burn_core(mha, q, k, v) };
    mha.output.forward(context)
}

/// Whether the host kernels run on this backend: a CPU backend, not tracking gradients.
pub fn host_core_applies<B: Backend>(device: &B::Device) -> bool {
    !B::ad_enabled(device) && matches!(B::name(device).as_str(), "flex" | "ndarray")
}

/// Softmax(Q Kᵀ / √d) V with Burn's operators, as `MultiHeadAttention::forward` computes it.
pub fn burn_core<B: Backend>(
    mha: &MultiHeadAttention<B>,
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
) -> Tensor<B, 3> {
    let [batch, lq, c] = q.dims();
    let heads = |x: Tensor<B, 3>| {
        let [b, l, _] = x.dims();
        x.reshape([b, l, mha.n_heads, mha.d_k]).swap_dims(1, 2)
    };
    let scores = heads(q).matmul(heads(k).transpose()).div_scalar((mha.d_k as f32).sqrt());
    let weights = softmax(mha.dropout.forward(scores), 3);
    weights.matmul(heads(v)).swap_dims(1, 2).reshape([batch, lq, c])
}

/// The same on the host: per (batch, head), `S = Q_h K_hᵀ / √d` (strided reads of the
/// `[B, L, C]` projections), row softmax in place, `O_h = S V_h` written into its columns of the
/// `[B, Lq, C]` output.
pub fn host_core<B: Backend>(
    mha: &MultiHeadAttention<B>,
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
) -> Tensor<B, 3> {
    let device = q.device();
    let [batch, lq, c] = q.dims();
    let lk = k.dims()[1];
    let (heads, d) = (mha.n_heads, mha.d_k);
    let values = |t: Tensor<B, 3>| t.into_data().convert::<f32>().into_vec::<f32>().expect("f32 after convert");
    let (q, k, v) = (values(q), values(k), values(v));
    let mut out = vec![0f32; batch * lq * c];
    // One task per (batch, head); its output columns are disjoint from every other task's.
    let tasks: Vec<(usize, usize)> = (0..batch).flat_map(|b| (0..heads).map(move |h| (b, h))).collect();
    let out_ptr = SendPtr(out.as_mut_ptr());
    tasks.par_iter().for_each(|&(b, h)| {
        let mut scores = vec![0f32; lq * lk];
        let (q0, k0) = (b * lq * c + h * d, b * lk * c + h * d);
        // SAFETY: lhs = Q_h, lq × d with row stride c inside `q` (b·lq·c + h·d + i·c + j <
        // batch·lq·c since h·d + j < c); rhs = K_hᵀ, d × lk read as K's element (j, i) at
        // k0 + i·c + j (same bound for `k`); dst = `scores`, lq × lk contiguous.
        unsafe {
            gemm::gemm(
                lq,
                lk,
                d,
                scores.as_mut_ptr(),
                1,
                lk as isize,
                false,
                q.as_ptr().add(q0),
                1,
                c as isize,
                k.as_ptr().add(k0),
                c as isize,
                1,
                0.0,
                1.0 / (d as f32).sqrt(),
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        softmax_rows(&mut scores, lk);
        let o0 = b * lq * c + h * d;
        // SAFETY: lhs = `scores`, lq × lk contiguous; rhs = V_h, lk × d with row stride c inside
        // `v`; dst = O_h, lq × d with row stride c at b·lq·c + h·d inside `out` (bounded as Q_h
        // above). Tasks write disjoint column ranges h·d..(h+1)·d of disjoint batches' rows.
        unsafe {
            gemm::gemm(
                lq,
                d,
                lk,
                out_ptr.get().add(o0),
                1,
                c as isize,
                false,
                scores.as_ptr(),
                1,
                lk as isize,
                v.as_ptr().add(b * lk * c + h * d),
                1,
                c as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
    Tensor::from_data(TensorData::new(out, [batch, lq, c]), &device)
}

/// Softmax of each row of `lk` values, in place.
fn softmax_rows(scores: &mut [f32], lk: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features `softmax_rows_avx2` is compiled for.
        unsafe { softmax_rows_avx2(scores, lk) };
        return;
    }
    scores.chunks_exact_mut(lk).for_each(softmax_row);
}

/// The same loop compiled for AVX2 + FMA (eight exponentials per instruction sequence).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_rows_avx2(scores: &mut [f32], lk: usize) {
    // A plain loop, not `for_each(softmax_row)`: the row function must be inlined here, into
    // the AVX2 code, not into a generic iterator method compiled for baseline x86-64.
    for row in scores.chunks_exact_mut(lk) {
        softmax_row(row);
    }
}

/// Lanes of the partial maxima and sums: f32 reductions only vectorise when split by hand.
const LANES: usize = 8;

#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    let mut maxes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &v) in maxes.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    let max = chunks.remainder().iter().chain(&maxes).fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, v) in sums.iter_mut().zip(chunk) {
            *v = exp_nonpositive(*v - max);
            *s += *v;
        }
    }
    let mut sum = 0f32;
    for v in chunks.into_remainder() {
        *v = exp_nonpositive(*v - max);
        sum += *v;
    }
    let inv = 1.0 / (sum + sums.iter().sum::<f32>());
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `e^x` for `x ≤ 0` (NaN stays NaN) with plain arithmetic, so that loops over it vectorise (the C library's
/// `expf` is a call per value): Cephes' single-precision `expf` (range reduction by `ln 2` in two
/// parts, a degree-5 polynomial), within a few ulp; inputs below -87 give `2^-126`, not 0.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    // Not `x.max(-87.0)`: that returns -87 for NaN, and a NaN score must stay NaN.
    let x = if x < -87.0 { -87.0 } else { x };
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32).wrapping_add(127) << 23) as u32)
}

/// The output pointer shared by the tasks (each writes only its own head's columns).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the tasks holding it write disjoint elements (see `host_core`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::nn::attention::{MhaInput, MultiHeadAttentionConfig};
    use burn::tensor::Distribution;

    use super::*;

    type B = Flex<f32>;

    fn max_rel_err(got: &Tensor<B, 3>, want: &Tensor<B, 3>) -> f32 {
        let diff: f32 = (got.clone() - want.clone()).abs().max().into_scalar();
        diff / want.clone().abs().max().into_scalar()
    }

    /// Self- and cross-attention, several batches, a length that is no multiple of anything.
    #[test]
    fn host_and_burn_cores_match_multi_head_attention() {
        let device = Default::default();
        let mha = MultiHeadAttentionConfig::new(64, 4).with_dropout(0.0).init::<B>(&device);
        for (batch, lq, lk) in [(1, 37, 37), (3, 20, 9), (2, 1, 50)] {
            let q = Tensor::<B, 3>::random([batch, lq, 64], Distribution::Normal(0.0, 1.0), &device);
            let kv = Tensor::<B, 3>::random([batch, lk, 64], Distribution::Normal(0.0, 1.0), &device);
            let want = mha.forward(MhaInput::new(q.clone(), kv.clone(), kv.clone())).context;
            let project = |x: Tensor<B, 3>, l: &burn::nn::Linear<B>| l.forward(x);
            let (pq, pk, pv) =
                (project(q.clone(), &mha.query), project(kv.clone(), &mha.key), project(kv.clone(), &mha.value));
            // Burn's operators in MultiHeadAttention's order: bit for bit.
            let burn = mha.output.forward(burn_core(&mha, pq.clone(), pk.clone(), pv.clone()));
            assert_eq!(burn.to_data(), want.to_data(), "burn core, {batch}x{lq}x{lk}");
            let host = mha.output.forward(host_core(&mha, pq, pk, pv));
            let err = max_rel_err(&host, &want);
            assert!(err < 1e-5, "host core {batch}x{lq}x{lk}: relative error {err:e}");
            // The dispatcher takes the host path on Flex.
            let dispatched = multi_head(&mha, q, kv.clone(), kv);
            assert_eq!(dispatched.to_data(), host.to_data());
        }
    }

    /// Against the C library's `expf` (f64 reference), over the whole range softmax uses.
    #[test]
    fn exp_is_accurate_on_the_nonpositive_range() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -88.0 * i as f32 / 200_000.0;
            let want = (x.max(-87.0) as f64).exp();
            let got = exp_nonpositive(x) as f64;
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 1e-6, "worst relative error {worst:e}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }

    /// A hand-worked row: softmax(0, ln 2, ln 3, ...) is (1, 2, 3, ...) / sum, any length
    /// (here 19: two lanes of eight and a remainder of three).
    #[test]
    fn softmax_rows_by_hand() {
        let row: Vec<f32> = (1..=19).map(|i| (i as f32).ln() + 5.0).collect();
        let mut scores = [row.clone(), row].concat();
        softmax_rows(&mut scores, 19);
        for (i, &v) in scores.iter().enumerate() {
            let want = ((i % 19) + 1) as f32 / 190.0;
            assert!((v - want).abs() < 1e-6 * want.max(1e-3), "{i}: {v} vs {want}");
        }
    }

    /// A NaN score makes its row NaN, as Burn's softmax does, and leaves other rows alone.
    #[test]
    fn softmax_keeps_nan() {
        let mut scores = vec![0.5f32; 20];
        scores[3] = f32::NAN;
        softmax_rows(&mut scores, 10);
        assert!(scores[..10].iter().all(|v| v.is_nan()));
        assert!(scores[10..].iter().all(|&v| (v - 0.1).abs() < 1e-7));
    }

    #[test]
    fn host_core_only_without_autodiff_on_cpu() {
        let device = Default::default();
        assert!(host_core_applies::<B>(&device));
        assert!(!host_core_applies::<Autodiff<B>>(&device));
    }
}
