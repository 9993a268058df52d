//! Parity of the Burn backbones with the PyTorch reference tensors in `shared/golden`.
//!
//! Each map's error is `max |burn − torch| / max |torch|`; the budget is 1e-4 (f32 arithmetic
//! in a different order: BatchNorm folding, im2col GEMMs).
mod common;

use common::{B, golden_dir, npy_tensor, rel_max_err};
use pnpt_backbone::resnet::{BlockKind, ResNet, ResNetConfig};
use pnpt_backbone::{Backbone, BackboneKind, Kernels};

const TOLERANCE: f32 = 1e-4;

fn check(label: &str, names: [&str; 3], got: &[burn::tensor::Tensor<B, 4>; 3], dir: &std::path::Path) {
    let mut worst = 0f32;
    for (name, map) in names.iter().zip(got) {
        let want = npy_tensor(&dir.join(name));
        let err = rel_max_err(map, &want);
        println!("{label} {name}: shape {:?} rel max abs err {err:.3e}", map.dims());
        worst = worst.max(err);
    }
    assert!(worst <= TOLERANCE, "{label}: worst relative error {worst:.3e} > {TOLERANCE:e}");
}

/// Both implementations: the generated graph and the fused CPU kernels (the default on Flex).
#[test]
fn efficientnet_lite0_matches_golden() {
    let Some(golden) = golden_dir() else { return };
    let dir = golden.join("efficientnet_lite0");
    let device = Default::default();
    for kernels in [Kernels::Graph, Kernels::Host] {
        let backbone =
            Backbone::<B>::load(BackboneKind::EfficientNetLite0, None, &device).unwrap().with_kernels(kernels);
        let ms = backbone.features(npy_tensor(&dir.join("input.npy"))).unwrap();
        assert_eq!(ms.maps[0].dims(), [1, 24, 64, 64]);
        assert_eq!(ms.maps[1].dims(), [1, 40, 32, 32]);
        assert_eq!(ms.maps[2].dims(), [1, 112, 16, 16]);
        let label = format!("efficientnet-lite0 ({kernels:?})");
        check(&label, ["feat_s4.npy", "feat_s8.npy", "feat_s16.npy"], &ms.maps, &dir);
    }
}

fn resnet_tiny(model: &str, config: ResNetConfig) {
    let Some(golden) = golden_dir() else { return };
    let dir = golden.join("resnet_tiny");
    let device = Default::default();
    let net = ResNet::<B>::load(&config, &dir.join(format!("{model}.pth")), &device).unwrap();
    let x = npy_tensor(&golden.join("efficientnet_lite0/input.npy"));
    let maps = net.forward(x);
    let names = [1, 2, 3].map(|i| format!("{model}_layer{i}.npy"));
    check(model, [&names[0], &names[1], &names[2]], &maps, &dir);
}

#[test]
fn resnet_tiny_basic_matches_golden() {
    resnet_tiny("basic", ResNetConfig::new(BlockKind::Basic, [1, 1, 1]));
}

#[test]
fn resnet_tiny_bottleneck_wide_matches_golden() {
    resnet_tiny("bottleneck_wide", ResNetConfig::new(BlockKind::Bottleneck, [1, 1, 1]).with_width_per_group(128));
}

/// The input README says `input.npy` is the same in both folders; the test above relies on it.
#[test]
fn golden_inputs_are_identical() {
    let Some(golden) = golden_dir() else { return };
    let a = common::read_npy(&golden.join("efficientnet_lite0/input.npy"));
    let b = common::read_npy(&golden.join("resnet_tiny/input.npy"));
    assert_eq!(a, b);
}
