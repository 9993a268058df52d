//! Pixel-metric cost on a category-sized input: 100 anomaly maps of 256×256 (6.5 M pixels).
//!
//! `cargo bench --bench metrics`. Maps and masks are synthetic and deterministic: smooth noise
//! plus raised elliptical defects on two images in three, with ~8 % anomalous pixels overall.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pnpt_metrics::{AUPRO_FPR_LIMIT, aupro, auroc, pixel_metrics};

const N: usize = 100;
const H: usize = 256;
const W: usize = 256;

/// SplitMix64 step: a tiny deterministic generator, uniform in [0, 1).
fn uniform(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as f64 / 2f64.powi(64)
}

fn synthetic() -> (Vec<f32>, Vec<u8>) {
    let mut s = 7u64;
    let mut maps = vec![0f32; N * H * W];
    let mut masks = vec![0u8; N * H * W];
    for i in 0..N {
        let (map, mask) = (&mut maps[i * H * W..(i + 1) * H * W], &mut masks[i * H * W..(i + 1) * H * W]);
        let (fy, fx, ph) = (uniform(&mut s) * 0.1, uniform(&mut s) * 0.1, uniform(&mut s) * 6.3);
        for y in 0..H {
            for x in 0..W {
                let smooth = 0.2 * ((fy * y as f64 + fx * x as f64 + ph).sin() + 1.0);
                map[y * W + x] = (smooth + 0.6 * uniform(&mut s)) as f32;
            }
        }
        if i % 3 == 0 {
            continue; // normal image
        }
        for _ in 0..1 + (uniform(&mut s) * 3.0) as usize {
            let (cy, cx) = (uniform(&mut s) * H as f64, uniform(&mut s) * W as f64);
            let (ry, rx) = (5.0 + uniform(&mut s) * 40.0, 5.0 + uniform(&mut s) * 40.0);
            for y in 0..H {
                for x in 0..W {
                    let d = ((y as f64 - cy) / ry).powi(2) + ((x as f64 - cx) / rx).powi(2);
                    if d <= 1.0 {
                        mask[y * W + x] = 1;
                        map[y * W + x] += (0.5 * (1.0 - d) * uniform(&mut s)) as f32;
                    }
                }
            }
        }
    }
    (maps, masks)
}

fn bench(c: &mut Criterion) {
    let (maps, masks) = synthetic();
    let labels: Vec<bool> = masks.iter().map(|&m| m != 0).collect();
    let mut g = c.benchmark_group("pixel_100x256x256");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("pixel_auroc", |b| b.iter(|| auroc(black_box(&maps), black_box(&labels)).unwrap()));
    g.bench_function("aupro_0.3", |b| {
        b.iter(|| aupro(black_box(&maps), black_box(&masks), N, H, W, AUPRO_FPR_LIMIT).unwrap())
    });
    g.bench_function("pixel_metrics_all", |b| {
        b.iter(|| pixel_metrics(black_box(&maps), black_box(&masks), N, H, W, AUPRO_FPR_LIMIT).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
