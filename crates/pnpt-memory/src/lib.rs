//! # pnpt-memory — a class-conditional patch memory (PatchCore) for unified detection
//!
//! PNPT reconstructs features from a class prior and localises defects well where it has
//! learned normality; a memory of normal patches (PatchCore, Roth et al., "Towards Total Recall
//! in Industrial Anomaly Detection", CVPR 2022) judges image-level normality robustly with no
//! training at all. This crate keeps **one memory bank per class**, selected by the class that
//! the CS-NPP prompt pool retrieves, so a single detector serves every product type:
//!
//! | file | PatchCore | what |
//! |---|---|---|
//! | `patch` | §3.1 | locally aware patch features: stride-8 and stride-16 taps, 3×3 average, joined |
//! | `coreset` | §3.2 | greedy k-center coreset in a random projection |
//! | `bank` | §3.3 | per-class banks, exact nearest-neighbour distances by matrix products, save/load |
//!
//! Data flow: backbone taps → [`patch_features`] → [`MemoryBuilder::add_class`] (coreset) →
//! [`PatchMemory::score`] gives a `[N, H/8, W/8]` distance map per image; `pnpt-model` upsamples,
//! smooths and fuses it with PNPT's reconstruction map.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::{Distribution, Tensor};
//! use pnpt_memory::{MemoryBuilder, MemoryConfig};
//!
//! type B = Flex<f32>;
//! let device = Default::default();
//! let taps = |n: usize| -> [Tensor<B, 4>; 3] {
//!     [
//!         Tensor::random([n, 2, 16, 16], Distribution::Normal(0.0, 1.0), &device),
//!         Tensor::random([n, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device),
//!         Tensor::random([n, 4, 4, 4], Distribution::Normal(0.0, 1.0), &device),
//!     ]
//! };
//! let mut builder = MemoryBuilder::<B>::new(MemoryConfig::default())?;
//! let normal = taps(3);
//! builder.add_class("bottle", &[normal.clone()])?;
//! let memory = builder.build()?;
//! assert_eq!(memory.sizes(), vec![20]); // ceil(10 % of 3 images × 64 patches)
//! let map = memory.score(&taps(2), &[0, 0])?;
//! assert_eq!(map.dims(), [2, 8, 8]);
//! # Ok::<(), pnpt_memory::Error>(())
//! ```

// The coreset's AVX2 loop (raw intrinsics) lives in pnpt-kernels.
#![forbid(unsafe_code)]

mod bank;
mod coreset;
mod error;
mod patch;

pub use bank::{MemoryBuilder, MemoryConfig, PatchMemory};
pub use coreset::{coreset_size, greedy_coreset};
pub use error::{Error, Result};
pub use patch::{patch_dim, patch_features, to_rows};
