"""Prepare, on the CPU machine, what ``benchmarks/gpu_check.py`` carries to a lent device.

    .venv/bin/python benchmarks/prepare_gpu_check.py [--root cache/demo/casme2] [--out cache/gpu_check] [--runs 3]

The device has no dlib (so no face stage), no OpenCV TV-L1 (``opencv-python-headless`` has no
contrib module), no dask, zarr or click, and nothing can be fetched there. What needs them is done
here and written into one folder (``cache/gpu_check/``, ignored by git, 13.5 MiB), named in the
``run`` tool's ``carry``:

``pairs.npz``
    The aligned onset and apex crops of every clip of the synthetic demo set (``make demo``'s
    ``cache/demo/casme2``, made here when missing): the face stage on the two frames, gray, eyes
    zero-filled, as ``tests/test_flow.py`` makes them (``onset``, ``apex``: (N, S, S) uint8);
    their true onset -> apex flow as seen between the two crops (``truth``, (N, 2, S, S) float16,
    from the set's ``mepipe_ground_truth.npz``); the scoring region, the face without the eyes
    (``mask``); and OpenCV's TV-L1 flow of each pair (``opencv``, float16), which the device cannot
    compute.
``manifest.json``
    This machine and the date; its figures on those pairs, measured side by side in this run with
    one thread each (OpenCV's ``DualTVL1OpticalFlow`` and the torch backend at batch 1 and at
    batch N, pairs per second, medians of ``--runs``; end-point errors against the truth); each
    paper model's recipe options (its paper's settings) and the per-sample shapes of the tensors
    its recipe's ``inputs`` makes in its own variant; the LOSO folds (class counts of every
    training set) of the synthetic composite of ``benchmarks/composite.py`` (18 subjects) and of
    the real MEGC2019 composite list (68 subjects), for the epoch timings and their projections.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _sibling(name: str):
    """``benchmarks/<name>.py`` as a module (by its path: the benchmarks folder stays off sys.path)."""
    key = f"_benchmarks_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).with_name(f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


gpu_check = _sibling("gpu_check")

DEMO = ROOT / "cache" / "demo" / "casme2"


def face_pairs(root: Path, count: int | None, size: int) -> dict:
    """Aligned onset/apex crops of the first ``count`` clips (all: None), their true flow and mask."""
    import cv2

    from mepipe.datasets.layouts import get_layout
    from mepipe.features import face
    from mepipe.synth.ground_truth import GroundTruth

    truth = GroundTruth(root)
    layout = get_layout(truth.manifest["dataset"])
    onsets, apexes, flows, masks, ids = [], [], [], [], []
    for entry in truth.clips[:count]:
        subject, clip = entry["subject"], entry["clip"]
        frames = np.stack([
            cv2.imread(str(root / entry["path"] / layout.frame_name(subject, clip, entry[key])), cv2.IMREAD_GRAYSCALE)
            for key in ("onset", "apex")
        ])
        aligned = face.align_clip(frames, 0, size=size)
        onsets.append(aligned.frames[0])
        apexes.append(aligned.frames[1])
        flows.append(truth.crop_flow(subject, clip, aligned.matrices[0], aligned.matrices[1], size))
        masks.append(face.face_region(aligned.landmarks, size, eyes=aligned.eye_mask))
        ids.append(f"{subject}/{clip}")
    return {"onset": np.stack(onsets), "apex": np.stack(apexes), "truth": np.stack(flows).astype(np.float32),
            "mask": np.stack(masks), "ids": np.array(ids)}


def cpu_figures(pairs: dict, runs: int) -> tuple[dict, np.ndarray]:
    """OpenCV and the torch backend on this CPU, one thread each, side by side: pairs/s and EPE."""
    import cv2
    import torch

    from mepipe.features.flow import tvl1, tvl1_batch

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    onset, apex, truth, mask = pairs["onset"], pairs["apex"], pairs["truth"], pairs["mask"]
    count = len(onset)
    times = {"opencv": [], "torch_batch_1": [], "torch_batch_n": []}
    flows = {}
    for _ in range(runs):  # the three in turn, each run: a shared machine's load hits all alike
        started = time.perf_counter()
        flows["opencv"] = np.stack([tvl1(a, b) for a, b in zip(onset, apex)])
        times["opencv"].append(time.perf_counter() - started)
        started = time.perf_counter()
        flows["torch"] = np.stack([tvl1(a, b, backend="torch") for a, b in zip(onset, apex)])
        times["torch_batch_1"].append(time.perf_counter() - started)
        started = time.perf_counter()
        tvl1_batch(onset, apex)
        times["torch_batch_n"].append(time.perf_counter() - started)
    epe = {name: gpu_check.end_point_errors(flow, truth, mask) for name, flow in flows.items()}
    zero = gpu_check.end_point_errors(np.zeros_like(truth), truth, mask)
    difference = np.hypot(*(flows["torch"] - flows["opencv"]).transpose(1, 0, 2, 3))
    figures = {
        "threads": 1, "runs": runs, "pairs": count, "crop": list(onset.shape[1:]),
        "opencv_pairs_per_s": count / statistics.median(times["opencv"]),
        "torch_batch_1_pairs_per_s": count / statistics.median(times["torch_batch_1"]),
        "torch_batch_n_pairs_per_s": count / statistics.median(times["torch_batch_n"]), "torch_batch_n": count,
        "seconds_per_run": {key: [round(t, 2) for t in value] for key, value in times.items()},
        "epe_opencv": float(epe["opencv"].mean()), "epe_torch": float(epe["torch"].mean()),
        "epe_zero": float(zero.mean()), "mean_abs_torch_minus_opencv_crop": float(difference.mean()),
        "versions": {"opencv": cv2.__version__, "torch": torch.__version__},
    }
    return figures, flows["opencv"]


def model_specs() -> dict:
    """Each paper model's recipe options (its paper's settings) and its network's input shapes."""
    from mepipe.models.recipes import RECIPES, get_recipe, options_dict

    specs = {}
    for name in RECIPES:
        recipe = get_recipe(name)
        options = recipe.Options()
        spec = recipe.inputs_spec
        specs[name] = {"options": options_dict(options), "inputs": gpu_check.input_shapes(recipe, options),
                       "variant": spec.variant.name, "artifacts": list(spec.artifacts), "paper": spec.paper}
    return specs


