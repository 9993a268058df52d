//! CS-NPP (the paper's prompting pool): class-mean normality features, class-mean global codings, and
//! retrieval of the nearest class for an unlabeled image.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

// Saving and loading (safetensors, and the earlier container), beside the pool's fields.
#[path = "pool_file.rs"]
mod file;
pub use file::POOL_KIND;

/// Distance between global codings used for retrieval (the paper leaves it open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    /// Squared Euclidean distance (the reference run's choice; same ranking as Euclidean).
    #[default]
    Euclidean,
    /// `1 - cos` of the two codings (scale-invariant).
    Cosine,
}

impl fmt::Display for Distance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Distance::Euclidean => "euclidean",
            Distance::Cosine => "cosine",
        })
    }
}

impl FromStr for Distance {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "euclidean" | "l2" => Ok(Distance::Euclidean),
            "cosine" | "cos" => Ok(Distance::Cosine),
            other => Err(Error::InvalidInput(format!("unknown distance `{other}`: expected euclidean or cosine"))),
        }
    }
}

/// Global coding `g(x)` (CS-NPP): global average pooling of each scale, concatenated.
///
/// `[n, C_i, H_i, W_i]` ×3 → `[n, C_1 + C_2 + C_3]`.
pub fn global_code<B: Backend>(feats: &[Tensor<B, 4>; 3]) -> Tensor<B, 2> {
    let pooled: Vec<Tensor<B, 2>> = feats
        .iter()
        .map(|t| {
            let [n, c, _, _] = t.dims();
            t.clone().flatten::<3>(2, 3).mean_dim(2).reshape([n, c])
        })
        .collect();
    Tensor::cat(pooled, 1)
}

fn chw(t: &Tensor<impl Backend, 4>) -> [usize; 3] {
    let [_, c, h, w] = t.dims();
    [c, h, w]
}

fn check_batch<B: Backend>(
    category: &str,
    feats: &[Tensor<B, 4>; 3],
    expected: Option<&[[usize; 3]; 3]>,
) -> Result<usize> {
    let n = feats[0].dims()[0];
    if n == 0 {
        return Err(Error::InvalidInput(format!("category `{category}`: empty batch")));
    }
    for (scale, t) in feats.iter().enumerate() {
        if t.dims()[0] != n {
            return Err(Error::InvalidInput(format!(
                "category `{category}`: scale {scale} has batch {} but scale 0 has {n}",
                t.dims()[0]
            )));
        }
        if let Some(shapes) = expected
            && chw(t) != shapes[scale]
        {
            return Err(Error::ShapeMismatch {
                category: category.to_string(),
                scale,
                expected: shapes[scale],
                got: chw(t),
            });
        }
    }
    Ok(n)
}

/// Incremental builder of a [`PromptPool`]: add backbone features of normal training images
/// batch by batch; only one running sum per category and scale is kept.
#[derive(Debug)]
pub struct PoolBuilder<B: Backend> {
    names: Vec<String>,
    sums: Vec<[Tensor<B, 4>; 3]>,
    counts: Vec<usize>,
    shapes: Option<[[usize; 3]; 3]>,
}

impl<B: Backend> Default for PoolBuilder<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B: Backend> PoolBuilder<B> {
    /// An empty builder.
    pub fn new() -> Self {
        Self { names: Vec::new(), sums: Vec::new(), counts: Vec::new(), shapes: None }
    }

    /// Adds a batch `[n, C_i, H_i, W_i]` ×3 of features of normal images of `category`.
    ///
    /// Categories keep the order in which they were first seen.
    pub fn add(&mut self, category: &str, feats: &[Tensor<B, 4>; 3]) -> Result<()> {
        let n = check_batch(category, feats, self.shapes.as_ref())?;
        if self.shapes.is_none() {
            self.shapes = Some([chw(&feats[0]), chw(&feats[1]), chw(&feats[2])]);
        }
        let batch_sum: [Tensor<B, 4>; 3] = [0, 1, 2].map(|s| feats[s].clone().sum_dim(0));
        match self.names.iter().position(|c| c == category) {
            Some(i) => {
                let old = self.sums[i].clone();
                self.sums[i] = [0, 1, 2].map(|s| old[s].clone() + batch_sum[s].clone());
                self.counts[i] += n;
            }
            None => {
                self.names.push(category.to_string());
                self.sums.push(batch_sum);
                self.counts.push(n);
            }
        }
        Ok(())
    }

    /// Number of images added so far per category, in pool order.
    pub fn counts(&self) -> impl Iterator<Item = (&str, usize)> {
        self.names.iter().map(String::as_str).zip(self.counts.iter().copied())
    }

