//! One attempt at a defect, per kind, and the blending helper that paints it.
use std::f32::consts::{PI, TAU};

use super::colours::{FIBRES, PAINTS, STAINS, contrasting, mean_along, mean_near};
use super::placement::{pick_outline, pick_point};
use super::shapes::{Blob, curl, square, walk};
use crate::rnd::Rnd;
use crate::synthetic::objects::{Bend, Mods, PrintFault};
use crate::synthetic::paint::{Stroke, lerp, luma, mix3, scale3, union_bbox};
use crate::synthetic::render::{Scene, render_scene};
use crate::synthetic::{Defect, SynthKind};

/// One attempt at the defect: the full float image with it drawn in.
pub(super) fn draw(
    scene: &Scene,
    defect: Defect,
    kind: SynthKind,
    index: usize,
    rng: &mut Rnd,
    scene_rng: &Rnd,
) -> Vec<[f32; 3]> {
    let s = scene.s;
    let k = s as f32 / 128.0;
    // Line half-widths scale with the image but stay wide enough to cover whole pixels.
    let hw = |base: f32| (base * k).max(0.7);
    let mut out = scene.img.clone();
    match defect {
        Defect::Scratch => {
            let (mx, my) = pick_point(scene, rng, 8.0 * k);
            let (len, ang) = if kind.is_texture() || kind == SynthKind::Bottle {
                (rng.range(30.0, 60.0) * k, rng.range(0.0, PI))
            } else {
                // Along a long part's axis, the way parts rub against each other in a feeder.
                (rng.range(24.0, 40.0) * k, scene.axis + rng.range(-0.3, 0.3))
            };
            let bend = rng.range(-0.12, 0.12) * len;
            let w = hw(rng.range(0.9, 1.4));
            let (ux, uy) = (ang.cos(), ang.sin());
            let p0 = (mx - ux * len / 2.0, my - uy * len / 2.0);
            let p2 = (mx + ux * len / 2.0, my + uy * len / 2.0);
            let p1 = (mx - uy * bend, my + ux * bend);
            let stroke = Stroke {
                pts: (0..=24)
                    .map(|i| {
                        let t = i as f32 / 24.0;
                        let b = [(1.0 - t) * (1.0 - t), 2.0 * t * (1.0 - t), t * t];
                        (
                            b[0] * p0.0 + b[1] * p1.0 + b[2] * p2.0,
                            b[0] * p0.1 + b[1] * p1.1 + b[2] * p2.1,
                            // A scratch tapers where the tool entered and left the surface.
                            w * (0.35 + 0.65 * (PI * t).sin()),
                        )
                    })
                    .collect(),
            };
            // Bright (exposed material, a reflex) on dark surfaces, dark on light ones.
            let surface = luma(mean_along(scene, &stroke));
            let bright = if surface < 0.45 {
                true
            } else if surface > 0.65 {
                false
            } else {
                rng.u() < 0.5
            };
            let a = rng.range(0.85, 1.0);
            paint(
                scene,
                &mut out,
                stroke.bbox(),
                true,
                |x, y| a * stroke.alpha(x, y),
                |c, _| {
                    if bright { mix3(c, [0.97, 0.96, 0.93], 0.8) } else { scale3(c, 0.25) }
                },
            );
        }
        Defect::Crack => {
            let start = pick_point(scene, rng, 10.0 * k);
            let len = if kind.is_texture() { rng.range(32.0, 60.0) } else { rng.range(26.0, 45.0) } * k;
            let w = if kind.is_texture() {
                hw(rng.range(0.8, 1.15))
            } else {
                // Objects are small in the frame: a crack must be as wide to read as clearly.
                hw(rng.range(1.0, 1.35))
            };
            let step = 2.5 * k.max(0.4);
            let heading = rng.range(0.0, TAU);
            // The crack runs both ways from where it started, widest there.
            let mut pts = walk(start, heading + PI, len / 2.0, step, 0.35, rng);
            pts.reverse();
            pts.pop();
            pts.extend(walk(start, heading, len / 2.0, step, 0.35, rng));
            let n = pts.len().max(2) as f32 - 1.0;
            let main = Stroke {
                pts: pts
                    .iter()
                    .enumerate()
                    .map(|(j, &(x, y))| {
                        let t = j as f32 / n;
                        (x, y, w * (1.0 - 0.6 * (2.0 * t - 1.0).abs()))
                    })
                    .collect(),
            };
            let mut strokes = vec![main];
            for _ in 0..1 + rng.below(3) {
                let m = &strokes[0].pts;
                let j = ((0.15 + 0.7 * rng.u()) * (m.len() - 1) as f32) as usize;
                let (x, y, bw) = m[j];
                let (nx, ny, _) = m[(j + 1).min(m.len() - 1)];
                let dir = (ny - y).atan2(nx - x) + rng.sign() * rng.range(0.5, 1.1);
                let blen = rng.range(0.25, 0.5) * len;
                let bp = walk((x, y), dir, blen, step, 0.35, rng);
                let bn = bp.len().max(2) as f32 - 1.0;
                let b0 = (0.75 * bw).max(0.6);
                strokes.push(Stroke {
                    pts: bp.iter().enumerate().map(|(i, &(x, y))| (x, y, lerp(b0, 0.6 * b0, i as f32 / bn))).collect(),
                });
            }
            let bbox = union_bbox(strokes.iter().map(Stroke::bbox), 0.0);
            let a = rng.range(0.85, 1.0);
            paint(
                scene,
                &mut out,
                bbox,
                true,
                |x, y| a * strokes.iter().map(|st| st.alpha(x, y)).fold(0.0, f32::max),
                // Dark, except on dark glass, where a crack catches the light.
                |c, _| {
                    if luma(c) >= 0.33 { scale3(c, 0.12) } else { mix3(c, [0.85, 0.88, 0.86], 0.75) }
                },
            );
        }
        Defect::Hole => {
            let (cx, cy) = pick_point(scene, rng, 12.0 * k);
            let r0 = (rng.range(4.5, 9.0) * k).max(1.5);
            // Fabric frays: a rougher edge than a drilled or knocked-out hole.
            let rough = if kind.is_texture() && kind != SynthKind::Wood { 0.3 } else { 0.15 };
            let blob = Blob::new(r0, rough, rng);
            let rim = 1.8 * k.max(0.5);
            let bbox = square(cx, cy, blob.reach() + rim);
            // A shadowed rim around the hole, then the dark backing seen through it.
            paint(
                scene,
                &mut out,
                bbox,
                true,
                |x, y| 0.5 * (1.0 - blob.sd(x - cx, y - cy) / rim).clamp(0.0, 1.0),
                |c, _| scale3(c, 0.55),
            );
            let depth = rng.range(0.02, 0.06);
            paint(
                scene,
                &mut out,
                bbox,
                true,
                |x, y| (0.5 - blob.sd(x - cx, y - cy)).clamp(0.0, 1.0),
                |_, i| {
                    let (x, y) = ((i % s) as f32 + 0.5, (i / s) as f32 + 0.5);
                    let d = ((x - cx).hypot(y - cy) / r0).min(1.0);
                    let v = depth + 0.08 * d;
                    [v, v * 0.92, v * 0.85]
                },
            );
        }
        Defect::Stain => {
            let (cx, cy) = pick_point(scene, rng, 10.0 * k);
            let r0 = (rng.range(6.0, 12.0) * k).max(2.0);
            let blob = Blob::new(r0, 0.3, rng);
            let surface = mean_near(scene, cx, cy, r0);
            let col = contrasting(rng, &STAINS, surface, 0.35);
            let a = rng.range(0.7, 0.88);
            let feather = 1.5 * k.max(0.5);
            let ls = luma(surface).max(0.05);
            paint(
                scene,
                &mut out,
                square(cx, cy, blob.reach()),
                true,
                |x, y| {
                    let d = blob.sd(x - cx, y - cy);
                    let edge = ((0.5 - d) / feather).clamp(0.0, 1.0);
                    // Liquid dries to a darker ring at its edge.
                    let ring = if d > -2.0 * feather { 1.15 } else { 1.0 };
                    (a * edge * ring).min(1.0)
                },
                // The surface's own pattern shows through the stain.
                |c, _| scale3(col, (luma(c) / ls).clamp(0.6, 1.4)),
            );
        }
        Defect::Color => {
            let (cx, cy) = pick_point(scene, rng, 8.0 * k);
            let rx = (rng.range(4.5, 7.0) * k).max(1.5);
            let ry = rx * rng.range(0.65, 1.0);
            let ang = rng.range(0.0, PI);
            let (ca, sa) = (ang.cos(), ang.sin());
            let surface = mean_near(scene, cx, cy, rx);
            let col = contrasting(rng, &PAINTS, surface, 0.45);
            let a = rng.range(0.9, 1.0);
            let ls = luma(surface).max(0.05);
            paint(
                scene,
                &mut out,
                square(cx, cy, rx),
                true,
                |x, y| {
                    let (dx, dy) = (x - cx, y - cy);
                    let (u, v) = (ca * dx + sa * dy, -sa * dx + ca * dy);
                    let d = ((u / rx).powi(2) + (v / ry).powi(2)).sqrt();
                    a * ((1.0 - d) * ry + 0.5).clamp(0.0, 1.0)
                },
                |c, _| scale3(col, (luma(c) / ls).clamp(0.85, 1.15)),
            );
        }
        Defect::Thread => {
            let start = pick_point(scene, rng, 10.0 * k);
            let len = rng.range(40.0, 75.0) * k;
            let w = hw(rng.range(0.7, 1.0));
            let pts = curl(start, rng.range(0.0, TAU), len, 1.5 * k.max(0.4), rng);
            let fibre = Stroke { pts: pts.iter().map(|&(x, y)| (x, y, w)).collect() };
            let off = k.max(0.7);
            let shadow = Stroke { pts: pts.iter().map(|&(x, y)| (x + off, y + off, 1.2 * w)).collect() };
            let col = contrasting(rng, &FIBRES, mean_along(scene, &fibre), 0.4);
            paint(scene, &mut out, shadow.bbox(), true, |x, y| 0.45 * shadow.alpha(x, y), |c, _| scale3(c, 0.5));
            paint(scene, &mut out, fibre.bbox(), true, |x, y| fibre.alpha(x, y), |_, _| col);
        }
        Defect::Missing => {
            let (cx, cy) = pick_outline(scene, rng);
            let r0 = (rng.range(7.0, 12.0) * k).max(2.0);
            // A fracture edge is jagged.
            let blob = Blob::new(r0, 0.35, rng);
            paint(
                scene,
                &mut out,
                square(cx, cy, blob.reach()),
                false,
                |x, y| (0.5 - blob.sd(x - cx, y - cy)).clamp(0.0, 1.0),
                |_, i| scene.bg[i],
            );
        }
        Defect::Bent => {
            let mods = Mods {
                bend: Some(Bend {
                    pivot: rng.range(0.0, 0.12),
                    angle: rng.sign() * rng.range(14.0, 28.0).to_radians(),
                }),
                print: None,
            };
            out = render_scene(kind, s, &mut scene_rng.clone(), &mods).img;
        }
        Defect::Print => {
            // Characters missing, smeared ink, misaligned print, in turn.
            let fault = match index % 3 {
                0 => {
                    let count = 1 + rng.below(3);
                    PrintFault::Missing { first: rng.below(4 - count), count }
                }
                1 => {
                    let a = rng.range(0.0, TAU);
                    PrintFault::Smear { dir: (a.cos(), a.sin()), len: rng.range(4.0, 8.0) * k }
                }
                _ => PrintFault::Shift {
                    da: rng.sign() * rng.range(6.0, 10.0) * k,
                    db: rng.sign() * rng.range(3.0, 5.0) * k,
                },
            };
            let mods = Mods { bend: None, print: Some(fault) };
            out = render_scene(kind, s, &mut scene_rng.clone(), &mods).img;
        }
    }
    out
}

/// Blends `target(current colour, pixel index)` into `out` with coverage `alpha(x, y)` (pixel
/// centre) over the pixels of `bbox`; with `on_object`, weighted by the object coverage so
/// nothing lands on the background.
fn paint(
    scene: &Scene,
    out: &mut [[f32; 3]],
    bbox: [f32; 4],
    on_object: bool,
    alpha: impl Fn(f32, f32) -> f32,
    target: impl Fn([f32; 3], usize) -> [f32; 3],
) {
    let s = scene.s;
    let lo = |v: f32| (v.floor().max(0.0) as usize).min(s);
    let hi = |v: f32| (v.ceil().max(0.0) as usize).saturating_add(1).min(s);
    for y in lo(bbox[1])..hi(bbox[3]) {
        for x in lo(bbox[0])..hi(bbox[2]) {
            let i = y * s + x;
            let mut a = alpha(x as f32 + 0.5, y as f32 + 0.5);
            if on_object {
                a *= scene.cover[i];
            }
            if a > 0.0 {
                out[i] = mix3(out[i], target(out[i], i), a.min(1.0));
            }
        }
    }
}
