//! Backbone forward time per batch at 256×256 on the default CPU backend, random-init weights
//! (speed does not depend on the values). Divide by the batch size for ms/image.
//!
//! `cargo bench --bench backbone` (all), or e.g. `cargo bench --bench backbone -- efficientnet`.
use std::time::Duration;

use burn::tensor::{Distribution, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pnpt::backbone::{Backbone, BackboneKind, Kernels};

/// The crate's default CPU backend (Flex, or NdArray with `--no-default-features --features ndarray`).
type B = pnpt::backend::Cpu;

fn forward(c: &mut Criterion) {
    let device = Default::default();
    // `cargo bench` passes `--bench`; `cargo test --benches` (CI) runs each benchmark once
    // without it, where a smoke test at 64×64 suffices (a wide ResNet at 256² × 8 takes minutes
    // in the test profile).
    let side = if std::env::args().any(|a| a == "--bench") { 256 } else { 64 };
    let mut group = c.benchmark_group(format!("backbone_forward_{side}"));
    // A forward of a wide ResNet at batch 8 takes seconds on a small CPU: keep runs short.
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    // EfficientNet-Lite0 on both implementations: the fused CPU kernels (the default on CPU
    // backends) and the generated graph they replace.
    let cases = [
        (BackboneKind::EfficientNetLite0, Kernels::Host, "efficientnet-lite0"),
        (BackboneKind::EfficientNetLite0, Kernels::Graph, "efficientnet-lite0-graph"),
        (BackboneKind::ResNet18, Kernels::Auto, "resnet18"),
        (BackboneKind::WideResNet50_2, Kernels::Auto, "wide_resnet50_2"),
    ];
    for (kind, kernels, name) in cases {
        let backbone = Backbone::<B>::random(kind, &device).with_kernels(kernels);
        for batch in [1usize, 8] {
            let images = Tensor::<B, 4>::random([batch, 3, side, side], Distribution::Normal(0.0, 1.0), &device);
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::new(name, batch), &images, |b, x| {
                b.iter(|| {
                    let ms = backbone.features(x.clone()).expect("valid input");
                    // Force the computation (backends may be lazy).
                    ms.maps.map(|m| m.into_data())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
