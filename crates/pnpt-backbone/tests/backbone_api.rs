//! The public API's contracts: names, shapes, batching, freezing and the errors for bad input
//! and wrong checkpoints.
mod common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use common::{B, golden_dir, read_pth, write_safetensors};
use pnpt_backbone::resnet::{BlockKind, ResNet, ResNetConfig};
use pnpt_backbone::{Backbone, BackboneError, BackboneKind};

fn tiny_basic() -> ResNetConfig {
    ResNetConfig::new(BlockKind::Basic, [1, 1, 1])
}

fn load_err(config: &ResNetConfig, path: &Path) -> String {
    match ResNet::<B>::load(config, path, &Default::default()) {
        Ok(_) => panic!("{} loaded as {config}", path.display()),
        Err(e) => {
            assert!(matches!(e, BackboneError::Checkpoint { .. }), "{e:?}");
            e.to_string()
        }
    }
}

#[test]
fn kind_names_round_trip() {
    let names = ["efficientnet-lite0", "resnet18", "resnet34", "resnet50", "wide_resnet50_2"];
    for (kind, name) in BackboneKind::ALL.iter().zip(names) {
        assert_eq!(kind.to_string(), name);
        assert_eq!(name.parse::<BackboneKind>().unwrap(), *kind);
        let json = serde_json::to_string(kind).unwrap();
        assert_eq!(json, format!("\"{name}\""));
        assert_eq!(serde_json::from_str::<BackboneKind>(&json).unwrap(), *kind);
    }
    let err = "resnet101".parse::<BackboneKind>().unwrap_err().to_string();
    assert!(err.contains("resnet101") && err.contains("wide_resnet50_2"), "{err}");
}

#[test]
fn random_backbones_have_documented_shapes() {
    let device = Default::default();
    let expected = [
        (BackboneKind::EfficientNetLite0, [24, 40, 112]),
        (BackboneKind::ResNet18, [64, 128, 256]),
        (BackboneKind::ResNet34, [64, 128, 256]),
        (BackboneKind::ResNet50, [256, 512, 1024]),
        (BackboneKind::WideResNet50_2, [256, 512, 1024]),
    ];
    for (kind, channels) in expected {
        let bb = Backbone::<B>::random(kind, &device);
        assert_eq!(bb.kind(), kind);
        assert_eq!(bb.channels(), channels);
        assert_eq!(bb.strides(), [4, 8, 16]);
        let pre = bb.preprocess();
        assert_eq!(pre.size, 256);
        assert_eq!(pre.mean, [0.485, 0.456, 0.406]);
        assert_eq!(pre.std, [0.229, 0.224, 0.225]);
        let x = Tensor::<B, 4>::random([2, 3, 64, 32], Distribution::Normal(0.0, 1.0), &device);
        let ms = bb.features(x).unwrap();
        for ((map, c), s) in ms.maps.iter().zip(channels).zip([4, 8, 16]) {
            assert_eq!(map.dims(), [2, c, 64 / s, 32 / s], "{kind}");
        }
    }
}