    /// Finishes the pool: `P_c` = mean features, `k_c` = global coding of `P_c`.
    ///
    /// Since global average pooling is linear, the global coding of the class-mean features
    /// equals the class mean of the per-image global codings, which is what the paper's CS-NPP defines.
    pub fn build(self, distance: Distance) -> Result<PromptPool<B>> {
        if self.names.is_empty() {
            return Err(Error::Empty);
        }
        let means: Vec<[Tensor<B, 4>; 3]> =
            self.sums.into_iter().zip(&self.counts).map(|(sum, &n)| sum.map(|t| t.div_scalar(n as f32))).collect();
        let priors: [Tensor<B, 4>; 3] = [0, 1, 2].map(|s| Tensor::cat(means.iter().map(|m| m[s].clone()).collect(), 0));
        let codes = global_code(&priors);
        Ok(PromptPool { names: self.names, counts: self.counts, codes, priors, distance })
    }
}

/// What [`PromptPool::retrieve`] found for a batch.
#[derive(Debug, Clone)]
pub struct Retrieval<B: Backend> {
    /// Index into [`PromptPool::names`] of the nearest class, per image.
    pub indices: Vec<usize>,
    /// Distance to that class's coding, per image (squared Euclidean or `1 - cos`).
    pub distances: Vec<f32>,
    /// The retrieved normal prior `F_prior`, `[n, C_i, H_i, W_i]` ×3.
    pub prior: [Tensor<B, 4>; 3],
}

/// The prompt pool: one `(k_c, P_c)` entry per training category.
#[derive(Debug, Clone)]
pub struct PromptPool<B: Backend> {
    names: Vec<String>,
    counts: Vec<usize>,
    codes: Tensor<B, 2>,
    priors: [Tensor<B, 4>; 3],
    distance: Distance,
}

impl<B: Backend> PromptPool<B> {
    /// Category names, in pool order (index = what [`Retrieval::indices`] refer to).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of categories.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the pool has no category (never true for a built pool).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Number of normal images averaged per category.
    pub fn counts(&self) -> &[usize] {
        &self.counts
    }

    /// The distance used by [`retrieve`](Self::retrieve).
    pub fn distance(&self) -> Distance {
        self.distance
    }

    /// Changes the retrieval distance (the stored means do not depend on it).
    pub fn set_distance(&mut self, distance: Distance) {
        self.distance = distance;
    }

    /// Class codings `k_c`, `[K, C_1 + C_2 + C_3]`.
    pub fn codes(&self) -> &Tensor<B, 2> {
        &self.codes
    }

    /// Class-mean features `P_c`, `[K, C_i, H_i, W_i]` ×3.
    pub fn priors(&self) -> &[Tensor<B, 4>; 3] {
        &self.priors
    }

    /// `[C, H, W]` of each scale.
    pub fn shapes(&self) -> [[usize; 3]; 3] {
        [chw(&self.priors[0]), chw(&self.priors[1]), chw(&self.priors[2])]
    }

    /// Distances `[n, K]` from each image's global coding to every class coding.
    pub fn distances(&self, feats: &[Tensor<B, 4>; 3]) -> Result<Tensor<B, 2>> {
        check_batch("<query>", feats, Some(&self.shapes()))?;
        let query = global_code(feats);
        let [n, d] = query.dims();
        let k = self.len();
        let (q, c) = match self.distance {
            Distance::Euclidean => (query, self.codes.clone()),
            Distance::Cosine => (l2_normalize(query), l2_normalize(self.codes.clone())),
        };
        let diff = q.clone().reshape([n, 1, d]) - c.clone().reshape([1, k, d]);
        Ok(match self.distance {
            Distance::Euclidean => diff.square().sum_dim(2).reshape([n, k]),
            // For unit vectors, 1 - cos = |a - b|^2 / 2.
            Distance::Cosine => diff.square().sum_dim(2).reshape([n, k]).div_scalar(2.0),
        })
    }

    /// Nearest class per image, by global coding; no label needed (CS-NPP).
    pub fn nearest(&self, feats: &[Tensor<B, 4>; 3]) -> Result<(Vec<usize>, Vec<f32>)> {
        let dist = self.distances(feats)?;
        let [n, k] = dist.dims();
        let values: Vec<f32> = dist.into_data().iter::<f32>().collect();
        let mut indices = Vec::with_capacity(n);
        let mut best = Vec::with_capacity(n);
        for row in values.chunks(k) {
            // First minimum wins on ties, so the result is deterministic.
            let (i, d) = row
                .iter()
                .copied()
                .enumerate()
                .fold((0, f32::INFINITY), |acc, (i, d)| if d < acc.1 { (i, d) } else { acc });
            if !d.is_finite() {
                return Err(Error::InvalidInput(
                    "query features give a non-finite distance (NaN or infinite features)".into(),
                ));
            }
            indices.push(i);
            best.push(d);
        }
        Ok((indices, best))
    }

