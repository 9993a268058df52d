//! Inputs and reference loops shared by the convolution tests.

use crate::{Buffers, Nhwc, Pad};

/// Deterministic values in [-1, 1) (no RNG crate needed).
pub(crate) fn values(len: usize, seed: u32) -> Vec<f32> {
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
pub(crate) fn reference(
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

pub(crate) fn nhwc(x: &[f32], dims: [usize; 4]) -> Nhwc {
    Nhwc::from_nchw(x, dims, &mut Buffers::default())
}

pub(crate) fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "element {i}: {g} vs {w}");
    }
}

pub(crate) fn relu6_all(v: &mut [f32]) {
    v.iter_mut().for_each(|x| *x = x.clamp(0.0, 6.0));
}
