//! Direct k×k convolutions of NHWC activations, depthwise and dense (the stem).
//!
//! A depthwise convolution reads eight contiguous channels of a pixel with one vector load per
//! tap, keeps eight output pixels' accumulators in registers, reads zeros for taps in the
//! padding (no padded copy) and clamps on the way out (ReLU6 fused); the dense stem
//! convolution is the same direct loop with each input value broadcast.

use rayon::prelude::*;

use crate::nhwc::{Buffers, Nhwc, Pad};
use crate::simd_available;

/// Output height and width of a k×k convolution with this padding and stride.
fn out_dims(x: &Nhwc, k: usize, stride: usize, pad: Pad) -> (usize, usize) {
    let side = |len: usize, before: usize, after: usize| (len + before + after - k) / stride + 1;
    (side(x.h, pad.top, pad.bottom), side(x.w, pad.left, pad.right))
}

/// A dense k×k convolution (the stem): `weight` is `[(ky, kx, C_in), C_out]` row-major.
#[allow(clippy::too_many_arguments)]
pub fn dense(
    x: &Nhwc,
    weight: &[f32],
    bias: &[f32],
    k: usize,
    stride: usize,
    pad: Pad,
    relu6: bool,
    buffers: &mut Buffers,
) -> Nhwc {
    assert!(weight.len() == k * k * x.c * bias.len(), "dense weight shape");
    Window { x, weight, bias, k, stride, pad, relu6, depthwise: false, simd: simd_available() }.run(buffers)
}

/// A depthwise k×k convolution: `weight` is `[(ky, kx), C]` row-major; ReLU6 when `relu6`.
#[allow(clippy::too_many_arguments)]
pub fn depthwise(
    x: &Nhwc,
    weight: &[f32],
    bias: &[f32],
    k: usize,
    stride: usize,
    pad: Pad,
    relu6: bool,
    buffers: &mut Buffers,
) -> Nhwc {
    assert!(bias.len() == x.c && weight.len() == k * k * x.c, "depthwise weight shape");
    Window { x, weight, bias, k, stride, pad, relu6, depthwise: true, simd: simd_available() }.run(buffers)
}

/// Largest window side the direct kernels take (EfficientNet uses 3 and 5).
const MAX_K: usize = 7;
/// f32 lanes of one AVX register: output channels are computed in blocks of this many.
const LANES: usize = 8;
/// Output pixels computed together: eight independent accumulators keep both FMA units busy
/// and share each weight load.
const GROUP: usize = 8;

/// A direct k×k convolution over NHWC input, dense or depthwise, one output row per task.
///
/// Accumulators start at the bias, taps in the zero padding contribute nothing (no padded
/// copy of the input), and ReLU6 is applied on the way out.
#[derive(Clone, Copy)]
struct Window<'a> {
    x: &'a Nhwc,
    weight: &'a [f32],
    bias: &'a [f32],
    k: usize,
    stride: usize,
    pad: Pad,
    relu6: bool,
    depthwise: bool,
    /// Use the AVX2 + FMA kernel (checked by [`simd_available`]).
    simd: bool,
}

/// The input rows one output row reads, with their kernel row (rows in the padding left out).
type Lines<'a> = ([(usize, &'a [f32]); MAX_K], usize);

