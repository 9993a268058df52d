//! Hand-worked cases (expected values derived in the comments), a brute-force cross-check of
//! the definitions on random inputs, and the error paths.

use pnpt_metrics::{
    CategoryMetrics, MetricsError, aupro, evaluate, f1_max, max_per_map, mean, pixel_metrics, ranking_metrics,
};

fn close(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-12, "got {got:.15}, want {want:.15}");
}

// ---- AUPRO -------------------------------------------------------------------------------------
// Notation: after each distinct score, from the highest down, the curve point is
// (FPR = normal pixels at or above the score / all normal pixels,
//  PRO = mean over regions of the region's fraction at or above the score).

#[test]
fn aupro_one_region() {
    // 3×4, one 2×2 region (4 px), 8 normal pixels.
    #[rustfmt::skip]
    let maps = [
        0.9, 0.8, 0.85, 0.5,
        0.7, 0.6, 0.5,  0.5,
        0.5, 0.5, 0.5,  0.5,
    ];
    #[rustfmt::skip]
    let masks = [
        1, 1, 0, 0,
        1, 1, 0, 0,
        0, 0, 0, 0,
    ];
    // 0.9 -> (0, 1/4); 0.85 -> (1/8, 1/4); 0.8 -> (1/8, 2/4); 0.7 -> (1/8, 3/4);
    // 0.6 -> (1/8, 1); 0.5 -> (1, 1).
    // Area to 0.3: 1/8·1/4 = 0.03125 on [0, 1/8], then y = 1 on [1/8, 0.3] (the value
    // interpolated at 0.3 between (1/8, 1) and (1, 1) is 1): 0.175. Total 0.20625 / 0.3.
    close(aupro(&maps, &masks, 1, 3, 4, 0.3).unwrap(), 0.20625 / 0.3); // 0.6875
    // Whole curve: 0.03125 + 7/8·1 = 0.90625.
    close(aupro(&maps, &masks, 1, 3, 4, 1.0).unwrap(), 0.90625);
}

#[test]
fn aupro_two_regions_of_different_size_eight_connected() {
    // 5×6. Region A = {(0,0), (1,1)}: diagonal neighbours, one region under 8-connectivity
    // (size 2). Region B = the 2×2 block at rows 3-4, cols 4-5 (size 4). 24 normal pixels:
    // six at 0.6, eighteen at 0.0.
    #[rustfmt::skip]
    let maps = [
        0.9, 0.6, 0.6, 0.6, 0.6, 0.6,
        0.6, 0.2, 0.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0, 0.8, 0.8,
        0.0, 0.0, 0.0, 0.0, 0.8, 0.8,
    ];
    #[rustfmt::skip]
    let masks = [
        1, 0, 0, 0, 0, 0,
        0, 1, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 1, 1,
        0, 0, 0, 0, 1, 1,
    ];
    // 0.9 -> A half covered: (0, (1/2 + 0)/2 = 0.25); 0.8 -> B covered: (0, (1/2 + 1)/2 = 0.75);
    // 0.6 -> (6/24 = 0.25, 0.75); 0.2 -> A covered: (0.25, 1); 0.0 -> (1, 1).
    // Area to 0.3: 0.25·0.75 = 0.1875, plus 0.05·1 = 0.05: 0.2375 / 0.3 = 0.791666…
    // (4-connectivity would give 3 regions and (1/6 + 0.05) / 0.3 = 0.7222…; weighting by
    // pixels instead of regions would give yet another value.)
    close(aupro(&maps, &masks, 1, 5, 6, 0.3).unwrap(), 0.2375 / 0.3);
}

