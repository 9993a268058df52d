//! Multiply-accumulates of one image's inference forward, per module, from the configuration
//! alone (no model needed): for choosing a preset and for the performance report.
//!
//! Counted like [`pnpt_backbone::macs`]: one MAC per weight use in a linear layer, plus the two
//! attention products (`Q Kᵀ` and `softmax · V`, `L_q · L_k · C` each over all heads).
//! Softmax, LayerNorm, residuals and activations are not counted.
//!
//! ```
//! use pnpt_model::{macs::forward_macs, PnptConfig};
//! let cfg = PnptConfig::cpu();
//! let m = forward_macs(&cfg.model, &cfg.feature_spec());
//! assert!(m.total() > 2_000_000_000 && m.total() < 2_200_000_000); // about 2.1 GMAC
//! ```

use serde::Serialize;

use crate::config::{ConcatMode, ModelConfig};
use crate::hpe::{FeatureSpec, sequence_length};

/// MACs per image of [`crate::Pnpt::forward`], by module, summed over both streams and all
/// `M` layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ForwardMacs {
    /// HPE: per-scale patch projections and the channel merge.
    pub hpe: u64,
    /// SACE (a): self-attention over `[patches; semantic tokens]` and its FFN.
    pub sace: u64,
    /// SACE (b): the two cross-attentions between the streams' semantic tokens and the FFN.
    pub fusion: u64,
    /// CSCD: patch tokens attending to the fused semantics, and the FFN.
    pub cscd: u64,
    /// HPE⁻¹: the channel split and the per-scale projections back to features.
    pub hpe_inverse: u64,
}

impl ForwardMacs {
    /// Sum over modules.
    pub fn total(&self) -> u64 {
        self.hpe + self.sace + self.fusion + self.cscd + self.hpe_inverse
    }
}

/// Multi-head attention with `lq` queries over `lk` keys at width `c`: the four projections
/// and the two attention products.
pub fn attention(lq: u64, lk: u64, c: u64) -> u64 {
    2 * lq * c * c + 2 * lk * c * c + 2 * lq * lk * c
}

/// `Linear(c -> r c) - ReLU - Linear(r c -> c)` on `l` tokens.
pub fn ffn(l: u64, c: u64, r: u64) -> u64 {
    2 * l * c * r * c
}

/// MACs per image of the inference forward of a model built from `config` for `spec`.
pub fn forward_macs(config: &ModelConfig, spec: &FeatureSpec) -> ForwardMacs {
    let c = config.hidden as u64;
    let r = config.ffn_ratio as u64;
    let m = config.layers as u64;
    let grid = spec.grid_tokens() as u64;
    let l = sequence_length(spec, config.concat) as u64;
    let n = if config.variant.has_semantic_tokens() { config.semantic_tokens as u64 } else { 0 };
    let streams = if config.variant.has_prior() { 2 } else { 1 };
    let patch_sum: u64 = spec.patch_dims().iter().map(|&d| d as u64).sum();
    // Every scale has `grid` patches whatever the concat mode; only the merge differs.
    let merge = match config.concat {
        ConcatMode::Channels => grid * 3 * c * c,
        ConcatMode::Tokens => 0,
    };
    let per_stream_layer_sace = attention(l + n, l + n, c) + ffn(l + n, c, r);
    let per_stream_layer_cscd = if config.variant.has_cscd() { attention(l, n, c) + ffn(l, c, r) } else { 0 };
    let fusion_layer = if config.variant.has_fusion() { 2 * attention(n, n, c) + ffn(n, c, r) } else { 0 };
    ForwardMacs {
        hpe: streams * (grid * patch_sum * c + merge),
        sace: streams * m * per_stream_layer_sace,
        fusion: m * fusion_layer,
        cscd: streams * m * per_stream_layer_cscd,
        hpe_inverse: streams * (merge + grid * c * patch_sum),
    }
}