#[test]
fn batch_items_are_independent() {
    let device = Default::default();
    let bb = Backbone::<B>::load(BackboneKind::EfficientNetLite0, None, &device).unwrap();
    let a = Tensor::<B, 4>::random([1, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let b = Tensor::<B, 4>::random([1, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let both = bb.features(Tensor::cat(vec![a.clone(), b.clone()], 0)).unwrap();
    let single = bb.features(b).unwrap();
    for (m2, m1) in both.maps.iter().zip(&single.maps) {
        let d: f32 = (m2.clone().narrow(0, 1, 1) - m1.clone()).abs().max().into_scalar();
        let s: f32 = m1.clone().abs().max().into_scalar();
        assert!(d <= 1e-5 * s, "batched and single results differ: {d} (scale {s})");
    }
}

#[test]
fn outputs_carry_no_gradient_on_autodiff() {
    type AD = Autodiff<Flex<f32>>;
    let device = Default::default();
    for kind in [BackboneKind::EfficientNetLite0, BackboneKind::ResNet18] {
        let bb = Backbone::<AD>::random(kind, &device);
        let x = Tensor::<AD, 4>::ones([1, 3, 32, 32], &device).require_grad();
        let ms = bb.features(x).unwrap();
        assert!(ms.maps.iter().all(|m| !m.is_require_grad()), "{kind}");
    }
    let bundled = Backbone::<AD>::load(BackboneKind::EfficientNetLite0, None, &device).unwrap();
    let ms = bundled.features(Tensor::ones([1, 3, 32, 32], &device)).unwrap();
    assert!(ms.maps.iter().all(|m| !m.is_require_grad()));
}

#[test]
fn wrong_input_shapes_are_errors() {
    let device = Default::default();
    for kind in [BackboneKind::EfficientNetLite0, BackboneKind::ResNet18] {
        let bb = Backbone::<B>::random(kind, &device);
        let cases: [([usize; 4], &str); 4] = [
            ([1, 1, 64, 64], "3 (RGB) channels"),
            ([1, 4, 64, 64], "3 (RGB) channels"),
            ([1, 3, 60, 64], "multiples of 16"),
            ([0, 3, 64, 64], "empty batch"),
        ];
        for (shape, needle) in cases {
            let err = bb.features(Tensor::zeros(shape, &device)).unwrap_err();
            assert!(matches!(err, BackboneError::Input { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains(needle) && msg.contains(kind.name()), "{shape:?}: {msg}");
        }
        let err = bb.features_dyn(Tensor::<B, 3>::zeros([3, 64, 64], &device)).unwrap_err();
        assert!(err.to_string().contains("rank-4"), "{err}");
        assert!(bb.features_dyn(Tensor::<B, 4>::zeros([1, 3, 32, 32], &device)).is_ok());
    }
}

#[test]
fn resnets_need_weights_and_missing_files_are_named() {
    let device = Default::default();
    let err = Backbone::<B>::load(BackboneKind::WideResNet50_2, None, &device).unwrap_err();
    assert!(matches!(err, BackboneError::WeightsRequired { kind: BackboneKind::WideResNet50_2 }));
    let missing = Path::new("/nonexistent/wrn50.pth");
    let msg = Backbone::<B>::load(BackboneKind::ResNet50, Some(missing), &device).unwrap_err().to_string();
    assert!(msg.contains("/nonexistent/wrn50.pth") && msg.contains("no such file"), "{msg}");
    let msg = Backbone::<B>::load(BackboneKind::EfficientNetLite0, Some(missing), &device).unwrap_err().to_string();
    assert!(msg.contains("/nonexistent/wrn50.pth"), "{msg}");
}

#[test]
fn garbage_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["junk.pth", "junk.safetensors", "junk.bpk"] {
        let path = dir.path().join(name);
        std::fs::write(&path, b"definitely not a checkpoint").unwrap();
        let kind = if name.ends_with(".bpk") { BackboneKind::EfficientNetLite0 } else { BackboneKind::ResNet18 };
        let err = Backbone::<B>::load(kind, Some(&path), &Default::default()).unwrap_err();
        assert!(err.to_string().contains(name), "{err}");
    }
}

#[test]
fn checkpoint_of_another_architecture_is_a_clear_error() {
    let Some(golden) = golden_dir() else { return };
    let basic = golden.join("resnet_tiny/basic.pth");
    let wide = golden.join("resnet_tiny/bottleneck_wide.pth");
    // Whole-backbone kinds: the tiny checkpoints are neither resnet18 nor wide_resnet50_2.
    let msg = Backbone::<B>::load(BackboneKind::ResNet18, Some(&basic), &Default::default()).unwrap_err().to_string();
    assert!(msg.contains("BasicBlock ×[1, 1, 1]") && msg.contains("(resnet18)"), "{msg}");
    let msg = load_err(&ResNetConfig::resnet50(), &wide);
    assert!(msg.contains("Bottleneck ×[1, 1, 1], width_per_group 128") && msg.contains("resnet50"), "{msg}");
    // Block type and width mismatches at equal depth.
    let msg = load_err(&ResNetConfig::new(BlockKind::Bottleneck, [1, 1, 1]), &basic);
    assert!(msg.contains("checkpoint holds a ResNet with BasicBlock"), "{msg}");
    let msg = load_err(&ResNetConfig::new(BlockKind::Bottleneck, [1, 1, 1]), &wide);
    assert!(msg.contains("width_per_group 128") && msg.contains("width_per_group 64"), "{msg}");

    // Not a ResNet at all (EfficientNet-style keys).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("effnet.safetensors");
    let mut t = BTreeMap::new();
    t.insert("_conv_stem.weight".to_string(), (vec![32, 3, 3, 3], vec![0.0; 32 * 27]));
    t.insert("_bn0.weight".to_string(), (vec![32], vec![1.0; 32]));
    write_safetensors(&path, &t);
    let msg = load_err(&tiny_basic(), &path);
    assert!(msg.contains("not a torchvision ResNet") && msg.contains("_conv_stem.weight"), "{msg}");
}

#[test]
fn missing_misshaped_and_unexpected_keys_are_named() {
    let Some(golden) = golden_dir() else { return };
    let pth = read_pth(&golden.join("resnet_tiny/basic.pth"));
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();

    // Same tensors as safetensors, plus layer4/fc that must be ignored: loads and matches.
    let mut full = pth.clone();
    full.insert("layer4.0.conv1.weight".into(), (vec![2, 2, 1, 1], vec![0.5; 4]));
    full.insert("fc.weight".into(), (vec![10, 4], vec![0.0; 40]));
    let path = dir.path().join("full.safetensors");
    write_safetensors(&path, &full);
    let from_st = ResNet::<B>::load(&tiny_basic(), &path, &device).unwrap();
    let from_pth = ResNet::<B>::load(&tiny_basic(), &golden.join("resnet_tiny/basic.pth"), &device).unwrap();
    let x = Tensor::<B, 4>::random([1, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    for (a, b) in from_st.forward(x.clone()).iter().zip(from_pth.forward(x)) {
        let d: f32 = (a.clone() - b).abs().max().into_scalar();
        assert_eq!(d, 0.0);
    }

    let mut broken = pth.clone();
    broken.remove("layer2.0.bn1.running_var").unwrap();
    broken.insert("layer1.0.conv2.weight".into(), (vec![64, 64, 1, 1], vec![0.0; 64 * 64]));
    broken.insert("layer3.0.extra.weight".into(), (vec![1], vec![0.0]));
    let path = dir.path().join("broken.safetensors");
    write_safetensors(&path, &broken);
    let msg = load_err(&tiny_basic(), &path);
    assert!(msg.contains("missing layer2.0.bn1.running_var"), "{msg}");
    assert!(msg.contains("layer1.0.conv2.weight: shape [64, 64, 1, 1], expected [64, 64, 3, 3]"), "{msg}");
    assert!(msg.contains("unexpected layer3.0.extra.weight"), "{msg}");
    assert!(msg.contains("3 problem(s)"), "{msg}");
}

#[test]
fn invalid_configs_are_errors() {
    let device = Default::default();
    let bad = [
        ResNetConfig::new(BlockKind::Basic, [1, 0, 1]),
        ResNetConfig::new(BlockKind::Basic, [1, 1, 1]).with_width_per_group(128),
    ];
    for config in bad {
        assert!(matches!(ResNet::<B>::random(&config, &device), Err(BackboneError::Config { .. })));
    }
}
