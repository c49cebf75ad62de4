"""Benchmark of `mepipe synth`: the default demo set, timed beside its encode-and-write floor.

    python benchmarks/synth.py [--runs 3] [--detect-all]

Measured side by side in one run:
- the wall time of making the default demo set (casme2 layout, 6 subjects x 6 clips) with all
  cores, median over ``--runs``;
- its floor: JPEG-encoding and writing the same number of 640x480 frames, with the same number of
  processes, no rendering (what any writer of such a tree must pay);
- per-frame costs on one core: rendering a frame, encoding it, and the per-clip ground truth.
With ``--detect-all``, dlib's frontal detector runs on every frame of the set and the share of
frames with exactly one face is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mepipe.datasets.layouts import get_layout  # noqa: E402
from mepipe.synth.generate import JPEG_QUALITY, SynthOptions, synthesize  # noqa: E402


def _encode_and_write(args) -> None:
    folder, count, seed = args
    rng = np.random.default_rng(seed)
    image = rng.integers(60, 200, (480, 640, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (0, 0), 2.0)  # photo-like: random noise would not compress
    for index in range(count):
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        (Path(folder) / f"img{index}.jpg").write_bytes(data.tobytes())


def encode_floor(frames: int, workers: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        shares = [frames // workers + (1 if i < frames % workers else 0) for i in range(workers)]
        jobs = []
        for i, share in enumerate(shares):
            sub = Path(folder) / str(i)
            sub.mkdir()
            jobs.append((str(sub), share, i))
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_encode_and_write, jobs))
        return time.perf_counter() - started


def per_frame_costs() -> dict[str, float]:
    from mepipe.synth.appearance import default_photo, make_subject
    from mepipe.synth.plan import default_plans
    from mepipe.synth.render import ClipRenderer
    import dataclasses

    cv2.setNumThreads(1)
    layout = get_layout("casme2")
    plan = default_plans(layout, 1, 1, seed=0)[0]
    subject = make_subject(default_photo(), layout.frame_size, True, 0, 0)
    chin = subject.landmarks[8]
    plan = dataclasses.replace(plan, head=dataclasses.replace(plan.head, pivot=(float(chin[0]), float(chin[1]) + 40)))
    renderer = ClipRenderer(plan, subject)
    frames = list(plan.frame_numbers)
    render, encode = [], []
    for number in frames:
        started = time.perf_counter()
        image = renderer.frame(number)
        render.append(time.perf_counter() - started)
        started = time.perf_counter()
        cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        encode.append(time.perf_counter() - started)
    truth = []
    for _ in range(3):
        started = time.perf_counter()
        renderer.ground_truth()
        truth.append(time.perf_counter() - started)
    return {"render": statistics.median(render), "encode": statistics.median(encode), "truth": statistics.median(truth)}


def detect_all(root: Path) -> tuple[int, int]:
    from mepipe.features.face import detect_faces

    paths = sorted(root.rglob("img*.jpg"))
    one = sum(len(detect_faces(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE))) == 1 for p in paths)
    return one, len(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--detect-all", action="store_true")
    args = parser.parse_args()

    print(f"machine: {os.cpu_count()} cores; workers {args.workers}; runs {args.runs}")
    walls, floors = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for run in range(args.runs):
            root = Path(scratch) / f"run{run}"
            started = time.perf_counter()
            summary = synthesize(SynthOptions(layout="casme2", out=root, workers=args.workers))
            walls.append(time.perf_counter() - started)
            floors.append(encode_floor(summary.frames, args.workers))
            print(f"  run {run + 1}: demo set {walls[-1]:.1f} s, encode+write floor {floors[-1]:.1f} s")
        costs = per_frame_costs()
        wall, floor = statistics.median(walls), statistics.median(floors)
        print()
        print(f"demo set (casme2, 6x6 = {summary.clips} clips, {summary.frames} frames)")
        print(f"  {'wall time, median of ' + str(args.runs):<37}{wall:6.1f} s   (target < 60 s)")
        print(f"  encode+write floor, median           {floor:6.1f} s")
        print(f"  ratio to the floor                   {wall / floor:6.1f} x")
        print(f"  frames per second                    {summary.frames / wall:6.0f}")
        print("per frame, one core, median")
        print(f"  render a 640x480 frame               {costs['render'] * 1e3:6.1f} ms")
        print(f"  JPEG-encode it                       {costs['encode'] * 1e3:6.1f} ms   (ratio {costs['render'] / costs['encode']:.1f} x)")
        print(f"  ground truth of a clip               {costs['truth'] * 1e3:6.1f} ms")
        if args.detect_all:
            one, total = detect_all(Path(scratch) / "run0")
            print(f"dlib frontal detector, every frame: exactly one face in {one}/{total} = {100 * one / total:.2f} %")


if __name__ == "__main__":
    main()
