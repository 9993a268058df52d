//! Multiply-accumulate counts of the backbones, for performance reports and preset choice.
//!
//! Counted like fvcore / torchvision's model tables: one MAC per weight use in a convolution or
//! linear layer (`out_elements × C_in/groups × k_h × k_w`); BatchNorm, activations, pooling and
//! residual additions are not counted (they are a few percent and memory-bound). One FLOP is
//! two MACs' worth of arithmetic when quoting GFLOP/s.
//!
//! ```
//! use pnpt_backbone::BackboneKind;
//! // The bundled EfficientNet-Lite0 taps at the PNPT input size: 0.32 GMAC per image.
//! assert_eq!(BackboneKind::EfficientNetLite0.macs(256), 317_739_008);
//! ```

use crate::BackboneKind;
use crate::resnet::{BlockKind, ResNetConfig};

/// MACs of a `k × k` convolution with `groups` groups producing `c_out × side_out²`.
fn conv(c_in: usize, c_out: usize, k: usize, groups: usize, side_out: usize) -> u64 {
    (c_out * side_out * side_out * (c_in / groups) * k * k) as u64
}

/// Output side of a convolution or pool with "same"-style padding (`⌈side / stride⌉`), which
/// is what torchvision's paddings and EfficientNet's TensorFlow pads give on these sizes.
fn down(side: usize, stride: usize) -> usize {
    side.div_ceil(stride)
}

/// EfficientNet-Lite0's MBConv blocks `_blocks.0..=10`: (kernel, stride, expansion, c_in, c_out).
const EFFICIENTNET_LITE0_BLOCKS: [(usize, usize, usize, usize, usize); 11] = [
    (3, 1, 1, 32, 16),
    (3, 2, 6, 16, 24),
    (3, 1, 6, 24, 24),
    (5, 2, 6, 24, 40),
    (5, 1, 6, 40, 40),
    (3, 2, 6, 40, 80),
    (3, 1, 6, 80, 80),
    (3, 1, 6, 80, 80),
    (5, 1, 6, 80, 112),
    (5, 1, 6, 112, 112),
    (5, 1, 6, 112, 112),
];

fn efficientnet_lite0(input: usize) -> u64 {
    let mut side = down(input, 2);
    let mut total = conv(3, 32, 3, 1, side); // stem
    for (k, stride, expand, c_in, c_out) in EFFICIENTNET_LITE0_BLOCKS {
        let hidden = c_in * expand;
        if expand != 1 {
            total += conv(c_in, hidden, 1, 1, side);
        }
        side = down(side, stride);
        total += conv(hidden, hidden, k, hidden, side); // depthwise
        total += conv(hidden, c_out, 1, 1, side);
    }
    total
}

/// A torchvision ResNet's stem and the given stages (`blocks[i]` blocks in `layer{i+1}`), plus
/// the ImageNet classifier when `classifier` (only used to check against torchvision's tables).
fn resnet(block: BlockKind, width_per_group: usize, blocks: &[usize], input: usize, classifier: bool) -> u64 {
    let mut side = down(input, 2);
    let mut total = conv(3, 64, 7, 1, side);
    side = down(side, 2); // max pool
    let mut c_in = 64;
    for (stage, &n) in blocks.iter().enumerate() {
        let planes = 64 << stage;
        let c_out = planes * block.expansion();
        for b in 0..n {
            let stride = if b == 0 && stage > 0 { 2 } else { 1 };
            let side_out = down(side, stride);
            total += match block {
                BlockKind::Basic => conv(c_in, planes, 3, 1, side_out) + conv(planes, planes, 3, 1, side_out),
                BlockKind::Bottleneck => {
                    let width = planes * width_per_group / 64;
                    conv(c_in, width, 1, 1, side)
                        + conv(width, width, 3, 1, side_out)
                        + conv(width, c_out, 1, 1, side_out)
                }
            };
            if stride != 1 || c_in != c_out {
                total += conv(c_in, c_out, 1, 1, side_out); // downsample
            }
            c_in = c_out;
            side = side_out;
        }
    }
    if classifier {
        total += (c_in * 1000) as u64;
    }
    total
}

impl BackboneKind {
    /// MACs per image of the encoder up to its stride-16 tap, for a square `input` side.
    pub fn macs(self, input: usize) -> u64 {
        match self.resnet_config() {
            None => efficientnet_lite0(input),
            Some(ResNetConfig { block, layers, width_per_group }) => {
                resnet(block, width_per_group, &layers, input, false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact count of the committed ONNX graph at 1×3×256×256: its 33 Conv nodes, output
    /// shapes from `onnx.shape_inference`, `N·C_out·H·W · C_in/groups · k_h · k_w` summed
    /// (a one-off Python script over `weights/efficientnet_lite0/efficientnet_lite0.onnx`).
    #[test]
    fn efficientnet_matches_the_onnx_graph() {
        assert_eq!(BackboneKind::EfficientNetLite0.macs(256), 317_739_008);
    }

    /// torchvision's model tables (GFLOPS column, which counts MACs, at 224×224, whole
    /// network with `layer4` and `fc`): resnet18 1.81, resnet34 3.66, resnet50 4.09,
    /// wide_resnet50_2 11.40.
    #[test]
    fn full_resnets_match_torchvision_tables() {
        for (block, wpg, blocks, published) in [
            (BlockKind::Basic, 64, [2, 2, 2, 2], 1.81),
            (BlockKind::Basic, 64, [3, 4, 6, 3], 3.66),
            (BlockKind::Bottleneck, 64, [3, 4, 6, 3], 4.09),
            (BlockKind::Bottleneck, 128, [3, 4, 6, 3], 11.40),
        ] {
            let g = resnet(block, wpg, &blocks, 224, true) as f64 / 1e9;
            assert!((g - published).abs() <= 0.006, "{block:?} {blocks:?}: {g:.4} G vs {published}");
        }
    }

    #[test]
    fn truncated_resnets_cost_less_and_scale_with_area() {
        for kind in [BackboneKind::ResNet18, BackboneKind::WideResNet50_2] {
            let c = kind.resnet_config().unwrap();
            let mut four = c.layers.to_vec();
            four.push(3);
            assert!(kind.macs(224) < resnet(c.block, c.width_per_group, &four, 224, true));
            // Every layer's cost is proportional to its output area: (256/128)² = 4.
            assert_eq!(kind.macs(256), 4 * kind.macs(128));
        }
    }
}
