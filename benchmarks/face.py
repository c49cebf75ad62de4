"""Benchmark of the face stage on the demo set's 640x480 clips, one core, side by side in one run.

    python benchmarks/face.py [--runs 5] [--clips 12] [--root cache/demo/casme2]

Per clip (the onset frame):
- ours: detection on the 320-px-wide copy plus the 68 landmarks, as `align_clip` does them
  (``find_face`` and the anchor's landmarks on the face enlarged 4x);
- the reference: dlib's detector on the full-resolution frame upsampled once (``upsample=1``, the
  setting dlib's examples use), plus the landmarks, for the ratio.
Per frame at S=224:
- warp plus crop plus eye mask (``crop_frames`` and ``fill_eyes``);
- the stabilisation's head-motion estimate (Farneback flow and RANSAC);
- the decode floor: reading the JPEG straight to gray.
And the whole ``align_clip`` per clip. Every figure is the median over ``--runs`` runs of the
median over the clips (or frames). The demo set is made first if it is missing.
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

SIZE = 224


def _timed(function, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def _clip_paths(root: Path, entry: dict) -> list[Path]:
    layout = get_layout("casme2")
    return [root / entry["path"] / layout.frame_name(entry["subject"], entry["clip"], n)
            for n in range(entry["first_frame"], entry["last_frame"] + 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--root", type=Path, default=Path("cache/demo/casme2"))
    args = parser.parse_args()
    cv2.setNumThreads(1)
    if not (args.root / "mepipe_ground_truth.npz").is_file():
        from mepipe.synth.generate import SynthOptions, synthesize

        print(f"making the demo set in {args.root} ...")
        synthesize(SynthOptions(layout="casme2", out=args.root))
    truth = GroundTruth(args.root)
    entries = truth.clips[: args.clips]
    clips = []
    for entry in entries:
        paths = _clip_paths(args.root, entry)
        frames = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths])
        clips.append((paths, frames, entry["onset"] - entry["first_frame"]))
    frames_total = sum(len(c[1]) for c in clips)
    print(f"{len(clips)} clips, {frames_total} frames of 640x480, S={SIZE}, {args.runs} runs, OpenCV threads 1")

    # load dlib's detector and the 100 MB landmark model before any timing
    warm = face.find_face(clips[0][1], clips[0][2])
    face.face_landmarks(clips[0][1][clips[0][2]], warm.box, upscale=4)
    figures: dict[str, list[float]] = {}

    def record(name: str, values: list[float]) -> None:
        figures.setdefault(name, []).append(statistics.median(values))

    for _ in range(args.runs):
        ours, reference, warp, motion, decode, whole = [], [], [], [], [], []
        for paths, frames, onset in clips:
            onset_frame = frames[onset]

            def detect_and_landmark():
                detection = face.find_face(frames, onset)
                return face.face_landmarks(onset_frame, detection.box, upscale=4)

            ours.append(_timed(detect_and_landmark)[0])

            def full_resolution():
                box = face.detect_faces(onset_frame, upsample=1)[0]
                return face.face_landmarks(onset_frame, box)

            reference.append(_timed(full_resolution)[0])

            landmarks = detect_and_landmark()
            matrix = face.alignment_matrix(landmarks, SIZE)
            crop_landmarks = face.transform_points(matrix, landmarks)
            mask = face.eye_mask(crop_landmarks, SIZE)
            seconds, crops = _timed(lambda: face.fill_eyes(face.crop_frames(frames, matrix, SIZE), mask))
            warp.append(seconds / len(frames))

            region = face.face_region(crop_landmarks, SIZE, eyes=mask)
            unmasked = face.crop_frames(frames, matrix, SIZE)
            for index in range(0, len(frames), 8):
                motion.append(_timed(face.estimate_global_motion, unmasked[onset], unmasked[index], region)[0])
            for path in paths[::8]:
                decode.append(_timed(cv2.imread, str(path), cv2.IMREAD_GRAYSCALE)[0])
            whole.append(_timed(face.align_clip, frames, onset, size=SIZE)[0] / len(frames))
        record("detect", ours)
        record("reference", reference)
        record("warp", warp)
        record("motion", motion)
        record("decode", decode)
        record("whole", whole)

    def ms(name: str) -> float:
        return 1000 * statistics.median(figures[name])

    rows = [
        ("per clip: detection (320 px copy) + 68 landmarks (4x)", ms("detect"), "target <= 30 ms"),
        ("per clip: dlib at full resolution, upsample=1, + landmarks", ms("reference"), f"ours is {ms('reference') / ms('detect'):.1f}x faster"),
        ("per frame: warp + crop + eye mask, S=224", ms("warp"), "target <= 1 ms"),
        ("per frame: head-motion estimate (stabilisation)", ms("motion"), f"{ms('motion') / ms('decode'):.1f}x the decode floor"),
        ("per frame: decode floor (JPEG to gray)", ms("decode"), ""),
        ("per frame: whole align_clip (detect, stabilise, crop, mask, QC)", ms("whole"), f"{ms('whole') / ms('decode'):.1f}x the decode floor"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'what':<{width}}  {'median':>9}  note")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:7.2f} ms  {note}")
    print("\nper-run medians (ms): " + ", ".join(f"{k} " + "/".join(f"{1000 * v:.2f}" for v in vals) for k, vals in figures.items()))


if __name__ == "__main__":
    main()
