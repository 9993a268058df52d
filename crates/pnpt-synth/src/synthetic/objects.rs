//! Objects on a plain background, with pose jitter: a bottle seen from above, a screw and a
//! printed capsule.
//!
//! Each renderer fills `img` (object over background), `bg` (the background alone, what a
//! missing piece reveals) and `cover` (anti-aliased object coverage). The screw and the capsule
//! also take [`Mods`], a structural fault drawn into the object itself; the random stream is
//! consumed the same way with or without one, so the faulty image matches the clean one
//! everywhere but on the fault.
use std::f32::consts::{FRAC_PI_2, PI, TAU};

use super::paint::{Lattice, Stroke, add3, mix3, scale3, smooth, tint, union_bbox};
use super::render::{Pose, Scene};
use crate::rnd::Rnd;

/// A structural fault to draw into an object (none by default).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Mods {
    /// The screw's tip bent sideways.
    pub(super) bend: Option<Bend>,
    /// The capsule's print faulty.
    pub(super) print: Option<PrintFault>,
}

/// A bend of the screw's shaft.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bend {
    /// Where the bend starts along the shaft, as a fraction of the image size from the centre
    /// (the shaft runs from -0.28 to 0.30).
    pub(super) pivot: f32,
    /// Bend angle in radians (either sign).
    pub(super) angle: f32,
}

/// A fault of the capsule's printed "250".
#[derive(Debug, Clone, Copy)]
pub(super) enum PrintFault {
    /// Characters `first..first + count` not printed.
    Missing { first: usize, count: usize },
    /// Wet ink dragged `len` pixels along the unit direction `dir` (object coordinates).
    Smear { dir: (f32, f32), len: f32 },
    /// The whole print misplaced by (`da`, `db`) pixels (object coordinates).
    Shift { da: f32, db: f32 },
}

/// Bottle seen from above: a bright rim with a moving highlight around a dark green glass disc
/// with concentric ribs and a bright centre, on black, in any rotation with a small shift.
pub(super) fn bottle(sc: &mut Scene, rng: &mut Rnd) {
    let s = sc.s;
    let k = s as f32 / 128.0;
    let pose = Pose::new(s, 180.0, 2.5 * k, rng);
    sc.axis = pose.angle;
    let r_out = 0.40 * s as f32 * rng.range(0.98, 1.02);
    let glass = tint([0.26, 0.31, 0.22], rng, 0.03);
    let rim = tint([0.62, 0.66, 0.55], rng, 0.03);
    let back = [0.07, 0.07, 0.08];
    let hl_angle = rng.range(0.0, TAU);
    for y in 0..s {
        for x in 0..s {
            let (lx, ly) = pose.local(x, y);
            let r = (lx * lx + ly * ly).sqrt();
            let t = r / r_out;
            let col = if t > 0.82 {
                let v = 0.55 + 0.45 * (PI * ((t - 0.82) / 0.18).min(1.0)).sin();
                let hl = 0.25 * (ly.atan2(lx) - hl_angle).cos().max(0.0).powi(8);
                scale3(rim, v + hl)
            } else if t > 0.45 {
                scale3(glass, 0.9 + 0.12 * (TAU * t * 6.0).cos())
            } else {
                scale3(glass, 1.2 + 0.5 * (1.0 - t / 0.45))
            };
            let i = y * s + x;
            sc.cover[i] = (r_out - r + 0.5).clamp(0.0, 1.0);
            sc.bg[i] = back;
            sc.img[i] = mix3(back, col, sc.cover[i]);
        }
    }
}

