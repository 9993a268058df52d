//! Channels-last (NHWC) f32 kernels for the CPU: what EfficientNet-Lite0 needs, fused.
//!
//! Burn's CPU backends run the generated graph one operator at a time in NCHW: each zero pad,
//! ReLU6 and residual add is its own pass over memory, and depthwise convolutions walk one
//! channel plane at a time. Here an activation stays NHWC, so
//! * a 1×1 convolution is a matrix product `[N·H·W, C_in] × [C_in, C_out]`, run in tiles of rows
//!   whose output starts as bias (+ residual), is accumulated into and clamped while in cache;
//! * a depthwise convolution reads eight contiguous channels of a pixel with one vector load
//!   per tap, keeps eight output pixels' accumulators in registers, reads zeros for taps in the
//!   padding (no padded copy) and clamps on the way out (ReLU6 fused);
//! * the dense stem convolution is the same direct loop with each input value broadcast.
//!
//! Every kernel is checked against a direct loop in the tests below, and the whole network
//! against the generated graph (`tests/efficientnet_kernels.rs`).

use rayon::prelude::*;

/// Activation buffers kept from one forward pass to the next.
///
/// A fresh multi-megabyte `Vec` is fresh zeroed pages from the kernel: before the buffers were
/// reused, page faults and page clearing took about 5 % of the backbone's samples in `perf`.
#[derive(Debug, Default)]
pub(crate) struct Buffers(Vec<Vec<f32>>);

impl Buffers {
    /// An empty vector with room for `len` values: the smallest kept one that fits, else the
    /// largest grown.
    pub fn take(&mut self, len: usize) -> Vec<f32> {
        let fits = (0..self.0.len()).filter(|&i| self.0[i].capacity() >= len).min_by_key(|&i| self.0[i].capacity());
        let largest = (0..self.0.len()).max_by_key(|&i| self.0[i].capacity());
        let mut v = match fits.or(largest) {
            Some(i) => self.0.swap_remove(i),
            None => Vec::new(),
        };
        v.clear();
        v.reserve(len);
        v
    }

    /// Keeps a vector for a later [`Self::take`].
    pub fn give(&mut self, v: Vec<f32>) {
        self.0.push(v);
    }
}

/// An NHWC activation of f32 values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Nhwc {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<f32>,
}

impl Nhwc {
    /// From NCHW values (`data.len() == n·c·h·w`).
    pub fn from_nchw(data: &[f32], [n, c, h, w]: [usize; 4], buffers: &mut Buffers) -> Self {
        let mut out = buffers.take(data.len());
        out.resize(data.len(), 0.0);
        let plane = h * w;
        out.par_chunks_mut(plane * c).zip(data.par_chunks(plane * c)).for_each(|(dst, src)| {
            for ch in 0..c {
                for (p, &v) in src[ch * plane..(ch + 1) * plane].iter().enumerate() {
                    dst[p * c + ch] = v;
                }
            }
        });
        Self { n, h, w, c, data: out }
    }

    /// The values in NCHW order.
    pub fn to_nchw(&self) -> Vec<f32> {
        let (c, plane) = (self.c, self.h * self.w);
        let mut out = vec![0f32; self.data.len()];
        out.par_chunks_mut(plane * c).zip(self.data.par_chunks(plane * c)).for_each(|(dst, src)| {
            for (p, px) in src.chunks_exact(c).enumerate() {
                for (ch, &v) in px.iter().enumerate() {
                    dst[ch * plane + p] = v;
                }
            }
        });
        out
    }

    /// `[n, c, h, w]`.
    pub fn nchw_dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }
}

/// Zero padding of a convolution's input: rows above/below, columns left/right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pad {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Pad {
    /// TensorFlow "SAME" for a k×k window (what the graph's explicit pads encode, for inputs
    /// of even side at stride 2): `k − s` zeros in all, the extra one at the bottom/right.
    pub fn same(k: usize, stride: usize) -> Self {
        let total = k.saturating_sub(stride);
        let before = total / 2;
        Self { top: before, bottom: total - before, left: before, right: total - before }
    }
}

