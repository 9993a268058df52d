//! Where defects may go: the background colour (a plane fitted to the border), the object
//! mask, and the sampler of defect centres on the object.
use image::RgbImage;

use crate::rnd::Rnd;

/// Summed absolute RGB difference from the border colour above which a pixel counts as object.
const FG_THRESHOLD: u32 = 30;

/// Below this share of object pixels the image is treated as empty/flat: defects go anywhere.
const MIN_FG_FRACTION: f32 = 0.02;

/// A resized image with its placement maps.
pub(super) struct Prepared {
    pub(super) img: RgbImage,
    pub(super) s: usize,
    /// Pixels that differ clearly from the background: where centres are drawn. `None` when
    /// fewer than [`MIN_FG_FRACTION`] qualify (flat or empty image): anywhere.
    pub(super) centres: Option<Vec<bool>>,
    centre_count: usize,
    /// Object images only: the pixels a defect may change (the object, closed to fill small
    /// gaps and dilated a little so edge defects look natural). `None` for textures.
    pub(super) allowed: Option<Vec<bool>>,
}

impl Prepared {
    pub(super) fn new(img: RgbImage) -> Self {
        let s = img.width() as usize;
        let n = s * s;
        // A 3×3 mean first, so sensor noise does not pass for object pixels.
        let smooth = box3(img.as_raw(), s);
        let border: Vec<usize> = (0..n)
            .filter(|&i| {
                let (x, y) = (i % s, i / s);
                x == 0 || y == 0 || x + 1 == s || y + 1 == s
            })
            .collect();
        let bg = background(&smooth, s, &border);
        let raw_fg: Vec<bool> = (0..n)
            .map(|i| {
                let (x, y) = (i % s, i / s);
                let d: f32 = (0..3).map(|c| (smooth[i][c] - bg.at(c, x, y, s)).abs()).sum();
                d > FG_THRESHOLD as f32
            })
            .collect();
        // Opening drops specks thinner than 3 px (noise, dust) that would scatter centres.
        let fg = dilate(&erode(&raw_fg, s, 1), s, 1);
        let count = fg.iter().filter(|&&f| f).count();
        if (count as f32) < MIN_FG_FRACTION * n as f32 {
            return Self { img, s, centres: None, centre_count: 0, allowed: None };
        }
        // Object or texture? A stationary texture differs from its border colour as often on
        // the border as inside; an object on a background mostly does not reach the border.
        let on_border = border.iter().filter(|&&i| fg[i]).count();
        let border_frac = on_border as f32 / border.len() as f32;
        let object = border_frac <= 0.5 * count as f32 / n as f32;
        let allowed = object.then(|| {
            let r = ((s as f32 / 128.0).round() as usize).max(1);
            let closed = erode(&dilate(&fg, s, 2 * r), s, 2 * r);
            dilate(&closed, s, r)
        });
        Self { img, s, centres: Some(fg), centre_count: count, allowed }
    }

    /// Whether a defect may change the pixel at (x, y) (pixel coordinates, centre at +0.5).
    pub(super) fn allows(&self, x: f32, y: f32) -> bool {
        if x < 0.0 || y < 0.0 || x >= self.s as f32 || y >= self.s as f32 {
            return false;
        }
        match &self.allowed {
            None => true,
            Some(a) => a[y as usize * self.s + x as usize],
        }
    }

    /// A defect centre: a clearly-non-background pixel, at least `margin` from the border when
    /// possible; anywhere on a flat image.
    pub(super) fn pick_centre(&self, rng: &mut Rnd, margin: f32) -> (f32, f32) {
        let s = self.s as f32;
        let m = margin.clamp(0.0, s / 4.0);
        let Some(c) = &self.centres else {
            return (rng.range(m, s - m), rng.range(m, s - m));
        };
        for _ in 0..2000 {
            let (x, y) = (rng.range(m, s - m), rng.range(m, s - m));
            let i = (y as usize).min(self.s - 1) * self.s + (x as usize).min(self.s - 1);
            if c[i] {
                return (x, y);
            }
        }
        // Objects hugging the border (or tiny ones): any qualifying pixel.
        let k = rng.below_u64(self.centre_count);
        let i = c.iter().enumerate().filter(|(_, f)| **f).nth(k).map_or(0, |(i, _)| i);
        ((i % self.s) as f32 + rng.u(), (i / self.s) as f32 + rng.u())
    }
}

