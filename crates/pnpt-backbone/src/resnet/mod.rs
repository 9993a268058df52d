//! Native torchvision-compatible ResNets (stem + `layer1`..`layer3`), frozen, BatchNorm folded.
//!
//! The architecture follows torchvision's `ResNet` (v1.5: the stride sits on the 3×3 convolution
//! of a Bottleneck). Every BatchNorm is folded into the preceding convolution at load time
//! (`w' = w·γ/√(σ²+ε)`, `b' = β − μ·γ/√(σ²+ε)`, computed in f64), which is exactly the
//! inference-mode BatchNorm, and saves one pass over every activation.
//!
//! Weights are plain tensors (not `Param`s), so they never require a gradient, whatever the
//! backend.
//!
//! Split by concern: `config` (the shape), `block` (folded convolutions and residual blocks),
//! `model` (the network and its forward pass), `weights` (reading and checking a state dict),
//! `fold` (BatchNorm folding).

mod block;
mod config;
mod fold;
mod model;
mod weights;

pub use config::{BlockKind, ResNetConfig};
pub use model::ResNet;
