//! Multi-head attention for SACE and CSCD (the paper's Eq. 4-6 use standard scaled dot-product
//! attention), computed from the weights of Burn's [`MultiHeadAttention`].
//!
//! Two ways to the same result:
//! * **Burn's operators**, exactly the sequence of `MultiHeadAttention::forward` (projections,
//!   heads split with `swap_dims`, batched `Q Kᵀ`, softmax, batched product with `V`). Training
//!   (autodiff) and GPU backends always take it.
//! * **Host kernels** on the CPU backends without autodiff (inference): the projections stay
//!   Burn's, but the attention core (`pnpt-kernels`) reads the heads in place from the
//!   `[B, L, C]` projections with strided matrix products, one task per (batch, head), and never
//!   materialises the `[B, H, L, d]` copies that `swap_dims` costs Flex. Measured (examples/profile.rs,
//!   docs/performance.md): Flex runs the batched `Q Kᵀ` with 32-wide heads at 13-14 GFLOP/s.
//!
//! Both are checked against each other and against `MultiHeadAttention::forward` in the tests.

use burn::nn::attention::MultiHeadAttention;
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use pnpt_kernels::{AttentionShape, attention_core};

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

/// The same on the host ([`pnpt_kernels::attention_core`]): per (batch, head), `S = Q_h K_hᵀ / √d`
/// (strided reads of the `[B, L, C]` projections), row softmax in place, `O_h = S V_h` written
/// into its columns of the `[B, Lq, C]` output.
pub fn host_core<B: Backend>(
    mha: &MultiHeadAttention<B>,
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
) -> Tensor<B, 3> {
    let device = q.device();
    let [batch, lq, c] = q.dims();
    let lk = k.dims()[1];
    let shape = AttentionShape { batch, lq, lk, channels: c, heads: mha.n_heads, head_dim: mha.d_k };
    let values = |t: Tensor<B, 3>| t.into_data().convert::<f32>().into_vec::<f32>().expect("f32 after convert");
    let out = attention_core(&values(q), &values(k), &values(v), shape);
    Tensor::from_data(TensorData::new(out, [batch, lq, c]), &device)
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

    #[test]
    fn host_core_only_without_autodiff_on_cpu() {
        let device = Default::default();
        assert!(host_core_applies::<B>(&device));
        assert!(!host_core_applies::<Autodiff<B>>(&device));
    }
}
