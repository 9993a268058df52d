//! The same modules, with the same weights, on the CPU backend and on wgpu must agree within
//! `pnpt::equivalence::Tolerance::default()`.
//!
//! Built only with `--features wgpu`. Without a Vulkan/Metal/DX12 adapter the tests print why
//! and pass, unless `PNPT_TEST_WGPU=1` (set by `.ci/run`, which installs lavapipe) demands one.
#![cfg(feature = "wgpu")]

use burn::{
    nn::{
        PaddingConfig2d,
        conv::{Conv2d, Conv2dConfig},
        transformer::{TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput},
    },
    tensor::{Distribution, Tensor, TensorData, backend::Backend},
};
use pnpt::{
    backbone::{Backbone, BackboneKind},
    backend::{Cpu, Wgpu},
    equivalence::{EquivalenceCase, Tolerance, check, module_from_bytes, module_to_bytes},
    memory::{MemoryBuilder, MemoryConfig},
    model::{Pnpt, PnptConfig},
};

/// One test at a time on the wgpu device. With Burn 0.21 / cubecl 0.10, tests sharing the
/// device from several threads while its kernels were being autotuned gave wrong transformer
/// outputs (max error 5.1 against an allowed 4e-4) in about half of the runs with a cold
/// autotune cache (`target/autotune`); run one after another they always matched.
static WGPU_SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A wgpu device if an adapter exists, with the guard that keeps the other wgpu tests off it;
/// `None` (after saying why) if there is no adapter and none is required.
fn wgpu_device() -> Option<(std::sync::MutexGuard<'static, ()>, burn::backend::wgpu::WgpuDevice)> {
    // A test that failed while holding the lock must not fail the others.
    let serial = WGPU_SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    static PIN_AUTOTUNE: std::sync::Once = std::sync::Once::new();
    PIN_AUTOTUNE.call_once(pin_autotune);
    let device = burn::backend::wgpu::WgpuDevice::DefaultDevice;
    // cubecl panics when no adapter is found; turn that into a skip reason.
    let probe = std::panic::catch_unwind(|| {
        Tensor::<Wgpu, 1>::ones([1], &device).into_data();
    });
    match probe {
        Ok(()) => Some((serial, device)),
        Err(_) if std::env::var("PNPT_TEST_WGPU").as_deref() == Ok("1") => {
            panic!("PNPT_TEST_WGPU=1 but no wgpu adapter was found (install mesa-vulkan-drivers)")
        }
        Err(_) => {
            eprintln!("skipping: no wgpu adapter (apt-get install mesa-vulkan-drivers gives lavapipe)");
            None
        }
    }
}

