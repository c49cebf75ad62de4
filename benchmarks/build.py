"""The whole build on a full-size synthetic CASME II: wall time by worker count, against its floors.

    python benchmarks/build.py [--root cache/bench/casme2-257] [--workers 1,2] [--artifacts all]

The tree is made first when missing, from the real coding table
(``mepipe synth --coding ../shared/reference/casme2_coding.csv``: 257 clips, 17,248 frames, 640 x 480
colour JPEG). Measured side by side in one run:

- the decode floor: every frame decoded once, straight to grayscale, one process, one thread;
- for each worker count, a build from nothing into a fresh store (local cluster of processes, one
  thread each): its wall time, and the sum over samples of the per-sample kernel time (face stage
  and artifacts) and decode time, as the tasks measured them;
- the pipeline overhead: ``wall x workers - (kernels + decoding)`` as a share of ``wall x workers``:
  worker start-up, scheduling, writing the store, and idle workers at the end of the queue;
- the speed-up of each worker count over one worker, and the peak memory (RSS) of each worker.

One run per worker count (a build of 257 clips is long); the figures are written to
``docs/benchmarks.md`` by hand with the date and machine state.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mepipe.datasets.adapters import read_dataset  # noqa: E402
from mepipe.pipeline.artifacts import ARTIFACTS  # noqa: E402
from mepipe.pipeline.build import BuildOptions, build  # noqa: E402

CODING = Path(__file__).resolve().parents[2] / "shared" / "reference" / "casme2_coding.csv"


def decode_floor(paths: list[str]) -> float:
    cv2.setNumThreads(1)
    start = time.perf_counter()
    for path in paths:
        if cv2.imread(path, cv2.IMREAD_GRAYSCALE) is None:
            raise SystemExit(f"cannot decode {path}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("cache/bench/casme2-257"))
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--artifacts", default="all", help="comma-separated artifacts, or all")
    parser.add_argument("--limit", type=int, default=None, help="only the first N clips (a quick check of the script)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the last store here")
    args = parser.parse_args()
    if not (args.root / "mepipe_ground_truth.npz").is_file():
        from mepipe.synth.generate import SynthOptions, synthesize

        print(f"making the synthetic CASME II tree of {CODING.name} in {args.root} ...", flush=True)
        synthesize(SynthOptions(layout="casme2", out=args.root, coding=CODING))
    root = args.root
    if args.limit:
        root = _subset(args.root, args.limit)
    samples = read_dataset("casme2", root).samples
    paths = [str(path) for sample in samples for path in sample.frames]
    artifacts = None if args.artifacts == "all" else tuple(args.artifacts.split(","))
    print(f"{root}: {len(samples)} clips, {len(paths)} frames; artifacts: {', '.join(artifacts or ARTIFACTS)}", flush=True)

    floor = decode_floor(paths)
    print(f"decode floor (every frame once, grayscale, 1 thread): {floor:.1f} s, {1000 * floor / len(paths):.2f} ms/frame", flush=True)

    rows = []
    for workers in [int(w) for w in args.workers.split(",")]:
        store = Path(tempfile.mkdtemp(prefix="mepipe-bench-")) / "store.zarr"
        summary = build(BuildOptions("casme2", root=root, store=store, artifacts=artifacts, scheduler="processes", workers=workers))
        if summary.failures:
            print(f"  {len(summary.failures)} failures, first: {summary.failures[0]}")
        kernels = sum(v for r in summary.results for k, v in r.seconds.items() if k not in ("decode", "write", "read"))
        decode = sum(r.seconds.get("decode", 0.0) for r in summary.results)
        write = sum(r.seconds.get("write", 0.0) for r in summary.results)
        per_kernel = defaultdict(float)
        for result in summary.results:
            for name, seconds in result.seconds.items():
                per_kernel[name] += seconds
        peak = defaultdict(float)
        for result in summary.results:
            peak[result.worker] = max(peak[result.worker], result.peak_rss_mb)
        busy = summary.wall_s * workers
        overhead = busy - kernels - decode
        rows.append((workers, summary.wall_s, kernels, decode, write, overhead / busy, dict(peak), summary.size_bytes, dict(per_kernel)))
        print(f"{workers} worker(s): wall {summary.wall_s:.1f} s; kernels {kernels:.1f} s + decoding {decode:.1f} s summed over samples "
              f"(writing {write:.1f} s); overhead {100 * overhead / busy:.1f}% of wall x workers; store {summary.size_bytes / 1e9:.2f} GB", flush=True)
        print("  per step, summed over samples: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(per_kernel.items(), key=lambda kv: -kv[1])))
        print("  peak memory per worker: " + ", ".join(f"{mb:.0f} MB" for mb in sorted(peak.values())), flush=True)
        if args.keep and workers == int(args.workers.split(",")[-1]):
            shutil.rmtree(args.keep, ignore_errors=True)
            shutil.move(str(store), args.keep)
        shutil.rmtree(store.parent, ignore_errors=True)

    print("\n| workers | wall | x one worker | kernels (sum) | decoding (sum) | overhead | peak memory per worker |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    one = next((row[1] for row in rows if row[0] == 1), None)
    for workers, wall, kernels, decode, _, share, peak, _, _ in rows:
        speed = f"{one / wall:.2f}x" if one else "-"
        print(f"| {workers} | {wall:.1f} s | {speed} | {kernels:.1f} s | {decode:.1f} s | {100 * share:.1f}% | "
              f"{max(peak.values()):.0f} MB |")
    print(f"\ndecode floor: {floor:.1f} s for {len(paths)} frames; best wall / floor = {min(r[1] for r in rows) / floor:.1f}x")


def _subset(root: Path, limit: int) -> Path:
    """A copy of the tree's sheet restricted to its first ``limit`` clips, frames linked, not copied."""
    import openpyxl

    sheet = next(root.glob("CASME2-coding-*.xlsx"))
    target = Path(tempfile.mkdtemp(prefix="mepipe-subset-")) / "casme2"
    target.mkdir()
    book = openpyxl.load_workbook(sheet)
    table = book.active
    for row in range(table.max_row, limit + 1, -1):
        table.delete_rows(row)
    book.save(target / sheet.name)
    for subject in root.iterdir():
        if subject.is_dir():
            (target / subject.name).symlink_to(subject.resolve())
    return target


if __name__ == "__main__":
    main()
