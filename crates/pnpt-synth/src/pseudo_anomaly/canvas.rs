//! The image being corrupted, and the colour arithmetic the defects paint with.
use super::layout::Prepared;

/// The image being corrupted; writes outside the allowed region are ignored.
pub(super) struct Canvas<'a> {
    pub(super) p: &'a Prepared,
    pub(super) out: Vec<u8>,
    /// Area factor of this anomaly's defect (1 = full size; see `attempts::defect_scale`).
    pub(super) scale: f32,
}

impl Canvas<'_> {
    pub(super) fn clean(&self, i: usize) -> [f32; 3] {
        let r = self.p.img.as_raw();
        [r[3 * i] as f32 / 255.0, r[3 * i + 1] as f32 / 255.0, r[3 * i + 2] as f32 / 255.0]
    }
    pub(super) fn put(&mut self, i: usize, v: [f32; 3]) {
        if let Some(a) = &self.p.allowed
            && !a[i]
        {
            return;
        }
        for (o, c) in self.out[3 * i..3 * i + 3].iter_mut().zip(v) {
            *o = quantise(c);
        }
    }
    /// Mean clean colour over some pixels (for choosing a contrasting colour or direction).
    pub(super) fn mean(&self, px: impl Iterator<Item = usize>) -> [f32; 3] {
        let (mut m, mut n) = ([0f32; 3], 0usize);
        for i in px {
            let c = self.clean(i);
            for k in 0..3 {
                m[k] += c[k];
            }
            n += 1;
        }
        let n = n.max(1) as f32;
        [m[0] / n, m[1] / n, m[2] / n]
    }
}

pub(super) fn smoothstep(a: f32, b: f32, x: f32) -> f32 {
    let t = ((x - a) / (b - a)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

pub(super) fn mix3(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

pub(super) fn luma(c: [f32; 3]) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

pub(super) fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = h.rem_euclid(1.0) * 6.0;
    let f = h6 - h6.floor();
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match h6 as u32 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

fn quantise(v: f32) -> u8 {
    (v * 255.0).round().clamp(0.0, 255.0) as u8
}
