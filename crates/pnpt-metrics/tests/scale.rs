//! Scale check on a large category (~70 M pixels, the size of MVTec AD's biggest test sets at
//! full resolution). Ignored by default (it needs ~1 GB and a release build):
//! `cargo test -p pnpt-metrics --release --test scale -- --ignored --nocapture`.

use std::time::Instant;

use pnpt_metrics::{evaluate, max_per_map};

#[test]
#[ignore]
fn seventy_million_pixels_in_seconds() {
    let (n, h, w) = (267, 512, 512); // 69.99 M pixels
    let mut state = 1u64;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut maps = vec![0f32; n * h * w];
    let mut masks = vec![0u8; n * h * w];
    for i in 0..n {
        for p in 0..h * w {
            let (y, x) = (p / w, p % w);
            // A square defect in two images out of three (~6 % anomalous pixels overall).
            let defect = i % 3 != 0 && (y / 64 + x / 64 + i) % 16 == 0;
            masks[i * h * w + p] = defect as u8;
            maps[i * h * w + p] = next() + if defect { 0.3 * next() } else { 0.0 };
        }
    }
    let labels: Vec<bool> = (0..n).map(|i| i % 3 != 0).collect();
    let t = Instant::now();
    let scores = max_per_map(&maps, n, h, w).unwrap();
    let m = evaluate(&maps, &masks, &labels, &scores, n, h, w).unwrap();
    let secs = t.elapsed().as_secs_f64();
    eprintln!("{} pixels: {secs:.2} s, {m:?}", maps.len());
    assert!(m.pixel_auroc > 0.6 && m.pixel_auroc < 0.9, "{m:?}");
    assert!(secs < 60.0, "{secs} s");
}
