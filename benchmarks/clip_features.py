"""Benchmark of the clip-level features: ARS, RRS, dynamic images, Eulerian video magnification.

    python benchmarks/clip_features.py [--runs 7] [--frames 60] [--size 224]

One synthetic grey clip of ``--frames`` frames of ``--size`` x ``--size`` pixels (uint8: a smooth
random texture, a brightening that rises and falls like a micro-expression, sensor noise), each
feature timed on it ``--runs`` times, median reported. One core (OpenCV and BLAS limited to one
thread): the pipeline runs clips in parallel, one per core. Beside the features, the floor: one
pass over the clip (copying it, and converting it to float32, which every float feature pays).
The dynamic images are timed on all ``--frames`` frames (the pipeline pools onset to apex, fewer),
the exact one at its default feature scale. Target: magnification at most 1 ms per frame.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mepipe.features.dynamic import approximate_rank_pooling, rank_pooling  # noqa: E402
from mepipe.features.magnify import magnify_motion  # noqa: E402
from mepipe.features.residual import absolute_residual_sum, relative_residual_sum  # noqa: E402

FPS = 200.0  # CASME II
EVM_TARGET_MS_PER_FRAME = 1.0


def synthetic_clip(n_frames: int, size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    texture = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 3.0)
    texture = 128 + 50 * texture / np.abs(texture).max()
    ys, xs = np.mgrid[:size, :size]
    blob = np.exp(-((xs - 0.6 * size) ** 2 + (ys - 0.4 * size) ** 2) / (2 * (0.08 * size) ** 2))
    profile = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_frames) / (n_frames - 1))
    clip = texture + 15 * blob * profile[:, None, None] + rng.normal(0, 1.0, (n_frames, size, size))
    return np.clip(np.round(clip), 0, 255).astype(np.uint8)


def median_time(function, runs: int) -> float:
    function()  # warm-up: imports, allocator, OpenCV's first calls
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()

    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)
    threadpool_limits(1)
    clip = synthetic_clip(args.frames, args.size)
    onset, apex, offset = 0, args.frames // 2, args.frames - 1
    features = [
        ("floor: copy the uint8 clip", lambda: clip.copy()),
        ("floor: convert it to float32", lambda: clip.astype(np.float32)),
        ("ARS (Zhao et al. eq. 5)", lambda: absolute_residual_sum(clip, onset, apex, offset)),
        ("RRS (Zhao et al. eq. 6-7)", lambda: relative_residual_sum(clip, onset, apex, offset)),
        ("dynamic image, approximate", lambda: approximate_rank_pooling(clip)),
        ("dynamic image, exact RankSVM", lambda: rank_pooling(clip)),
        ("EVM, ideal filter (default)", lambda: magnify_motion(clip, fps=FPS)),
        ("EVM, Butterworth filter", lambda: magnify_motion(clip, fps=FPS, temporal_filter="butterworth")),
    ]
    print(f"machine: {os.cpu_count()} cores, timed on one; clip {args.frames} x {args.size} x {args.size} uint8; "
          f"median of {args.runs} runs")
    timings = {name: median_time(function, args.runs) for name, function in features}
    floor = timings["floor: convert it to float32"]
    print()
    print(f"| {'feature':<30} | {'per clip':>9} | {'per frame':>9} | {'x floor':>7} |")
    print(f"| {'-' * 30} | {'-' * 9} | {'-' * 9} | {'-' * 7} |")
    for name, seconds in timings.items():
        per_clip, per_frame = seconds * 1e3, seconds * 1e3 / args.frames
        print(f"| {name:<30} | {per_clip:6.1f} ms | {per_frame:6.3f} ms | {seconds / floor:6.1f}x |")
    print()
    for name in ("EVM, ideal filter (default)", "EVM, Butterworth filter"):
        per_frame = timings[name] * 1e3 / args.frames
        verdict = "met" if per_frame <= EVM_TARGET_MS_PER_FRAME else "NOT met"
        print(f"{name}: {per_frame:.3f} ms per frame, target <= {EVM_TARGET_MS_PER_FRAME:g} ms: {verdict}")


if __name__ == "__main__":
    main()
