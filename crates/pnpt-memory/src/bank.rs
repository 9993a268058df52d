//! One memory bank of normal patch features per class, and exact nearest-neighbour distances
//! (PatchCore §3.3) to the bank of each image's retrieved class.
//!
//! A unified PatchCore puts every class's patches in one bank, so a defect on one product can
//! find a close match among another product's normal patches. PNPT's prompt pool already
//! infers the class of every image (CS-NPP retrieval); searching only that class's bank keeps
//! the memory class-conditional with one detector for all classes.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use pnpt_io::bytes_to_f32;
use pnpt_io::container::parse_container;
use pnpt_io::tensor_file::{self, Entry, TensorFile};
use serde::{Deserialize, Serialize};

use crate::coreset::{coreset_size, greedy_coreset};
use crate::patch::{patch_features, to_rows};
use crate::{Error, Result};

/// Magic of the memory in the earlier container format (still read).
const MAGIC: &[u8; 8] = b"PNPTMEM1";
const FORMAT: u32 = 1;
/// `pnpt.kind` of a patch memory's tensor file.
const MEMORY_KIND: &str = "patch_memory";

/// How the banks are built and searched. Building is deterministic for a configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryConfig {
    /// Fraction of each class's training patches kept by the greedy coreset (PatchCore's 10 %).
    pub coreset_ratio: f64,
    /// Upper bound on one class's bank (rows): bounds build time and memory for large
    /// categories (greedy selection costs `n × k × projection_dim`).
    pub max_bank_size: usize,
    /// Random-projection width in which the coreset measures distances (PatchCore's 128).
    pub projection_dim: usize,
    /// Patch features wider than this are reduced by channel pooling (PatchCore's 1,024).
    pub max_dim: usize,
    /// Seed of the projection and of each class's first coreset pick.
    pub seed: u64,
    /// Largest query × bank distance block computed at once (elements; memory only, no effect on
    /// results).
    pub block_elements: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            coreset_ratio: 0.1,
            max_bank_size: 10_000,
            projection_dim: 128,
            max_dim: 1024,
            seed: 0,
            block_elements: 1 << 23,
        }
    }
}

impl MemoryConfig {
    /// Checks every value; the message names the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.coreset_ratio > 0.0 && self.coreset_ratio <= 1.0) {
            return Err(Error::Config(format!("memory.coreset_ratio ({}) must be in (0, 1]", self.coreset_ratio)));
        }
        if self.max_bank_size == 0 || self.max_dim == 0 || self.block_elements == 0 {
            return Err(Error::Config(
                "memory.max_bank_size, memory.max_dim and memory.block_elements must be at least 1".into(),
            ));
        }
        // A bank above this would need tens of GB of distance work per image; refuse early.
        if self.max_bank_size > 1 << 22 || self.max_dim > 1 << 14 || self.projection_dim > 1 << 14 {
            return Err(Error::Config(
                "memory.max_bank_size (<= 4,194,304), max_dim and projection_dim (<= 16,384) are out of range".into(),
            ));
        }
        Ok(())
    }
}

/// Class-conditional patch memory: one coreset bank `[k_c, D]` per class, in prompt-pool order.
#[derive(Debug, Clone)]
pub struct PatchMemory<B: Backend> {
    names: Vec<String>,
    banks: Vec<Tensor<B, 2>>,
    /// `‖b‖²` of every bank row, `[1, k_c]`, computed once.
    norms: Vec<Tensor<B, 2>>,
    /// Training patches each bank was selected from.
    candidates: Vec<usize>,
    dim: usize,
    config: MemoryConfig,
}

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    dim: usize,
    names: Vec<String>,
    sizes: Vec<usize>,
    candidates: Vec<usize>,
    config: MemoryConfig,
}

/// Builds a [`PatchMemory`] one class at a time, so only one class's patches are held at once.
#[derive(Debug)]
pub struct MemoryBuilder<B: Backend> {
    memory: PatchMemory<B>,
}

impl<B: Backend> MemoryBuilder<B> {
    /// An empty builder.
    pub fn new(config: MemoryConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            memory: PatchMemory {
                names: Vec::new(),
                banks: Vec::new(),
                norms: Vec::new(),
                candidates: Vec::new(),
                dim: 0,
                config,
            },
        })
    }

    /// Adds one class from its training images' backbone taps (`[n, C_i, H_i, W_i]` ×3, given as
    /// one or more batches): patch features, then the greedy coreset. Classes must be added in
    /// the prompt pool's order.
    pub fn add_class(&mut self, name: &str, batches: &[[Tensor<B, 4>; 3]]) -> Result<()> {
        if self.memory.names.iter().any(|n| n == name) {
            return Err(Error::InvalidInput(format!("class `{name}` added twice")));
        }
        let mut rows = Vec::with_capacity(batches.len());
        for taps in batches {
            rows.push(to_rows(patch_features(taps, self.memory.config.max_dim)?));
        }
        if rows.is_empty() {
            return Err(Error::InvalidInput(format!("class `{name}` has no training images")));
        }
        let rows = Tensor::cat(rows, 0);
        let [n, d] = rows.dims();
        if self.memory.dim != 0 && d != self.memory.dim {
            return Err(Error::InvalidInput(format!(
                "class `{name}`: patch features are {d}-d, earlier classes {}-d",
                self.memory.dim
            )));
        }
        let c = &self.memory.config;
        let k = coreset_size(n, c.coreset_ratio, c.max_bank_size);
        // Each class gets its own stream so adding a class does not change the others' banks.
        let seed = c.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(self.memory.names.len() as u64 + 1));
        let bank = if k == n {
            rows
        } else {
            let picks = greedy_coreset(rows.clone(), k, c.projection_dim, seed)?;
            let device = rows.device();
            rows.select(0, index_tensor::<B>(&picks, &device))
        };
        self.memory.push(name.to_string(), bank, n);
        Ok(())
    }

    /// The finished memory.
    pub fn build(self) -> Result<PatchMemory<B>> {
        if self.memory.names.is_empty() {
            return Err(Error::InvalidInput("no class was added".into()));
        }
        Ok(self.memory)
    }
}

