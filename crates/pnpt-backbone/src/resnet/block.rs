//! The building blocks: a convolution with its BatchNorm folded in, and a residual block.

use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Tensor, backend::Backend};

/// Convolution with its BatchNorm folded in (so it always has a bias).
#[derive(Module, Debug)]
pub(super) struct ConvBn<B: Backend> {
    pub(super) weight: Tensor<B, 4>,
    pub(super) bias: Tensor<B, 1>,
    pub(super) stride: usize,
    pub(super) padding: usize,
}

impl<B: Backend> ConvBn<B> {
    pub(super) fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let opts = ConvOptions::new([self.stride; 2], [self.padding; 2], [1, 1], 1);
        conv2d(x, self.weight.clone(), Some(self.bias.clone()), opts)
    }
}

#[derive(Module, Debug)]
pub(super) struct Block<B: Backend> {
    /// Basic: conv1, conv2. Bottleneck: conv1, conv2, conv3.
    pub(super) convs: Vec<ConvBn<B>>,
    pub(super) downsample: Option<ConvBn<B>>,
}

impl<B: Backend> Block<B> {
    pub(super) fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let identity = match &self.downsample {
            Some(ds) => ds.forward(x.clone()),
            None => x.clone(),
        };
        let last = self.convs.len() - 1;
        let mut h = x;
        for (i, conv) in self.convs.iter().enumerate() {
            h = conv.forward(h);
            if i < last {
                h = relu(h);
            }
        }
        relu(h + identity)
    }
}