/// 3×3 mean (edges replicated), in grey levels.
fn box3(raw: &[u8], s: usize) -> Vec<[f32; 3]> {
    let mut out = vec![[0f32; 3]; s * s];
    for y in 0..s {
        for x in 0..s {
            let mut acc = [0f32; 3];
            for yy in y.saturating_sub(1)..(y + 2).min(s) {
                for xx in x.saturating_sub(1)..(x + 2).min(s) {
                    for c in 0..3 {
                        acc[c] += raw[3 * (yy * s + xx) + c] as f32;
                    }
                }
            }
            let k = ((x.min(1) + (x + 1 < s) as usize + 1) * (y.min(1) + (y + 1 < s) as usize + 1)) as f32;
            out[y * s + x] = [acc[0] / k, acc[1] / k, acc[2] / k];
        }
    }
    out
}

/// The background colour as a plane per channel, `a + b·u + c·v` with u, v in [-0.5, 0.5].
struct Plane([[f32; 3]; 3]);

impl Plane {
    fn at(&self, c: usize, x: usize, y: usize, s: usize) -> f32 {
        let (u, v) = ((x as f32 + 0.5) / s as f32 - 0.5, (y as f32 + 0.5) / s as f32 - 0.5);
        let p = self.0[c];
        p[0] + p[1] * u + p[2] * v
    }
}

/// Background colour from the border: the per-channel median, refined to a least-squares plane
/// over the border pixels near that median, so a lighting gradient across a plain background
/// is not taken for an object. Falls back to the median when too few border pixels agree.
fn background(smooth: &[[f32; 3]], s: usize, border: &[usize]) -> Plane {
    let mut med = [0f32; 3];
    for (c, m) in med.iter_mut().enumerate() {
        let mut v: Vec<f32> = border.iter().map(|&i| smooth[i][c]).collect();
        let mid = v.len() / 2;
        *m = *v.select_nth_unstable_by(mid, f32::total_cmp).1;
    }
    let flat = Plane([[med[0], 0.0, 0.0], [med[1], 0.0, 0.0], [med[2], 0.0, 0.0]]);
    let inliers: Vec<usize> = border
        .iter()
        .copied()
        .filter(|&i| (0..3).map(|c| (smooth[i][c] - med[c]).abs()).sum::<f32>() <= 2.0 * FG_THRESHOLD as f32)
        .collect();
    if inliers.len() < border.len() / 2 {
        return flat;
    }
    // Normal equations of the 3-parameter fit, shared by the channels.
    let mut m = [[0f64; 3]; 3];
    let mut rhs = [[0f64; 3]; 3];
    for &i in &inliers {
        let (u, v) = (((i % s) as f64 + 0.5) / s as f64 - 0.5, ((i / s) as f64 + 0.5) / s as f64 - 0.5);
        let f = [1.0, u, v];
        for r in 0..3 {
            for k in 0..3 {
                m[r][k] += f[r] * f[k];
            }
            for c in 0..3 {
                rhs[c][r] += f[r] * smooth[i][c] as f64;
            }
        }
    }
    let det = |a: &[[f64; 3]; 3]| {
        a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1]) - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
    };
    let d = det(&m);
    if d.abs() < 1e-9 {
        return flat;
    }
    let mut out = [[0f32; 3]; 3];
    for c in 0..3 {
        for k in 0..3 {
            // Cramer's rule: column k replaced by the right-hand side.
            let mut a = m;
            for r in 0..3 {
                a[r][k] = rhs[c][r];
            }
            out[c][k] = (det(&a) / d) as f32;
        }
    }
    Plane(out)
}

/// Binary dilation by a (2r+1)² square, separable with running counts (O(n) whatever r).
pub(super) fn dilate(m: &[bool], s: usize, r: usize) -> Vec<bool> {
    if r == 0 {
        return m.to_vec();
    }
    let pass = |src: &[bool], horizontal: bool| {
        let mut out = vec![false; s * s];
        for line in 0..s {
            let at = |t: usize| {
                if horizontal { line * s + t } else { t * s + line }
            };
            let mut count = (0..r.min(s)).filter(|&t| src[at(t)]).count();
            for t in 0..s {
                if t + r < s && src[at(t + r)] {
                    count += 1;
                }
                if t > r && src[at(t - r - 1)] {
                    count -= 1;
                }
                out[at(t)] = count > 0;
            }
        }
        out
    };
    let h = pass(m, true);
    pass(&h, false)
}

/// Binary erosion by a (2r+1)² square (outside the image counts as set).
pub(super) fn erode(m: &[bool], s: usize, r: usize) -> Vec<bool> {
    let inv: Vec<bool> = m.iter().map(|&v| !v).collect();
    dilate(&inv, s, r).into_iter().map(|v| !v).collect()
}
