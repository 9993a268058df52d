//! Tests of the prompt pool saved as a tensor file (kept apart from `cs_npp.rs`, which is long
//! enough); the format itself is tested in pnpt-io.

use std::path::Path;

use burn::backend::Flex;
use burn::tensor::Tensor;
use pnpt_io::tensor_file::read_with_python;

use crate::{Distance, Error, PoolBuilder, PromptPool};

type B = Flex<f32>;

fn pool() -> PromptPool<B> {
    let device = Default::default();
    let feats = |v: f32, n: usize| -> [Tensor<B, 4>; 3] {
        [
            Tensor::<B, 1, burn::tensor::Int>::arange(0..(n * 2 * 4 * 4) as i64, &device)
                .float()
                .reshape([n, 2, 4, 4])
                .add_scalar(v),
            Tensor::full([n, 3, 2, 2], v * 2.0, &device),
            Tensor::full([n, 1, 1, 1], -v, &device),
        ]
    };
    let mut b = PoolBuilder::<B>::new();
    b.add("bottle", &feats(0.25, 2)).unwrap();
    b.add("screw", &feats(7.0, 1)).unwrap();
    b.build(Distance::Cosine).unwrap()
}

fn values<const D: usize>(t: &Tensor<B, D>) -> Vec<f32> {
    t.to_data().iter::<f32>().collect()
}

fn same_pool(a: &PromptPool<B>, b: &PromptPool<B>) {
    assert_eq!((a.names(), a.counts(), a.distance()), (b.names(), b.counts(), b.distance()));
    assert_eq!(values(a.codes()), values(b.codes()));
    for s in 0..3 {
        assert_eq!(values(&a.priors()[s]), values(&b.priors()[s]));
        assert_eq!(a.priors()[s].dims(), b.priors()[s].dims());
    }
}

#[test]
fn pool_round_trips_and_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prompt_pool.safetensors");
    let pool = pool();
    pool.save(&path).unwrap();
    same_pool(&PromptPool::load(&path, &Default::default()).unwrap(), &pool);
    let bytes = std::fs::read(&path).unwrap();
    let mut bad = bytes.clone();
    let at = bytes.len() - 10;
    bad[at] ^= 0x10;
    std::fs::write(&path, &bad).unwrap();
    match PromptPool::<B>::load(&path, &Default::default()) {
        Err(Error::File(pnpt_io::Error::Checksum { path: p, .. })) => assert_eq!(p, path),
        other => panic!("{other:?}"),
    }
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = PromptPool::<B>::load(&path, &Default::default()).unwrap_err().to_string();
    assert!(err.contains("truncated") && err.contains("prompt_pool.safetensors"), "{err}");
}

#[test]
fn pool_in_the_earlier_container_format_still_loads() {
    // Written exactly as version 0.1's `PromptPool::save` did: magic PNPTPOOL, the JSON header,
    // then codes and the three priors as float32 blobs.
    let pool = pool();
    let header = serde_json::json!({
        "names": pool.names(), "counts": pool.counts(), "distance": "cosine", "shapes": pool.shapes(),
    });
    let blob = |v: Vec<f32>| pnpt_io::f32_to_bytes(&v);
    let blobs = [
        blob(values(pool.codes())),
        blob(values(&pool.priors()[0])),
        blob(values(&pool.priors()[1])),
        blob(values(&pool.priors()[2])),
    ];
    let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prompt_pool.bin");
    pnpt_io::container::write_container(&path, b"PNPTPOOL", &header, &refs).unwrap();
    same_pool(&PromptPool::load(&path, &Default::default()).unwrap(), &pool);
    // The old container's own checksum still guards it.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        PromptPool::<B>::load(&path, &Default::default()),
        Err(Error::File(pnpt_io::Error::Checksum { .. }))
    ));
}

/// [`read_with_python`] (Python's `json`, `struct` and `hashlib` following the safetensors
/// specification: no code shared with this crate); `None` (with a message) without python3.
fn python(path: &Path) -> Option<serde_json::Value> {
    let read = read_with_python(path).unwrap();
    if read.is_none() {
        eprintln!("SKIPPED: python3 is not available, the independent reader did not run");
    }
    read
}

#[test]
fn python_reads_a_saved_pool() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prompt_pool.safetensors");
    let pool = pool();
    pool.save(&path).unwrap();
    let Some(v) = python(&path) else { return };
    assert_eq!(v["digest_ok"], true);
    assert_eq!(v["metadata"]["pnpt.kind"], "prompt_pool");
    let names: Vec<String> = serde_json::from_str(v["metadata"]["names"].as_str().unwrap()).unwrap();
    assert_eq!(names, pool.names());
    assert_eq!(v["metadata"]["distance"], "\"cosine\"");
    let check = |name: &str, dims: Vec<usize>, want: Vec<f32>| {
        let t = &v["tensors"][name];
        assert_eq!(t["dtype"], "F32", "{name}");
        assert_eq!(serde_json::from_value::<Vec<usize>>(t["shape"].clone()).unwrap(), dims, "{name}");
        // Python's floats are the exact float32 values widened, so equality is exact.
        let got: Vec<f32> = t["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert_eq!(got, want, "{name}");
    };
    check("codes", pool.codes().dims().to_vec(), values(pool.codes()));
    for s in 0..3 {
        check(&format!("prior.{s}"), pool.priors()[s].dims().to_vec(), values(&pool.priors()[s]));
    }
    assert_eq!(v["tensors"].as_object().unwrap().len(), 4);
}
