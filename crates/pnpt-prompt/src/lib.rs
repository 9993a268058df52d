//! # pnpt-prompt — CS-NPP, the Class-Specific Normality Prompting Pool (the paper's CS-NPP module)
//!
//! For every training category the pool stores the class-mean multi-scale feature
//! `P_c = {P_c(1), P_c(2), P_c(3)}` and the class-mean global coding `k_c` (global average
//! pooling of each scale, concatenated). At train *and* test time an image's global coding is
//! compared with every `k_c`; the nearest class's `P_c` becomes the normal prior `F_prior` of
//! the PNPT transformer. No class label is used for retrieval.
//!
//! The pool is built incrementally ([`PoolBuilder`]), one batch of backbone features at a time, so
//! the training set never has to sit in memory at once.
//!
//! ```
//! use burn::backend::Flex;
//! use burn::tensor::Tensor;
//! use pnpt_prompt::{Distance, PoolBuilder};
//!
//! type B = Flex<f32>;
//! let device = Default::default();
//! // Two categories with constant features 0 and 1 on three scales.
//! let feats = |v: f32, n: usize| -> [Tensor<B, 4>; 3] {
//!     [
//!         Tensor::full([n, 2, 4, 4], v, &device),
//!         Tensor::full([n, 3, 2, 2], v, &device),
//!         Tensor::full([n, 4, 1, 1], v, &device),
//!     ]
//! };
//! let mut builder = PoolBuilder::<B>::new();
//! builder.add("zeros", &feats(0.0, 2))?;
//! builder.add("ones", &feats(1.0, 3))?;
//! let pool = builder.build(Distance::Euclidean)?;
//! let found = pool.retrieve(&feats(0.9, 1))?;
//! assert_eq!(pool.names()[found.indices[0]], "ones");
//! # Ok::<(), pnpt_prompt::Error>(())
//! ```

mod cs_npp;
mod error;

pub use cs_npp::{Distance, POOL_KIND, PoolBuilder, PromptPool, Retrieval, global_code, retrieval_accuracy};
pub use error::{Error, Result};
