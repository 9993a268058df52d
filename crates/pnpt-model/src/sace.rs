//! SACE — Semantic Aggregation and Contextual Enhancement (the paper's SACE module).
//!
//! (a) [`SaceAggregation`], per stream: self-attention over `[E_X ; E_S]` (patch tokens and
//! semantic tokens together), then the FFN; the output is split back into `R_X` (patches) and
//! `R_S(X)` (that stream's view of the semantics).
//!
//! (b) [`SaceFusion`], second-order cross-attention between the two streams' semantics:
//! ```text
//! R'_S(p) = LN(CAM(q=R_S(p), k=v=R_S(s)) + R_S(p))   # prior semantics coupled to the sample
//! Z'_S    = LN(CAM(q=R_S(s), k=v=R'_S(p)) + R_S(s))  # sample aligned with the coupled prior
//! E_S(l)  = LN(FP(Z'_S) + Z'_S)                       # fused contextual semantics
//! ```

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use crate::block::{AttentionSublayer, BlockConfig, FeedForwardSublayer};

/// SACE part (a): long-distance semantic aggregation for one stream.
#[derive(Module, Debug)]
pub struct SaceAggregation<B: Backend> {
    /// `Z = LN(SAM(E, E, E) + E)`.
    pub attention: AttentionSublayer<B>,
    /// `R = LN(FP(Z) + Z)`.
    pub ffn: FeedForwardSublayer<B>,
}

impl<B: Backend> SaceAggregation<B> {
    /// Builds the block.
    pub fn new(cfg: &BlockConfig, device: &B::Device) -> Self {
        Self { attention: cfg.attention(device), ffn: cfg.feed_forward(device) }
    }

    /// `patches: [B, L, C]`, `semantic: [B, N, C]` (or none, for the ablation) →
    /// `(R_X [B, L, C], R_S(X) [B, N, C])`.
    pub fn forward(
        &self,
        patches: Tensor<B, 3>,
        semantic: Option<Tensor<B, 3>>,
    ) -> (Tensor<B, 3>, Option<Tensor<B, 3>>) {
        let [_, l, _] = patches.dims();
        let joined = match &semantic {
            Some(s) => Tensor::cat(vec![patches, s.clone()], 1),
            None => patches,
        };
        let r = self.ffn.forward(self.attention.forward_self(joined));
        match semantic {
            Some(s) => {
                let n = s.dims()[1];
                (r.clone().narrow(1, 0, l), Some(r.narrow(1, l, n)))
            }
            None => (r, None),
        }
    }
}

/// SACE part (b): contextual semantic alignment fusion of the two streams' semantic tokens.
#[derive(Module, Debug)]
pub struct SaceFusion<B: Backend> {
    /// Couples the prior's semantics to the sample's: `q = R_S(p)`, `k = v = R_S(s)`.
    pub couple: AttentionSublayer<B>,
    /// Aligns the sample's semantics with the coupled prior: `q = R_S(s)`, `k = v = R'_S(p)`.
    pub align: AttentionSublayer<B>,
    /// `E_S(l) = LN(FP(Z'_S) + Z'_S)`.
    pub ffn: FeedForwardSublayer<B>,
}

impl<B: Backend> SaceFusion<B> {
    /// Builds the block.
    pub fn new(cfg: &BlockConfig, device: &B::Device) -> Self {
        Self { couple: cfg.attention(device), align: cfg.attention(device), ffn: cfg.feed_forward(device) }
    }

    /// `(R_S(p), R_S(s))`, each `[B, N, C]` → fused `E_S(l)` `[B, N, C]`.
    pub fn forward(&self, prior_semantic: Tensor<B, 3>, self_semantic: Tensor<B, 3>) -> Tensor<B, 3> {
        let coupled = self.couple.forward(prior_semantic, self_semantic.clone());
        let aligned = self.align.forward(self_semantic, coupled);
        self.ffn.forward(aligned)
    }
}
