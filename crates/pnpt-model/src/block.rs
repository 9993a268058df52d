//! Post-norm residual sublayers shared by SACE and CSCD (the paper's SACE and CSCD: `LN(sublayer(x) + x)`).

use burn::module::{Initializer, Module};
use burn::nn::attention::{MultiHeadAttention, MultiHeadAttentionConfig};
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Tensor, activation::relu, backend::Backend};

use crate::attention::multi_head;
use crate::config::ModelConfig;

/// What every SACE and CSCD block is built from: the leaf blocks' share of [`ModelConfig`]
/// (Burn's per-block config pattern), so a block never sees the whole model's configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockConfig {
    /// Hidden size `C`.
    pub hidden: usize,
    /// Attention heads; must divide `hidden`.
    pub heads: usize,
    /// FFN expansion ratio.
    pub ffn_ratio: usize,
    /// Residual and FFN dropout.
    pub dropout: f64,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
}

impl From<&ModelConfig> for BlockConfig {
    fn from(m: &ModelConfig) -> Self {
        Self {
            hidden: m.hidden,
            heads: m.heads,
            ffn_ratio: m.ffn_ratio,
            dropout: m.dropout,
            layer_norm_eps: m.layer_norm_eps,
        }
    }
}

impl BlockConfig {
    /// The attention sublayer.
    pub fn attention<B: Backend>(&self, device: &B::Device) -> AttentionSublayer<B> {
        AttentionSublayer::new(self, device)
    }

    /// The feed-forward sublayer.
    pub fn feed_forward<B: Backend>(&self, device: &B::Device) -> FeedForwardSublayer<B> {
        FeedForwardSublayer::new(self, device)
    }
}

/// `LN(q + Dropout(MHA(q, kv, kv)))` — self-attention when `kv = q`, cross-attention otherwise.
#[derive(Module, Debug)]
pub struct AttentionSublayer<B: Backend> {
    /// Multi-head attention.
    pub attention: MultiHeadAttention<B>,
    /// Post-norm.
    pub norm: LayerNorm<B>,
    /// Residual dropout.
    pub dropout: Dropout,
}

impl<B: Backend> AttentionSublayer<B> {
    /// Builds the sublayer for hidden size `cfg.hidden`.
    pub fn new(cfg: &BlockConfig, device: &B::Device) -> Self {
        let attention = MultiHeadAttentionConfig::new(cfg.hidden, cfg.heads)
            // Burn applies MHA's own dropout to the scores *before* softmax, unlike PyTorch;
            // keep it off and drop the residual branch instead.
            .with_dropout(0.0)
            // PyTorch's nn.MultiheadAttention initialises its projections Xavier-uniform.
            .with_initializer(Initializer::XavierUniform { gain: 1.0 })
            .init(device);
        Self {
            attention,
            norm: LayerNormConfig::new(cfg.hidden).with_epsilon(cfg.layer_norm_eps).init(device),
            dropout: DropoutConfig::new(cfg.dropout).init(),
        }
    }

    /// `q: [B, Lq, C]`, `kv: [B, Lk, C]` → `[B, Lq, C]`.
    pub fn forward(&self, q: Tensor<B, 3>, kv: Tensor<B, 3>) -> Tensor<B, 3> {
        let context = multi_head(&self.attention, q.clone(), kv.clone(), kv);
        self.norm.forward(q + self.dropout.forward(context))
    }

    /// Self-attention: `LN(x + Dropout(MHA(x, x, x)))`.
    pub fn forward_self(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let context = multi_head(&self.attention, x.clone(), x.clone(), x.clone());
        self.norm.forward(x + self.dropout.forward(context))
    }
}

/// `LN(x + Dropout(FP(x)))` with `FP = Linear(C, rC) - ReLU - Dropout - Linear(rC, C)`.
#[derive(Module, Debug)]
pub struct FeedForwardSublayer<B: Backend> {
    /// `Linear(C -> ratio*C)`.
    pub fc1: Linear<B>,
    /// `Linear(ratio*C -> C)`.
    pub fc2: Linear<B>,
    /// Post-norm.
    pub norm: LayerNorm<B>,
    /// Dropout inside and after the MLP.
    pub dropout: Dropout,
}

impl<B: Backend> FeedForwardSublayer<B> {
    /// Builds the sublayer for hidden size `cfg.hidden`.
    pub fn new(cfg: &BlockConfig, device: &B::Device) -> Self {
        let inner = cfg.hidden * cfg.ffn_ratio;
        Self {
            fc1: LinearConfig::new(cfg.hidden, inner).init(device),
            fc2: LinearConfig::new(inner, cfg.hidden).init(device),
            norm: LayerNormConfig::new(cfg.hidden).with_epsilon(cfg.layer_norm_eps).init(device),
            dropout: DropoutConfig::new(cfg.dropout).init(),
        }
    }

    /// `[B, L, C]` → `[B, L, C]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let y = self.fc2.forward(self.dropout.forward(relu(self.fc1.forward(x.clone()))));
        self.norm.forward(x + self.dropout.forward(y))
    }
}