    /// Class-mean features of the given classes, stacked: `[indices.len(), C_i, H_i, W_i]` ×3.
    pub fn prior_of(&self, indices: &[usize]) -> Result<[Tensor<B, 4>; 3]> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(Error::InvalidInput(format!(
                "class index {bad} out of range for a pool of {} classes",
                self.len()
            )));
        }
        let device = self.codes.device();
        let idx = Tensor::<B, 1, Int>::from_data(
            TensorData::new(indices.iter().map(|&i| i as i64).collect::<Vec<_>>(), [indices.len()]),
            &device,
        );
        Ok([0, 1, 2].map(|s| self.priors[s].clone().select(0, idx.clone())))
    }

    /// Retrieves the normal prior `F_prior` of each image (nearest class by global coding).
    pub fn retrieve(&self, feats: &[Tensor<B, 4>; 3]) -> Result<Retrieval<B>> {
        let (indices, distances) = self.nearest(feats)?;
        let prior = self.prior_of(&indices)?;
        Ok(Retrieval { indices, distances, prior })
    }

    /// Fraction of `predicted` class indices whose name equals the true category; `None` when
    /// there is nothing to score. A true category absent from the pool counts as a miss.
    pub fn accuracy<S: AsRef<str>>(&self, predicted: &[usize], truth: &[S]) -> Option<f64> {
        retrieval_accuracy(&self.names, predicted, truth)
    }
}

/// Fraction of `predicted` indices (into `names`) equal to the `truth` names; `None` when empty
/// or when the lengths differ.
pub fn retrieval_accuracy<S: AsRef<str>>(names: &[String], predicted: &[usize], truth: &[S]) -> Option<f64> {
    if predicted.is_empty() || predicted.len() != truth.len() {
        return None;
    }
    let hits = predicted.iter().zip(truth).filter(|(p, t)| names.get(**p).is_some_and(|n| n == t.as_ref())).count();
    Some(hits as f64 / predicted.len() as f64)
}

fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().square().sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type B = Flex<f32>;

    fn feats(values: [f32; 3], n: usize) -> [Tensor<B, 4>; 3] {
        let device = Default::default();
        [
            Tensor::full([n, 2, 4, 4], values[0], &device),
            Tensor::full([n, 3, 2, 2], values[1], &device),
            Tensor::full([n, 1, 1, 1], values[2], &device),
        ]
    }

    fn to_vec<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().iter::<f32>().collect()
    }

    #[test]
    fn global_code_is_gap_concat() {
        let device = Default::default();
        // Scale 0: channel 0 = 0..16 (mean 7.5), channel 1 = 1.
        let mut v: Vec<f32> = (0..16).map(|x| x as f32).collect();
        v.extend(std::iter::repeat_n(1.0, 16));
        let f0 = Tensor::<B, 4>::from_data(TensorData::new(v, [1, 2, 4, 4]), &device);
        let f = [f0, Tensor::full([1, 3, 2, 2], 2.0, &device), Tensor::full([1, 1, 1, 1], -3.0, &device)];
        assert_eq!(to_vec(global_code(&f)), vec![7.5, 1.0, 2.0, 2.0, 2.0, -3.0]);
    }

    #[test]
    fn builder_averages_incrementally() {
        let mut b = PoolBuilder::<B>::new();
        b.add("a", &feats([1.0, 2.0, 3.0], 2)).unwrap();
        b.add("b", &feats([10.0, 10.0, 10.0], 1)).unwrap();
        b.add("a", &feats([4.0, 5.0, 6.0], 1)).unwrap(); // mean of a: (1+1+4)/3 = 2, 3, 4
        let pool = b.build(Distance::Euclidean).unwrap();
        assert_eq!(pool.names(), &["a".to_string(), "b".to_string()]);
        assert_eq!(pool.counts(), &[3, 1]);
        let codes = to_vec(pool.codes().clone());
        assert_eq!(&codes[..6], &[2.0, 2.0, 3.0, 3.0, 3.0, 4.0]);
        assert_eq!(&codes[6..], &[10.0; 6]);
        assert_eq!(pool.shapes(), [[2, 4, 4], [3, 2, 2], [1, 1, 1]]);
    }

    #[test]
    fn retrieval_picks_hand_made_nearest_class() {
        let mut b = PoolBuilder::<B>::new();
        b.add("low", &feats([0.0, 0.0, 0.0], 1)).unwrap();
        b.add("mid", &feats([1.0, 1.0, 1.0], 1)).unwrap();
        b.add("high", &feats([5.0, 5.0, 5.0], 1)).unwrap();
        let pool = b.build(Distance::Euclidean).unwrap();
        let q = [0, 1, 2].map(|s| {
            Tensor::cat(
                vec![
                    feats([0.4, 0.4, 0.4], 1)[s].clone(),
                    feats([0.6, 0.6, 0.6], 1)[s].clone(),
                    feats([4.0, 4.0, 4.0], 1)[s].clone(),
                ],
                0,
            )
        });
        let r = pool.retrieve(&q).unwrap();
        assert_eq!(r.indices, vec![0, 1, 2]);
        // Squared distance of 0.4 to 0 over 6 code entries: 6 * 0.16.
        assert!((r.distances[0] - 0.96).abs() < 1e-5, "{:?}", r.distances);
        assert_eq!(to_vec(r.prior[2].clone()), vec![0.0, 1.0, 5.0]);
        assert_eq!(pool.accuracy(&r.indices, &["low", "mid", "mid"]), Some(2.0 / 3.0));
    }

    #[test]
    fn cosine_ignores_scale_euclidean_does_not() {
        let device = Default::default();
        let mk = |a: f32, b: f32| -> [Tensor<B, 4>; 3] {
            [
                Tensor::full([1, 1, 2, 2], a, &device),
                Tensor::full([1, 1, 1, 1], b, &device),
                Tensor::full([1, 1, 1, 1], 0.0, &device),
            ]
        };
        let mut builder = PoolBuilder::<B>::new();
        builder.add("x-axis", &mk(1.0, 0.0)).unwrap();
        builder.add("y-axis-far", &mk(0.0, 10.0)).unwrap();
        let mut pool = builder.build(Distance::Euclidean).unwrap();
        // Query (3, 3.5): Euclidean nearest is x-axis (dist^2 4 + 12.25 = 16.25 vs 9 + 42.25),
        // cosine nearest is y-axis (its direction is closer to the diagonal-ish query).
        let q = mk(3.0, 3.5);
        assert_eq!(pool.nearest(&q).unwrap().0, vec![0]);
        pool.set_distance(Distance::Cosine);
        assert_eq!(pool.nearest(&q).unwrap().0, vec![1]);
    }

    #[test]
    fn errors_instead_of_panics() {
        let mut b = PoolBuilder::<B>::new();
        assert!(matches!(PoolBuilder::<B>::new().build(Distance::Euclidean), Err(Error::Empty)));
        b.add("a", &feats([0.0; 3], 1)).unwrap();
        let device = Default::default();
        let wrong = [
            Tensor::<B, 4>::zeros([1, 2, 4, 4], &device),
            Tensor::zeros([1, 3, 2, 2], &device),
            Tensor::zeros([1, 2, 1, 1], &device),
        ];
        let err = b.add("a", &wrong).unwrap_err();
        assert!(err.to_string().contains("scale 2"), "{err}");
        let pool = b.build(Distance::Euclidean).unwrap();
        assert!(pool.retrieve(&wrong).is_err());
        assert!(pool.prior_of(&[3]).is_err());
        assert!(pool.retrieve(&feats([f32::NAN; 3], 1)).is_err());
    }

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.bin");
        let mut b = PoolBuilder::<B>::new();
        b.add("a", &feats([0.25, -1.0, 3.0], 2)).unwrap();
        b.add("b", &feats([7.0, 8.0, 9.0], 1)).unwrap();
        let pool = b.build(Distance::Cosine).unwrap();
        pool.save(&path).unwrap();
        let back = PromptPool::<B>::load(&path, &Default::default()).unwrap();
        assert_eq!(back.names(), pool.names());
        assert_eq!(back.counts(), pool.counts());
        assert_eq!(back.distance(), Distance::Cosine);
        for s in 0..3 {
            assert_eq!(to_vec(back.priors()[s].clone()), to_vec(pool.priors()[s].clone()));
        }
        assert_eq!(to_vec(back.codes().clone()), to_vec(pool.codes().clone()));
        std::fs::write(&path, b"garbage").unwrap();
        assert!(PromptPool::<B>::load(&path, &Default::default()).is_err());
    }
}
