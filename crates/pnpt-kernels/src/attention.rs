//! The core of multi-head attention, softmax(Q Kᵀ / √d) V, on the host.
//!
//! The heads are read in place from the `[B, L, C]` projections with strided matrix products,
//! one task per (batch, head), so the `[B, H, L, d]` copies that splitting heads with
//! `swap_dims` costs Burn's CPU backends are never made; each task writes its head's columns
//! of the `[B, Lq, C]` output. The row softmax uses a polynomial `exp` that vectorises, compiled
//! for AVX2 + FMA where the CPU has them.

use rayon::prelude::*;

use crate::simd_available;

/// Sizes of an attention core: `batch` sequences of `lq` queries and `lk` keys/values, rows of
/// `channels` values holding `heads` heads of `head_dim` values each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Sequences.
    pub batch: usize,
    /// Query rows per sequence.
    pub lq: usize,
    /// Key and value rows per sequence.
    pub lk: usize,
    /// Values per row of Q, K, V and the output (`heads · head_dim` for Burn's attention).
    pub channels: usize,
    /// Attention heads.
    pub heads: usize,
    /// Values per head (`d`): head `h` holds columns `h·d..(h+1)·d` of each row.
    pub head_dim: usize,
}

/// Per (batch, head): `S = Q_h K_hᵀ / √d` (strided reads of the `[B, L, C]` projections), row
/// softmax in place, `O_h = S V_h` written into its columns of the `[B, Lq, C]` output.
///
/// `q` is `[batch, lq, channels]`, `k` and `v` `[batch, lk, channels]`, row-major; returns the
/// `[batch, lq, channels]` context (columns past `heads · head_dim` stay 0). A NaN in a row's
/// scores makes that row's softmax NaN, as Burn's softmax does.
///
/// # Panics
///
/// When a slice's length does not match the shape, the heads do not fit in `channels`, or
/// `lk == 0`.
pub fn attention_core(q: &[f32], k: &[f32], v: &[f32], shape: AttentionShape) -> Vec<f32> {
    core(q, k, v, shape, simd_available())
}

