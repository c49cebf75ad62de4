"""Benchmark of the checked decode (`pipeline/frames.py`) beside plain `cv2.imread`, one core.

    python benchmarks/decode_check.py [--runs 7] [--subjects 2] [--clips 2]

Two synthetic sets are made in a temporary folder: CASME II (640x480 colour JPEG) and SMIC-HS
(640x480 colour BMP), ``--subjects`` x ``--clips`` each. Every frame of a set is read once first,
so that all methods read from the page cache. Then, per run, in turn (the order rotates from run
to run), over every frame of the set:

- (a) today's decode: ``cv2.imread(path, IMREAD_GRAYSCALE)`` per frame, stacked per clip (what
  ``tasks.decode_frames`` did before the check);
- (b) the new ``decode_frames`` per clip: read the bytes once, check them, ``cv2.imdecode`` them;
- (c) the check alone: ``check_frame_bytes`` on bytes already in memory;
- (r) reading the bytes alone (``open().read()``), for scale;
- (s) ``scan_samples`` with one thread, what ``mepipe verify --decode --workers 1`` does per frame.

Each time is the median over ``--runs`` runs of the time per frame (a run's total over the set
divided by its frames). Each ratio to (a) is the median over the runs of that run's ratio: the
methods of one run are timed back to back, so their ratio drifts less than the times on a shared
machine.

Then what is caught, on the first CASME II frame encoded as JPEG, PNG, BMP and TIFF: how many of
``--cuts`` evenly spaced truncations get past both the check and the decoder (they should not),
and how many of ``--overwrites`` 16-byte random overwrites inside the file are rejected.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mepipe.datasets.adapters import read_dataset  # noqa: E402
from mepipe.pipeline.frames import FrameError, check_frame_bytes, decode_frames, scan_samples  # noqa: E402
from mepipe.synth.generate import SynthOptions, synthesize  # noqa: E402


def _imread_clip(paths) -> np.ndarray:
    return np.stack([cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in paths])


def _read(path) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def measure(samples, runs: int) -> dict[str, list[float]]:
    """Seconds per frame of every method, one value per run."""
    clips = [sample.frames for sample in samples]
    paths = [path for clip in clips for path in clip]
    contents = [_read(path) for path in paths]  # also warms the page cache
    methods = {
        "a": lambda: [_imread_clip(clip) for clip in clips],
        "b": lambda: [decode_frames(clip) for clip in clips],
        "c": lambda: [check_frame_bytes(data, path) for data, path in zip(contents, paths)],
        "r": lambda: [_read(path) for path in paths],
        "s": lambda: scan_samples(samples, workers=1),
    }
    for method in methods.values():  # first call: imports, allocator, decoder tables
        method()
    order = list(methods)
    figures: dict[str, list[float]] = {name: [] for name in order}
    for run in range(runs):
        for name in order[run % len(order):] + order[:run % len(order)]:
            started = time.perf_counter()
            methods[name]()
            figures[name].append((time.perf_counter() - started) / len(paths))
    return figures


def _rejected(data: bytes) -> bool:
    """True when ``read_frame`` would reject a file of these bytes."""
    try:
        name = check_frame_bytes(data, "survey")
    except FrameError:
        return True
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE) is None or name is None


def damage_survey(image: np.ndarray, cuts: int, overwrites: int) -> list[tuple[str, int, int, int]]:
    """Per format: file size, truncations that pass, overwrites rejected."""
    rng = np.random.default_rng(0)
    rows = []
    for suffix, name in ((".jpg", "JPEG"), (".png", "PNG"), (".bmp", "BMP"), (".tif", "TIFF")):
        data = cv2.imencode(suffix, image)[1].tobytes()
        passed = sum(not _rejected(data[:cut]) for cut in np.linspace(1, len(data) - 1, cuts).astype(int))
        caught = 0
        for _ in range(overwrites):
            damaged = bytearray(data)
            at = int(rng.integers(len(data) // 8, len(data) * 7 // 8))
            damaged[at:at + 16] = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
            caught += _rejected(bytes(damaged))
        rows.append((name, len(data), passed, caught))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--clips", type=int, default=2, help="clips per subject")
    parser.add_argument("--cuts", type=int, default=400, help="truncations per format in the survey")
    parser.add_argument("--overwrites", type=int, default=100, help="random overwrites per format in the survey")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    names = {"a": "(a) cv2.imread, gray (today)", "b": "(b) read + check + imdecode", "c": "(c) the check alone",
             "r": "(r) reading the bytes alone", "s": "(s) scan_samples, 1 thread"}
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for dataset in ("casme2", "smic"):
            root = Path(folder) / dataset
            synthesize(SynthOptions(layout=dataset, out=root, subjects=args.subjects, clips_per_subject=args.clips))
            samples = read_dataset(dataset, root).samples
            frames = sum(sample.n_frames for sample in samples)
            size = statistics.median(path.stat().st_size for sample in samples for path in sample.frames)
            print(f"{dataset}: {len(samples)} clips, {frames} frames of 640x480 {samples[0].frames[0].suffix}, "
                  f"median file {size / 1000:.0f} kB", flush=True)
            results[dataset] = measure(samples, args.runs)
            if dataset == "casme2":
                survey = damage_survey(cv2.imread(str(samples[0].frames[0]), cv2.IMREAD_COLOR), args.cuts, args.overwrites)
    print(f"\n{args.runs} runs, OpenCV threads 1; ms per frame, median of the runs (median of the runs' ratios to (a))")
    width = max(len(name) for name in names.values())
    print(f"{'method':<{width}}  " + "  ".join(f"{dataset:>16}" for dataset in results))
    for key, name in names.items():
        cells = []
        for figures in results.values():
            ratio = statistics.median(value / floor for value, floor in zip(figures[key], figures["a"]))
            cells.append(f"{1000 * statistics.median(figures[key]):7.3f} ({ratio:5.3f})")
        print(f"{name:<{width}}  " + "  ".join(f"{cell:>16}" for cell in cells))
    print(f"\nwhat is caught, first CASME II frame re-encoded: {args.cuts} truncations, {args.overwrites} overwrites of 16 bytes")
    for name, size, passed, caught in survey:
        print(f"  {name:<5} {size / 1000:6.0f} kB  truncations passing check and decoder: {passed}/{args.cuts}  "
              f"overwrites rejected: {caught}/{args.overwrites}")
    print("\nper-run ms/frame:")
    for dataset, figures in results.items():
        print(f"  {dataset}: " + "; ".join(f"{key} " + "/".join(f"{1000 * v:.3f}" for v in values) for key, values in figures.items()))


if __name__ == "__main__":
    main()
