"""Accuracy of the face stage against the synthetic ground truth, on every clip of the demo set.

    python benchmarks/face_accuracy.py [--root cache/demo/casme2] [--size 224]

For each alignment setting (clip transform only; clip transform + stabilisation, the default;
per-frame landmarks) and each clip:
- the true head motion left between the aligned onset and apex: M_apex . H . M_onset^-1 - identity,
  mean displacement over the face with the eyes excluded, crop pixels;
- the largest distance of any frame's true eye centres, mapped by that frame's transform, from
  their targets;
- the share of blink pixels (any crop pixel a blink-changed frame pixel lands on) inside the mask;
- the eye mask's share of the crop.
The demo set is made first if it is missing. tests/test_face.py asserts the same on 14 clips.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mepipe.datasets.layouts import get_layout  # noqa: E402
from mepipe.features import face  # noqa: E402
from mepipe.synth.ground_truth import GroundTruth  # noqa: E402

SETTINGS = {
    "clip transform only": dict(mode="clip", stabilize=False),
    "clip + stabilisation (default)": dict(mode="clip", stabilize=True),
    "per-frame landmarks": dict(mode="frame"),
}


def evaluate(root: Path, size: int, settings: dict) -> dict[str, list[float]]:
    truth = GroundTruth(root)
    layout = get_layout("casme2")
    figures: dict[str, list[float]] = {"residual": [], "eyes": [], "blink": [], "mask": [], "seconds": []}
    targets = face.eye_targets(size)
    for entry in truth.clips:
        subject, clip = entry["subject"], entry["clip"]
        numbers = list(range(entry["first_frame"], entry["last_frame"] + 1))
        frames = np.stack([cv2.imread(str(root / entry["path"] / layout.frame_name(subject, clip, n)), cv2.IMREAD_GRAYSCALE) for n in numbers])
        onset, apex = entry["onset"] - entry["first_frame"], entry["apex"] - entry["first_frame"]
        started = time.perf_counter()
        result = face.align_clip(frames, onset, size=size, check_frames=[apex], **settings)
        figures["seconds"].append(time.perf_counter() - started)
        matrices = result.matrices
        head = truth.head_matrix(subject, clip)
        residual = face.compose(matrices[apex], face.compose(head, face.invert_similarity(matrices[onset])))
        landmarks = face.transform_points(matrices[onset], truth.landmarks(subject, clip, entry["onset"]))
        region = face.face_region(landmarks, size, eyes=face.eye_mask(landmarks, size))
        figures["residual"].append(face.motion_magnitude(residual, region))
        worst = 0.0
        for index, number in enumerate(numbers):
            centres = np.array(face.eye_centres(face.transform_points(matrices[index], truth.landmarks(subject, clip, number))))
            worst = max(worst, float(np.hypot(*(centres - targets).T).max()))
        figures["eyes"].append(worst)
        figures["mask"].append(float(result.eye_mask.mean()))
        blink = truth.blink_mask(subject, clip).astype(np.float32)
        if blink.any():
            inside = []
            for index, number in enumerate(numbers):
                if number in entry["blink_frames"]:
                    footprint = cv2.warpAffine(blink, matrices[index], (size, size), flags=cv2.INTER_LINEAR) > 0
                    inside.append((footprint & result.eye_mask).sum() / max(footprint.sum(), 1))
            figures["blink"].append(min(inside))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("cache/demo/casme2"))
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    if not (args.root / "mepipe_ground_truth.npz").is_file():
        from mepipe.synth.generate import SynthOptions, synthesize

        synthesize(SynthOptions(layout="casme2", out=args.root))
    print(f"{args.root}, S={args.size}")
    header = f"{'setting':<32} {'residual mean / worst':>22} {'eye centres worst':>18} {'blink in mask, worst':>21} {'mask share, max':>16} {'s per clip':>11}"
    print(header)
    for name, settings in SETTINGS.items():
        f = evaluate(args.root, args.size, settings)
        print(f"{name:<32} {statistics.mean(f['residual']):>10.3f} / {max(f['residual']):<9.3f} {max(f['eyes']):>15.2f} px "
              f"{100 * min(f['blink']):>17.1f} % {100 * max(f['mask']):>14.1f} % {statistics.median(f['seconds']):>11.2f}")
    print(f"({len(f['blink'])} clips with a blink)")


if __name__ == "__main__":
    main()
