//! Channels-last (NHWC) f32 activations, the buffers they are kept in between passes, and the
//! zero padding of a convolution's input.
//!
//! Burn's CPU backends run a graph one operator at a time in NCHW; the convolution kernels of
//! this crate ([`crate::pointwise`], [`crate::depthwise`], [`crate::dense`]) keep an activation
//! NHWC so a pixel's channels are contiguous (one vector load per tap, a 1×1 convolution is a
//! plain matrix product).

use rayon::prelude::*;

/// Activation buffers kept from one forward pass to the next.
///
/// A fresh multi-megabyte `Vec` is fresh zeroed pages from the kernel: before the buffers were
/// reused, page faults and page clearing took about 5 % of the backbone's samples in `perf`.
#[derive(Debug, Default)]
pub struct Buffers(Vec<Vec<f32>>);

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
pub struct Nhwc {
    /// Batch size.
    pub n: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// `n·h·w·c` values, channels fastest.
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
pub struct Pad {
    /// Rows above.
    pub top: usize,
    /// Rows below.
    pub bottom: usize,
    /// Columns on the left.
    pub left: usize,
    /// Columns on the right.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::values;

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
}