/// [`attention_core`] with its softmax on the AVX2 + FMA path when `simd` (only set when
/// [`simd_available`]), else on the portable loop.
fn core(q: &[f32], k: &[f32], v: &[f32], shape: AttentionShape, simd: bool) -> Vec<f32> {
    let AttentionShape { batch, lq, lk, channels: c, heads, head_dim: d } = shape;
    // The bounds the SAFETY comments below rely on.
    assert!(heads * d <= c, "{heads} heads of {d} values in rows of {c}");
    assert!(q.len() == batch * lq * c && k.len() == batch * lk * c && v.len() == batch * lk * c, "attention shapes");
    let mut out = vec![0f32; batch * lq * c];
    // One task per (batch, head); its output columns are disjoint from every other task's.
    let tasks: Vec<(usize, usize)> = (0..batch).flat_map(|b| (0..heads).map(move |h| (b, h))).collect();
    let out_ptr = SendPtr(out.as_mut_ptr());
    tasks.par_iter().for_each(|&(b, h)| {
        let mut scores = vec![0f32; lq * lk];
        let (q0, k0) = (b * lq * c + h * d, b * lk * c + h * d);
        // SAFETY: lhs = Q_h, lq × d with row stride c inside `q` (b·lq·c + h·d + i·c + j <
        // batch·lq·c since h·d + j < c); rhs = K_hᵀ, d × lk read as K's element (j, i) at
        // k0 + i·c + j (same bound for `k`); dst = `scores`, lq × lk contiguous.
        unsafe {
            gemm::gemm(
                lq,
                lk,
                d,
                scores.as_mut_ptr(),
                1,
                lk as isize,
                false,
                q.as_ptr().add(q0),
                1,
                c as isize,
                k.as_ptr().add(k0),
                c as isize,
                1,
                0.0,
                1.0 / (d as f32).sqrt(),
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
        softmax_rows(&mut scores, lk, simd);
        let o0 = b * lq * c + h * d;
        // SAFETY: lhs = `scores`, lq × lk contiguous; rhs = V_h, lk × d with row stride c inside
        // `v`; dst = O_h, lq × d with row stride c at b·lq·c + h·d inside `out` (bounded as Q_h
        // above). Tasks write disjoint column ranges h·d..(h+1)·d of disjoint batches' rows.
        unsafe {
            gemm::gemm(
                lq,
                d,
                lk,
                out_ptr.get().add(o0),
                1,
                c as isize,
                false,
                scores.as_ptr(),
                1,
                lk as isize,
                v.as_ptr().add(b * lk * c + h * d),
                1,
                c as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
    out
}

/// Softmax of each row of `lk` values, in place; compiled for AVX2 + FMA when `simd` (only set
/// when [`simd_available`]).
fn softmax_rows(scores: &mut [f32], lk: usize, simd: bool) {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: the CPU has the features `softmax_rows_avx2` is compiled for.
        unsafe { softmax_rows_avx2(scores, lk) };
        return;
    }
    scores.chunks_exact_mut(lk).for_each(softmax_row);
}

/// The same loop compiled for AVX2 + FMA (eight exponentials per instruction sequence).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_rows_avx2(scores: &mut [f32], lk: usize) {
    // A plain loop, not `for_each(softmax_row)`: the row function must be inlined here, into
    // the AVX2 code, not into a generic iterator method compiled for baseline x86-64.
    for row in scores.chunks_exact_mut(lk) {
        softmax_row(row);
    }
}

/// Lanes of the partial maxima and sums: f32 reductions only vectorise when split by hand.
const LANES: usize = 8;

#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    let mut maxes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &v) in maxes.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    let max = chunks.remainder().iter().chain(&maxes).fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, v) in sums.iter_mut().zip(chunk) {
            *v = exp_nonpositive(*v - max);
            *s += *v;
        }
    }
    let mut sum = 0f32;
    for v in chunks.into_remainder() {
        *v = exp_nonpositive(*v - max);
        sum += *v;
    }
    let inv = 1.0 / (sum + sums.iter().sum::<f32>());
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `e^x` for `x ≤ 0` (NaN stays NaN) with plain arithmetic, so that loops over it vectorise (the C library's
/// `expf` is a call per value): Cephes' single-precision `expf` (range reduction by `ln 2` in two
/// parts, a degree-5 polynomial), within a few ulp; inputs below -87 give `2^-126`, not 0.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    // Not `x.max(-87.0)`: that returns -87 for NaN, and a NaN score must stay NaN.
    let x = if x < -87.0 { -87.0 } else { x };
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32).wrapping_add(127) << 23) as u32)
}

