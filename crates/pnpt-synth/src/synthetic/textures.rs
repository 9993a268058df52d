//! Stationary textures (defects may sit anywhere): woven fabric, wood grain, carpet.
//!
//! Each draws its random parameters first and then fills every pixel of `sc.img`; the phase,
//! orientation, period and colour vary per image so no two normal images line up.
use std::f32::consts::{PI, TAU};

use super::paint::{Lattice, mix3, scale3, tint};
use super::render::{Pose, Scene};
use crate::rnd::Rnd;

/// Woven fabric: warp and weft threads crossing over-under like a checkerboard, on a grid
/// rotated by up to 4°, with uneven yarn (each thread crossing a little lighter or darker).
pub(super) fn weave(sc: &mut Scene, rng: &mut Rnd) {
    let s = sc.s;
    let k = s as f32 / 128.0;
    let pose = Pose::new(s, 4.0, 0.0, rng);
    let p = 11.0 * k * rng.range(0.95, 1.05);
    let (ox, oy) = (rng.range(0.0, 2.0 * p), rng.range(0.0, 2.0 * p));
    let warp = tint([0.78, 0.70, 0.52], rng, 0.04);
    let weft = tint([0.70, 0.64, 0.50], rng, 0.04);
    // One value per crossing: real yarn is never perfectly even.
    let yarn = Lattice::new(61, 59, rng);
    for y in 0..s {
        for x in 0..s {
            let (lx, ly) = pose.local(x, y);
            let (cx, cy) = ((lx + ox) / p, (ly + oy) / p);
            let (i, j) = (cx.floor() as i64, cy.floor() as i64);
            let (fx, fy) = (cx - cx.floor(), cy - cy.floor());
            // Over-under: the thread on top alternates like a checkerboard.
            let (col, across, along) = if (i + j).rem_euclid(2) == 0 { (warp, fy, fx) } else { (weft, fx, fy) };
            let v = (0.55 + 0.45 * (PI * across).sin()) * (0.85 + 0.15 * (PI * along).sin());
            let uneven = 1.0 + 0.05 * yarn.at(i, j);
            sc.img[y * s + x] = scale3(col, v * uneven);
        }
    }
}

/// Wood grain: growth rings as wavy stripes (two sine undulations) with fine fibre streaks,
/// rotated by up to 5°.
pub(super) fn wood(sc: &mut Scene, rng: &mut Rnd) {
    let s = sc.s;
    let k = s as f32 / 128.0;
    let pose = Pose::new(s, 5.0, 0.0, rng);
    let p = rng.range(10.0, 14.0) * k;
    let (a1, l1, f1) = (rng.range(0.3, 0.8), rng.range(60.0, 180.0) * k, rng.range(0.0, 6.3));
    let (a2, l2, f2) = (rng.range(0.05, 0.25), rng.range(15.0, 40.0) * k, rng.range(0.0, 6.3));
    let off = rng.range(0.0, 1.0);
    let light = tint([0.78, 0.57, 0.35], rng, 0.03);
    let dark = tint([0.52, 0.33, 0.18], rng, 0.03);
    let streaks = Lattice::new(97, 7, rng);
    for y in 0..s {
        for x in 0..s {
            let (lx, ly) = pose.local(x, y);
            let t = lx / p + a1 * (TAU * ly / l1 + f1).sin() + a2 * (TAU * ly / l2 + f2).sin() + off;
            let ring = 0.5 + 0.5 * (TAU * t).sin();
            let st = streaks.sample(lx / (1.7 * k), ly / (30.0 * k));
            let v = (ring * ring * 0.85 + 0.08 * st + 0.07).clamp(0.0, 1.0);
            sc.img[y * s + x] = mix3(light, dark, v);
        }
    }
}

/// Carpet: three octaves of value noise on a violet base, with a per-image contrast (the sensor
/// noise doubles for it in `render_scene`, the speckle of individual tufts).
pub(super) fn carpet(sc: &mut Scene, rng: &mut Rnd) {
    let s = sc.s;
    let k = s as f32 / 128.0;
    let base = tint([0.46, 0.38, 0.55], rng, 0.04);
    // How the pile lies (brushed one way or the other) changes the contrast from roll to roll.
    let contrast = rng.range(0.8, 1.2);
    let octaves: Vec<(Lattice, f32, f32)> = [(3.0, 0.30), (7.0, 0.22), (16.0, 0.15)]
        .iter()
        .map(|&(cell, amp)| {
            let m = ((s as f32 / (cell * k)).ceil() as usize).max(2);
            (Lattice::new(m, m, rng), cell * k, amp)
        })
        .collect();
    for y in 0..s {
        for x in 0..s {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let v: f32 = octaves.iter().map(|(l, c, a)| a * l.sample(fx / c, fy / c)).sum();
            sc.img[y * s + x] = scale3(base, 1.0 + contrast * v);
        }
    }
}
