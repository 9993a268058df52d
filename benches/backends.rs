//! Backend comparison on the shape of PNPT's workload, once per backend compiled in:
//! `cargo bench --bench backends` (add `--features flex,wgpu,cuda` to compare more backends).
//!
//! * `transformer`: forward + backward of 4 post-norm transformer layers, d = 256, 8 heads,
//!   batch 8 of 2 x (256 + 40) tokens (two streams of 256 patch + 40 semantic tokens).
//! * `conv`: forward of a 3-layer stride-2 conv stack on 8 x 3 x 256 x 256. Forward only: PNPT's
//!   CNN is frozen, so convolutions never run backward in training (and NdArray's conv backward
//!   took about two minutes per step on 2 cores here, which would only measure a path we never use).

use std::hint::black_box;

use burn::{
    module::Module,
    nn::{
        PaddingConfig2d, Relu,
        conv::{Conv2d, Conv2dConfig},
        transformer::{TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput},
    },
    tensor::{Distribution, Tensor, backend::AutodiffBackend},
};
use criterion::{Criterion, criterion_group, criterion_main};
use pnpt::backend::{BackendTask, DeviceSpec, run_on};

#[derive(Module, Debug)]
struct ConvStack<B: burn::tensor::backend::Backend> {
    convs: Vec<Conv2d<B>>,
    relu: Relu,
}

impl<B: burn::tensor::backend::Backend> ConvStack<B> {
    fn new(device: &B::Device) -> Self {
        let convs = [(3, 32), (32, 64), (64, 128)]
            .into_iter()
            .map(|(i, o)| {
                Conv2dConfig::new([i, o], [3, 3])
                    .with_stride([2, 2])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .init(device)
            })
            .collect();
        ConvStack { convs, relu: Relu::new() }
    }

    fn forward(&self, mut x: Tensor<B, 4>) -> Tensor<B, 4> {
        for conv in &self.convs {
            x = self.relu.forward(conv.forward(x));
        }
        x
    }
}

struct Bench<'a> {
    c: &'a mut Criterion,
    label: String,
}

impl BackendTask for Bench<'_> {
    type Output = ();

    fn run<B: AutodiffBackend>(self, device: B::Device) {
        B::seed(&device, 0);
        let mut group = self.c.benchmark_group("backends");
        group.sample_size(10);

        let encoder: TransformerEncoder<B> =
            TransformerEncoderConfig::new(256, 1024, 8, 4).with_dropout(0.0).init(&device);
        let tokens = Tensor::<B, 3>::random([8, 2 * (256 + 40), 256], Distribution::Normal(0.0, 1.0), &device);
        group.bench_function(format!("transformer_fwd_bwd/{}", self.label), |b| {
            b.iter(|| {
                let out = encoder.forward(TransformerEncoderInput::new(tokens.clone()));
                let grads = out.powi_scalar(2).mean().backward();
                // Reading one value forces asynchronous GPU backends to finish the step.
                black_box(grads);
                B::sync(&device).expect("device sync");
            })
        });

        let convs = ConvStack::<B::InnerBackend>::new(&device);
        let images = Tensor::<B, 4>::random([8, 3, 256, 256], Distribution::Normal(0.0, 1.0), &device);
        group.bench_function(format!("conv_fwd/{}", self.label), |b| {
            b.iter(|| {
                let out = convs.forward(images.clone().inner());
                black_box(out.into_data());
                B::sync(&device).expect("device sync");
            })
        });
        group.finish();
    }
}

fn backends(c: &mut Criterion) {
    let mut specs = DeviceSpec::compiled();
    if cfg!(all(feature = "ndarray", feature = "flex")) {
        // "cpu" is Flex here; name it so the two CPU backends line up in the output.
        specs[0] = DeviceSpec::Flex;
    }
    for spec in specs {
        if let Err(e) = run_on(&spec, Bench { c, label: spec.to_string() }) {
            eprintln!("skipping {spec}: {e}");
        }
    }
}

criterion_group!(benches, backends);
criterion_main!(benches);