impl Window<'_> {
    fn run(&self, buffers: &mut Buffers) -> Nhwc {
        assert!(self.k <= MAX_K, "window side {} > {MAX_K}", self.k);
        let (oh, ow) = out_dims(self.x, self.k, self.stride, self.pad);
        let cout = self.bias.len();
        let len = self.x.n * oh * ow * cout;
        let mut out = buffers.take(len);
        out.resize(len, 0.0);
        // What taps in the padding read: one zero pixel for the whole convolution.
        let zeros = vec![0f32; self.x.c];
        out.par_chunks_mut(ow * cout).enumerate().for_each(|(row, dst)| self.row(row / oh, row % oh, &zeros, dst));
        Nhwc { n: self.x.n, h: oh, w: ow, c: cout, data: out }
    }

    fn lines(&self, b: usize, oy: usize) -> Lines<'_> {
        let x = self.x;
        let line_len = x.w * x.c;
        let mut lines: [(usize, &[f32]); MAX_K] = [(0, &[]); MAX_K];
        let mut count = 0;
        for ky in 0..self.k {
            if let Some(iy) = (oy * self.stride + ky).checked_sub(self.pad.top).filter(|&iy| iy < x.h) {
                let start = (b * x.h + iy) * line_len;
                lines[count] = (ky, &x.data[start..start + line_len]);
                count += 1;
            }
        }
        (lines, count)
    }

    /// Input column under output column `ox` and kernel column `kx` (None: in the padding).
    fn column(&self, ox: usize, kx: usize) -> Option<usize> {
        (ox * self.stride + kx).checked_sub(self.pad.left).filter(|&ix| ix < self.x.w)
    }

    fn row(&self, b: usize, oy: usize, zeros: &[f32], dst: &mut [f32]) {
        let (lines, count) = self.lines(b, oy);
        let lines = &lines[..count];
        let cout = self.bias.len();
        let ow = dst.len() / cout;
        let mut ox = 0;
        #[cfg(target_arch = "x86_64")]
        if self.simd {
            let full = cout - cout % LANES;
            while ox + GROUP <= ow {
                // SAFETY: `simd` is only set when the CPU has AVX2 and FMA.
                unsafe { self.group_avx2::<GROUP>(ox, lines, zeros, full, dst) };
                ox += GROUP;
            }
            while ox < ow {
                // SAFETY: as above.
                unsafe { self.group_avx2::<1>(ox, lines, zeros, full, dst) };
                ox += 1;
            }
            if full < cout {
                self.portable(0, ow, full, lines, dst);
            }
            return;
        }
        self.portable(ox, ow, 0, lines, dst);
    }

    /// Output pixels `ox0..ox0 + P`, channels `0..full` (a multiple of [`LANES`]), with AVX2
    /// and FMA: `P` accumulator registers per block of eight channels, each weight vector
    /// loaded once for the group; a tap in the padding reads `zeros`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn group_avx2<const P: usize>(
        &self,
        ox0: usize,
        lines: &[(usize, &[f32])],
        zeros: &[f32],
        full: usize,
        dst: &mut [f32],
    ) {
        use std::arch::x86_64::*;
        let (k, cin, cout) = (self.k, self.x.c, self.bias.len());
        assert!(zeros.len() >= cin && dst.len() >= (ox0 + P) * cout);
        // Where each tap of each pixel reads: its pixel in the input row, or `zeros` in the
        // padding; built once per group so the loops below have no branches.
        let mut srcs = [[[zeros.as_ptr(); P]; MAX_K]; MAX_K];
        for (slot, &(_, line)) in srcs.iter_mut().zip(lines) {
            for (kx, taps) in slot.iter_mut().enumerate().take(k) {
                for (p, src) in taps.iter_mut().enumerate() {
                    if let Some(ix) = self.column(ox0 + p, kx) {
                        *src = line[ix * cin..].as_ptr();
                    }
                }
            }
        }
        let (w_ptr, out) = (self.weight.as_ptr(), dst.as_mut_ptr());
        let (lo, hi) = (_mm256_setzero_ps(), _mm256_set1_ps(6.0));
        for at in (0..full).step_by(LANES) {
            // SAFETY (all pointer reads and writes below): every `src` points at `cin` values
            // (a pixel of an input row, or `zeros`), and `at + LANES <= full <= cout == cin`
            // for depthwise, `ci < cin` for dense; weight offsets stay below `k * k * cout`
            // (depthwise) or `k * k * cin * cout` (dense), the lengths the constructors assert;
            // outputs stay below `(ox0 + P) * cout <= dst.len()` (asserted above).
            let mut acc = [unsafe { _mm256_loadu_ps(self.bias.as_ptr().add(at)) }; P];
            for (slot, &(ky, _)) in srcs.iter().zip(lines) {
                for (kx, taps) in slot.iter().enumerate().take(k) {
                    if self.depthwise {
                        let w = unsafe { _mm256_loadu_ps(w_ptr.add((ky * k + kx) * cout + at)) };
                        for (a, src) in acc.iter_mut().zip(taps) {
                            *a = _mm256_fmadd_ps(unsafe { _mm256_loadu_ps(src.add(at)) }, w, *a);
                        }
                    } else {
                        for ci in 0..cin {
                            let w = unsafe { _mm256_loadu_ps(w_ptr.add(((ky * k + kx) * cin + ci) * cout + at)) };
                            for (a, src) in acc.iter_mut().zip(taps) {
                                *a = _mm256_fmadd_ps(unsafe { _mm256_broadcast_ss(&*src.add(ci)) }, w, *a);
                            }
                        }
                    }
                }
            }
            for (p, a) in acc.iter().enumerate() {
                // The accumulator second: `max_ps`/`min_ps` return their second operand when
                // either is NaN, so a NaN stays NaN (as `f32::clamp` keeps it) and is caught
                // downstream instead of turning into 0.
                let v = if self.relu6 { _mm256_min_ps(hi, _mm256_max_ps(lo, *a)) } else { *a };
                unsafe { _mm256_storeu_ps(out.add((ox0 + p) * cout + at), v) };
            }
        }
    }

    /// Output pixels `ox0..ox1`, channels `c0..`, one value at a time (CPUs without AVX2, and
    /// channels past the last full block of eight).
    fn portable(&self, ox0: usize, ox1: usize, c0: usize, lines: &[(usize, &[f32])], dst: &mut [f32]) {
        let (k, cin, cout) = (self.k, self.x.c, self.bias.len());
        for ox in ox0..ox1 {
            for co in c0..cout {
                let mut acc = self.bias[co];
                for &(ky, line) in lines {
                    for kx in 0..k {
                        let Some(ix) = self.column(ox, kx) else { continue };
                        if self.depthwise {
                            acc += line[ix * cin + co] * self.weight[(ky * k + kx) * cout + co];
                        } else {
                            for ci in 0..cin {
                                acc += line[ix * cin + ci] * self.weight[((ky * k + kx) * cin + ci) * cout + co];
                            }
                        }
                    }
                }
                dst[ox * cout + co] = if self.relu6 { acc.clamp(0.0, 6.0) } else { acc };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_close, nhwc, reference, relu6_all, values};

    /// Runs `window` on the portable loop and, where the CPU has them, the AVX2 kernel.
    fn check_both_paths(window: Window<'_>, want_dims: [usize; 4], want: &[f32]) {
        for simd in [false, simd_available()] {
            let got = Window { simd, ..window }.run(&mut Buffers::default());
            assert_eq!(got.nchw_dims(), want_dims);
            assert_close(&got.to_nchw(), want);
        }
    }

    #[test]
    fn depthwise_matches_direct_loop() {
        // Channel counts off the 8-lane blocks and rows shorter than a pixel group included.
        for (k, stride, c, h, w) in
            [(3, 1, 16, 7, 6), (3, 2, 24, 8, 21), (5, 2, 13, 10, 8), (5, 1, 40, 6, 19), (3, 1, 3, 4, 3)]
        {
            let dims = [2, c, h, w];
            let x = values(2 * c * h * w, 3);
            let weight = values(c * k * k, 4);
            let bias = values(c, 5);
            let pad = Pad::same(k, stride);
            let (mut want, want_dims) = reference(&x, dims, &weight, &bias, k, stride, pad, true);
            relu6_all(&mut want);
            // [C, 1, k, k] -> [(ky, kx), C]
            let mut w_khwc = vec![0f32; weight.len()];
            for ch in 0..c {
                for t in 0..k * k {
                    w_khwc[t * c + ch] = weight[ch * k * k + t];
                }
            }
            let input = nhwc(&x, dims);
            let window = Window {
                x: &input,
                weight: &w_khwc,
                bias: &bias,
                k,
                stride,
                pad,
                relu6: true,
                depthwise: true,
                simd: false,
            };
            check_both_paths(window, want_dims, &want);
        }
    }

    #[test]
    fn dense_matches_direct_loop() {
        for (k, stride, c, cout, h, w) in [(3, 2, 3, 32, 9, 40), (3, 2, 3, 12, 9, 12), (5, 1, 4, 3, 6, 7)] {
            let dims = [2, c, h, w];
            let x = values(2 * c * h * w, 6);
            let weight = values(cout * c * k * k, 7);
            let bias = values(cout, 8);
            let pad = Pad::same(k, stride);
            let (want, want_dims) = reference(&x, dims, &weight, &bias, k, stride, pad, false);
            // [O, I, kh, kw] -> [(ky, kx, I), O]
            let mut w_mat = vec![0f32; weight.len()];
            for o in 0..cout {
                for i in 0..c {
                    for t in 0..k * k {
                        w_mat[(t * c + i) * cout + o] = weight[(o * c + i) * k * k + t];
                    }
                }
            }
            let input = nhwc(&x, dims);
            let window = Window {
                x: &input,
                weight: &w_mat,
                bias: &bias,
                k,
                stride,
                pad,
                relu6: false,
                depthwise: false,
                simd: false,
            };
            check_both_paths(window, want_dims, &want);
        }
    }

    /// A NaN in the input comes out as NaN (ReLU6 must not turn it into 0 or 6).
    #[test]
    fn nan_propagates_through_both_paths() {
        let (c, h, w) = (16, 4, 12);
        let mut x = values(c * h * w, 13);
        x[5 * h * w + 2 * w + 6] = f32::NAN; // channel 5, row 2, column 6
        let input = nhwc(&x, [1, c, h, w]);
        let weight = values(9 * c, 14);
        let bias = values(c, 15);
        for simd in [false, simd_available()] {
            let window = Window {
                x: &input,
                weight: &weight,
                bias: &bias,
                k: 3,
                stride: 1,
                pad: Pad::same(3, 1),
                relu6: true,
                depthwise: true,
                simd,
            };
            let out = window.run(&mut Buffers::default()).to_nchw();
            assert!(out[5 * h * w + 2 * w + 6].is_nan(), "simd {simd}");
            assert_eq!(out.iter().filter(|v| v.is_nan()).count(), 9, "the 3x3 neighbourhood of one channel");
        }
    }
}
