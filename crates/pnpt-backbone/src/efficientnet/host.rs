//! EfficientNet-Lite0 on the channels-last CPU kernels of `pnpt-kernels`, with the generated
//! graph's weights.
//!
//! The graph is the stem (3×3 stride 2, ReLU6) and eleven MBConv blocks: an optional 1×1
//! expansion with ReLU6, a k×k depthwise convolution with ReLU6 behind a TensorFlow-"SAME"
//! pad, a 1×1 projection, and a residual add when the block keeps its shape. The generated
//! module names its convolutions `conv2d1..=conv2d33` in exactly that order, so the plan
//! below only needs each block's stride and whether it expands; kernel sizes and channel counts
//! come from the weight shapes.

use burn::tensor::backend::Backend;
use burn_store::ModuleSnapshot;
use pnpt_kernels::{Buffers, Nhwc, Pad, dense, depthwise, pointwise};
use rayon::prelude::*;
use std::sync::Mutex;

use super::generated;

/// `(expands, stride)` of `_blocks.0..=10`; the taps follow blocks 2, 4 and 10.
const BLOCKS: [(bool, usize); 11] = [
    (false, 1),
    (true, 2),
    (true, 1),
    (true, 2),
    (true, 1),
    (true, 2),
    (true, 1),
    (true, 1),
    (true, 1),
    (true, 1),
    (true, 1),
];
const TAPS: [usize; 3] = [2, 4, 10];

/// A convolution's weights rearranged for the NHWC kernels.
struct Conv {
    /// Dense: `[(ky, kx, C_in), C_out]`; depthwise: `[(ky, kx), C]`; 1×1: `[C_in, C_out]`.
    weight: Vec<f32>,
    bias: Vec<f32>,
    k: usize,
}

struct Block {
    expand: Option<Conv>,
    depthwise: Conv,
    project: Conv,
    stride: usize,
}

/// The whole encoder, host side.
pub(crate) struct HostNet {
    stem: Conv,
    blocks: Vec<Block>,
    /// Activation buffers of earlier passes, one set per image in flight.
    buffers: Mutex<Vec<Buffers>>,
}

/// A summary rather than every weight, for when an encoder is printed with `{:?}`.
impl std::fmt::Debug for HostNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let weights: usize = std::iter::once(&self.stem)
            .chain(self.blocks.iter().flat_map(|b| b.expand.iter().chain([&b.depthwise, &b.project])))
            .map(|c| c.weight.len() + c.bias.len())
            .sum();
        f.debug_struct("HostNet").field("blocks", &self.blocks.len()).field("weights", &weights).finish_non_exhaustive()
    }
}

impl HostNet {
    /// Reads the weights of the generated module (once per encoder).
    pub fn from_model<B: Backend>(model: &generated::Model<B>) -> Result<Self, String> {
        let mut tensors = std::collections::HashMap::new();
        for snapshot in model.collect(None, None, false) {
            let data = snapshot.to_data().map_err(|e| format!("{}: {e:?}", snapshot.full_path()))?;
            let values =
                data.convert::<f32>().to_vec::<f32>().map_err(|e| format!("{}: {e:?}", snapshot.full_path()))?;
            tensors.insert(snapshot.full_path(), (snapshot.shape.to_vec(), values));
        }
        let mut next = 0usize;
        let mut take = |kind: Kind| -> Result<Conv, String> {
            next += 1;
            let name = format!("conv2d{next}");
            let (shape, weight) = tensors.remove(&format!("{name}.weight")).ok_or(format!("missing {name}.weight"))?;
            let (_, bias) = tensors.remove(&format!("{name}.bias")).ok_or(format!("missing {name}.bias"))?;
            let [o, i, kh, kw] = shape[..] else { return Err(format!("{name}.weight has shape {shape:?}")) };
            let expected_in = if kind == Kind::Depthwise { 1 } else { i };
            if kh != kw || i != expected_in || (kind == Kind::Pointwise && kh != 1) {
                return Err(format!("{name}.weight has shape {shape:?}, not a {kind:?} convolution"));
            }
            let k = kh;
            let mut out = vec![0f32; weight.len()];
            // OIHW -> [(ky, kx, I), O] (depthwise: I = 1, so [(ky, kx), C]).
            for oc in 0..o {
                for ic in 0..i {
                    for t in 0..k * k {
                        out[(t * i + ic) * o + oc] = weight[(oc * i + ic) * k * k + t];
                    }
                }
            }
            Ok(Conv { weight: out, bias, k })
        };
        let stem = take(Kind::Dense)?;
        let mut blocks = Vec::with_capacity(BLOCKS.len());
        for (expands, stride) in BLOCKS {
            let expand = if expands { Some(take(Kind::Pointwise)?) } else { None };
            let depthwise = take(Kind::Depthwise)?;
            let project = take(Kind::Pointwise)?;
            blocks.push(Block { expand, depthwise, project, stride });
        }
        Ok(Self { stem, blocks, buffers: Mutex::default() })
    }

