//! How much memory a training run needs, estimated before anything is allocated.

use super::PnptConfig;
use crate::{Error, Result};

impl PnptConfig {
    /// A rough upper estimate of what training this configuration on `images` images holds in
    /// memory: parameters, their gradients and AdamW moments, one batch's activations (both
    /// streams, every layer, the attention scores) and the cache of frozen backbone features.
    pub fn estimate_memory(&self, images: usize) -> MemoryEstimate {
        let m = &self.model;
        let spec = self.feature_spec();
        let (h, f) = (m.hidden as f64, (m.hidden * m.ffn_ratio) as f64);
        let tokens = crate::hpe::sequence_length(&spec, m.concat) as f64 + m.semantic_tokens as f64;
        // Per layer three attention blocks (SACE a, SACE b, CSCD), each 4h² + 2hf; HPE and
        // HPE⁻¹ map every scale's patches to h and back; 25 % slack for norms, biases, tokens.
        let hpe: f64 = spec.patch_dims().iter().map(|&d| 2.0 * d as f64 * h).sum::<f64>() + 3.0 * h * h;
        let params = 1.25 * (m.layers as f64 * 3.0 * (4.0 * h * h + 2.0 * h * f) + hpe);
        let batch = 2.0 * self.train.batch_size.max(self.train.feature_batch) as f64;
        let per_block = tokens * (8.0 * h + 2.0 * f) + m.heads as f64 * tokens * tokens;
        let activations = batch * m.layers as f64 * 3.0 * per_block;
        let feature = spec.channels.iter().zip(spec.sizes).map(|(&c, [a, b])| (c * a * b) as f64).sum::<f64>();
        let bytes = |floats: f64| (4.0 * floats).min(u64::MAX as f64) as u64;
        MemoryEstimate {
            parameters: bytes(params),
            optimizer: bytes(3.0 * params),
            activations: bytes(activations),
            feature_cache: bytes(images as f64 * feature),
        }
    }

    /// Refuses, before anything is allocated, a run whose [`estimate_memory`](Self::estimate_memory)
    /// exceeds `available` bytes (`None`: unknown, nothing is refused).
    pub fn check_memory(&self, images: usize, available: Option<u64>) -> Result<()> {
        let estimate = self.estimate_memory(images);
        match available {
            Some(limit) if estimate.total() > limit => Err(Error::OutOfMemory { estimate, available: limit }),
            _ => Ok(()),
        }
    }
}

/// What [`PnptConfig::estimate_memory`] counts, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Model weights.
    pub parameters: u64,
    /// Gradients and AdamW's two moments.
    pub optimizer: u64,
    /// One training batch through every layer, both streams.
    pub activations: u64,
    /// Frozen backbone features of every training image.
    pub feature_cache: u64,
}

impl MemoryEstimate {
    /// The sum.
    pub fn total(&self) -> u64 {
        self.parameters
            .saturating_add(self.optimizer)
            .saturating_add(self.activations)
            .saturating_add(self.feature_cache)
    }
}

impl std::fmt::Display for MemoryEstimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        write!(
            f,
            "{:.2} GiB (weights {:.2}, gradients and optimizer {:.2}, one batch of activations {:.2}, feature cache {:.2})",
            gib(self.total()),
            gib(self.parameters),
            gib(self.optimizer),
            gib(self.activations),
            gib(self.feature_cache)
        )
    }
}

/// `MemAvailable` of `/proc/meminfo` (Linux), or the `PNPT_MAX_MEMORY` environment variable in
/// bytes when set (which wins); `None` where neither is known.
pub fn available_memory() -> Option<u64> {
    if let Some(limit) = std::env::var("PNPT_MAX_MEMORY").ok().and_then(|v| v.trim().parse().ok()) {
        return Some(limit);
    }
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

#[cfg(test)]
mod tests {
    use super::super::*;

    #[test]
    fn memory_estimate_counts_parameters_and_refuses_what_cannot_fit() {
        // The cpu preset builds 6.07 M parameters; the estimate is within 25 %.
        let cfg = PnptConfig::cpu();
        let e = cfg.estimate_memory(0);
        let params = e.parameters as f64 / 4.0;
        assert!((params / 6.07e6 - 1.0).abs() < 0.25, "{params}");
        assert_eq!(e.optimizer, 3 * e.parameters);
        // Feature cache: 24·64² + 40·32² + 112·16² floats per image at input 256.
        assert_eq!(cfg.estimate_memory(10).feature_cache, 10 * 4 * (24 * 64 * 64 + 40 * 32 * 32 + 112 * 16 * 16));
        assert!(cfg.check_memory(500, Some(64 << 30)).is_ok());
        // The two inputs that used to abort the process: a huge hidden size, a huge input.
        let mut wide = PnptConfig::cpu();
        wide.model.hidden = 65536;
        assert!(matches!(wide.check_memory(0, Some(64 << 30)), Err(Error::OutOfMemory { .. })));
        let mut big = PnptConfig::cpu();
        big.input_size = 16384;
        assert!(big.validate().unwrap_err().to_string().contains("input_size"));
        big.input_size = 2048;
        let err = big.check_memory(0, Some(8 << 30)).unwrap_err().to_string();
        assert!(err.contains("GiB"), "{err}");
        assert!(big.check_memory(0, None).is_ok(), "unknown memory refuses nothing");
    }
}
