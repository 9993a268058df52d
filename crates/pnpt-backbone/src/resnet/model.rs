//! The network: built from a tensor source, and its forward pass.

use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::{Distribution, Tensor, backend::Backend};

use super::block::{Block, ConvBn};
use super::config::{BlockKind, ResNetConfig};
use crate::BackboneError;

/// A torchvision ResNet truncated after `layer3`, in inference form.
#[derive(Module, Debug)]
pub struct ResNet<B: Backend> {
    stem: ConvBn<B>,
    layers: Vec<Vec<Block<B>>>,
}

/// Source of the tensors a [`ResNet`] is built from.
pub(super) trait TensorSource<B: Backend> {
    /// The folded (weight, bias) of a conv + BN pair of the given weight shape.
    fn conv_bn(&mut self, conv: &str, bn: &str, shape: [usize; 4], device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 1>);
}

/// Random weights, He-normal, zero bias: for benchmarks and shape tests.
struct RandomSource;

impl<B: Backend> TensorSource<B> for RandomSource {
    fn conv_bn(&mut self, _: &str, _: &str, shape: [usize; 4], device: &B::Device) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
        let w = Tensor::random(shape, Distribution::Normal(0.0, (2.0 / fan_in).sqrt()), device);
        (w, Tensor::zeros([shape[0]], device))
    }
}

impl<B: Backend> ResNet<B> {
    /// A randomly initialised network (He-normal convolutions, identity BatchNorm).
    pub fn random(config: &ResNetConfig, device: &B::Device) -> Result<Self, BackboneError> {
        config.validate().map_err(|reason| BackboneError::Config { reason })?;
        Ok(Self::build(config, &mut RandomSource, device))
    }

    pub(super) fn build(config: &ResNetConfig, src: &mut impl TensorSource<B>, device: &B::Device) -> Self {
        let mut conv_bn = |conv: &str, bn: &str, shape: [usize; 4], stride: usize| {
            let (weight, bias) = src.conv_bn(conv, bn, shape, device);
            ConvBn { weight, bias, stride, padding: shape[2] / 2 }
        };
        let stem = conv_bn("conv1", "bn1", [64, 3, 7, 7], 2);
        let mut layers = Vec::new();
        let mut in_ch = 64;
        for (stage, &blocks) in config.layers.iter().enumerate() {
            let planes = 64 << stage;
            let out_ch = planes * config.block.expansion();
            let width = config.inner_width(planes);
            let mut stage_blocks = Vec::new();
            for b in 0..blocks {
                let p = format!("layer{}.{b}", stage + 1);
                let stride = if b == 0 && stage > 0 { 2 } else { 1 };
                let c = |i: usize| (format!("{p}.conv{i}"), format!("{p}.bn{i}"));
                let convs = match config.block {
                    BlockKind::Basic => {
                        let ((c1, b1), (c2, b2)) = (c(1), c(2));
                        vec![
                            conv_bn(&c1, &b1, [width, in_ch, 3, 3], stride),
                            conv_bn(&c2, &b2, [out_ch, width, 3, 3], 1),
                        ]
                    }
                    BlockKind::Bottleneck => {
                        let ((c1, b1), (c2, b2), (c3, b3)) = (c(1), c(2), c(3));
                        vec![
                            conv_bn(&c1, &b1, [width, in_ch, 1, 1], 1),
                            conv_bn(&c2, &b2, [width, width, 3, 3], stride),
                            conv_bn(&c3, &b3, [out_ch, width, 1, 1], 1),
                        ]
                    }
                };
                let downsample = (b == 0 && (stride != 1 || in_ch != out_ch)).then(|| {
                    conv_bn(&format!("{p}.downsample.0"), &format!("{p}.downsample.1"), [out_ch, in_ch, 1, 1], stride)
                });
                stage_blocks.push(Block { convs, downsample });
                in_ch = out_ch;
            }
            layers.push(stage_blocks);
        }
        Self { stem, layers }
    }

    /// Outputs of `layer1`, `layer2`, `layer3` (strides 4, 8, 16) for an NCHW batch.
    pub fn forward(&self, x: Tensor<B, 4>) -> [Tensor<B, 4>; 3] {
        let x = relu(self.stem.forward(x));
        let mut x = max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], false);
        let mut outs = Vec::with_capacity(3);
        for stage in &self.layers {
            for block in stage {
                x = block.forward(x);
            }
            outs.push(x.clone());
        }
        let [a, b, c]: [Tensor<B, 4>; 3] = outs.try_into().expect("three stages");
        [a, b, c]
    }
}