    /// The stride 4/8/16 maps of an NCHW batch, as NCHW values with their dims.
    ///
    /// A batch runs one image per task: an image's live activations (about 9 MB at 256² in
    /// block 1, far less further on) stay closer to the cores than a whole batch's (measured:
    /// batch 8 run as one took 1.9x the time per image of batch 1).
    pub fn forward(&self, input: &[f32], dims: [usize; 4]) -> [(Vec<f32>, [usize; 4]); 3] {
        let [n, c, h, w] = dims;
        if n == 1 {
            return self.forward_one(input, dims);
        }
        let per_image: Vec<_> =
            input.par_chunks(c * h * w).map(|image| self.forward_one(image, [1, c, h, w])).collect();
        std::array::from_fn(|tap| {
            let [_, tc, th, tw] = per_image[0][tap].1;
            let values = per_image.iter().flat_map(|maps| maps[tap].0.iter().copied()).collect();
            (values, [n, tc, th, tw])
        })
    }

    fn forward_one(&self, input: &[f32], dims: [usize; 4]) -> [(Vec<f32>, [usize; 4]); 3] {
        // A poisoned lock only means another pass panicked; its buffers are still buffers.
        let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default();
        let bufs = &mut buffers;
        let stem = &self.stem;
        let image = Nhwc::from_nchw(input, dims, bufs);
        let mut x = dense(&image, &stem.weight, &stem.bias, stem.k, 2, Pad::same(stem.k, 2), true, bufs);
        bufs.give(image.data);
        let mut taps = Vec::with_capacity(3);
        for (index, block) in self.blocks.iter().enumerate() {
            let expanded = block.expand.as_ref().map(|e| pointwise(&x, &e.weight, &e.bias, None, true, bufs));
            let d = &block.depthwise;
            let pad = Pad::same(d.k, block.stride);
            let hidden =
                depthwise(expanded.as_ref().unwrap_or(&x), &d.weight, &d.bias, d.k, block.stride, pad, true, bufs);
            if let Some(e) = expanded {
                bufs.give(e.data);
            }
            let keeps_shape = block.stride == 1 && x.c == block.project.bias.len();
            let residual = keeps_shape.then_some(&x);
            let next = pointwise(&hidden, &block.project.weight, &block.project.bias, residual, false, bufs);
            bufs.give(hidden.data);
            bufs.give(std::mem::replace(&mut x, next).data);
            if TAPS.contains(&index) {
                taps.push((x.to_nchw(), x.nchw_dims()));
            }
        }
        bufs.give(x.data);
        self.buffers.lock().unwrap_or_else(|e| e.into_inner()).push(buffers);
        let mut taps = taps.into_iter();
        std::array::from_fn(|_| taps.next().expect("three taps"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dense,
    Depthwise,
    Pointwise,
}