/// Screw: a slotted head and a threaded shaft tapering to a point, on a light table, rotated by
/// up to 10° and shifted by up to 3 px (at 128 px). With [`Mods::bend`] the shaft beyond the
/// pivot is bent sideways.
pub(super) fn screw(sc: &mut Scene, rng: &mut Rnd, mods: &Mods) {
    let s = sc.s;
    let sf = s as f32;
    let pose = Pose::new(s, 10.0, 3.0 * sf / 128.0, rng);
    sc.axis = pose.angle;
    let (a0, a_tip, a1) = (-0.28 * sf, 0.20 * sf, 0.30 * sf);
    let w = 0.055 * sf * rng.range(0.95, 1.05);
    let (head0, head_w) = (-0.36 * sf, 0.11 * sf);
    let pitch = sf / 22.0;
    let phase = rng.range(0.0, TAU);
    let metal = tint([0.50, 0.51, 0.54], rng, 0.03);
    let back = tint([0.84, 0.83, 0.80], rng, 0.02);
    let bend = mods.bend.map(|b| (b.pivot * sf, b.angle, 0.07 * sf));
    for y in 0..s {
        for x in 0..s {
            let (mut a, mut b) = pose.local(x, y);
            if let Some((ap, angle, ramp)) = bend
                && a > ap
            {
                // Beyond the pivot, rotate back by an angle that grows over `ramp`: a smooth
                // bend of the metal, not a kink with a gap.
                let phi = -angle * smooth(((a - ap) / ramp).min(1.0));
                let (da, db) = (a - ap, b);
                a = ap + phi.cos() * da - phi.sin() * db;
                b = phi.sin() * da + phi.cos() * db;
            }
            // Shaft half-width tapers to a point over the tip.
            let hw = if a > a_tip { w * (1.0 - (a - a_tip) / (a1 - a_tip)).max(0.05) } else { w };
            let sd_shaft = (b.abs() - hw).max(a0 - a).max(a - a1);
            let sd_head = (b.abs() - head_w).max(head0 - a).max(a - a0);
            let c_shaft = (0.5 - sd_shaft).clamp(0.0, 1.0);
            let c_head = (0.5 - sd_head).clamp(0.0, 1.0);
            let c = c_shaft.max(c_head);
            let col = if c_head > c_shaft {
                let slot = if b.abs() < 0.015 * sf { 0.55 } else { 1.0 };
                scale3(metal, (1.1 - 0.3 * (b / head_w).powi(2)) * slot)
            } else {
                let cyl = 0.7 + 0.3 * (FRAC_PI_2 * (b / w).clamp(-1.0, 1.0)).cos();
                let thread = 0.85 + 0.2 * (TAU * a / pitch + phase + b * 0.15).sin();
                scale3(metal, cyl * thread)
            };
            let i = y * s + x;
            sc.cover[i] = c;
            sc.bg[i] = back;
            sc.img[i] = mix3(back, col, c);
        }
    }
}

/// Characters of the capsule's print, as polylines in a unit box (x right, y down).
const GLYPH_2: &[(f32, f32)] = &[
    (0.06, 0.26),
    (0.2, 0.06),
    (0.5, 0.0),
    (0.8, 0.06),
    (0.94, 0.27),
    (0.86, 0.48),
    (0.5, 0.72),
    (0.05, 1.0),
    (0.97, 1.0),
];
const GLYPH_5: &[(f32, f32)] = &[
    (0.92, 0.0),
    (0.16, 0.0),
    (0.08, 0.45),
    (0.45, 0.36),
    (0.8, 0.43),
    (0.96, 0.66),
    (0.86, 0.9),
    (0.55, 1.0),
    (0.22, 0.97),
    (0.03, 0.84),
];

/// The printed "250" on the capsule's body, in object coordinates, with an optional fault.
struct Print {
    glyphs: Vec<Stroke>,
    /// Where any ink can be (the glyphs' box, grown by a smear).
    bbox: [f32; 4],
    smear: Option<((f32, f32), f32)>,
}

impl Print {
    /// Lays "250" out centred between `a0` and `a1` along the axis; `jitter` is the normal
    /// per-image placement tolerance of the printer.
    fn new(sf: f32, a0: f32, a1: f32, jitter: (f32, f32), fault: Option<PrintFault>) -> Self {
        let (gh, gw, gap) = (0.095 * sf, 0.058 * sf, 0.022 * sf);
        let hw = (0.0085 * sf).max(0.6);
        let mut x0 = (a0 + a1) / 2.0 - (3.0 * gw + 2.0 * gap) / 2.0 + jitter.0;
        let mut y0 = -gh / 2.0 + jitter.1;
        if let Some(PrintFault::Shift { da, db }) = fault {
            x0 += da;
            y0 += db;
        }
        let zero: Vec<(f32, f32)> = (0..=16)
            .map(|i| {
                let t = TAU * i as f32 / 16.0;
                (0.5 + 0.5 * t.cos(), 0.5 + 0.5 * t.sin())
            })
            .collect();
        let shapes: [&[(f32, f32)]; 3] = [GLYPH_2, GLYPH_5, &zero];
        let mut glyphs = Vec::new();
        for (g, shape) in shapes.iter().enumerate() {
            if let Some(PrintFault::Missing { first, count }) = fault
                && (first..first + count).contains(&g)
            {
                continue;
            }
            let gx = x0 + g as f32 * (gw + gap);
            glyphs.push(Stroke { pts: shape.iter().map(|&(u, v)| (gx + u * gw, y0 + v * gh, hw)).collect() });
        }
        let smear = match fault {
            Some(PrintFault::Smear { dir, len }) => Some((dir, len)),
            _ => None,
        };
        let grow = smear.map_or(0.0, |(_, len)| len);
        let bbox = union_bbox(glyphs.iter().map(Stroke::bbox), grow);
        Self { glyphs, bbox, smear }
    }

