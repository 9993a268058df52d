//! Tests of the tensor file format and of the prompt pool saved in it (kept apart from
//! `cs_npp.rs`, which is long enough).

use super::*;
use crate::{Distance, PoolBuilder, PromptPool};
use burn::backend::Flex;
use burn::tensor::Tensor;
use serde::Deserialize;

type B = Flex<f32>;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Header {
    names: Vec<String>,
    version: u32,
    note: Option<String>,
}

fn header() -> Header {
    Header { names: vec!["bottle".into(), "screw \"x\"".into()], version: 3, note: None }
}

fn sample() -> Vec<Entry> {
    vec![
        Entry::f32("weights.a", vec![2, 3], &[0.0, -1.5, 2.25, f32::MAX, 1e-7, 6.0]),
        Entry::bytes("record", vec![7, 0, 255]),
        Entry::f32("empty", vec![0, 4], &[]),
    ]
}

fn encoded() -> Vec<u8> {
    encode(Path::new("x.safetensors"), "test_kind", &header(), &sample()).unwrap()
}

fn parse(bytes: &[u8]) -> Result<TensorFile> {
    TensorFile::parse(Path::new("x.safetensors"), bytes.to_vec(), "test_kind")
}

#[test]
fn round_trip_keeps_header_tensors_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.safetensors");
    write(&path, "test_kind", &header(), &sample()).unwrap();
    // Written through a temporary name: nothing else is left in the folder.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    let file = TensorFile::read(&path, "test_kind").unwrap();
    assert_eq!(file.header::<Header>().unwrap(), header());
    assert_eq!(file.names().collect::<Vec<_>>(), ["empty", "record", "weights.a"]);
    let (shape, values) = file.f32("weights.a").unwrap();
    assert_eq!((shape, values), (vec![2, 3], vec![0.0, -1.5, 2.25, f32::MAX, 1e-7, 6.0]));
    assert_eq!(file.u8("record").unwrap(), [7, 0, 255]);
    assert_eq!(file.f32_shaped("empty", &[0, 4]).unwrap(), Vec::<f32>::new());
    // Written again from its entries and header, the file is the same to the byte.
    let again = encode(&path, "test_kind", &file.header::<Header>().unwrap(), &file.entries()).unwrap();
    assert_eq!(again, std::fs::read(&path).unwrap());
    // Each header field is its own metadata entry, as JSON text.
    let m = file.metadata();
    assert_eq!(m["names"], r#"["bottle","screw \"x\""]"#);
    assert_eq!(m["version"], "3");
    assert_eq!(m[KIND_KEY], "test_kind");
    assert_eq!(m[FORMAT_KEY], FORMAT.to_string());
    // Wrong dtype, shape or name are errors naming the file.
    for err in [
        file.u8("weights.a").unwrap_err(),
        file.f32_shaped("weights.a", &[3, 2]).unwrap_err(),
        file.f32("nope").unwrap_err(),
    ] {
        assert!(matches!(&err, Error::Format { path: p, .. } if *p == path), "{err}");
    }
}

#[test]
fn the_digest_is_the_sha256_of_the_file_with_its_value_zeroed() {
    let bytes = encoded();
    let file = parse(&bytes).unwrap();
    let digest = file.metadata()[DIGEST_KEY].clone();
    // Recomputed here by a plain search for the digits, independently of `digest_position`.
    let at = bytes.windows(64).position(|w| w == digest.as_bytes()).unwrap();
    assert_eq!(at, 40, "the digest opens the metadata");
    let mut zeroed = bytes.clone();
    zeroed[at..at + 64].fill(b'0');
    assert_eq!(sha256_hex(&zeroed), digest);
    assert_ne!(sha256_hex(&bytes), digest);
    // The header is padded so the data starts 8-aligned, as the Python library does.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert_eq!(n % 8, 0);
}

#[test]
fn any_flipped_bit_is_refused() {
    let bytes = encoded();
    // The `"pnpt.sha256":"<64 digits>"` entry itself: a flip there may break the entry (a
    // format error) rather than the digest.
    let key = bytes.windows(15).position(|w| w == b"\"pnpt.sha256\":\"").unwrap();
    let entry = key..key + 15 + 65;
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x04;
        match parse(&bad) {
            Ok(_) => panic!("byte {at} flipped and the file still parsed"),
            Err(Error::Checksum { .. }) => {}
            // The header length and the digest entry: a clear format error is right too.
            Err(Error::Format { .. }) if at < 8 || entry.contains(&at) => {}
            // A data offset raised past the end of the file reads as a cut file.
            Err(Error::Format { reason, .. }) if reason.starts_with("truncated (or damaged)") => {}
            Err(e) => panic!("byte {at} (header, data or metadata value): {e}"),
        }
    }
}

#[test]
fn truncated_or_foreign_files_are_clear_errors() {
    let bytes = encoded();
    for len in [0, 5, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        let err = parse(&bytes[..len]).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Format { .. }), "{len}: {text}");
        assert!(text.contains("truncated") || text.contains("too short"), "{len}: {text}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(parse(&longer).is_err());
    let err = TensorFile::parse(Path::new("x"), bytes.clone(), "prompt_pool").unwrap_err().to_string();
    assert!(err.contains("expected a prompt pool file, found a test kind"), "{err}");
    assert!(parse(b"PNPTPOOL\x02\0\0\0 some container").is_err());
    assert!(!looks_like_tensor_file(b"PNPTPOOL\x02\0\0\0"));
    assert!(looks_like_tensor_file(&bytes));
}

#[test]
fn bad_entries_are_refused_when_writing() {
    let p = Path::new("x");
    let wrong_len = Entry { name: "a".into(), dtype: Dtype::F32, shape: vec![2], bytes: vec![0; 4] };
    assert!(encode(p, "k", &header(), &[wrong_len]).is_err());
    let dup = [Entry::bytes("a", vec![1]), Entry::bytes("a", vec![2])];
    assert!(encode(p, "k", &header(), &dup).is_err());
    assert!(encode(p, "k", &vec![1, 2], &[]).is_err(), "a header must be an object");
}

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
        Err(Error::Checksum { path: p, .. }) => assert_eq!(p, path),
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
    let blob = |v: Vec<f32>| crate::io::f32_to_bytes(&v);
    let blobs = [
        blob(values(pool.codes())),
        blob(values(&pool.priors()[0])),
        blob(values(&pool.priors()[1])),
        blob(values(&pool.priors()[2])),
    ];
    let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prompt_pool.bin");
    crate::io::write_container(&path, b"PNPTPOOL", &header, &refs).unwrap();
    same_pool(&PromptPool::load(&path, &Default::default()).unwrap(), &pool);
    // The old container's own checksum still guards it.
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(PromptPool::<B>::load(&path, &Default::default()), Err(Error::Checksum { .. })));
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
