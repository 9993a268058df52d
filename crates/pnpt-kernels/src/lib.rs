//! pnpt-kernels: every `unsafe` CPU kernel of the workspace, on plain `f32` slices.
//!
//! The other crates forbid `unsafe` code; what needs it (raw-pointer matrix products with
//! `gemm`, AVX2 + FMA code selected at run time, a pointer shared by parallel tasks writing
//! disjoint elements) lives here, next to the tests that check it against simple f64 loops
//! on both the vector and the portable path. No Burn: slices in, slices out, so the crate
//! builds in seconds and sits below every other pnpt crate.
//!
//! | file | used by | what |
//! |---|---|---|
//! | `nhwc.rs` | pnpt-backbone | channels-last activations, their reused buffers, "SAME" padding |
//! | `pointwise.rs` | pnpt-backbone | 1×1 convolutions as tiled `gemm` products, bias, residual and ReLU6 fused |
//! | `window.rs` | pnpt-backbone | direct depthwise and dense k×k convolutions (AVX2 + FMA, portable loop) |
//! | `attention.rs` | pnpt-model | softmax(Q Kᵀ / √d) V per (batch, head) on strided heads |
//! | `coreset.rs` | pnpt-memory | the greedy k-center selection loop of the coreset |

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod attention;
mod coreset;
mod nhwc;
mod pointwise;
#[cfg(test)]
mod test_util;
mod window;

pub use attention::{AttentionShape, attention_core};
pub use coreset::greedy_k_center;
pub use nhwc::{Buffers, Nhwc, Pad};
pub use pointwise::pointwise;
pub use window::{dense, depthwise};

/// Whether this CPU runs the AVX2 + FMA kernels (else the portable loops).
pub fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}
