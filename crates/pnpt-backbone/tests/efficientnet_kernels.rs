//! The fused CPU kernels against the generated graph, on the same weights: bundled ImageNet
//! weights and random ones, batches of 1 and 3, square and non-square inputs.
mod common;

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use common::{B, rel_max_err};
use pnpt_backbone::efficientnet::EfficientNetLite0;
use pnpt_backbone::{Backbone, BackboneKind, Kernels};

/// Same budget as the golden parity: f32 sums in another order.
const TOLERANCE: f32 = 1e-5;

fn compare(graph: &EfficientNetLite0<B>, host: &EfficientNetLite0<B>, dims: [usize; 4]) {
    let device = Default::default();
    // Roughly the range of ImageNet-normalised pixels.
    let x = Tensor::<B, 4>::random(dims, Distribution::Normal(0.0, 1.5), &device);
    let want = graph.forward(x.clone()).unwrap();
    let got = host.forward(x).unwrap();
    for (scale, (g, w)) in got.iter().zip(&want).enumerate() {
        let err = rel_max_err(g, w);
        println!("{dims:?} tap {scale}: {:?} rel max err {err:.2e}", g.dims());
        assert!(err <= TOLERANCE, "{dims:?} tap {scale}: relative error {err:.2e} > {TOLERANCE:e}");
    }
}

#[test]
fn host_kernels_match_the_graph() {
    let device = Default::default();
    let bundled = EfficientNetLite0::<B>::bundled(&device).unwrap();
    let random = EfficientNetLite0::<B>::random(&device);
    for net in [bundled, random] {
        let graph = net.clone().with_kernels(Kernels::Graph);
        let host = net.with_kernels(Kernels::Host);
        for dims in [[1, 3, 64, 64], [3, 3, 48, 80], [1, 3, 256, 256]] {
            compare(&graph, &host, dims);
        }
    }
}

#[test]
fn auto_picks_host_kernels_on_cpu_backends() {
    let device = Default::default();
    // The host kernels are the default where their vector path runs.
    #[cfg(target_arch = "x86_64")]
    let simd = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    let simd = false;
    assert_eq!(Kernels::Auto.host_on::<Flex>(&device), simd);
    assert_eq!(Kernels::Auto.host_on::<Autodiff<Flex>>(&device), simd);
    assert!(Kernels::Host.host_on::<Flex>(&device));
    assert!(!Kernels::Graph.host_on::<Flex>(&device));
    // Through the autodiff backend the output is a plain (detached) tensor on the same device.
    let backbone = Backbone::<Autodiff<Flex>>::load(BackboneKind::EfficientNetLite0, None, &device).unwrap();
    let ms = backbone.features(Tensor::zeros([2, 3, 32, 32], &device)).unwrap();
    assert_eq!(ms.maps[2].dims(), [2, 112, 2, 2]);
    assert!(!ms.maps[0].is_require_grad());
}