/// The output pointer shared by the tasks (each writes only its own head's columns).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the tasks holding it write disjoint elements (see `core`).
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the C library's `expf` (f64 reference), over the whole range softmax uses.
    #[test]
    fn exp_is_accurate_on_the_nonpositive_range() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -88.0 * i as f32 / 200_000.0;
            let want = (x.max(-87.0) as f64).exp();
            let got = exp_nonpositive(x) as f64;
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 1e-6, "worst relative error {worst:e}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
    }

    /// A hand-worked row: softmax(0, ln 2, ln 3, ...) is (1, 2, 3, ...) / sum, any length
    /// (here 19: two lanes of eight and a remainder of three).
    #[test]
    fn softmax_rows_by_hand() {
        let row: Vec<f32> = (1..=19).map(|i| (i as f32).ln() + 5.0).collect();
        for simd in [false, simd_available()] {
            let mut scores = [row.clone(), row.clone()].concat();
            softmax_rows(&mut scores, 19, simd);
            for (i, &v) in scores.iter().enumerate() {
                let want = ((i % 19) + 1) as f32 / 190.0;
                assert!((v - want).abs() < 1e-6 * want.max(1e-3), "simd {simd}, {i}: {v} vs {want}");
            }
        }
    }

    /// A NaN score makes its row NaN, as Burn's softmax does, and leaves other rows alone.
    #[test]
    fn softmax_keeps_nan() {
        for simd in [false, simd_available()] {
            let mut scores = vec![0.5f32; 20];
            scores[3] = f32::NAN;
            softmax_rows(&mut scores, 10, simd);
            assert!(scores[..10].iter().all(|v| v.is_nan()), "simd {simd}");
            assert!(scores[10..].iter().all(|&v| (v - 0.1).abs() < 1e-7), "simd {simd}");
        }
    }

    /// Deterministic values in [-2, 2).
    fn values(len: usize, seed: u32) -> Vec<f32> {
        crate::test_util::values(len, seed).into_iter().map(|v| 2.0 * v).collect()
    }

    /// softmax(Q_h K_hᵀ / √d) V_h per (batch, head), the textbook loop in f64.
    fn reference(q: &[f32], k: &[f32], v: &[f32], s: AttentionShape) -> Vec<f32> {
        let (c, d) = (s.channels, s.head_dim);
        let mut out = vec![0f32; s.batch * s.lq * c];
        for b in 0..s.batch {
            for h in 0..s.heads {
                for i in 0..s.lq {
                    let qi = &q[(b * s.lq + i) * c + h * d..][..d];
                    let scores: Vec<f64> = (0..s.lk)
                        .map(|j| {
                            let kj = &k[(b * s.lk + j) * c + h * d..][..d];
                            qi.iter().zip(kj).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>() / (d as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = weights.iter().sum();
                    for e in 0..d {
                        let o: f64 = (0..s.lk).map(|j| weights[j] * v[(b * s.lk + j) * c + h * d + e] as f64).sum();
                        out[(b * s.lq + i) * c + h * d + e] = (o / sum) as f32;
                    }
                }
            }
        }
        out
    }

    /// Self- and cross-attention shapes, lengths off the 8-lane blocks, a row wider than the heads.
    #[test]
    fn core_matches_direct_loop_on_both_paths() {
        let shapes = [(1, 37, 37, 64, 4, 16), (3, 20, 9, 32, 8, 4), (2, 1, 50, 24, 3, 8), (2, 5, 11, 20, 2, 8)];
        for (batch, lq, lk, channels, heads, head_dim) in shapes {
            let shape = AttentionShape { batch, lq, lk, channels, heads, head_dim };
            let q = values(batch * lq * channels, 1);
            let k = values(batch * lk * channels, 2);
            let v = values(batch * lk * channels, 3);
            let want = reference(&q, &k, &v, shape);
            for simd in [false, simd_available()] {
                let got = core(&q, &k, &v, shape, simd);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{shape:?} simd {simd}, {i}: {g} vs {w}");
                }
            }
            assert_eq!(attention_core(&q, &k, &v, shape), core(&q, &k, &v, shape, simd_available()));
        }
    }

    /// A NaN in one query makes that query's row NaN in its head's columns only.
    #[test]
    fn core_keeps_nan() {
        let shape = AttentionShape { batch: 2, lq: 6, lk: 9, channels: 16, heads: 2, head_dim: 8 };
        let mut q = values(2 * 6 * 16, 4);
        q[(6 + 2) * 16 + 8 + 3] = f32::NAN; // batch 1, query 2, head 1
        let (k, v) = (values(2 * 9 * 16, 5), values(2 * 9 * 16, 6));
        for simd in [false, simd_available()] {
            let out = core(&q, &k, &v, shape, simd);
            for (i, o) in out.iter().enumerate() {
                let in_row = i / 16 == 6 + 2 && i % 16 >= 8;
                assert_eq!(o.is_nan(), in_row, "simd {simd}, element {i}");
            }
        }
    }
}
