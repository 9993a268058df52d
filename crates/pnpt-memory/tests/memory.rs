//! Patch memory against hand-worked cases and brute-force references.

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor, TensorData};
use pnpt_io::tensor_file::{self, Entry, TensorFile};
use pnpt_memory::{MemoryBuilder, MemoryConfig, PatchMemory, greedy_coreset, patch_features};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type B = Flex<f32>;

fn host(t: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let [_, d] = t.dims();
    let v: Vec<f32> = t.into_data().iter::<f32>().collect();
    v.chunks(d).map(<[f32]>::to_vec).collect()
}

fn d2(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum()
}

fn random_rows(n: usize, d: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| (0..d).map(|_| rng.random_range(-1.0f32..1.0)).collect()).collect()
}

fn tensor(rows: &[Vec<f32>]) -> Tensor<B, 2> {
    let d = rows[0].len();
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [rows.len(), d]), &Default::default())
}

#[test]
fn coreset_picks_the_farthest_point_and_its_covering_radius_never_grows() {
    let rows = random_rows(300, 5, 1);
    let picks = greedy_coreset(tensor(&rows), 40, 0, 7).unwrap();
    assert_eq!(picks.len(), 40);
    let mut unique = picks.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 40, "no row is picked twice");
    let mut radius = f64::INFINITY;
    for j in 1..picks.len() {
        // Brute force: the row farthest from the rows picked before pick j.
        let nearest: Vec<f64> =
            rows.iter().map(|r| picks[..j].iter().map(|&p| d2(r, &rows[p])).fold(f64::INFINITY, f64::min)).collect();
        let far = nearest.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        assert!(
            (nearest[picks[j]] - far).abs() <= 1e-5 * far.max(1.0),
            "pick {j}: {} is not the farthest ({far})",
            nearest[picks[j]]
        );
        assert!(far <= radius + 1e-9, "covering radius grew at pick {j}: {far} > {radius}");
        radius = far;
    }
    // Same seed, same picks; another seed starts elsewhere.
    assert_eq!(greedy_coreset(tensor(&rows), 40, 0, 7).unwrap(), picks);
    assert_ne!(greedy_coreset(tensor(&rows), 40, 0, 8).unwrap()[0], picks[0]);
}

#[test]
fn coreset_in_a_projection_still_covers_the_set() {
    // 4 tight, far-apart clusters in 64-d: a 4-point coreset in an 8-d projection takes one
    // point of each cluster.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let centres =
        random_rows(4, 64, 9).into_iter().map(|c| c.iter().map(|v| v * 50.0).collect::<Vec<f32>>()).collect::<Vec<_>>();
    let rows: Vec<Vec<f32>> =
        (0..200).map(|i| centres[i % 4].iter().map(|v| v + rng.random_range(-0.1f32..0.1)).collect()).collect();
    let picks = greedy_coreset(tensor(&rows), 4, 8, 0).unwrap();
    let mut clusters: Vec<usize> = picks.iter().map(|p| p % 4).collect();
    clusters.sort();
    assert_eq!(clusters, vec![0, 1, 2, 3]);
}

#[test]
fn nearest_distances_equal_a_brute_force_loop() {
    let device = Default::default();
    // Build two classes from random taps; query with other random taps, small blocks so the
    // blocked path (several row and column blocks) is exercised.
    let taps = |n: usize, seed: u64| -> [Tensor<B, 4>; 3] {
        <B as burn::tensor::backend::Backend>::seed(&device, seed);
        [
            Tensor::random([n, 2, 8, 8], Distribution::Normal(0.0, 1.0), &device),
            Tensor::random([n, 3, 4, 4], Distribution::Normal(0.0, 1.0), &device),
            Tensor::random([n, 5, 2, 2], Distribution::Normal(0.0, 1.0), &device),
        ]
    };
    let config = MemoryConfig { coreset_ratio: 0.5, block_elements: 37, ..Default::default() };
    let mut builder = MemoryBuilder::<B>::new(config).unwrap();
    builder.add_class("a", &[taps(2, 1), taps(1, 2)]).unwrap();
    builder.add_class("b", &[taps(3, 3)]).unwrap();
    let memory = builder.build().unwrap();
    assert_eq!(memory.sizes(), vec![24, 24]); // 3 images × 16 patches × 0.5
    assert_eq!(memory.dim(), 8);
    let query = taps(3, 4);
    let classes = [1, 0, 1];
    let map = memory.score(&query, &classes).unwrap();
    assert_eq!(map.dims(), [3, 4, 4]);
    let got: Vec<f32> = map.into_data().iter::<f32>().collect();
    let feats = patch_features(&query, 1024).unwrap();
    let feats: Vec<f32> = feats.permute([0, 2, 3, 1]).into_data().iter::<f32>().collect();
    for (i, &c) in classes.iter().enumerate() {
        let bank = host(memory.bank(c).unwrap().clone());
        for p in 0..16 {
            let q = &feats[(i * 16 + p) * 8..(i * 16 + p + 1) * 8];
            let want = bank.iter().map(|b| d2(q, b)).fold(f64::INFINITY, f64::min).sqrt();
            let g = got[i * 16 + p] as f64;
            assert!((g - want).abs() <= 1e-4 * want.max(1.0), "image {i} patch {p}: {g} vs brute force {want}");
        }
    }
    // A training patch is in its own class's bank when everything is kept: distance 0.
    let mut builder = MemoryBuilder::<B>::new(MemoryConfig { coreset_ratio: 1.0, ..Default::default() }).unwrap();
    let train = taps(1, 5);
    builder.add_class("a", std::slice::from_ref(&train)).unwrap();
    let zero: Vec<f32> = builder.build().unwrap().score(&train, &[0]).unwrap().into_data().iter::<f32>().collect();
    assert!(zero.iter().all(|v| v.abs() < 2e-3), "{zero:?}");
}