/// MACs per image of [`crate::Pnpt::forward_planned`], what a [`crate::Detector`] runs: HPE
/// and HPE⁻¹ folded into one linear map each, and the prior stream's HPE precomputed per
/// class (so HPE runs on the self stream only).
pub fn planned_forward_macs(config: &ModelConfig, spec: &FeatureSpec) -> ForwardMacs {
    let c = config.hidden as u64;
    let grid = spec.grid_tokens() as u64;
    let patch_sum: u64 = spec.patch_dims().iter().map(|&d| d as u64).sum();
    let streams = if config.variant.has_prior() { 2 } else { 1 };
    ForwardMacs { hpe: grid * patch_sum * c, hpe_inverse: streams * grid * c * patch_sum, ..forward_macs(config, spec) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PnptConfig;
    use crate::config::Variant;

    fn tiny() -> (ModelConfig, FeatureSpec) {
        let mut cfg = PnptConfig::cpu().model;
        cfg.hidden = 8;
        cfg.heads = 2;
        cfg.semantic_tokens = 2;
        cfg.ffn_ratio = 2;
        cfg.layers = 1;
        // One token on the grid; patches of 4x4, 2x2 and 1x1 over one channel: 16 + 4 + 1 = 21.
        let spec = FeatureSpec { channels: [1, 1, 1], sizes: [[4, 4], [2, 2], [1, 1]] };
        (cfg, spec)
    }

    /// Worked by hand for C = 8, N = 2, r = 2, M = 1, L = 1, patch dims 16 + 4 + 1 = 21:
    /// * HPE per stream: 1·21·8 = 168 embed + 1·24·8 = 192 merge = 360; HPE⁻¹ the same.
    /// * SACE per stream, T = 3 tokens: projections 3·64 (Q) + 2·3·64 (K, V) + 3·64 (out) = 768,
    ///   products 2·3·3·8 = 144, FFN 2·3·8·16 = 768: 1680.
    /// * Fusion: two attentions of 2 over 2: 4·2·64 + 2·2·2·8 = 576 each; FFN 2·2·8·16 = 512:
    ///   1664.
    /// * CSCD per stream, 1 query over 2 keys: 64 + 2·2·64 + 64 + 2·1·2·8 = 416; FFN 256: 672.
    #[test]
    fn hand_worked_tiny_model() {
        let (cfg, spec) = tiny();
        let m = forward_macs(&cfg, &spec);
        assert_eq!(m, ForwardMacs { hpe: 720, sace: 3360, fusion: 1664, cscd: 1344, hpe_inverse: 720 });
        assert_eq!(m.total(), 7808);
    }

    /// Folded: HPE 1·21·8 = 168 on the self stream only, HPE⁻¹ 1·8·21 = 168 per stream.
    #[test]
    fn planned_forward_folds_hpe_and_skips_the_prior_embedding() {
        let (cfg, spec) = tiny();
        let m = planned_forward_macs(&cfg, &spec);
        assert_eq!((m.hpe, m.hpe_inverse), (168, 336));
        assert_eq!(m.total(), 7808 - 720 - 720 + 168 + 336);
    }

    #[test]
    fn ablations_remove_their_modules() {
        let (mut cfg, spec) = tiny();
        cfg.variant = Variant::SingleStream;
        let single = forward_macs(&cfg, &spec);
        assert_eq!(single.fusion, 0);
        assert_eq!(single.sace, 1680);
        cfg.variant = Variant::NoCscd;
        assert_eq!(forward_macs(&cfg, &spec).cscd, 0);
        cfg.variant = Variant::NoSemanticTokens;
        let none = forward_macs(&cfg, &spec);
        // SACE over the single patch token: 4·64 + 2·1·1·8 = 272, FFN 256, two streams.
        assert_eq!((none.fusion, none.sace), (0, 2 * 528));
    }

    #[test]
    fn paper_preset_costs_more_per_image() {
        let cpu = PnptConfig::cpu();
        let paper = PnptConfig::paper();
        let a = forward_macs(&cpu.model, &cpu.feature_spec()).total();
        let b = forward_macs(&paper.model, &paper.feature_spec()).total();
        assert!(b > 5 * a, "paper {b} vs cpu {a}");
    }
}