def fold_tables() -> dict:
    """LOSO folds of the composite list (``mepipe.datasets``' copy of MEGC2019's 442 clips): all of
    it (68 subjects), and the 18 subjects of ``benchmarks/composite.py``'s synthetic composite."""
    SUBJECTS = _sibling("composite").SUBJECTS
    from mepipe.datasets.coding_tables import read_composite_manifest
    from mepipe.datasets.protocols import COMPOSITE_CLASSES, loso_folds

    rows = read_composite_manifest()

    def table(chosen, what: str) -> dict:
        groups = [f"{row.dataset}/{row.subject}" for row in chosen]
        labels = np.array([COMPOSITE_CLASSES.index(row.emotion) for row in chosen])
        folds = loso_folds(groups)
        described = [{"test_subject": fold.test_subject, "train": len(fold.train), "test": len(fold.test),
                      "train_class_counts": np.bincount(labels[fold.train], minlength=len(COMPOSITE_CLASSES)).tolist()}
                     for fold in folds]
        first = folds[0]
        return {"what": what, "samples": len(chosen), "subjects": len(folds), "folds": described,
                "fold0": {"test_subject": first.test_subject, "test": len(first.test),
                          "train_labels": labels[first.train].tolist(),
                          "train_groups": [groups[i] for i in first.train]}}

    synthetic = [row for row in rows if row.subject in SUBJECTS[row.dataset]]
    return {"classes": list(COMPOSITE_CLASSES),
            "synthetic": table(synthetic, f"the synthetic composite of benchmarks/composite.py ({len(synthetic)} clips of "
                                          "6 subjects each of CASME II, SAMM and SMIC-HS)"),
            "megc2019": table(rows, "the MEGC2019 composite list (442 clips of 68 subjects)")}


def machine() -> dict:
    return {"cpu": gpu_check._cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def prepare(root: Path, out: Path, *, count: int | None = None, size: int = 224, runs: int = 3,
            tiny: bool = False) -> dict:
    """Write ``pairs.npz`` and ``manifest.json`` into ``out``; returns the manifest."""
    started = time.perf_counter()
    load_before = [round(x, 2) for x in os.getloadavg()]
    if not (root / "mepipe_ground_truth.npz").is_file():
        from mepipe.synth.generate import SynthOptions, synthesize

        print(f"making the demo set in {root} ...", flush=True)
        synthesize(SynthOptions(layout="casme2", out=root, workers=2))
    pairs = face_pairs(root, count, size)
    print(f"{len(pairs['onset'])} aligned onset/apex pairs of {size} x {size} from {root}", flush=True)
    figures, opencv = cpu_figures(pairs, runs)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / gpu_check.PAIRS, onset=pairs["onset"], apex=pairs["apex"],
                        truth=pairs["truth"].astype(np.float16), mask=pairs["mask"], opencv=opencv.astype(np.float16),
                        ids=pairs["ids"])
    now = datetime.datetime.now().astimezone()
    manifest = {
        "date": now.date().isoformat(), "time": now.isoformat(timespec="seconds"),
        "machine": {**machine(), "load_average_before": load_before},
        "tiny": tiny, "source": str(root.relative_to(ROOT) if root.is_relative_to(ROOT) else root),
        "pairs": {"count": len(pairs["onset"]), "size": size, "ids": pairs["ids"].tolist(),
                  "made": "face.align_clip on the onset and apex frames (gray, eyes zero-filled); truth: "
                          "GroundTruth.crop_flow; mask: face.face_region without the eyes"},
        "cpu_figures": figures, "models": model_specs(), "folds": fold_tables(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]) if not tiny else "prepare(..., tiny=True)",
    }
    manifest["seconds"] = round(time.perf_counter() - started, 1)
    (out / gpu_check.MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEMO, help="a synthetic set with its ground truth (made when missing)")
    parser.add_argument("--out", type=Path, default=gpu_check.PREPARED)
    parser.add_argument("--pairs", type=int, default=None, help="the first N clips (default: all)")
    parser.add_argument("--size", type=int, default=224, help="crop size (the default variant's 224)")
    parser.add_argument("--runs", type=int, default=3, help="timed passes over the pairs (the median is kept)")
    args = parser.parse_args()
    manifest = prepare(args.root, args.out, count=args.pairs, size=args.size, runs=args.runs)
    figures = manifest["cpu_figures"]
    print(f"this machine ({manifest['machine']['cpu']}, one thread each, median of {figures['runs']} runs): "
          f"OpenCV {figures['opencv_pairs_per_s']:.2f} pairs/s, torch batch 1 {figures['torch_batch_1_pairs_per_s']:.2f}, "
          f"torch batch {figures['torch_batch_n']} {figures['torch_batch_n_pairs_per_s']:.2f}; EPE OpenCV "
          f"{figures['epe_opencv']:.4f} px, torch {figures['epe_torch']:.4f} px, zero {figures['epe_zero']:.4f} px")
    size = folder_size(args.out)
    print(f"wrote {args.out}: {size / 2**20:.1f} MiB ({', '.join(sorted(p.name for p in args.out.iterdir()))}) "
          f"in {manifest['seconds']:.0f} s")


if __name__ == "__main__":
    main()
