#!/usr/bin/env python3
"""Regenerate the reference fixtures that the pnpt-metrics and pnpt-data tests read.

    pip install scikit-learn numpy scipy
    python3 tests/reference/make_reference.py

Writes, next to this script:
  ranking_cases.json  scores/labels and scikit-learn's AUROC, AP and F1-max (+ threshold)
  pixel_cases.json    small N x H x W maps/masks with image metrics (image score = map max),
                      pixel metrics (scikit-learn) and AUPRO@0.3 / @1.0 from a transcription of
                      MVTec AD's official evaluation code (pro_curve_util.compute_pro +
                      generic_util.trapezoid)
  npy/*.npy           files written by numpy for the pnpt-data `.npy` reader tests

Inputs come from numpy's PCG64 generator with fixed seeds; every score is stored as a float32
value printed with Python's repr of the float64 widening, which round-trips exactly to the same
f32 on the Rust side. The script is deterministic: rerunning it rewrites identical files.
"""
import json
import os
from bisect import bisect

import numpy as np
from scipy.ndimage import label
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

HERE = os.path.dirname(os.path.abspath(__file__))


def f32_list(a):
    return [float(x) for x in np.asarray(a, dtype=np.float32).ravel()]


def f1_max(scores, labels):
    """Max F1 over precision_recall_curve's thresholds (score >= threshold is positive).

    Ties in F1 (within 1e-12) go to the lowest threshold, i.e. np.argmax over sklearn's
    ascending thresholds; points with precision = recall = 0 count as F1 = 0.
    """
    p, r, t = precision_recall_curve(labels, scores)
    p, r = p[:-1], r[:-1]  # the last point (p=1, r=0) has no threshold
    denom = p + r
    f1 = np.where(denom > 0, 2 * p * r / np.where(denom > 0, denom, 1), 0.0)
    best = int(np.flatnonzero(f1 >= f1.max() - 1e-12)[0])
    return float(f1[best]), float(t[best])


def ranking(scores, labels):
    scores = np.asarray(scores, dtype=np.float32)
    labels = np.asarray(labels, dtype=bool)
    f1, thr = f1_max(scores, labels)
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "ap": float(average_precision_score(labels, scores)),
        "f1_max": f1,
        "f1_threshold": thr,
    }


# --- MVTec AD official AUPRO, transcribed (compute_pro + trapezoid) ----------------------------
def mvtec_compute_pro(anomaly_maps, ground_truth_maps):
    structure = np.ones((3, 3), dtype=int)  # 8-connectivity
    num_ok_pixels = 0
    num_gt_regions = 0
    shape = (len(anomaly_maps), anomaly_maps[0].shape[0], anomaly_maps[0].shape[1])
    fp_changes = np.zeros(shape, dtype=np.uint32)
    pro_changes = np.zeros(shape, dtype=np.float64)
    for gt_ind, gt_map in enumerate(ground_truth_maps):
        labeled, n_components = label(gt_map, structure)
        num_gt_regions += n_components
        ok_mask = labeled == 0
        num_ok_pixels += np.sum(ok_mask)
        fp_change = np.zeros_like(gt_map, dtype=fp_changes.dtype)
        fp_change[ok_mask] = 1
        pro_change = np.zeros_like(gt_map, dtype=np.float64)
        for k in range(n_components):
            region_mask = labeled == (k + 1)
            pro_change[region_mask] = 1.0 / np.sum(region_mask)
        fp_changes[gt_ind] = fp_change
        pro_changes[gt_ind] = pro_change
    scores = np.array(anomaly_maps).ravel()
    fp = fp_changes.ravel()
    pro = pro_changes.ravel()
    idx = np.argsort(scores).astype(np.uint32)[::-1]
    scores, fp, pro = scores[idx], fp[idx], pro[idx]
    fprs = np.cumsum(fp).astype(np.float32) / num_ok_pixels
    pros = np.cumsum(pro) / num_gt_regions
    keep = np.append(np.diff(scores) != 0, np.True_)
    fprs, pros = np.clip(fprs[keep], None, 1.0), np.clip(pros[keep], None, 1.0)
    return np.concatenate(([0.0], fprs, [1.0])), np.concatenate(([0.0], pros, [1.0]))


def mvtec_trapezoid(x, y, x_max):
    x, y = np.array(x), np.array(y)
    correction = 0.0
    if x_max not in x:
        ins = bisect(x, x_max)
        assert 0 < ins < len(x)
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    mask = x <= x_max
    x, y = x[mask], y[mask]
    return float(np.sum(0.5 * (x[1:] - x[:-1]) * (y[1:] + y[:-1])) + correction)


def mvtec_aupro(maps, masks, limit):
    fprs, pros = mvtec_compute_pro(list(maps), list(masks))
    return mvtec_trapezoid(fprs, pros, limit) / limit


