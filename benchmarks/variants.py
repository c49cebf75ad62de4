"""The cost of input variants: a default build against ``--for all`` on the demo set, side by side.

    python benchmarks/variants.py [--root cache/demo/casme2] [--repeats 3] [--workers 2]

Measured in one run, each build from nothing into a fresh store (local cluster of processes):

- the default build (a build without ``--for``: every artifact at 224 px, gray, eyes zero-filled);
- ``--for all``: that, and every model's own variant (``docs/models/inputs.md``);
- the ratio of their wall times (target: ``--for all`` at most 2.5 x the default), and where the
  extra time goes (per step, summed over samples), with the face stage's runs per clip (one,
  whatever the number of variants);
- the decode floor: every frame decoded once in gray and once in colour, one thread.

The builds alternate (default, all, default, all, ...) so that drift of a noisy machine falls on
both; medians of ``--repeats`` runs are printed. Figures go to ``docs/benchmarks.md`` by hand.

``--sequence`` instead builds one store step by step: ``--for mobilevit``, ``--for cropnet``
(MobileViT's arrays must stay byte-identical: their SHA-256 before and after are compared),
``--for all`` (only what is missing), then a default build (nothing to compute).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mepipe.datasets.adapters import read_dataset  # noqa: E402
from mepipe.models.recipes import build_targets  # noqa: E402
from mepipe.pipeline.build import BuildOptions, build  # noqa: E402


def decode_floor(paths: list[str], flag: int) -> float:
    cv2.setNumThreads(1)
    start = time.perf_counter()
    for path in paths:
        if cv2.imread(path, flag) is None:
            raise SystemExit(f"cannot decode {path}")
    return time.perf_counter() - start


def one_build(root: Path, workers: int, targets) -> tuple[float, dict[str, float], list[int], int]:
    store = Path(tempfile.mkdtemp(prefix="mepipe-variants-")) / "store.zarr"
    try:
        summary = build(BuildOptions("casme2", root=root, store=store, scheduler="processes", workers=workers, targets=targets))
        if summary.failures:
            print(f"  {len(summary.failures)} failures, first: {summary.failures[0]}")
        steps: dict[str, float] = defaultdict(float)
        for result in summary.results:
            for name, seconds in result.seconds.items():
                steps[name] += seconds
        return summary.wall_s, dict(steps), [r.face_runs for r in summary.results], len(summary.variants)
    finally:
        shutil.rmtree(store.parent, ignore_errors=True)


def _digests(path: Path) -> tuple[dict[str, str], dict]:
    import zarr

    found: dict[str, str] = {}

    def walk(group, prefix=""):
        for name, array in group.arrays():
            found[prefix + name] = hashlib.sha256(array[...].tobytes()).hexdigest()
        for name, child in group.groups():
            walk(child, f"{prefix}{name}/")

    group = zarr.open_group(str(path), mode="r")
    walk(group)
    return found, dict(group.attrs)


def sequence(root: Path, workers: int) -> None:
    store = Path(tempfile.mkdtemp(prefix="mepipe-variants-")) / "store.zarr"
    try:
        def step(names: list[str]):
            started = time.perf_counter()
            summary = build(BuildOptions("casme2", root=root, store=store, workers=workers,
                                         targets=build_targets(names, "casme2") if names else None))
            computed = {v.variant.name: sum(c.computed for c in v.counts.values()) for v in summary.variants}
            print(f"--for {','.join(names) if names else '(none: the default build)'}: {time.perf_counter() - started:.1f} s; "
                  f"computed per variant {computed}; face stage runs per clip {sorted({r.face_runs for r in summary.results})}; "
                  f"{len(summary.failures)} failures", flush=True)

        step(["mobilevit"])
        mobilevit = store / "casme2" / "variants" / "256-gray-eyes-zero"
        before = _digests(mobilevit)
        step(["cropnet"])
        after = _digests(mobilevit)
        print(f"MobileViT's variant after --for cropnet: {len(after[0])} arrays byte-identical: {before[0] == after[0]}; "
              f"attributes identical: {before[1] == after[1]}", flush=True)
        step(["all"])
        step([])
    finally:
        shutil.rmtree(store.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("cache/demo/casme2"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sequence", action="store_true", help="one store built step by step (see the docstring)")
    args = parser.parse_args()
    if not args.root.is_dir() or not any(args.root.iterdir()):
        from mepipe.synth.generate import SynthOptions, synthesize

        print(f"making the demo set in {args.root} ...", flush=True)
        synthesize(SynthOptions(layout="casme2", out=args.root))
    if args.sequence:
        sequence(args.root, args.workers)
        return
    samples = read_dataset("casme2", args.root).samples
    paths = [str(path) for sample in samples for path in sample.frames]
    print(f"{args.root}: {len(samples)} clips, {len(paths)} frames; {args.workers} workers, {args.repeats} runs each", flush=True)

    gray = statistics.median(decode_floor(paths, cv2.IMREAD_GRAYSCALE) for _ in range(args.repeats))
    colour = statistics.median(decode_floor(paths, cv2.IMREAD_COLOR) for _ in range(args.repeats))
    print(f"decode floor, 1 thread: gray {gray:.2f} s, colour {colour:.2f} s ({colour / gray:.2f}x)", flush=True)

    kinds = {"default": None, "--for all": build_targets(["all"], "casme2")}
    walls: dict[str, list[float]] = defaultdict(list)
    counts: dict[str, int] = {}
    steps: dict[str, dict[str, list[float]]] = {kind: defaultdict(list) for kind in kinds}
    for run in range(args.repeats):
        for kind, targets in kinds.items():
            wall, per_step, face_runs, variants = one_build(args.root, args.workers, targets)
            walls[kind].append(wall)
            counts[kind] = variants
            for name, seconds in per_step.items():
                steps[kind][name].append(seconds)
            print(f"  run {run + 1} {kind}: {wall:.1f} s, {variants} variants, face stage runs per clip: "
                  f"{sorted(set(face_runs))}", flush=True)

    default, everything = (statistics.median(walls[kind]) for kind in kinds)
    print("\n| build | variants | wall (median) | x default |")
    print("| --- | --- | --- | --- |")
    print(f"| default | {counts['default']} | {default:.1f} s | 1.00x |")
    print(f"| --for all | {counts['--for all']} | {everything:.1f} s | {everything / default:.2f}x |")
    print("\nper step, summed over samples (median of runs):")
    names = sorted({name for kind in kinds for name in steps[kind]}, key=lambda n: -statistics.median(steps["--for all"].get(n, [0])))
    print("| step | default | --for all |")
    print("| --- | --- | --- |")
    for name in names:
        cells = [f"{statistics.median(steps[kind][name]):.1f} s" if name in steps[kind] else "-" for kind in kinds]
        print(f"| {name} | {' | '.join(cells)} |")
    print(f"\ndecode floor: gray {gray:.2f} s, colour {colour:.2f} s; default wall / colour floor = {default / colour:.1f}x")


if __name__ == "__main__":
    main()
