"""Benchmark of TV-L1 optical flow: OpenCV against mepipe's torch backend, on 224 x 224 face crops.

    python benchmarks/flow.py [--runs 3] [--pairs 8] [--threads 1]

The pairs are onset -> apex crops (224 x 224 around the landmarks) of a small synthetic casme2 set
made for the run (``--pairs`` clips, the first clips of the default demo set). Measured side by
side in one run, each a median over ``--runs``, per pair:
- OpenCV (``cv2.optflow.DualTVL1OpticalFlow``, default parameters, uint8 input);
- OpenCV given float input on [0, 255] instead of [0, 1] (its silent slow path; one run, at most
  two pairs);
- the torch backend on the CPU at batch 1 and at batch 32 (the pairs repeated to fill a batch);
- with CUDA, the torch backend on the GPU at batch 64, 128 and 256 (``torch.cuda.synchronize``
  around each timing, after a warm-up).
Both libraries get ``--threads`` threads (``cv2.setNumThreads``, ``torch.set_num_threads``).
On a machine whose cores are busy with other work, keep one: torch's per-operation thread team
then waits for descheduled threads, and runs of the same work vary by 10x.
Accuracy on the same pairs is printed too: end-point error against the true motion over the face
(eyes excluded), for both backends and for a zero field, and the mean distance between them.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mepipe.datasets.layouts import get_layout  # noqa: E402
from mepipe.features.flow import tvl1, tvl1_batch  # noqa: E402
from mepipe.synth.generate import SynthOptions, synthesize  # noqa: E402
from mepipe.synth.ground_truth import GroundTruth, face_evaluation_mask  # noqa: E402

CROP = 224


def face_pairs(root: Path, count: int) -> list[dict]:
    truth = GroundTruth(root)
    layout = get_layout("casme2")
    height, width = truth.frame_shape
    pairs = []
    for entry in truth.clips[:count]:
        subject, clip = entry["subject"], entry["clip"]
        frames = [
            cv2.imread(str(root / entry["path"] / layout.frame_name(subject, clip, entry[key])), cv2.IMREAD_GRAYSCALE)
            for key in ("true_onset", "true_apex")
        ]
        landmarks = truth.landmarks(subject, clip, entry["true_onset"])
        centre = (landmarks.min(axis=0) + landmarks.max(axis=0)) / 2
        x0 = int(np.clip(round(centre[0] - CROP / 2), 0, width - CROP))
        y0 = int(np.clip(round(centre[1] - CROP / 2), 0, height - CROP))
        box = (slice(y0, y0 + CROP), slice(x0, x0 + CROP))
        pairs.append(
            {
                "onset": frames[0][box],
                "apex": frames[1][box],
                "flow": truth.total_flow(subject, clip)[(slice(None),) + box],
                "mask": face_evaluation_mask(landmarks, (height, width))[box],
            }
        )
    return pairs


def median_time(function, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cycled(images: np.ndarray, size: int) -> np.ndarray:
    return np.stack([images[i % len(images)] for i in range(size)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    print(f"threads: OpenCV {cv2.getNumThreads()}, torch {torch.get_num_threads()}; runs {args.runs}; "
          f"torch {torch.__version__}, OpenCV {cv2.__version__}")
    with tempfile.TemporaryDirectory() as scratch:
        subjects = math.ceil(args.pairs / 6)
        summary = synthesize(SynthOptions(layout="casme2", out=Path(scratch) / "casme2", subjects=subjects, workers=2))
        pairs = face_pairs(summary.root, args.pairs)
    onsets = np.stack([p["onset"] for p in pairs])
    apexes = np.stack([p["apex"] for p in pairs])
    print(f"{len(pairs)} onset -> apex face crops, {CROP} x {CROP}, uint8")

    rows = []
    flows = {}

    def run_opencv():
        flows["opencv"] = [tvl1(a, b) for a, b in zip(onsets, apexes)]

    rows.append(("OpenCV, uint8", median_time(run_opencv, args.runs) / len(pairs)))
    slow = min(2, len(pairs))
    on_255 = onsets[:slow].astype(np.float32), apexes[:slow].astype(np.float32)
    algorithm = cv2.optflow.DualTVL1OpticalFlow_create()
    rows.append(("OpenCV, float on [0, 255]", median_time(lambda: [algorithm.calc(a, b, None) for a, b in zip(*on_255)], 1) / slow))

    def run_torch_single():
        flows["torch"] = [tvl1(a, b, backend="torch") for a, b in zip(onsets, apexes)]

    rows.append(("torch CPU, batch 1", median_time(run_torch_single, args.runs) / len(pairs)))
    batch = cycled(onsets, 32), cycled(apexes, 32)
    rows.append(("torch CPU, batch 32", median_time(lambda: tvl1_batch(*batch), args.runs) / 32))

    if torch.cuda.is_available():
        for size in (64, 128, 256):
            first = torch.from_numpy(cycled(onsets, size)).cuda()
            second = torch.from_numpy(cycled(apexes, size)).cuda()
            tvl1_batch(first, second)  # warm-up: CUDA context, kernels, allocator

            def run_cuda(first=first, second=second):
                torch.cuda.synchronize()
                tvl1_batch(first, second)
                torch.cuda.synchronize()

            rows.append((f"torch CUDA, batch {size}", median_time(run_cuda, args.runs) / size))

    reference = rows[0][1]
    print()
    print(f"{'per pair, median of runs':<30}{'ms':>10}{'x OpenCV':>11}{'pairs/s':>10}")
    for name, seconds in rows:
        print(f"{name:<30}{seconds * 1e3:10.1f}{seconds / reference:11.2f}{1 / seconds:10.1f}")
    if torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name()}")

    def end_point_error(fields) -> float:
        return float(np.mean([np.hypot(*(f - p["flow"]))[p["mask"]].mean() for f, p in zip(fields, pairs)]))

    zero = [np.zeros_like(p["flow"]) for p in pairs]
    difference = np.mean([np.hypot(*(t - o)).mean() for t, o in zip(flows["torch"], flows["opencv"])])
    print()
    print(f"end-point error over the face (eyes excluded), mean of {len(pairs)} pairs: OpenCV {end_point_error(flows['opencv']):.4f} px, "
          f"torch {end_point_error(flows['torch']):.4f} px, zero field {end_point_error(zero):.4f} px")
    print(f"mean |torch - OpenCV| over the crop: {difference:.4f} px")


if __name__ == "__main__":
    main()
