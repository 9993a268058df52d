//! CSCD — Contextual Semantics Conditional Decoding (the paper's CSCD module): each stream's patch tokens
//! attend to the fused semantics.
//!
//! ```text
//! Zhat   = LN(CAM(q=R_X(l), k=v=E_S(l)) + R_X(l))
//! E_X(l) = LN(FP(Zhat) + Zhat)
//! ```

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use crate::block::{AttentionSublayer, BlockConfig, FeedForwardSublayer};

/// One CSCD block.
#[derive(Module, Debug)]
pub struct Cscd<B: Backend> {
    /// Cross-attention of the patch tokens to the semantics.
    pub attention: AttentionSublayer<B>,
    /// FFN.
    pub ffn: FeedForwardSublayer<B>,
}

impl<B: Backend> Cscd<B> {
    /// Builds the block.
    pub fn new(cfg: &BlockConfig, device: &B::Device) -> Self {
        Self { attention: cfg.attention(device), ffn: cfg.feed_forward(device) }
    }

    /// `patches: R_X(l) [B, L, C]`, `semantic: E_S(l) [B, N, C]` → `E_X(l) [B, L, C]`.
    pub fn forward(&self, patches: Tensor<B, 3>, semantic: Tensor<B, 3>) -> Tensor<B, 3> {
        self.ffn.forward(self.attention.forward(patches, semantic))
    }
}
