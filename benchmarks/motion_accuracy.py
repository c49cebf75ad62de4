"""Accuracy of the motion features against the synthetic truth, on aligned crops.

    python benchmarks/motion_accuracy.py [--root cache/bench/casme2-60] [--size 224] [--eye-fill zero]

On every clip of a synthetic CASME II-layout set (made first when missing: 10 subjects x 6 clips,
seed 1, i.e. 60 onset/apex pairs):
- the clip is aligned by the face stage (clip mode, stabilised; S = ``--size``);
- TV-L1 from the aligned onset crop to the aligned apex crop, with both backends (OpenCV, and
  torch on the CPU, batched over all pairs), at the shared defaults;
- each field is scored against the true onset -> apex displacement as seen between the two crops
  (``GroundTruth.crop_flow``): the mean end-point error over the face with the eyes excluded
  (the eye mask), beside the zero field's, and the mean |torch - OpenCV| over the same pixels;
- the apex is spotted (``spot``, on the crops without eye fill, as it needs) and taken as the middle of onset..offset (``middle``); both are
  compared with the true apex in frames, overall and on the clips with a blink.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mepipe.datasets.layouts import get_layout  # noqa: E402
from mepipe.features import face  # noqa: E402
from mepipe.features.apex import middle_apex, spot_apex  # noqa: E402
from mepipe.features.flow import tvl1, tvl1_batch  # noqa: E402
from mepipe.synth.ground_truth import GroundTruth  # noqa: E402


def _epe(flow: np.ndarray, truth: np.ndarray, region: np.ndarray) -> float:
    return float(np.hypot(*(flow - truth))[region].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("cache/bench/casme2-60"))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--eye-fill", choices=["zero", "mean", "none"], default="zero")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    torch.set_num_threads(2)
    if not (args.root / "mepipe_ground_truth.npz").is_file():
        from mepipe.synth.generate import SynthOptions, synthesize

        print(f"making a 60-clip synthetic set in {args.root} ...")
        synthesize(SynthOptions(layout="casme2", out=args.root, subjects=10, clips_per_subject=6, seed=1))
    truth = GroundTruth(args.root)
    layout = get_layout("casme2")
    size = args.size
    fill = None if args.eye_fill == "none" else args.eye_fill

    onsets, apexes, truths, regions = [], [], [], []
    spot_errors, middle_errors, blink_flags, lengths = [], [], [], []
    for entry in truth.clips:
        subject, clip = entry["subject"], entry["clip"]
        numbers = range(entry["first_frame"], entry["last_frame"] + 1)
        frames = np.stack([cv2.imread(str(args.root / entry["path"] / layout.frame_name(subject, clip, n)), cv2.IMREAD_GRAYSCALE) for n in numbers])
        onset, apex = entry["onset"] - entry["first_frame"], entry["apex"] - entry["first_frame"]
        offset, true_apex = entry["offset"] - entry["first_frame"], entry["true_apex"] - entry["first_frame"]
        aligned = face.align_clip(frames, onset, size=size, check_frames=[apex], eye_fill=None)
        region = face.face_region(aligned.landmarks, size, eyes=aligned.eye_mask)
        pair = aligned.frames[[onset, apex]]
        if fill is not None:
            pair = face.fill_eyes(pair, aligned.eye_mask, fill)
        onsets.append(pair[0])
        apexes.append(pair[1])
        truths.append(truth.crop_flow(subject, clip, aligned.matrices[onset], aligned.matrices[apex], size))
        regions.append(region)
        spotted = spot_apex(aligned.frames, onset, region, offset=offset)
        spot_errors.append(abs(spotted.apex - true_apex))
        middle_errors.append(abs(middle_apex(onset, offset) - true_apex))
        blink_flags.append(bool(entry["blink_frames"]))
        lengths.append(offset - onset + 1)

    started = time.perf_counter()
    opencv_flows = [tvl1(a, b, backend="opencv") for a, b in zip(onsets, apexes)]
    opencv_seconds = time.perf_counter() - started
    started = time.perf_counter()
    torch_flows = []
    for start in range(0, len(onsets), 16):
        torch_flows.extend(tvl1_batch(np.stack(onsets[start:start + 16]), np.stack(apexes[start:start + 16])))
    torch_seconds = time.perf_counter() - started

    zero = [_epe(np.zeros_like(t), t, r) for t, r in zip(truths, regions)]
    opencv_epe = [_epe(f, t, r) for f, t, r in zip(opencv_flows, truths, regions)]
    torch_epe = [_epe(f, t, r) for f, t, r in zip(torch_flows, truths, regions)]
    between = [float(np.hypot(*(a - b))[r].mean()) for a, b, r in zip(torch_flows, opencv_flows, regions)]

    pairs = len(onsets)
    print(f"{args.root}: {pairs} onset/apex pairs, aligned crops S={size}, eyes filled: {args.eye_fill}; scored over the face, eyes excluded\n")
    print(f"{'':<36} {'mean':>8} {'median':>8} {'worst':>8}")
    for name, values in [("EPE, TV-L1 OpenCV (px)", opencv_epe), ("EPE, TV-L1 torch CPU (px)", torch_epe),
                         ("EPE, zero field (px)", zero), ("|torch - OpenCV| (px)", between)]:
        print(f"{name:<36} {statistics.mean(values):>8.3f} {statistics.median(values):>8.3f} {max(values):>8.3f}")
    print(f"\ntorch EPE - OpenCV EPE: {statistics.mean(torch_epe) - statistics.mean(opencv_epe):+.4f} px (target <= +0.02)")
    print(f"time: OpenCV {1000 * opencv_seconds / pairs:.1f} ms per pair (1 thread), torch {1000 * torch_seconds / pairs:.1f} ms per pair (batches of 16, {torch.get_num_threads()} threads)")

    spot, middle = np.array(spot_errors, float), np.array(middle_errors, float)
    blink = np.array(blink_flags)
    share = spot / np.array(lengths)
    print(f"\napex, mean absolute error in frames over {pairs} clips ({blink.sum()} with a blink):")
    print(f"{'':<10} {'all':>8} {'blink':>8} {'no blink':>9}")
    for name, values in [("spot", spot), ("middle", middle)]:
        print(f"{name:<10} {values.mean():>8.2f} {values[blink].mean():>8.2f} {values[~blink].mean():>9.2f}")
    print(f"spot / middle = {spot.mean() / middle.mean():.2f} (target <= 0.5); spot's worst error = {100 * share.max():.1f} % of its clip (target <= 10 %)")


if __name__ == "__main__":
    main()
