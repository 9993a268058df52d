#!/usr/bin/env python3
"""This library against ONNX Runtime on the same machine, in one run.

1. Runs `cargo run --release --example profile -- --preset cpu --json` (or reads a saved JSON
   object with --profile-json) for this library's medians.
2. Right after, times ONNX Runtime (CPU execution provider, all graph optimisations) on the
   committed backbone graph `weights/efficientnet_lite0/efficientnet_lite0.onnx` (the same
   weights and taps the `cpu` preset runs), batch 1 and batch 8, with as many intra-op threads
   as the library's CPU backend uses.
3. Prints a Markdown table with the ratios (this library / ONNX Runtime; below 1 means faster).

Needs `pip install onnxruntime onnx numpy` (PyPI). The graph is exported with a fixed batch of
1; for batch 8 the script makes the batch dimension symbolic in memory (the file is not
changed). Machines here are shared: the table prints the load average before and after, and a
run whose load exceeded the thread count is marked as loaded.

Usage: python3 benches/compare_onnxruntime.py [--profile-json FILE | --cargo-profile dev] [--reps 30] [--json-out FILE]
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRAPH = ROOT / "weights" / "efficientnet_lite0" / "efficientnet_lite0.onnx"


def load_average():
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return None


def profile_json(path, cargo_profile):
    if path:
        return json.loads(Path(path).read_text())
    cmd = ["cargo", "run", "--quiet", "--profile", cargo_profile, "--example", "profile", "--", "--preset", "cpu", "--json"]
    print("running:", " ".join(cmd), file=sys.stderr)
    out = subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out)


def session(batch, threads):
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(GRAPH))
    if batch != 1:
        # Inferred intermediate shapes pin the batch too; ONNX Runtime re-infers them.
        del model.graph.value_info[:]
        for value in list(model.graph.input) + list(model.graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def median_ms(f, reps):
    for _ in range(3):
        f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile-json", help="a saved `profile --json` object instead of running it")
    parser.add_argument("--cargo-profile", default="release",
                        help="cargo profile to build `profile` with (`dev` reuses the test build, also opt-level 3)")
    parser.add_argument("--reps", type=int, default=30, help="timed runs per ONNX Runtime case (median)")
    parser.add_argument("--json-out", help="also write both sides and the ratios to this JSON file")
    args = parser.parse_args()

    import numpy as np
    import onnxruntime as ort

    ours = profile_json(args.profile_json, args.cargo_profile)
    threads = int(ours.get("threads") or os.cpu_count())
    load_before = load_average()
    rng = np.random.default_rng(0)
    ort_ms = {}
    for batch in (1, 8):
        sess = session(batch, threads)
        x = rng.standard_normal((batch, 3, 256, 256), dtype=np.float32)
        name = sess.get_inputs()[0].name
        ort_ms[batch] = median_ms(lambda: sess.run(None, {name: x}), args.reps) / batch
    load_after = load_average()

    rows = [
        ("backbone, batch 1 (ms / image)", ours["backbone_ms"], ort_ms[1]),
        ("backbone, batch 8 (ms / image)", ours["backbone_batch8_ms_per_image"], ort_ms[8]),
    ]
    loads = [v for v in (ours.get("load_before"), ours.get("load_after"), load_before, load_after) if v is not None]
    loaded = bool(loads) and max(loads) > threads
    print(f"EfficientNet-Lite0 to the stride-16 tap, 256 x 256, {threads} thread(s), medians; "
          f"ONNX Runtime {ort.__version__}; load average {', '.join(f'{v:.2f}' for v in loads)}"
          + (" -- LOADED MACHINE: other jobs shared the cores" if loaded else ""))
    print()
    print("| | pnpt (Burn, Flex) | ONNX Runtime | pnpt / ORT |")
    print("|---|---|---|---|")
    for label, a, b in rows:
        print(f"| {label} | {a:.2f} | {b:.2f} | {a / b:.2f} |")
    print()
    print("pnpt alone (same run): "
          f"Detector::predict {ours['predict_ms']:.1f} ms (PNPT map only {ours['predict_pnpt_ms']:.1f} ms), "
          f"batch 8 {ours['predict_batch8_ms_per_image']:.1f} ms / image, "
          f"training step (batch 8) {ours['train_step_ms']:.0f} ms, "
          f"matmul peak {ours['matmul_peak_gflops']:.0f} GFLOP/s")
    if args.json_out:
        result = {
            "pnpt": ours,
            "onnxruntime": {"version": ort.__version__, "threads": threads, "backbone_ms": ort_ms[1],
                            "backbone_batch8_ms_per_image": ort_ms[8], "load_before": load_before,
                            "load_after": load_after},
            "ratios": {"backbone": rows[0][1] / rows[0][2], "backbone_batch8": rows[1][1] / rows[1][2]},
            "loaded": loaded,
        }
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