#[test]
fn aupro_merges_tied_scores() {
    // 2×4: the top row is one region of 4 pixels, the bottom row 4 normal pixels. Scores tie
    // across classes at 0.7 (2 anomalous + 1 normal) and 0.3 (2 + 2).
    let maps = [0.7, 0.7, 0.3, 0.3, /**/ 0.7, 0.3, 0.3, 0.1];
    let masks = [1, 1, 1, 1, /**/ 0, 0, 0, 0];
    // One point per distinct score: 0.7 -> (1/4, 1/2); 0.3 -> (3/4, 1); 0.1 -> (1, 1).
    // Area: (0,0)-(0.25,0.5) trapezoid = 0.0625; at 0.3 the interpolated PRO between
    // (0.25, 0.5) and (0.75, 1) is 0.55, so (0.5 + 0.55)/2 · 0.05 = 0.02625.
    // Total 0.08875 / 0.3 = 0.295833…
    // (Splitting the ties with anomalous pixels first would add a (0, 0.5) point: 0.1525 / 0.3.)
    close(aupro(&maps, &masks, 1, 2, 4, 0.3).unwrap(), 0.08875 / 0.3);
}

#[test]
fn aupro_map_missing_a_region() {
    // Two 2×3 images. Image 0: region A (top-left 2 px) scored 0.9, its normal pixels 0.4.
    // Image 1: region B (bottom row, 3 px) scored 0.0, below every normal pixel (0.5, 0.4, 0.4).
    let maps = [0.9, 0.9, 0.4, 0.4, 0.4, 0.4, /**/ 0.5, 0.4, 0.4, 0.0, 0.0, 0.0];
    let masks = [1, 1, 0, 0, 0, 0, /**/ 0, 0, 0, 1, 1, 1];
    // 7 normal pixels over both images, 2 regions.
    // 0.9 -> (0, 0.5); 0.5 -> (1/7, 0.5); 0.4 -> (1, 0.5); 0.0 -> (1, 1).
    // PRO stays 0.5 up to the limit: area 0.3·0.5, normalised 0.5. B never counts before FPR 1.
    close(aupro(&maps, &masks, 2, 2, 3, 0.3).unwrap(), 0.5);
    // Over the whole curve the jump to 1 happens at FPR 1, adding nothing: still 0.5.
    close(aupro(&maps, &masks, 2, 2, 3, 1.0).unwrap(), 0.5);
}

#[test]
fn aupro_limit_exactly_on_a_point() {
    // 1×12: region = pixels 0-1 (scores 0.9, 0.4), 10 normal pixels: three 0.8, seven 0.1.
    let maps = [0.9, 0.4, 0.8, 0.8, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1];
    let masks = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    // 0.9 -> (0, 0.5); 0.8 -> (0.3, 0.5); 0.4 -> (0.3, 1); 0.1 -> (1, 1).
    // Area to 0.3: 0.3·0.5 = 0.15; the vertical step at 0.3 adds nothing: 0.15 / 0.3 = 0.5.
    close(aupro(&maps, &masks, 1, 1, 12, 0.3).unwrap(), 0.5);
}

#[test]
fn aupro_extremes() {
    // Region strictly above every normal pixel: PRO is 1 from FPR 0 on.
    let maps = [0.2, 0.9, 0.8, 0.1, 0.3, 0.0];
    let masks = [0, 1, 1, 0, 0, 0];
    close(aupro(&maps, &masks, 1, 2, 3, 0.3).unwrap(), 1.0);
    // Region strictly below every normal pixel: PRO is 0 until FPR 1.
    let masks = [0, 0, 0, 0, 0, 1];
    close(aupro(&maps, &masks, 1, 2, 3, 0.3).unwrap(), 0.0);
}

// ---- ranking metrics -----------------------------------------------------------------------------

#[test]
fn ranking_hand_worked_with_ties() {
    // Groups from the top: 0.5 holds 1 positive + 2 negatives, 0.1 holds 1 positive + 1 negative.
    let scores = [0.5, 0.5, 0.5, 0.1, 0.1];
    let labels = [true, false, false, true, false];
    // AUROC: pairs (pos, neg) = 2·3 = 6. Pos 0.5 ties two negs (0.5 each) and beats the 0.1 neg
    // (1) = 2; pos 0.1 loses to two, ties one (0.5) = 0.5. 2.5 / 6.
    // AP: 0.5 -> recall 1/2, precision 1/3; 0.1 -> recall 1, precision 2/5.
    //     1/2·1/3 + 1/2·2/5 = 1/6 + 1/5 = 11/30.
    // F1 = 2tp/(P + tp + fp): 0.5 -> 2/(2+1+2) = 0.4; 0.1 -> 4/(2+2+3) = 4/7.
    let m = ranking_metrics(&scores, &labels).unwrap();
    close(m.auroc, 2.5 / 6.0);
    close(m.ap, 11.0 / 30.0);
    close(m.f1_max.f1, 4.0 / 7.0);
    assert_eq!(m.f1_max.threshold, 0.1);
}