#[test]
fn patch_features_average_neighbourhoods_and_upsample_the_coarse_tap() {
    let device = Default::default();
    // Stride-8 tap: ones on a 3×3 grid; stride-16 tap: [[0, 4]] on a 1×2 grid… use 2×2 → 4×4.
    let fine = Tensor::<B, 4>::ones([1, 1, 3, 3], &device);
    let coarse = Tensor::<B, 4>::from_data(TensorData::new(vec![0.0f32, 9.0, 9.0, 18.0], [1, 1, 2, 2]), &device);
    let unused = Tensor::<B, 4>::zeros([1, 1, 6, 6], &device);
    // 3×3 averaging with zero padding counted: corner 4/9, edge 6/9, centre 1.
    let f = patch_features(&[unused.clone(), fine, Tensor::zeros([1, 1, 3, 3], &device)], 1024).unwrap();
    let v: Vec<f32> = f.narrow(1, 0, 1).into_data().iter::<f32>().collect();
    let want = [4.0, 6.0, 4.0, 6.0, 9.0, 6.0, 4.0, 6.0, 4.0].map(|x| x / 9.0);
    for (g, w) in v.iter().zip(want) {
        assert!((g - w).abs() < 1e-6, "{v:?}");
    }
    // Coarse 2×2 averaged (every 3×3 window covers all four values: 36/9 = 4) then upsampled
    // to the 4×4 grid of a [1, 1, 4, 4] fine tap: constant 4.
    let f = patch_features(&[unused, Tensor::zeros([1, 1, 4, 4], &device), coarse], 1024).unwrap();
    assert_eq!(f.dims(), [1, 2, 4, 4]);
    let v: Vec<f32> = f.narrow(1, 1, 1).into_data().iter::<f32>().collect();
    assert!(v.iter().all(|x| (x - 4.0).abs() < 1e-5), "{v:?}");
    // Channel reduction: 2 + 2 channels of constants 1, 3, 5, 7 reduced to 2 → means 2 and 6.
    let c = |vals: [f32; 2], s: usize| {
        let data: Vec<f32> = vals.iter().flat_map(|&x| std::iter::repeat_n(x, s * s)).collect();
        Tensor::<B, 4>::from_data(TensorData::new(data, [1, 2, s, s]), &device)
    };
    let f = patch_features(&[Tensor::zeros([1, 1, 4, 4], &device), c([1.0, 3.0], 3), c([5.0, 7.0], 3)], 2).unwrap();
    assert_eq!(f.dims(), [1, 2, 3, 3]);
    // Centre position (full 3×3 window): 1,3,5,7 → pooled pairs 2 and 6.
    let v: Vec<f32> = f.permute([0, 2, 3, 1]).into_data().iter::<f32>().collect();
    assert!((v[4 * 2] - 2.0).abs() < 1e-5 && (v[4 * 2 + 1] - 6.0).abs() < 1e-5, "{v:?}");
}

#[test]
fn memory_round_trips_and_rejects_damaged_files() {
    let device = Default::default();
    let taps: [Tensor<B, 4>; 3] = [
        Tensor::random([2, 2, 8, 8], Distribution::Normal(0.0, 1.0), &device),
        Tensor::random([2, 3, 4, 4], Distribution::Normal(0.0, 1.0), &device),
        Tensor::random([2, 5, 2, 2], Distribution::Normal(0.0, 1.0), &device),
    ];
    let mut builder = MemoryBuilder::<B>::new(MemoryConfig::default()).unwrap();
    builder.add_class("a", std::slice::from_ref(&taps)).unwrap();
    assert!(builder.add_class("a", std::slice::from_ref(&taps)).is_err(), "a class added twice is an error");
    let memory = builder.build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("memory.bin");
    memory.save(&path).unwrap();
    let back = PatchMemory::<B>::load(&path, &device).unwrap();
    assert_eq!((back.names(), back.sizes(), back.dim()), (memory.names(), memory.sizes(), memory.dim()));
    assert_eq!(host(back.bank(0).unwrap().clone()), host(memory.bank(0).unwrap().clone()));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
    assert!(PatchMemory::<B>::load(&path, &device).is_err(), "truncated file");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 2] ^= 0x10;
    std::fs::write(&path, &flipped).unwrap();
    let err = PatchMemory::<B>::load(&path, &device).unwrap_err();
    assert!(matches!(err, pnpt_memory::Error::File(pnpt_io::Error::Checksum { .. })), "{err}");
    // A NaN written by a buggy writer (with a checksum that matches it) is still refused: the
    // file is rewritten with one value NaN and a fresh digest.
    std::fs::write(&path, &bytes).unwrap();
    let file = TensorFile::read(&path, "patch_memory").unwrap();
    let header: serde_json::Value = file.header().unwrap();
    let (shape, mut values) = file.f32("bank.a").unwrap();
    *values.last_mut().unwrap() = f32::NAN;
    tensor_file::write(&path, "patch_memory", &header, &[Entry::f32("bank.a", shape, &values)]).unwrap();
    let err = PatchMemory::<B>::load(&path, &device).unwrap_err();
    assert!(err.to_string().contains("non-finite"), "{err}");
    // Wrong class index and wrong width are errors, not panics.
    assert!(memory.score(&taps, &[0, 1]).is_err());
    assert!(memory.distances(Tensor::zeros([1, 3, 2, 2], &device), &[0]).is_err());
    assert!(MemoryBuilder::<B>::new(MemoryConfig { coreset_ratio: 0.0, ..Default::default() }).is_err());
}