/// Output height and width of a k×k convolution with this padding and stride.
fn out_dims(x: &Nhwc, k: usize, stride: usize, pad: Pad) -> (usize, usize) {
    let side = |len: usize, before: usize, after: usize| (len + before + after - k) / stride + 1;
    (side(x.h, pad.top, pad.bottom), side(x.w, pad.left, pad.right))
}

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
/// output) is added; ReLU6 when `relu6`.
///
/// Runs in tiles of rows, one task each: a tile's output is set to bias (+ residual), the
/// product accumulated into it and clamped while it is still in cache.
pub(crate) fn pointwise(
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

/// A dense k×k convolution (the stem): `weight` is `[(ky, kx, C_in), C_out]` row-major.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dense(
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
pub(crate) fn depthwise(
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

/// Whether this CPU runs the AVX2 + FMA kernel (else the portable loop).
pub(crate) fn simd_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
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

    /// Deterministic values in [-1, 1) (no RNG crate needed).
    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Direct NCHW convolution with `groups` (1 or C), the textbook loop, f64 accumulation.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        x: &[f32],
        [n, c, h, w]: [usize; 4],
        weight_oihw: &[f32],
        bias: &[f32],
        k: usize,
        stride: usize,
        pad: Pad,
        depthwise: bool,
    ) -> (Vec<f32>, [usize; 4]) {
        let cout = bias.len();
        let oh = (h + pad.top + pad.bottom - k) / stride + 1;
        let ow = (w + pad.left + pad.right - k) / stride + 1;
        let cin_per = if depthwise { 1 } else { c };
        let mut out = vec![0f32; n * cout * oh * ow];
        for b in 0..n {
            for o in 0..cout {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = bias[o] as f64;
                        for i in 0..cin_per {
                            let ci = if depthwise { o } else { i };
                            for ky in 0..k {
                                for kx in 0..k {
                                    let iy = (oy * stride + ky) as isize - pad.top as isize;
                                    let ix = (ox * stride + kx) as isize - pad.left as isize;
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let v = x[((b * c + ci) * h + iy as usize) * w + ix as usize] as f64;
                                    let wv = weight_oihw[((o * cin_per + i) * k + ky) * k + kx] as f64;
                                    acc += v * wv;
                                }
                            }
                        }
                        out[((b * cout + o) * oh + oy) * ow + ox] = acc as f32;
                    }
                }
            }
        }
        (out, [n, cout, oh, ow])
    }

    /// Runs `window` on the portable loop and, where the CPU has them, the AVX2 kernel.
    fn check_both_paths(window: Window<'_>, want_dims: [usize; 4], want: &[f32]) {
        for simd in [false, simd_available()] {
            let got = Window { simd, ..window }.run(&mut Buffers::default());
            assert_eq!(got.nchw_dims(), want_dims);
            assert_close(&got.to_nchw(), want);
        }
    }

    fn nhwc(x: &[f32], dims: [usize; 4]) -> Nhwc {
        Nhwc::from_nchw(x, dims, &mut Buffers::default())
    }

    fn assert_close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "element {i}: {g} vs {w}");
        }
    }

    fn relu6_all(v: &mut [f32]) {
        v.iter_mut().for_each(|x| *x = x.clamp(0.0, 6.0));
    }

    #[test]
    fn buffers_are_reused_best_fit() {
        let mut buffers = Buffers::default();
        buffers.give(Vec::with_capacity(100));
        buffers.give(Vec::with_capacity(10));
        let mut small = buffers.take(8);
        assert_eq!((small.len(), small.capacity()), (0, 10));
        small.push(1.0);
        buffers.give(small);
        // Nothing fits 200: the largest kept one is grown.
        let big = buffers.take(200);
        assert!(big.is_empty() && big.capacity() >= 200);
        assert_eq!(buffers.take(5).capacity(), 10);
        assert!(buffers.0.is_empty(), "every kept vector handed out");
    }

    #[test]
    fn layout_round_trip() {
        let dims = [2, 3, 4, 5];
        let x = values(120, 1);
        let t = Nhwc::from_nchw(&x, dims, &mut Buffers::default());
        // Pixel (b=1, y=2, x=3), channel 1, by hand.
        assert_eq!(t.data[((4 + 2) * 5 + 3) * 3 + 1], x[((3 + 1) * 4 + 2) * 5 + 3]);
        assert_eq!(t.to_nchw(), x);
        assert_eq!(t.nchw_dims(), dims);
    }

    #[test]
    fn same_padding_matches_the_graph() {
        // The generated graph pads (0, 1) before 3×3 stride-2, (1, 2) before 5×5 stride-2,
        // (1, 1) and (2, 2) before the stride-1 windows.
        assert_eq!(Pad::same(3, 2), Pad { top: 0, bottom: 1, left: 0, right: 1 });
        assert_eq!(Pad::same(5, 2), Pad { top: 1, bottom: 2, left: 1, right: 2 });
        assert_eq!(Pad::same(3, 1), Pad { top: 1, bottom: 1, left: 1, right: 1 });
        assert_eq!(Pad::same(5, 1), Pad { top: 2, bottom: 2, left: 2, right: 2 });
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