fn index_tensor<B: Backend>(indices: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let v: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(v, [indices.len()]), device)
}

impl<B: Backend> PatchMemory<B> {
    fn push(&mut self, name: String, bank: Tensor<B, 2>, candidates: usize) {
        let [k, d] = bank.dims();
        self.dim = d;
        self.norms.push(bank.clone().square().sum_dim(1).reshape([1, k]));
        self.banks.push(bank);
        self.names.push(name);
        self.candidates.push(candidates);
    }

    /// Class names, in prompt-pool order.
    pub fn names(&self) -> &[String] {
        &self.names
    }
    /// Rows of each class's bank.
    pub fn sizes(&self) -> Vec<usize> {
        self.banks.iter().map(|b| b.dims()[0]).collect()
    }
    /// Training patches each bank was selected from.
    pub fn candidates(&self) -> &[usize] {
        &self.candidates
    }
    /// Width `D` of a patch feature.
    pub fn dim(&self) -> usize {
        self.dim
    }
    /// The configuration the banks were built with.
    pub fn config(&self) -> &MemoryConfig {
        &self.config
    }
    /// Bank of class `class`, `[k, D]`.
    pub fn bank(&self, class: usize) -> Option<&Tensor<B, 2>> {
        self.banks.get(class)
    }

    /// Distance of every patch of every image to its nearest row in the bank of that image's
    /// class: taps `[N, C_i, H_i, W_i]` ×3, `classes[i]` the class of image `i` → `[N, H8, W8]`.
    pub fn score(&self, taps: &[Tensor<B, 4>; 3], classes: &[usize]) -> Result<Tensor<B, 3>> {
        self.distances(patch_features(taps, self.config.max_dim)?, classes)
    }

    /// As [`score`](Self::score), from patch features `[N, D, H, W]` → `[N, H, W]`. Exact:
    /// `‖q − b‖² = ‖q‖² + ‖b‖² − 2 q·b` as matrix products on the backend (clamped at 0 against
    /// rounding), in blocks of at most `block_elements` query × bank pairs.
    pub fn distances(&self, features: Tensor<B, 4>, classes: &[usize]) -> Result<Tensor<B, 3>> {
        let [n, d, h, w] = features.dims();
        if n != classes.len() {
            return Err(Error::InvalidInput(format!("{n} images but {} classes", classes.len())));
        }
        if d != self.dim {
            return Err(Error::InvalidInput(format!("patch features are {d}-d, the memory holds {}-d", self.dim)));
        }
        if let Some(&bad) = classes.iter().find(|&&c| c >= self.banks.len()) {
            return Err(Error::InvalidInput(format!("class index {bad} out of range ({} classes)", self.banks.len())));
        }
        let device = features.device();
        let hw = h * w;
        // Images of one class share one product; the pieces are put back in input order.
        let mut order: Vec<usize> = Vec::with_capacity(n);
        let mut pieces = Vec::new();
        let mut seen = vec![false; self.banks.len()];
        for &c in classes {
            if std::mem::replace(&mut seen[c], true) {
                continue;
            }
            let idx: Vec<usize> = (0..n).filter(|&i| classes[i] == c).collect();
            let rows = to_rows(features.clone().select(0, index_tensor::<B>(&idx, &device)));
            pieces.push(self.nearest_rows(rows, c).reshape([idx.len(), hw]));
            order.extend(idx);
        }
        let stacked = Tensor::cat(pieces, 0);
        let mut inverse = vec![0usize; n];
        for (pos, &i) in order.iter().enumerate() {
            inverse[i] = pos;
        }
        Ok(stacked.select(0, index_tensor::<B>(&inverse, &device)).reshape([n, h, w]))
    }

