//! The saved patch memory: its safetensors layout read by an independent Python reader, and
//! files in the earlier container format (saved by earlier versions) still loading.

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use pnpt_memory::{MemoryBuilder, MemoryConfig, PatchMemory};

type B = Flex<f32>;

fn memory() -> PatchMemory<B> {
    let device = Default::default();
    let taps = |n: usize| -> [Tensor<B, 4>; 3] {
        [
            Tensor::random([n, 2, 8, 8], Distribution::Normal(0.0, 1.0), &device),
            Tensor::random([n, 3, 4, 4], Distribution::Normal(0.0, 1.0), &device),
            Tensor::random([n, 5, 2, 2], Distribution::Normal(0.0, 1.0), &device),
        ]
    };
    let mut builder = MemoryBuilder::<B>::new(MemoryConfig { coreset_ratio: 0.5, ..Default::default() }).unwrap();
    builder.add_class("bottle", &[taps(2)]).unwrap();
    builder.add_class("metal nut", &[taps(1), taps(1)]).unwrap();
    builder.build().unwrap()
}

fn values(t: &Tensor<B, 2>) -> Vec<f32> {
    t.to_data().iter::<f32>().collect()
}

fn same(a: &PatchMemory<B>, b: &PatchMemory<B>) {
    assert_eq!((a.names(), a.sizes(), a.candidates(), a.dim()), (b.names(), b.sizes(), b.candidates(), b.dim()));
    assert_eq!(a.config(), b.config());
    for c in 0..a.names().len() {
        assert_eq!(values(a.bank(c).unwrap()), values(b.bank(c).unwrap()));
    }
}

#[test]
fn python_reads_the_saved_banks() {
    let memory = memory();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("patch_memory.safetensors");
    memory.save(&path).unwrap();
    same(&PatchMemory::load(&path, &Default::default()).unwrap(), &memory);
    let Some(v) = pnpt_io::tensor_file::read_with_python(&path).unwrap() else {
        eprintln!("SKIPPED: python3 is not available, the independent reader did not run");
        return;
    };
    assert_eq!(v["digest_ok"], true);
    assert_eq!(v["metadata"]["pnpt.kind"], "patch_memory");
    let names: Vec<String> = serde_json::from_str(v["metadata"]["names"].as_str().unwrap()).unwrap();
    assert_eq!(names, memory.names());
    for (c, name) in names.iter().enumerate() {
        let t = &v["tensors"][format!("bank.{name}")];
        let bank = memory.bank(c).unwrap();
        assert_eq!(t["shape"], serde_json::json!(bank.dims()), "{name}");
        let got: Vec<f32> = t["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert_eq!(got, values(bank), "{name}");
    }
}

#[test]
fn memory_in_the_earlier_container_format_still_loads() {
    // Written as version 0.1's `PatchMemory::save` did: magic PNPTMEM1, the JSON header, one
    // float32 blob per bank.
    let memory = memory();
    let header = serde_json::json!({
        "format": 1,
        "dim": memory.dim(),
        "names": memory.names(),
        "sizes": memory.sizes(),
        "candidates": memory.candidates(),
        "config": memory.config(),
    });
    let blobs: Vec<Vec<u8>> =
        (0..memory.names().len()).map(|c| pnpt_io::f32_to_bytes(&values(memory.bank(c).unwrap()))).collect();
    let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("patch_memory.bin");
    pnpt_io::container::write_container(&path, b"PNPTMEM1", &header, &refs).unwrap();
    same(&PatchMemory::load(&path, &Default::default()).unwrap(), &memory);
    // A memory file given where a pool is expected names both kinds.
    let path = dir.path().join("patch_memory.safetensors");
    memory.save(&path).unwrap();
    let err = pnpt_io::tensor_file::TensorFile::read(&path, "prompt_pool").unwrap_err().to_string();
    assert!(err.contains("expected a prompt pool file, found a patch memory"), "{err}");
}
