//! Helpers shared by the backbone tests: golden-data location, `.npy` input, a `.pth` dump and
//! a minimal safetensors writer (to build malformed checkpoints).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};

pub type B = Flex<f32>;

/// `shared/golden`, or `None` (after printing why) when the shared folder is absent.
pub fn golden_dir() -> Option<PathBuf> {
    let shared = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared"));
    if !shared.is_dir() {
        eprintln!("SKIP: {} is missing (no shared data in this checkout)", shared.display());
        return None;
    }
    Some(shared.join("golden"))
}

/// Reads a little-endian float32 C-order `.npy` file.
pub fn read_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    pnpt_io::npy::read::<f32>(path).unwrap_or_else(|e| panic!("{e}"))
}

pub fn npy_tensor(path: &Path) -> Tensor<B, 4> {
    let (shape, data) = read_npy(path);
    let shape: [usize; 4] = shape.try_into().expect("rank 4");
    Tensor::from_data(TensorData::new(data, shape), &Default::default())
}

/// max |a − b| / max |b|, with shapes asserted equal.
pub fn rel_max_err(got: &Tensor<B, 4>, want: &Tensor<B, 4>) -> f32 {
    assert_eq!(got.dims(), want.dims(), "shape");
    let diff: f32 = (got.clone() - want.clone()).abs().max().into_scalar();
    let scale: f32 = want.clone().abs().max().into_scalar();
    diff / scale
}

/// All tensors of a torchvision `.pth` as (shape, f32 values).
pub fn read_pth(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let reader = burn_store::pytorch::PytorchReader::new(path).unwrap();
    reader
        .into_tensors()
        .into_iter()
        .map(|(k, snap)| {
            let data = snap.to_data().unwrap();
            (k, (snap.shape.to_vec(), data.iter::<f32>().collect()))
        })
        .collect()
}

/// Writes a safetensors file (all tensors F32).
pub fn write_safetensors(path: &Path, tensors: &BTreeMap<String, (Vec<usize>, Vec<f32>)>) {
    let mut header = String::from("{");
    let mut offset = 0usize;
    let mut body = Vec::new();
    for (i, (name, (shape, data))) in tensors.iter().enumerate() {
        let end = offset + data.len() * 4;
        if i > 0 {
            header.push(',');
        }
        header.push_str(&format!(
            "\"{name}\":{{\"dtype\":\"F32\",\"shape\":{shape:?},\"data_offsets\":[{offset},{end}]}}"
        ));
        body.extend(data.iter().flat_map(|v| v.to_le_bytes()));
        offset = end;
    }
    header.push('}');
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.as_bytes());
    out.extend(body);
    std::fs::write(path, out).unwrap();
}