    /// Nearest-neighbour distance `[m]` of query rows `[m, D]` in bank `class`.
    fn nearest_rows(&self, queries: Tensor<B, 2>, class: usize) -> Tensor<B, 1> {
        let [m, _] = queries.dims();
        let bank = &self.banks[class];
        let k = bank.dims()[0];
        let q_norm = queries.clone().square().sum_dim(1); // [m, 1]
        let rows_per_block = (self.config.block_elements / k.max(1)).clamp(1, m);
        let mut out = Vec::with_capacity(m.div_ceil(rows_per_block));
        for start in (0..m).step_by(rows_per_block) {
            let len = rows_per_block.min(m - start);
            // −2q once on the small query block, so the large [len, cl] product needs no
            // separate scaling pass.
            let q = queries.clone().narrow(0, start, len).mul_scalar(-2.0);
            let cols_per_block = (self.config.block_elements / len).clamp(1, k);
            let mut best: Option<Tensor<B, 2>> = None;
            for col in (0..k).step_by(cols_per_block) {
                let cl = cols_per_block.min(k - col);
                let b = bank.clone().narrow(0, col, cl);
                let d2 = q.clone().matmul(b.transpose()) + self.norms[class].clone().narrow(1, col, cl); // [len, cl]
                let nearest = d2.min_dim(1); // [len, 1]
                best = Some(match best {
                    None => nearest,
                    Some(prev) => prev.min_pair(nearest),
                });
            }
            let d2 = best.expect("k >= 1") + q_norm.clone().narrow(0, start, len);
            out.push(d2.clamp_min(0.0).sqrt().reshape([len]));
        }
        Tensor::cat(out, 0)
    }

    /// Saves the memory to one safetensors file, atomically: one float32 tensor
    /// `bank.<class>` `[k_c, D]` per class, metadata `format`, `dim`, `names` (the class
    /// order), `sizes`, `candidates`, `config` (JSON) besides `pnpt.kind` = `patch_memory`
    /// ([`pnpt_io::tensor_file`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: Vec<Entry> = self
            .names
            .iter()
            .zip(&self.banks)
            .map(|(name, b)| {
                Entry::f32(format!("bank.{name}"), b.dims().to_vec(), &b.to_data().iter::<f32>().collect::<Vec<f32>>())
            })
            .collect();
        tensor_file::write(path, MEMORY_KIND, &self.header(), &tensors)?;
        Ok(())
    }

    fn header(&self) -> Header {
        Header {
            format: FORMAT,
            dim: self.dim,
            names: self.names.clone(),
            sizes: self.sizes(),
            candidates: self.candidates.clone(),
            config: self.config.clone(),
        }
    }

    /// Loads a memory written by [`save`](Self::save) (or in the earlier container format,
    /// `PNPTMEM1`), checking every size and that every value is finite.
    pub fn load(path: &Path, device: &B::Device) -> Result<Self> {
        let bad = |reason: String| Error::Format { path: path.to_path_buf(), reason };
        let bytes = std::fs::read(path).map_err(|source| pnpt_io::Error::Io { path: path.to_path_buf(), source })?;
        let (header, banks): (Header, Vec<Vec<f32>>) = if bytes.starts_with(MAGIC) {
            let (header, blobs): (Header, Vec<Vec<u8>>) = parse_container(path, &bytes, MAGIC)?;
            let mut banks = Vec::with_capacity(blobs.len());
            for (i, blob) in blobs.iter().enumerate() {
                banks.push(bytes_to_f32(blob).ok_or_else(|| bad(format!("bank {i}: length not a multiple of 4")))?);
            }
            (header, banks)
        } else {
            let file = TensorFile::parse(path, bytes, MEMORY_KIND)?;
            let header: Header = file.header()?;
            let mut banks = Vec::with_capacity(header.names.len());
            for name in &header.names {
                banks.push(file.f32(&format!("bank.{name}"))?.1);
            }
            if file.names().count() != banks.len() {
                return Err(bad(format!("{} tensors for {} classes", file.names().count(), banks.len())));
            }
            (header, banks)
        };
        if header.format != FORMAT {
            return Err(bad(format!("format {} (this build reads {FORMAT})", header.format)));
        }
        let k = header.names.len();
        if k == 0 || header.sizes.len() != k || header.candidates.len() != k || banks.len() != k || header.dim == 0 {
            return Err(bad(format!(
                "{k} classes, {} sizes, {} banks, dim {}",
                header.sizes.len(),
                banks.len(),
                header.dim
            )));
        }
        header.config.validate().map_err(|e| bad(e.to_string()))?;
        let mut memory = PatchMemory {
            names: Vec::new(),
            banks: Vec::new(),
            norms: Vec::new(),
            candidates: Vec::new(),
            dim: header.dim,
            config: header.config,
        };
        for (i, values) in banks.into_iter().enumerate() {
            let rows = header.sizes[i];
            if rows == 0 || values.len() != rows * header.dim {
                return Err(bad(format!("bank {i}: {} values for {rows} rows of {}", values.len(), header.dim)));
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(bad(format!("bank {i} (`{}`) holds non-finite values", header.names[i])));
            }
            let bank = Tensor::<B, 2>::from_data(TensorData::new(values, [rows, header.dim]), device);
            memory.push(header.names[i].clone(), bank, header.candidates[i]);
        }
        Ok(memory)
    }
}
