//! Tests of the tensor file format (the artefacts saved in it are tested by the crates that
//! save them: pool, memory, model, checkpoint).

use super::*;
use serde::Deserialize;

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

#[test]
fn python_reads_what_rust_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.safetensors");
    write(&path, "test_kind", &header(), &sample()).unwrap();
    let Some(v) = read_with_python(&path).unwrap() else {
        eprintln!("SKIPPED: python3 is not available, the independent reader did not run");
        return;
    };
    assert_eq!(v["digest_ok"], true);
    assert_eq!(v["metadata"][KIND_KEY], "test_kind");
    let t = &v["tensors"]["weights.a"];
    assert_eq!(t["dtype"], "F32");
    assert_eq!(serde_json::from_value::<Vec<usize>>(t["shape"].clone()).unwrap(), [2, 3]);
    // Python's floats are the exact float32 values widened, so equality is exact.
    let got: Vec<f32> = t["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    assert_eq!(got, [0.0, -1.5, 2.25, f32::MAX, 1e-7, 6.0]);
}
