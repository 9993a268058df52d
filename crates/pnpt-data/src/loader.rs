//! Batched, parallel loading of samples into Burn tensors.
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::DataError;
use crate::dataset::Sample;
use crate::image_io::{Preprocess, load_image, load_mask};

/// Decodes and preprocesses every sample in parallel (rayon), concatenated NCHW.
///
/// On failure the error of the first failing sample *in list order* is returned, so the
/// message does not depend on thread timing.
pub fn load_chw(samples: &[Sample], pre: &Preprocess) -> Result<Vec<f32>, DataError> {
    let parts: Vec<Result<Vec<f32>, DataError>> = samples.par_iter().map(|s| load_image(&s.path, pre)).collect();
    let mut flat = Vec::with_capacity(samples.len() * pre.len());
    for p in parts {
        flat.extend_from_slice(&p?);
    }
    Ok(flat)
}

/// Loads samples as one `[N, 3, size, size]` float tensor on `device` (parallel decode).
///
/// ```
/// use burn::backend::Flex;
/// # let dir = tempfile::tempdir().unwrap();
/// # let p = dir.path().join("a.png");
/// # image::RgbImage::from_pixel(4, 4, image::Rgb([10, 20, 30])).save(&p).unwrap();
/// let s = pnpt_data::Sample { path: p, category: "c".into(), defect: "good".into(), masks: vec![] };
/// let pre = pnpt_data::Preprocess::imagenet(8);
/// let x = pnpt_data::load_images::<Flex>(&[s.clone(), s], &pre, &Default::default()).unwrap();
/// assert_eq!(x.dims(), [2, 3, 8, 8]);
/// ```
pub fn load_images<B: Backend>(
    samples: &[Sample],
    pre: &Preprocess,
    device: &B::Device,
) -> Result<Tensor<B, 4>, DataError> {
    if samples.is_empty() {
        return Err(DataError::NoSamples { what: "load_images" });
    }
    let flat = load_chw(samples, pre)?;
    Ok(chw_to_tensor(flat, samples.len(), pre.size, device))
}

fn chw_to_tensor<B: Backend>(flat: Vec<f32>, n: usize, size: u32, device: &B::Device) -> Tensor<B, 4> {
    let s = size as usize;
    Tensor::from_data(TensorData::new(flat, [n, 3, s, s]), device)
}

/// Ground-truth masks of every sample (parallel), concatenated: `N * size * size` values of 0/1,
/// row-major per sample; zeros for normal samples. See [`load_mask`].
pub fn load_masks(samples: &[Sample], size: u32) -> Result<Vec<u8>, DataError> {
    let parts: Vec<Result<Vec<u8>, DataError>> = samples.par_iter().map(|s| load_mask(s, size)).collect();
    let mut flat = Vec::with_capacity(samples.len() * size as usize * size as usize);
    for p in parts {
        flat.extend_from_slice(&p?);
    }
    Ok(flat)
}

/// Image-level labels (1 = anomalous) of the samples, in order.
pub fn labels(samples: &[Sample]) -> Vec<u8> {
    samples.iter().map(Sample::label).collect()
}

type Decoded = Result<(Vec<f32>, Vec<usize>), DataError>;

/// One epoch of batches over a list of samples, decoded ahead of use.
///
/// A background thread decodes the next batches (each one in parallel with rayon) while the
/// caller trains on the current one, at most two batches ahead so memory stays bounded. Each
/// item is `(images [B, 3, size, size], indices into the sample list)`; the last batch may be
/// smaller. With a seed the order is a ChaCha8 shuffle, reproducible across runs; use a
/// different seed per epoch (e.g. `seed + epoch`) for fresh orders. After an error the
/// iterator ends.
///
/// ```
/// use burn::backend::Flex;
/// # let dir = tempfile::tempdir().unwrap();
/// # let p = dir.path().join("a.png");
/// # image::RgbImage::from_pixel(4, 4, image::Rgb([10, 20, 30])).save(&p).unwrap();
/// # let s = pnpt_data::Sample { path: p, category: "c".into(), defect: "good".into(), masks: vec![] };
/// let samples = vec![s; 5];
/// let pre = pnpt_data::Preprocess::imagenet(8);
/// let it = pnpt_data::BatchIter::<Flex>::new(&samples, &pre, 2, Some(7), &Default::default()).unwrap();
/// let sizes: Vec<usize> = it.map(|b| b.unwrap().1.len()).collect();
/// assert_eq!(sizes, [2, 2, 1]);
/// ```
pub struct BatchIter<B: Backend> {
    rx: Receiver<Decoded>,
    device: B::Device,
    size: u32,
    remaining: usize,
    worker: Option<JoinHandle<()>>,
}

impl<B: Backend> BatchIter<B> {
    /// Starts decoding `samples` in batches of `batch_size`, shuffled when `shuffle_seed` is
    /// `Some`, in list order otherwise.
    pub fn new(
        samples: &[Sample],
        pre: &Preprocess,
        batch_size: usize,
        shuffle_seed: Option<u64>,
        device: &B::Device,
    ) -> Result<Self, DataError> {
        if batch_size == 0 {
            return Err(DataError::InvalidConfig {
                path: Default::default(),
                reason: "batch size must be at least 1".into(),
            });
        }
        if samples.is_empty() {
            return Err(DataError::NoSamples { what: "BatchIter::new" });
        }
        let order = Self::order(samples.len(), shuffle_seed);
        let batches: Vec<Vec<usize>> = order.chunks(batch_size).map(<[usize]>::to_vec).collect();
        let remaining = batches.len();
        let paths: Vec<Sample> = samples.to_vec();
        let pre = *pre;
        // Two batches in flight: one being consumed, one ready; the worker blocks beyond that.
        let (tx, rx) = sync_channel::<Decoded>(2);
        let worker = std::thread::Builder::new()
            .name("pnpt-data-loader".into())
            .spawn(move || {
                for idx in batches {
                    let picked: Vec<Sample> = idx.iter().map(|&i| paths[i].clone()).collect();
                    let res = load_chw(&picked, &pre).map(|flat| (flat, idx));
                    let failed = res.is_err();
                    // A closed channel means the consumer dropped the iterator: stop quietly.
                    if tx.send(res).is_err() || failed {
                        break;
                    }
                }
            })
            .map_err(|e| DataError::io("<loader thread>", e))?;
        Ok(Self { rx, device: device.clone(), size: pre.size, remaining, worker: Some(worker) })
    }

    /// The visiting order of one epoch: identity, or a seeded ChaCha8 Fisher–Yates shuffle.
    pub fn order(n: usize, shuffle_seed: Option<u64>) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        if let Some(seed) = shuffle_seed {
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        }
        order
    }

    /// Batches not yet yielded.
    pub fn remaining(&self) -> usize {
        self.remaining
    }
}

impl<B: Backend> Iterator for BatchIter<B> {
    type Item = Result<(Tensor<B, 4>, Vec<usize>), DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        match self.rx.recv() {
            Ok(Ok((flat, idx))) => {
                self.remaining -= 1;
                let t = chw_to_tensor::<B>(flat, idx.len(), self.size, &self.device);
                Some(Ok((t, idx)))
            }
            Ok(Err(e)) => {
                self.remaining = 0;
                Some(Err(e))
            }
            Err(_) => {
                // The worker ended without an error message: it can only have panicked.
                self.remaining = 0;
                let reason = match self.worker.take().map(JoinHandle::join) {
                    Some(Err(_)) => "loader thread panicked",
                    _ => "loader thread stopped early",
                };
                Some(Err(DataError::io("<loader thread>", std::io::Error::other(reason))))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}