/// Start cubecl's autotune from the kernel choices in `tests/data/lavapipe-autotune`, copied to
/// a scratch folder (cubecl appends to its cache). Left to time them afresh, cubecl 0.10 on
/// lavapipe sometimes picks its double-buffered unit matmul, which returns wrong values there for
/// some shapes (the EfficientNet taps off by 36, the memory distances by 0.24: CI, 2026-11-30);
/// which kernel wins depends on the machine's timings, so the tests passed on one box and failed
/// on another. The pinned choices were each checked by these tests; other adapters (a real GPU)
/// have other device keys and are tuned as usual.
fn pin_autotune() {
    use cubecl_runtime::config::{CubeClRuntimeConfig, RuntimeConfig, autotune::AutotuneConfig, cache::CacheConfig};
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/lavapipe-autotune");
    // Cargo's scratch folder for integration tests, emptied first so each run starts from the pins.
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("pinned-autotune");
    let _ = std::fs::remove_dir_all(&root);
    let target = root.join("autotune");
    copy_dir(&source, &target).unwrap_or_else(|e| panic!("copying {} to {}: {e}", source.display(), target.display()));
    let autotune = AutotuneConfig { cache: CacheConfig::File(root), ..Default::default() };
    CubeClRuntimeConfig::set(CubeClRuntimeConfig { autotune, ..Default::default() });
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else if entry.file_name() != "README.md" {
            std::fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
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
        let encoder: TransformerEncoder<B> =
            module_from_bytes(transformer_config().init(device), &self.weights, device)?;
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

/// The bundled EfficientNet-Lite0 on a 2 x 3 x 128 x 128 batch: all three taps.
struct BackboneCase;

impl EquivalenceCase for BackboneCase {
    fn name(&self) -> String {
        "efficientnet-lite0 taps".into()
    }
    fn run<B: Backend>(&self, device: &B::Device) -> pnpt::Result<Vec<TensorData>> {
        let backbone = Backbone::<B>::load(BackboneKind::EfficientNetLite0, None, device)?;
        let maps = backbone.features(input::<B, 4>([2, 3, 128, 128], 3, device))?.maps;
        Ok(maps.into_iter().map(Tensor::into_data).collect())
    }
}

/// The `cpu` preset's PNPT (both streams, inference forward) on random features of the
/// EfficientNet-Lite0 shapes at 128 x 128 input.
struct PnptCase {
    weights: Vec<u8>,
}

fn pnpt_model<B: Backend>(device: &B::Device) -> Pnpt<B> {
    let mut config = PnptConfig::cpu();
    config.input_size = 128;
    Pnpt::new(&config.model, config.feature_spec(), device).unwrap()
}

impl EquivalenceCase for PnptCase {
    fn name(&self) -> String {
        "pnpt cpu preset forward".into()
    }
    fn run<B: Backend>(&self, device: &B::Device) -> pnpt::Result<Vec<TensorData>> {
        let model: Pnpt<B> = module_from_bytes(pnpt_model(device), &self.weights, device)?;
        let shapes = [[2, 24, 32, 32], [2, 40, 16, 16], [2, 112, 8, 8]];
        let feats = shapes.map(|s| input::<B, 4>(s, 5, device));
        let prior = shapes.map(|s| input::<B, 4>(s, 6, device));
        let out = model.forward(&feats, Some(&prior))?;
        let mut all: Vec<TensorData> = out.sample.into_iter().map(Tensor::into_data).collect();
        all.extend(out.prior.into_iter().flatten().map(Tensor::into_data));
        Ok(all)
    }
}

/// The patch memory: coreset of one class's patches, then nearest-neighbour maps of new images
/// (patch features, blocked `‖q‖² + ‖b‖² − 2 q·b` products, minimum, square root).
struct MemoryCase;

impl EquivalenceCase for MemoryCase {
    fn name(&self) -> String {
        "patch memory nearest-neighbour map".into()
    }
    fn run<B: Backend>(&self, device: &B::Device) -> pnpt::Result<Vec<TensorData>> {
        let shapes = [[2, 24, 32, 32], [2, 40, 16, 16], [2, 112, 8, 8]];
        // Keep every training patch (no coreset), so both backends hold the same bank exactly;
        // small blocks exercise the blocked minimum.
        let config = MemoryConfig { coreset_ratio: 1.0, block_elements: 10_000, ..Default::default() };
        let mut builder = MemoryBuilder::<B>::new(config)?;
        builder.add_class("a", &[shapes.map(|s| input::<B, 4>(s, 7, device))])?;
        let memory = builder.build()?;
        let query = shapes.map(|s| input::<B, 4>(s, 8, device));
        Ok(vec![memory.score(&query, &[0, 0])?.into_data()])
    }
}

#[test]
fn memory_matches_cpu() {
    let Some((_serial, gpu)) = wgpu_device() else { return };
    let report = check::<Cpu, Wgpu, _>(&MemoryCase, &Default::default(), &gpu, Tolerance::default()).unwrap();
    println!("{report:?}");
}

#[test]
fn backbone_matches_cpu() {
    let Some((_serial, gpu)) = wgpu_device() else { return };
    let report = check::<Cpu, Wgpu, _>(&BackboneCase, &Default::default(), &gpu, Tolerance::default()).unwrap();
    println!("{report:?}");
}

#[test]
fn pnpt_matches_cpu() {
    let Some((_serial, gpu)) = wgpu_device() else { return };
    let cpu = Default::default();
    Cpu::seed(&cpu, 0);
    let weights = module_to_bytes::<Cpu, _>(pnpt_model::<Cpu>(&cpu)).unwrap();
    let report = check::<Cpu, Wgpu, _>(&PnptCase { weights }, &cpu, &gpu, Tolerance::default()).unwrap();
    println!("{report:?}");
}

#[test]
fn transformer_matches_cpu() {
    let Some((_serial, gpu)) = wgpu_device() else { return };
    let cpu = Default::default();
    let weights = module_to_bytes::<Cpu, _>(transformer_config().init(&cpu)).unwrap();
    let report = check::<Cpu, Wgpu, _>(&TransformerCase { weights }, &cpu, &gpu, Tolerance::default()).unwrap();
    println!("{report:?}");
}

#[test]
fn conv_matches_cpu() {
    let Some((_serial, gpu)) = wgpu_device() else { return };
    let cpu = Default::default();
    let weights = module_to_bytes::<Cpu, _>(conv_config().init(&cpu)).unwrap();
    let report = check::<Cpu, Wgpu, _>(&ConvCase { weights }, &cpu, &gpu, Tolerance::default()).unwrap();
    println!("{report:?}");
}

#[test]
fn harness_catches_a_real_difference() {
    // Different weights on the two sides must be caught: the harness is able to fail.
    let Some((_serial, gpu)) = wgpu_device() else { return };
    let cpu = Default::default();
    Cpu::seed(&cpu, 1);
    let a = ConvCase { weights: module_to_bytes::<Cpu, _>(conv_config().init(&cpu)).unwrap() };
    let b = ConvCase { weights: module_to_bytes::<Cpu, _>(conv_config().init(&cpu)).unwrap() };
    let out_a = a.run::<Cpu>(&cpu).unwrap();
    let out_b = b.run::<Wgpu>(&gpu).unwrap();
    assert!(pnpt::equivalence::compare("different weights", &out_a, &out_b, Tolerance::default()).is_err());
}