#[test]
fn f1_ties_take_the_lowest_threshold() {
    // P = 2. At 0.9: tp 1, fp 0 -> F1 2/3. At 0.3: tp 2, fp 2 -> 4/6 = 2/3 as well.
    // scikit-learn's thresholds are ascending, so np.argmax picks 0.3.
    let f = f1_max(&[0.9, 0.5, 0.4, 0.3, 0.1], &[true, false, false, true, false]).unwrap();
    close(f.f1, 2.0 / 3.0);
    assert_eq!(f.threshold, 0.3);
}

#[test]
fn signed_zero_and_negative_scores_tie_correctly() {
    // -0.0 and 0.0 are the same score: one positive tied with one negative -> AUROC 1/2 on that
    // pair; the -1 negative is beaten by both positives.
    let m = ranking_metrics(&[-0.0, 0.0, -1.0, 0.0], &[true, false, false, true]).unwrap();
    // Pairs: 2 pos × 2 neg = 4; each pos ties the 0.0 neg (0.5) and beats -1 (1): 3 / 4.
    close(m.auroc, 0.75);
}

// ---- brute force on random inputs ------------------------------------------------------------------

/// Small deterministic LCG (Knuth's MMIX constants), top bits as a uniform in [0, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Definitions straight from the formulas, O(n²), sharing no code with the library.
fn brute_ranking(s: &[f32], l: &[bool]) -> (f64, f64, f64, f32) {
    let p = l.iter().filter(|&&x| x).count() as f64;
    let (mut pairs, mut good) = (0.0, 0.0);
    for i in 0..s.len() {
        for j in 0..s.len() {
            if l[i] && !l[j] {
                pairs += 1.0;
                good += if s[i] > s[j] {
                    1.0
                } else if s[i] == s[j] {
                    0.5
                } else {
                    0.0
                };
            }
        }
    }
    let mut th: Vec<f32> = s.to_vec();
    th.sort_by(|a, b| b.partial_cmp(a).unwrap());
    th.dedup();
    let (mut ap, mut prev_r, mut best, mut best_t) = (0.0, 0.0, -1.0, 0.0);
    for &t in &th {
        let tp = (0..s.len()).filter(|&i| l[i] && s[i] >= t).count() as f64;
        let fp = (0..s.len()).filter(|&i| !l[i] && s[i] >= t).count() as f64;
        let (prec, rec) = (tp / (tp + fp), tp / p);
        ap += (rec - prev_r) * prec;
        prev_r = rec;
        let f1 = 2.0 * tp / (p + tp + fp);
        if f1 >= best - 1e-15 {
            best = f1;
            best_t = t;
        }
    }
    (good / pairs, ap, best, best_t)
}