# --- ranking cases -------------------------------------------------------------------------------
def ranking_cases():
    cases = []

    def add(name, scores, labels):
        scores = np.asarray(scores, dtype=np.float32)
        labels = np.asarray(labels, dtype=bool)
        case = {"name": name, "scores": f32_list(scores), "labels": [bool(v) for v in labels]}
        case.update(ranking(scores, labels))
        cases.append(case)

    rng = np.random.default_rng(20240601)
    # Continuous scores, positives shifted up: few ties.
    lab = rng.random(1500) < 0.3
    add("continuous", rng.normal(size=1500) + 1.2 * lab, lab)
    # Heavy ties: scores on a 1/8 grid, with negative values and zero.
    lab = rng.random(1200) < 0.4
    add("ties_grid", np.round((rng.normal(size=1200) + 0.8 * lab) * 8) / 8, lab)
    # Imbalanced, as image-level on a clean category: 2% positives.
    lab = rng.random(800) < 0.02
    lab[:2] = True
    add("imbalanced", rng.random(800) + 0.4 * lab, lab)
    # Only three distinct scores, so F1 ties and the threshold choice matter.
    lab = rng.random(300) < 0.5
    add("three_levels", rng.integers(0, 3, size=300).astype(np.float32) + 0.5 * lab * (rng.random(300) < 0.3), lab)
    # Perfect separation and perfectly inverted scores.
    add("perfect", [0.1, 0.2, 0.3, 0.8, 0.9], [False, False, False, True, True])
    add("inverted", [0.9, 0.8, 0.3, 0.2, 0.1], [False, False, True, True, True])
    # All scores equal.
    add("all_tied", [0.5] * 7, [True, False, False, True, False, False, False])
    return cases


# --- pixel cases ---------------------------------------------------------------------------------
def blobs(rng, n, h, w):
    """Masks with a few rectangles and diagonal strokes (8-connected, not 4-connected)."""
    masks = np.zeros((n, h, w), dtype=np.uint8)
    labels = np.zeros(n, dtype=bool)
    for i in range(n):
        if i % 3 == 0:
            continue  # every third image is normal
        labels[i] = True
        for _ in range(rng.integers(1, 4)):
            y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
            if rng.random() < 0.5:
                masks[i, y0:y0 + rng.integers(1, 5), x0:x0 + rng.integers(1, 5)] = 1
            else:
                for k in range(rng.integers(2, 5)):
                    masks[i, y0 + k, x0 + k] = 1
    return masks, labels


def pixel_case(name, seed, n, h, w, quant):
    rng = np.random.default_rng(seed)
    masks, labels = blobs(rng, n, h, w)
    maps = rng.random((n, h, w)) + 0.6 * masks * rng.random((n, h, w))
    if quant:
        maps = np.round(maps * quant) / quant  # many ties between normal and anomalous pixels
    maps = maps.astype(np.float32)
    image_scores = maps.reshape(n, -1).max(axis=1)
    img = ranking(image_scores, labels)
    pix = ranking(maps.ravel(), masks.ravel().astype(bool))
    return {
        "name": name, "n": n, "h": h, "w": w,
        "maps": f32_list(maps), "masks": [int(v) for v in masks.ravel()],
        "labels": [bool(v) for v in labels],
        "image_auroc": img["auroc"], "image_ap": img["ap"],
        "image_f1_max": img["f1_max"], "image_threshold": img["f1_threshold"],
        "pixel_auroc": pix["auroc"], "pixel_ap": pix["ap"],
        "pixel_f1_max": pix["f1_max"], "pixel_threshold": pix["f1_threshold"],
        "aupro_0.3": mvtec_aupro(maps, masks, 0.3),
        "aupro_1.0": mvtec_aupro(maps, masks, 1.0),
    }


def pixel_cases():
    return [
        pixel_case("continuous", 7, 9, 16, 20, None),
        pixel_case("quantized", 11, 12, 18, 15, 10),
        pixel_case("coarse", 13, 6, 12, 12, 3),
    ]


def npy_files():
    d = os.path.join(HERE, "npy")
    os.makedirs(d, exist_ok=True)
    f32 = (np.arange(24, dtype=np.float32).reshape(2, 3, 4) - 5.5) / 4
    np.save(os.path.join(d, "f32_2x3x4.npy"), f32)
    np.save(os.path.join(d, "u8_3x5.npy"), (np.arange(15, dtype=np.uint8) * 17).reshape(3, 5))
    np.save(os.path.join(d, "f64_4.npy"), np.array([1.5, -2.25, 1e300, 0.0]))
    np.save(os.path.join(d, "i64_3.npy"), np.array([-1, 0, 1 << 40], dtype=np.int64))
    np.save(os.path.join(d, "f32_scalar.npy"), np.float32(3.25))
    with open(os.path.join(d, "f32_2x3x4_v2.npy"), "wb") as f:
        np.lib.format.write_array(f, f32, version=(2, 0))
    np.save(os.path.join(d, "f32_fortran.npy"), np.asfortranarray(f32))
    np.save(os.path.join(d, "f32_bigendian.npy"), f32.astype(">f4"))


def main():
    with open(os.path.join(HERE, "ranking_cases.json"), "w") as f:
        json.dump(ranking_cases(), f)
    with open(os.path.join(HERE, "pixel_cases.json"), "w") as f:
        json.dump(pixel_cases(), f)
    npy_files()


if __name__ == "__main__":
    main()
