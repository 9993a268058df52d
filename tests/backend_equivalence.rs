//! The same modules, with the same weights, on the CPU backend and on wgpu must agree within
//! `pnpt::equivalence::Tolerance::default()`.
//!
//! Built only with `--features wgpu`. Without a Vulkan/Metal/DX12 adapter the tests print why
//! and pass, unless `PNPT_TEST_WGPU=1` (set by `.ci/run`, which installs lavapipe) demands one.
#![cfg(feature = "wgpu")]

use burn::{
    module::Module,
    nn::{
        conv::{Conv2d, Conv2dConfig},
        transformer::{TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput},
        PaddingConfig2d,
    },
    tensor::{backend::Backend, Distribution, Tensor, TensorData},
};
use pnpt::{
    backend::{Cpu, Wgpu},
    equivalence::{check, module_from_bytes, module_to_bytes, EquivalenceCase, Tolerance},
};

/// A wgpu device if an adapter exists; `None` (after saying why) if not and not required.
fn wgpu_device() -> Option<burn::backend::wgpu::WgpuDevice> {
    let device = burn::backend::wgpu::WgpuDevice::DefaultDevice;
    // cubecl panics when no adapter is found; turn that into a skip reason.
    let probe = std::panic::catch_unwind(|| {
        Tensor::<Wgpu, 1>::ones([1], &device).into_data();
    });
    match probe {
        Ok(()) => Some(device),
        Err(_) if std::env::var("PNPT_TEST_WGPU").as_deref() == Ok("1") => {
            panic!("PNPT_TEST_WGPU=1 but no wgpu adapter was found (install mesa-vulkan-drivers)")
        }
        Err(_) => {
            eprintln!("skipping: no wgpu adapter (apt-get install mesa-vulkan-drivers gives lavapipe)");
            None
        }
    }
}

fn input<B: Backend, const D: usize>(shape: [usize; D], seed: u64, device: &B::Device) -> Tensor<B, D> {
    // Generated on the CPU backend so both sides get identical inputs.
    Cpu::seed(&Default::default(), seed);
    let data = Tensor::<Cpu, D>::random(shape, Distribution::Normal(0.0, 1.0), &Default::default()).into_data();
    Tensor::from_data(data, device)
}

/// Two post-norm transformer layers, PNPT-like width.
struct TransformerCase {
    weights: Vec<u8>,
}

fn transformer_config() -> TransformerEncoderConfig {
    TransformerEncoderConfig::new(64, 256, 8, 2).with_dropout(0.0)
}

impl EquivalenceCase for TransformerCase {
    fn name(&self) -> String {
        "transformer d=64 h=8 x2".into()
    }
    fn run<B: Backend>(&self, device: &B::Device) -> pnpt::Result<Vec<TensorData>> {
        let encoder: TransformerEncoder<B> = module_from_bytes(transformer_config().init(device), &self.weights, device)?;
        let x = input::<B, 3>([2, 56, 64], 7, device);
        Ok(vec![encoder.forward(TransformerEncoderInput::new(x)).into_data()])
    }
}

/// Stride-2 convolution with asymmetric padding, as in EfficientNet's TensorFlow "SAME" padding.
struct ConvCase {
    weights: Vec<u8>,
}

fn conv_config() -> Conv2dConfig {
    Conv2dConfig::new([3, 16], [3, 3]).with_stride([2, 2]).with_padding(PaddingConfig2d::Explicit(0, 0, 1, 1))
}

impl EquivalenceCase for ConvCase {
    fn name(&self) -> String {
        "conv 3->16 k3 s2".into()
    }
    fn run<B: Backend>(&self, device: &B::Device) -> pnpt::Result<Vec<TensorData>> {
        let conv: Conv2d<B> = module_from_bytes(conv_config().init(device), &self.weights, device)?;
        let x = input::<B, 4>([2, 3, 65, 64], 11, device);
        Ok(vec![conv.forward(x).into_data()])
    }
}

#[test]
fn transformer_matches_cpu() {
    let Some(gpu) = wgpu_device() else { return };
    let cpu = Default::default();
    let weights = module_to_bytes::<Cpu, _>(transformer_config().init(&cpu)).unwrap();
    let report = check::<Cpu, Wgpu, _>(&TransformerCase { weights }, &cpu, &gpu, Tolerance::default()).unwrap();
    println!("{report:?}");
}

#[test]
fn conv_matches_cpu() {
    let Some(gpu) = wgpu_device() else { return };
    let cpu = Default::default();
    let weights = module_to_bytes::<Cpu, _>(conv_config().init(&cpu)).unwrap();
    let report = check::<Cpu, Wgpu, _>(&ConvCase { weights }, &cpu, &gpu, Tolerance::default()).unwrap();
    println!("{report:?}");
}

#[test]
fn harness_catches_a_real_difference() {
    // Different weights on the two sides must be caught: the harness is able to fail.
    let Some(gpu) = wgpu_device() else { return };
    let cpu = Default::default();
    Cpu::seed(&cpu, 1);
    let a = ConvCase { weights: module_to_bytes::<Cpu, _>(conv_config().init(&cpu)).unwrap() };
    let b = ConvCase { weights: module_to_bytes::<Cpu, _>(conv_config().init(&cpu)).unwrap() };
    let out_a = a.run::<Cpu>(&cpu).unwrap();
    let out_b = b.run::<Wgpu>(&gpu).unwrap();
    assert!(pnpt::equivalence::compare("different weights", &out_a, &out_b, Tolerance::default()).is_err());
}