/// PRO curve by sweeping every distinct threshold, regions by repeated min-label propagation.
fn brute_aupro(maps: &[f32], masks: &[u8], n: usize, h: usize, w: usize, limit: f64) -> f64 {
    let mut region = vec![usize::MAX; maps.len()];
    for (p, r) in region.iter_mut().enumerate() {
        if masks[p] != 0 {
            *r = p;
        }
    }
    loop {
        let mut changed = false;
        for i in 0..n {
            for y in 0..h as i64 {
                for x in 0..w as i64 {
                    let p = i * h * w + (y as usize) * w + x as usize;
                    if masks[p] == 0 {
                        continue;
                    }
                    for dy in -1..=1 {
                        for dx in -1..=1 {
                            let (ny, nx) = (y + dy, x + dx);
                            if ny < 0 || nx < 0 || ny >= h as i64 || nx >= w as i64 {
                                continue;
                            }
                            let q = i * h * w + ny as usize * w + nx as usize;
                            if masks[q] != 0 && region[q] < region[p] {
                                region[p] = region[q];
                                changed = true;
                            }
                        }
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut ids: Vec<usize> = region.iter().copied().filter(|&r| r != usize::MAX).collect();
    ids.sort();
    ids.dedup();
    let normal = masks.iter().filter(|&&m| m == 0).count() as f64;
    let mut th: Vec<f32> = maps.to_vec();
    th.sort_by(|a, b| b.partial_cmp(a).unwrap());
    th.dedup();
    let mut xs = vec![0.0];
    let mut ys = vec![0.0];
    for &t in &th {
        let fp = (0..maps.len()).filter(|&p| masks[p] == 0 && maps[p] >= t).count() as f64;
        let pro: f64 = ids
            .iter()
            .map(|&r| {
                let size = region.iter().filter(|&&q| q == r).count() as f64;
                let hit = (0..maps.len()).filter(|&p| region[p] == r && maps[p] >= t).count() as f64;
                hit / size
            })
            .sum::<f64>()
            / ids.len() as f64;
        xs.push(fp / normal);
        ys.push(pro);
    }
    xs.push(1.0);
    ys.push(1.0);
    let mut area = 0.0;
    for k in 1..xs.len() {
        if xs[k] <= limit {
            area += 0.5 * (xs[k] - xs[k - 1]) * (ys[k] + ys[k - 1]);
        } else {
            let yi = ys[k - 1] + (ys[k] - ys[k - 1]) * (limit - xs[k - 1]) / (xs[k] - xs[k - 1]);
            area += 0.5 * (yi + ys[k - 1]) * (limit - xs[k - 1]);
            break;
        }
    }
    area / limit
}

#[test]
fn random_inputs_match_brute_force() {
    let mut rng = Lcg(42);
    for trial in 0..30 {
        let (n, h, w) = (1 + trial % 4, 3 + trial % 5, 4 + trial % 3);
        let len = n * h * w;
        // Coarse quantisation on odd trials forces many cross-class ties.
        let q = if trial % 2 == 1 { 4.0 } else { 1e6 };
        let mut masks: Vec<u8> = (0..len).map(|_| (rng.next() < 0.25) as u8).collect();
        masks[0] = 1;
        masks[len - 1] = 0;
        let maps: Vec<f32> = (0..len)
            .map(|p| ((rng.next() + 0.5 * masks[p] as f64 * rng.next()) * q).round() as f32 / q as f32)
            .collect();
        let labels: Vec<bool> = masks.iter().map(|&m| m != 0).collect();
        let (a, ap, f1, t) = brute_ranking(&maps, &labels);
        for limit in [0.3, 0.05, 1.0] {
            let m = pixel_metrics(&maps, &masks, n, h, w, limit).unwrap();
            let want = brute_aupro(&maps, &masks, n, h, w, limit);
            assert!((m.aupro - want).abs() < 1e-12, "trial {trial} limit {limit}: {} vs {want}", m.aupro);
            close(m.auroc, a);
            close(m.ap, ap);
            close(m.f1_max.f1, f1);
            assert_eq!(m.f1_max.threshold, t, "trial {trial}");
        }
    }
}

// ---- errors ------------------------------------------------------------------------------------------

#[test]
fn single_class_is_an_error() {
    let e = ranking_metrics(&[0.1, 0.2], &[false, false]).unwrap_err();
    assert!(matches!(e, MetricsError::SingleClass { positives: 0, negatives: 2, .. }), "{e}");
    let e = ranking_metrics(&[0.1, 0.2], &[true, true]).unwrap_err();
    assert!(matches!(e, MetricsError::SingleClass { positives: 2, negatives: 0, .. }));
    assert!(matches!(ranking_metrics(&[], &[]), Err(MetricsError::SingleClass { .. })));
    assert!(matches!(aupro(&[0.1; 4], &[0; 4], 1, 2, 2, 0.3), Err(MetricsError::SingleClass { .. })));
    assert!(matches!(aupro(&[0.1; 4], &[255; 4], 1, 2, 2, 0.3), Err(MetricsError::SingleClass { .. })));
    assert!(e.to_string().contains("need both classes"), "{e}");
}

#[test]
fn non_finite_scores_are_errors() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let e = ranking_metrics(&[0.1, bad, 0.3], &[true, false, true]).unwrap_err();
        assert!(matches!(e, MetricsError::NonFinite { index: 1, .. }), "{e}");
        let e = aupro(&[0.1, 0.2, 0.3, bad], &[1, 0, 0, 0], 1, 2, 2, 0.3).unwrap_err();
        assert!(matches!(e, MetricsError::NonFinite { index: 3, .. }), "{e}");
        assert!(max_per_map(&[bad, 0.0], 1, 1, 2).is_err());
    }
}

#[test]
fn shape_and_argument_errors() {
    assert!(matches!(
        ranking_metrics(&[0.1, 0.2], &[true]),
        Err(MetricsError::LengthMismatch { expected: 2, got: 1, .. })
    ));
    assert!(matches!(aupro(&[0.1; 5], &[0; 6], 1, 2, 3, 0.3), Err(MetricsError::ShapeMismatch { got: 5, .. })));
    assert!(matches!(aupro(&[0.1; 6], &[0; 5], 1, 2, 3, 0.3), Err(MetricsError::ShapeMismatch { got: 5, .. })));
    assert!(matches!(aupro(&[0.1; 6], &[0; 6], usize::MAX, 2, 3, 0.3), Err(MetricsError::TooLarge { .. })));
    for limit in [0.0, -0.1, 1.5, f64::NAN] {
        assert!(matches!(aupro(&[0.1, 0.2], &[1, 0], 1, 1, 2, limit), Err(MetricsError::InvalidFprLimit { .. })));
    }
    let maps = [0.1, 0.9, 0.2, 0.3];
    let masks = [0, 1, 0, 0];
    assert!(matches!(
        evaluate(&maps, &masks, &[true], &[0.9, 0.3], 2, 1, 2),
        Err(MetricsError::LengthMismatch { what: "image labels", .. })
    ));
    assert!(matches!(
        evaluate(&maps, &masks, &[true, false], &[0.9], 2, 1, 2),
        Err(MetricsError::LengthMismatch { what: "image scores", .. })
    ));
    // Image level checked first, named as such: both images labelled normal.
    assert!(matches!(
        evaluate(&maps, &masks, &[false, false], &[0.9, 0.3], 2, 1, 2),
        Err(MetricsError::SingleClass { what: "image labels", positives: 0, negatives: 2 })
    ));
    assert!(matches!(
        evaluate(&maps, &[0; 4], &[true, false], &[0.9, 0.3], 2, 1, 2),
        Err(MetricsError::SingleClass { what: "masks", positives: 0, negatives: 4 })
    ));
    assert!(matches!(mean(&[]), Err(MetricsError::Empty { .. })));
    assert!(matches!(max_per_map(&[0.1; 3], 2, 1, 2), Err(MetricsError::ShapeMismatch { .. })));
}

#[test]
fn max_per_map_and_mean() {
    assert_eq!(max_per_map(&[0.1, -2.0, 0.5, 3.0, -1.0, -0.5], 3, 1, 2).unwrap(), vec![0.1, 3.0, -0.5]);
    let a = CategoryMetrics {
        image_auroc: 1.0,
        image_ap: 0.5,
        image_f1_max: 0.25,
        image_threshold: 2.0,
        pixel_auroc: 0.75,
        pixel_ap: 0.125,
        pixel_f1_max: 0.5,
        pixel_threshold: 1.0,
        aupro: 0.5,
    };
    let b = CategoryMetrics { image_auroc: 0.5, aupro: 1.0, ..a.clone() };
    let m = mean(&[a, b]).unwrap();
    assert_eq!((m.image_auroc, m.aupro, m.image_ap), (0.75, 0.75, 0.5));
    let json = serde_json::to_string(&m).unwrap();
    let back: CategoryMetrics = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
}
