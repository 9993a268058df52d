//! A prompt pool on disk: one safetensors file ([`pnpt_io::tensor_file`]), or, when loading, the
//! container format of earlier versions ([`pnpt_io::container`]).

use std::path::Path;

use burn::tensor::{Tensor, TensorData, backend::Backend};
use serde::{Deserialize, Serialize};

use super::{Distance, PromptPool};
use pnpt_io::bytes_to_f32;
use pnpt_io::container::parse_container;
use pnpt_io::tensor_file::{self, Entry, TensorFile};

use crate::{Error, Result};

/// Magic of the pool in the earlier container format (still read).
const MAGIC: &[u8; 8] = b"PNPTPOOL";
/// `pnpt.kind` of a pool's tensor file.
pub const POOL_KIND: &str = "prompt_pool";

#[derive(Serialize, Deserialize)]
struct PoolHeader {
    names: Vec<String>,
    counts: Vec<usize>,
    distance: Distance,
    shapes: [[usize; 3]; 3],
}

impl<B: Backend> PromptPool<B> {
    /// Saves the pool to one safetensors file, atomically: tensors `codes` `[K, C_1 + C_2 +
    /// C_3]` and `prior.0`, `prior.1`, `prior.2` `[K, C_i, H_i, W_i]` (float32), metadata
    /// `names`, `counts`, `distance`, `shapes` (JSON) besides `pnpt.kind` = `prompt_pool`
    /// ([`pnpt_io::tensor_file`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        let header = PoolHeader {
            names: self.names.clone(),
            counts: self.counts.clone(),
            distance: self.distance,
            shapes: self.shapes(),
        };
        let entry = |name: String, t: TensorData| {
            let shape = t.shape.clone();
            Entry::f32(name, shape.to_vec(), &t.iter::<f32>().collect::<Vec<f32>>())
        };
        let mut tensors = vec![entry("codes".into(), self.codes.to_data())];
        for (s, prior) in self.priors.iter().enumerate() {
            tensors.push(entry(format!("prior.{s}"), prior.to_data()));
        }
        Ok(tensor_file::write(path, POOL_KIND, &header, &tensors)?)
    }

    /// Loads a pool written by [`save`](Self::save) onto `device`; a pool in the earlier
    /// container format (`PNPTPOOL`, saved by earlier versions) loads too.
    pub fn load(path: &Path, device: &B::Device) -> Result<Self> {
        let bad = |reason: String| Error::File(pnpt_io::Error::Format { path: path.to_path_buf(), reason });
        let bytes = std::fs::read(path).map_err(|source| pnpt_io::Error::Io { path: path.to_path_buf(), source })?;
        let (header, values): (PoolHeader, [Vec<f32>; 4]) = if bytes.starts_with(MAGIC) {
            let (header, blobs): (PoolHeader, _) = parse_container(path, &bytes, MAGIC)?;
            if blobs.len() != 4 {
                return Err(bad(format!("expected 4 tensors, found {}", blobs.len())));
            }
            let mut values = Vec::with_capacity(4);
            for (i, blob) in blobs.iter().enumerate() {
                values.push(bytes_to_f32(blob).ok_or_else(|| bad(format!("tensor {i}: length not a multiple of 4")))?);
            }
            (header, values.try_into().expect("four tensors"))
        } else {
            let file = TensorFile::parse(path, bytes, POOL_KIND)?;
            let header: PoolHeader = file.header()?;
            let mut values = vec![file.f32("codes")?.1];
            for s in 0..3 {
                values.push(file.f32(&format!("prior.{s}"))?.1);
            }
            (header, values.try_into().expect("four tensors"))
        };
        let k = header.names.len();
        if k == 0 || header.counts.len() != k {
            return Err(bad(format!("{k} names but {} counts", header.counts.len())));
        }
        let code_dim: usize = header.shapes.iter().map(|s| s[0]).sum();
        let [codes, p0, p1, p2] = values;
        let tensor = |i: usize, values: Vec<f32>, shape: Vec<usize>| -> Result<TensorData> {
            let want: usize = shape.iter().product();
            if values.len() != want {
                return Err(bad(format!("tensor {i}: {} values, shape {shape:?} needs {want}", values.len())));
            }
            Ok(TensorData::new(values, shape))
        };
        let codes = Tensor::<B, 2>::from_data(tensor(0, codes, vec![k, code_dim])?, device);
        let mut priors = Vec::with_capacity(3);
        for (s, values) in [p0, p1, p2].into_iter().enumerate() {
            let [c, h, w] = header.shapes[s];
            priors.push(Tensor::<B, 4>::from_data(tensor(s + 1, values, vec![k, c, h, w])?, device));
        }
        let priors: [Tensor<B, 4>; 3] = priors.try_into().expect("three scales");
        Ok(Self { names: header.names, counts: header.counts, codes, priors, distance: header.distance })
    }
}

#[cfg(test)]
#[path = "pool_file_tests.rs"]
mod tests;
