"""Size and time of `mepipe report` pages, beside the floor of reading what they show.

    python benchmarks/report.py --build cache/mepipe.zarr:demo --run cache/demo/runs/ststnet-demo --repeats 3 \
        [--screenshots docs]

For each build (STORE:DATASET) it makes the page ``--repeats`` times and prints the page's size,
per sample, and the median time, beside the median time of only reading every sample's ``face``
and ``flow`` chunks (the floor: a page shows pictures of both). For each run directory it prints
the same for the run's page. With ``--screenshots DIR`` it also renders each page in headless
Chromium (``/usr/bin/chromium``) and writes ``DIR/report-<name>.png``, the top 2,400 CSS pixels.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zarr

from mepipe.models.run_report import run_report
from mepipe.pipeline.build_report import build_report
from mepipe.pipeline.store import in_dataset
from mepipe.pipeline.webpage import write_page


def read_floor(store: Path, group_path: str) -> float:
    """Seconds to read every current sample's face and flow chunks, one at a time, as the page does."""
    group = zarr.open_group(str(store / group_path), mode="r")
    started = time.perf_counter()
    current = in_dataset(group)
    for index in range(len(current)):
        if not current[index]:
            continue
        for name in ("face", "flow"):
            if name in group and bool(group["done"][name][index]):
                group[name][index]
    return time.perf_counter() - started


def screenshot(page: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--window-size=1600,2400", "--hide-scrollbars",
                        f"--screenshot={out.resolve()}", page.resolve().as_uri()],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", action="append", default=[], metavar="STORE:DATASET")
    parser.add_argument("--run", action="append", default=[], type=Path, metavar="RUN")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--screenshots", type=Path, default=None, metavar="DIR")
    args = parser.parse_args(argv)
    out = Path(tempfile.mkdtemp(prefix="mepipe-report-bench-"))
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    print(f"{'page':<44}{'samples':>8}{'MB':>8}{'kB/sample':>11}{'make s':>9}{'read s':>9}{'make/read':>10}")
    for target in args.build:
        store_text, _, dataset = target.rpartition(":")
        store = Path(store_text)
        times, floors = [], []
        for _ in range(args.repeats):
            report = build_report(store, dataset)
            times.append(report.seconds)
            floors.append(read_floor(store, report.group))
        page = write_page(out / f"report-{dataset}.html", report.html)
        size = page.stat().st_size
        make, floor = statistics.median(times), statistics.median(floors)
        print(f"{target:<44}{len(report.samples):>8}{size / 1e6:>8.2f}{size / 1e3 / max(len(report.samples), 1):>11.1f}"
              f"{make:>9.2f}{floor:>9.2f}{make / floor:>10.1f}")
        if args.screenshots:
            screenshot(page, args.screenshots / f"report-{dataset}.png")
    for run in args.run:
        times = []
        for _ in range(args.repeats):
            report = run_report(run)
            times.append(report.seconds)
        page = write_page(out / f"report-{run.name}.html", report.html)
        size = page.stat().st_size
        print(f"{str(run):<44}{len(report.worst):>8}{size / 1e6:>8.2f}{'':>11}{statistics.median(times):>9.2f}")
        if args.screenshots:
            screenshot(page, args.screenshots / f"report-{run.name}.png")
    print(f"pages in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
