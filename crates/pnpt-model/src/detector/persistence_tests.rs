//! Detector folders: safetensors round trip, the file's own digest and truncation, folders of
//! earlier formats (`model.mpk`, `prompt_pool.bin`, `patch_memory.bin`, manifest format 4),
//! and `model.safetensors` read by an independent Python reader.

use super::*;
use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use pnpt_memory::{MemoryBuilder, MemoryConfig};
use pnpt_prompt::PoolBuilder;

type B = Flex<f32>;

fn tiny() -> Detector<B> {
    let device = Default::default();
    let mut cfg = PnptConfig::cpu();
    cfg.input_size = 32;
    cfg.model.hidden = 16;
    cfg.model.heads = 2;
    cfg.model.layers = 1;
    cfg.model.semantic_tokens = 2;
    cfg.scoring.method = ScoringMethod::Pnpt;
    cfg.scoring.positional = false;
    let spec = cfg.feature_spec();
    let taps = |n: usize| -> [Tensor<B, 4>; 3] {
        [0, 1, 2].map(|i| {
            let [h, w] = spec.sizes[i];
            Tensor::random([n, spec.channels[i], h, w], Distribution::Normal(0.0, 1.0), &device)
        })
    };
    let mut pool = PoolBuilder::<B>::new();
    let mut memory = MemoryBuilder::<B>::new(MemoryConfig::default()).unwrap();
    for name in ["bottle", "screw"] {
        let t = taps(2);
        pool.add(name, &t).unwrap();
        memory.add_class(name, &[t]).unwrap();
    }
    let pool = pool.build(cfg.distance).unwrap();
    let model = Pnpt::<B>::new(&cfg.model, spec, &device).unwrap();
    let backbone = Backbone::<B>::load(cfg.backbone, None, &device).unwrap();
    let detector = Detector::new(cfg, backbone, pool, model, Thresholds::default()).unwrap();
    detector.with_memory(memory.build().unwrap()).unwrap()
}

fn values<const D: usize>(t: &burn::tensor::Tensor<B, D>) -> Vec<f32> {
    t.to_data().iter::<f32>().collect()
}

fn weights(d: &Detector<B>) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    model_entries(d.model(), "", Path::new("-")).unwrap().into_iter().map(|e| (e.name, e.shape, e.bytes)).collect()
}

fn same(a: &Detector<B>, b: &Detector<B>) {
    assert_eq!(weights(a), weights(b));
    assert_eq!(a.categories(), b.categories());
    assert_eq!(values(a.pool().codes()), values(b.pool().codes()));
    for s in 0..3 {
        assert_eq!(values(&a.pool().priors()[s]), values(&b.pool().priors()[s]));
    }
    let (ma, mb) = (a.memory().unwrap(), b.memory().unwrap());
    assert_eq!(ma.sizes(), mb.sizes());
    for c in 0..ma.names().len() {
        assert_eq!(values(ma.bank(c).unwrap()), values(mb.bank(c).unwrap()));
    }
}

fn set_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(files::MANIFEST);
    let mut manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&path, manifest.to_string()).unwrap();
}

#[test]
fn saves_safetensors_and_loads_them_back() {
    let detector = tiny();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("detector");
    detector.save(&dir).unwrap();
    for f in [files::MODEL, files::POOL, files::MEMORY] {
        assert!(looks_like_tensor_file(&std::fs::read(dir.join(f)).unwrap()), "{f}");
    }
    for f in [files::legacy::MODEL, files::legacy::POOL, files::legacy::MEMORY] {
        assert!(!dir.join(f).exists(), "{f}");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(files::MANIFEST)).unwrap()).unwrap();
    assert_eq!(manifest["format"], FORMAT);
    let loaded = Detector::<B>::load(&dir, &Default::default()).unwrap();
    same(&loaded, &detector);
    let file = TensorFile::read(&dir.join(files::MODEL), MODEL_KIND).unwrap();
    let header: ModelFileHeader = file.header().unwrap();
    assert_eq!((header.num_params, &header.model), (detector.model().num_params(), &detector.config().model));
    assert_eq!(file.names().count(), weights(&detector).len());

    // The file's own digest guards it where the manifest does not (format 2 has no checksums).
    set_manifest(&dir, |m| m["format"] = 2.into());
    let path = dir.join(files::MODEL);
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    let at = good.len() - 3;
    bad[at] ^= 0x01;
    std::fs::write(&path, &bad).unwrap();
    match Detector::<B>::load(&dir, &Default::default()) {
        Err(Error::File(pnpt_io::Error::Checksum { path: p, .. })) => assert_eq!(p, path),
        other => panic!("flipped weight: {:?}", other.map(|_| "loaded")),
    }
    std::fs::write(&path, &good[..good.len() - 8]).unwrap();
    let err = Detector::<B>::load(&dir, &Default::default()).err().unwrap().to_string();
    assert!(err.contains("truncated") && err.contains(files::MODEL), "{err}");
    // Weights of another architecture under a matching manifest: a mismatch naming them.
    let mut cfg = detector.config().clone();
    cfg.model.layers = 2;
    let bigger = Pnpt::<B>::new(&cfg.model, cfg.feature_spec(), &Default::default()).unwrap();
    let model_header = ModelFileHeader { num_params: 0, model: cfg.model.clone(), feature_spec: cfg.feature_spec() };
    tensor_file::write(&path, MODEL_KIND, &model_header, &model_entries(&bigger, "", &path).unwrap()).unwrap();
    let err = Detector::<B>::load(&dir, &Default::default()).err().unwrap().to_string();
    assert!(err.contains("another structure") && err.contains("unexpected layers.1."), "{err}");
}

