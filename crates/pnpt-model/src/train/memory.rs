//! The patch memory of a detector: one coreset bank per class, from the cached training
//! features.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use pnpt_memory::{MemoryBuilder, PatchMemory};
use pnpt_prompt::PromptPool;

use super::FeatureSet;
use crate::progress::Progress;
use crate::{PnptConfig, Result};

/// One coreset bank per class of the pool, from the cached training features of the images of
/// that (true) class.
pub fn build_memory<B: Backend>(
    config: &PnptConfig,
    set: &FeatureSet<B>,
    pool: &PromptPool<B>,
    progress: &Progress,
) -> Result<PatchMemory<B>> {
    let mut builder = MemoryBuilder::<B>::new(config.memory.clone())?;
    let stage = progress.stage("memory", pool.len());
    for name in pool.names() {
        let idx: Vec<usize> = (0..set.len()).filter(|&i| &set.categories[i] == name).collect();
        let batches: Vec<[Tensor<B, 4>; 3]> = idx.chunks(64).map(|chunk| set.select(chunk)).collect::<Result<_>>()?;
        builder.add_class(name, &batches)?;
        stage.advance(1, || None);
    }
    Ok(builder.build()?)
}