    fn ink(&self, a: f32, b: f32) -> f32 {
        self.glyphs.iter().map(|g| g.alpha(a, b)).fold(0.0, f32::max)
    }

    /// Ink coverage at object point (a, b).
    fn alpha(&self, a: f32, b: f32) -> f32 {
        let bb = self.bbox;
        if a < bb[0] || a > bb[2] || b < bb[1] || b > bb[3] {
            return 0.0;
        }
        match self.smear {
            None => self.ink(a, b),
            // Wet ink dragged along `dir`: each point takes the ink from up to `len` behind
            // it, thinning out with the distance.
            Some((dir, len)) => (0..=10)
                .map(|j| {
                    let t = j as f32 / 10.0;
                    self.ink(a - t * len * dir.0, b - t * len * dir.1) * (1.0 - 0.55 * t)
                })
                .fold(0.0, f32::max),
        }
    }
}

/// Capsule: a red cap and a white body (the cap a little wider, with a shadowed seam), shaded
/// as a cylinder with rounded ends and a highlight, printed "250" in dark ink on the body,
/// lying on a mottled dark tray with a soft shadow; rotated by up to 8° and shifted by up to
/// 4 px (at 128 px). With [`Mods::print`] the print is faulty.
pub(super) fn capsule(sc: &mut Scene, rng: &mut Rnd, mods: &Mods) {
    let s = sc.s;
    let sf = s as f32;
    let k = sf / 128.0;
    let pose = Pose::new(s, 8.0, 4.0 * k, rng);
    sc.axis = pose.angle;
    let half = 0.34 * sf * rng.range(0.985, 1.015);
    let r = 0.12 * sf * rng.range(0.985, 1.015);
    let seam = -0.02 * sf;
    let cap = tint([0.80, 0.22, 0.12], rng, 0.02);
    let body = tint([0.93, 0.91, 0.86], rng, 0.015);
    let ink = tint([0.10, 0.10, 0.14], rng, 0.02);
    let ink_strength = rng.range(0.88, 0.96);
    let back = tint([0.24, 0.26, 0.30], rng, 0.02);
    let mottle = Lattice::new(23, 23, rng);
    // Light from the upper left: the shadow falls to the lower right.
    let (shx, shy) = (rng.range(1.5, 3.0) * k, rng.range(1.5, 3.0) * k);
    let jitter = (rng.range(-0.6, 0.6) * k, rng.range(-0.6, 0.6) * k);
    let print = Print::new(sf, seam, half - r, jitter, mods.print);
    // Distance from the axis segment, the local radius and how far into a rounded end.
    let geom = |a: f32, b: f32| {
        let rr = if a < seam { r * 1.04 } else { r };
        let ex = (a.abs() - (half - rr)).max(0.0);
        ((ex * ex + b * b).sqrt(), rr, ex)
    };
    let soft = 2.5 * k.max(0.5);
    for y in 0..s {
        for x in 0..s {
            let (a, b) = pose.local(x, y);
            let (dist, rr, ex) = geom(a, b);
            let c = (rr + 0.5 - dist).clamp(0.0, 1.0);
            let (sa, sb) = pose.local_at(x as f32 + 0.5 - shx, y as f32 + 0.5 - shy);
            let (sdist, srr, _) = geom(sa, sb);
            let shadow = 0.4 * smooth(((soft - (sdist - srr)) / (2.0 * soft)).clamp(0.0, 1.0));
            let m = 1.0 + 0.06 * mottle.sample(x as f32 / (6.0 * k), y as f32 / (6.0 * k));
            let bg = scale3(back, m * (1.0 - shadow));
            let n = (dist / rr).min(1.0);
            let shade = 0.6 + 0.4 * (1.0 - n * n).sqrt();
            let mut col = scale3(if a < seam { cap } else { body }, shade);
            if (a - seam).abs() < 0.7 * k.max(1.0) {
                col = scale3(col, 0.72);
            }
            // The print wraps round the cylinder: it fades where the surface turns away.
            let ink_a = print.alpha(a, b) * ink_strength * (1.0 - n.powi(6));
            col = mix3(col, scale3(ink, shade), ink_a);
            // A glossy highlight along the upper side, fading over the rounded ends.
            let spec = 0.3 * (-((b / rr + 0.62) / 0.12).powi(2)).exp() * (1.0 - ex / rr).max(0.0);
            col = add3(col, spec);
            let i = y * s + x;
            sc.cover[i] = c;
            sc.bg[i] = bg;
            sc.img[i] = mix3(bg, col, c);
        }
    }
}