#[test]
fn folders_of_earlier_formats_still_load() {
    let detector = tiny();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("old");
    detector.save(&dir).unwrap();
    // Rewrite the three tensor files as format 4 wrote them: the model as a Burn named
    // MessagePack record, the pool and memory in the pnpt container; then the manifest's
    // checksums under the old names.
    let record = Recorder::<B>::record(
        &NamedMpkBytesRecorder::<FullPrecisionSettings>::default(),
        detector.model().clone().into_record(),
        (),
    )
    .unwrap();
    std::fs::write(dir.join(files::legacy::MODEL), record).unwrap();
    let pool = detector.pool();
    let pool_header = serde_json::json!({
        "names": pool.names(), "counts": pool.counts(), "distance": pool.distance(), "shapes": pool.shapes(),
    });
    let blobs: Vec<Vec<u8>> = std::iter::once(values(pool.codes()))
        .chain(pool.priors().iter().map(values))
        .map(|v| pnpt_io::f32_to_bytes(&v))
        .collect();
    let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
    pnpt_io::container::write_container(&dir.join(files::legacy::POOL), b"PNPTPOOL", &pool_header, &refs).unwrap();
    let memory = detector.memory().unwrap();
    let memory_header = serde_json::json!({
        "format": 1, "dim": memory.dim(), "names": memory.names(), "sizes": memory.sizes(),
        "candidates": memory.candidates(), "config": memory.config(),
    });
    let blobs: Vec<Vec<u8>> =
        (0..memory.names().len()).map(|c| pnpt_io::f32_to_bytes(&values(memory.bank(c).unwrap()))).collect();
    let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
    pnpt_io::container::write_container(&dir.join(files::legacy::MEMORY), b"PNPTMEM1", &memory_header, &refs).unwrap();
    for f in [files::MODEL, files::POOL, files::MEMORY] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    set_manifest(&dir, |m| {
        m["format"] = 4.into();
        let sums = m["checksums"].as_object_mut().unwrap();
        for (new, old) in [
            (files::MODEL, files::legacy::MODEL),
            (files::POOL, files::legacy::POOL),
            (files::MEMORY, files::legacy::MEMORY),
        ] {
            sums.remove(new);
            sums.insert(old.into(), sha256_hex(&std::fs::read(dir.join(old)).unwrap()).into());
        }
    });
    let loaded = Detector::<B>::load(&dir, &Default::default()).unwrap();
    same(&loaded, &detector);
    // The old files' checksums in the manifest are still checked.
    let path = dir.join(files::legacy::MODEL);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x08;
    std::fs::write(&path, &bytes).unwrap();
    match Detector::<B>::load(&dir, &Default::default()) {
        Err(Error::File(pnpt_io::Error::Checksum { path: p, .. })) => assert_eq!(p, path),
        other => panic!("flipped byte in model.mpk: {:?}", other.map(|_| "loaded")),
    }
    // Saving the loaded detector writes the current format in place of the old files.
    let dir2 = parent.path().join("resaved");
    loaded.save(&dir2).unwrap();
    assert!(dir2.join(files::MODEL).is_file() && !dir2.join(files::legacy::MODEL).exists());
}

#[test]
fn python_reads_the_model_weights() {
    let detector = tiny();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("detector");
    detector.save(&dir).unwrap();
    let Some(v) = pnpt_io::tensor_file::read_with_python(dir.join(files::MODEL)).unwrap() else {
        eprintln!("SKIPPED: python3 is not available, the independent reader did not run");
        return;
    };
    assert_eq!(v["digest_ok"], true);
    assert_eq!(v["metadata"]["pnpt.kind"], MODEL_KIND);
    assert_eq!(v["metadata"]["num_params"], detector.model().num_params().to_string());
    let weights = weights(&detector);
    assert_eq!(v["tensors"].as_object().unwrap().len(), weights.len());
    let mut total = 0;
    for (name, shape, bytes) in weights {
        let t = &v["tensors"][&name];
        assert_eq!(t["shape"], serde_json::json!(shape), "{name}");
        let got: Vec<f32> = t["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert_eq!(got, pnpt_io::bytes_to_f32(&bytes).unwrap(), "{name}");
        total += got.len();
    }
    assert_eq!(total, detector.model().num_params());
}
