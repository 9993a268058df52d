//! 1×1 convolutions of NHWC activations: a matrix product `[N·H·W, C_in] × [C_in, C_out]`,
//! run in tiles of rows whose output starts as bias (+ residual), is accumulated into and
//! clamped while in cache.

use rayon::prelude::*;

use crate::nhwc::{Buffers, Nhwc};

/// `dst[m × n] += lhs[m × k] · rhs[k × n]`, all row-major and contiguous.
fn matmul_accumulate(dst: &mut [f32], lhs: &[f32], rhs: &[f32], m: usize, k: usize, n: usize) {
    assert!(dst.len() == m * n && lhs.len() == m * k && rhs.len() == k * n, "matmul shapes");
    // SAFETY: the assert above bounds every access: dst is m×n with row stride n, lhs m×k with
    // row stride k, rhs k×n with row stride n, all column strides 1; the three do not alias
    // (`dst` is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            // The callers run tiles in parallel.
            gemm::Parallelism::None,
        );
    }
}

/// A 1×1 convolution: `weight` is `[C_in, C_out]` row-major; `residual` (same shape as the
/// output) is added; ReLU6 when `relu6_out`.
///
/// Runs in tiles of rows, one task each: a tile's output is set to bias (+ residual), the
/// product accumulated into it and clamped while it is still in cache.
pub fn pointwise(
    x: &Nhwc,
    weight: &[f32],
    bias: &[f32],
    residual: Option<&Nhwc>,
    relu6_out: bool,
    buffers: &mut Buffers,
) -> Nhwc {
    let (cin, cout) = (x.c, bias.len());
    assert_eq!(weight.len(), cin * cout, "pointwise weight shape");
    if let Some(r) = residual {
        assert_eq!((r.n, r.h, r.w, r.c), (x.n, x.h, x.w, cout), "residual shape");
    }
    let rows = x.n * x.h * x.w;
    let mut out = buffers.take(rows * cout);
    out.resize(rows * cout, 0.0);
    let tile = tile_rows(cout);
    out.par_chunks_mut(tile * cout).zip(x.data.par_chunks(tile * cin)).enumerate().for_each(|(t, (dst, lhs))| {
        let n = lhs.len() / cin;
        match residual {
            Some(r) => {
                let res = &r.data[t * tile * cout..t * tile * cout + n * cout];
                for (px, rp) in dst.chunks_exact_mut(cout).zip(res.chunks_exact(cout)) {
                    for ((v, &b), &rv) in px.iter_mut().zip(bias).zip(rp) {
                        *v = b + rv;
                    }
                }
            }
            None => dst.chunks_exact_mut(cout).for_each(|px| px.copy_from_slice(bias)),
        }
        matmul_accumulate(dst, lhs, weight, n, cin, cout);
        if relu6_out {
            dst.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0));
        }
    });
    Nhwc { n: x.n, h: x.h, w: x.w, c: cout, data: out }
}

/// Rows per tile of [`pointwise`]: about 64 KB of output.
fn tile_rows(cout: usize) -> usize {
    (16_384 / cout).clamp(16, 512)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Pad;
    use crate::test_util::{assert_close, nhwc, reference, values};

    #[test]
    fn pointwise_adds_bias_and_residual() {
        // 1,030 output channels: tiles of 16 rows, the last one partial (70 rows).
        let (c, cout, h, w) = (5, 1030, 5, 7);
        let dims = [2, c, h, w];
        let x = values(2 * c * h * w, 9);
        let weight = values(cout * c, 10);
        let bias = values(cout, 11);
        let residual_nchw = values(2 * cout * h * w, 12);
        let (mut want, want_dims) = reference(&x, dims, &weight, &bias, 1, 1, Pad::same(1, 1), false);
        want.iter_mut().zip(&residual_nchw).for_each(|(a, r)| *a += r);
        let mut w_mat = vec![0f32; weight.len()];
        for o in 0..cout {
            for i in 0..c {
                w_mat[i * cout + o] = weight[o * c + i];
            }
        }
        let residual = nhwc(&residual_nchw, want_dims);
        let got = pointwise(&nhwc(&x, dims), &w_mat, &bias, Some(&residual), false, &mut Buffers::default());
        assert_close(&got.to_nchw(), &want);
        // With ReLU6 and no residual: clamped to [0, 6].
        let scaled: Vec<f32> = x.iter().map(|v| v * 40.0).collect();
        let got = pointwise(&nhwc(&scaled, dims), &w_mat, &bias, None, true, &mut Buffers::default());
        assert!(got.data.iter().all(|v| (0.0..=6.0).contains(v)));
        assert!(got.data.contains(&6.0) && got.data.contains(&0.0));
    }
}
