"""Full LOSO runs on a synthetic MEGC2019 composite: the chain from raw frames to UF1/UAR.

    python benchmarks/composite.py prepare          # synth + build the store (once, ~5 min on 2 cores)
    python benchmarks/composite.py run [--models ststnet,mobilevit,...] [--seeds 0,1,2] [--variant default]

``prepare`` makes synthetic CASME II, SAMM and SMIC-HS trees that reproduce the composite list's
clips of six subjects each (the real coding tables in ``../shared/reference`` give their emotions,
action units and frame numbers), and a synthetic CK+ of 14 subjects for macro-expression transfer.
Each dataset has its own seed, so no synthetic person appears in two datasets. All four are built
into one store (``cache/composite/store.zarr``) with ``--for all``: every model's own input variant
(``docs/models/inputs.md``) and the default build (224 px gray, eyes zero-filled, every artifact);
for CK+, MobileViT's variant and the default. ``run`` trains each model on its own variant;
``--variant default`` repeats the runs of ``docs/results.md``, made before variants existed.

``run`` trains each named model with ``mepipe train`` over the composite's LOSO folds and prints
the run's metrics table; the run directories go to ``cache/composite/runs``.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "reference"
WORK = ROOT / "cache" / "composite"
STORE = WORK / "store.zarr"

#: Six subjects a dataset, with every class present in each dataset (counts from the composite list).
SUBJECTS = {
    "casme2": ("sub01", "sub02", "sub05", "sub06", "sub15", "sub19"),
    "samm": ("007", "014", "016", "020", "022", "028"),
    "smic": ("s01", "s02", "s06", "s09", "s11", "s15"),
}
SEEDS = {"casme2": 0, "samm": 1, "smic": 2, "ckplus": 3}
CKPLUS_SUBJECTS, CKPLUS_CLIPS = 14, 7
#: What the models of the papers read: flow and strain (STSTNet), the residual images (CropNet),
#: the dynamic image and the magnified flow (MSMMT); ``face`` and its clip come with them.


def composite_rows(dataset: str) -> set[tuple[str, str]]:
    with open(REFERENCE / "megc2019_composite.csv", newline="") as handle:
        return {(row["subject"], row["clip"]) for row in csv.DictReader(handle)
                if row["dataset"] == dataset and row["subject"] in SUBJECTS[dataset]}


def write_coding(dataset: str, out: Path) -> int:
    """The coding table of the chosen subjects' composite clips, in the format ``--coding`` reads."""
    wanted = composite_rows(dataset)
    source = REFERENCE / ("megc2019_composite.csv" if dataset == "smic" else f"{dataset}_coding.csv")
    with open(source, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = []
        for row in reader:
            if dataset == "smic" and row["dataset"] != "smic":
                continue
            subject = row["subject"] if dataset != "samm" else row["subject"].zfill(3)
            if (subject, row["clip"]) in wanted:
                rows.append(row)
        fields = reader.fieldnames
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def mepipe(*args: str) -> None:
    command = [sys.executable, "-m", "mepipe.cli", *args]
    print("$ mepipe " + " ".join(args), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def prepare(args: argparse.Namespace) -> None:
    WORK.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for dataset in ("casme2", "samm", "smic"):
        root = WORK / dataset
        if not (root / "mepipe_ground_truth.npz").is_file():
            coding = WORK / f"{dataset}_coding.csv"
            print(f"{dataset}: {write_coding(dataset, coding)} clips of {len(SUBJECTS[dataset])} subjects", flush=True)
            mepipe("synth", "--layout", dataset, "--out", str(root), "--coding", str(coding), "--seed", str(SEEDS[dataset]))
        # every model's own variant, and the default build (what the rows of docs/results.md up to
        # 2026-11-23 read: repeat them with `run --variant default`)
        mepipe("build", "--dataset", dataset, "--root", str(root), "--store", str(STORE), "--for", "all")
    root = WORK / "ckplus"
    if not (root / "mepipe_ground_truth.npz").is_file():
        mepipe("synth", "--layout", "ckplus", "--out", str(root), "--subjects", str(CKPLUS_SUBJECTS),
               "--clips-per-subject", str(CKPLUS_CLIPS), "--seed", str(SEEDS["ckplus"]))
    mepipe("build", "--dataset", "ckplus", "--root", str(root), "--store", str(STORE), "--for", "all")
    print(f"prepared {STORE} in {time.perf_counter() - start:.0f} s", flush=True)


def run(args: argparse.Namespace) -> None:
    for model in args.models.split(","):
        name, _, extra = model.partition(":")
        command = ["train", "--model", name, "--dataset", "composite", "--protocol", "3class", "--store", str(STORE),
                   "--out", str(WORK / "runs"), "--seeds", args.seeds]
        if args.variant:
            command += ["--variant", args.variant]
        if extra:
            for item in extra.split("+"):
                command += ["-s", item]
        start = time.perf_counter()
        mepipe(*command)
        print(f"{model}: {time.perf_counter() - start:.0f} s wall", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("prepare")
    runner = commands.add_parser("run")
    runner.add_argument("--models", default="ststnet,mobilevit,mobilevit:transfer=false",
                        help="comma-separated; MODEL:key=value+key=value sets options")
    runner.add_argument("--seeds", default="0,1,2")
    runner.add_argument("--variant", default=None, help="read this input variant, not each model's own (default: as before variants)")
    args = parser.parse_args()
    {"prepare": prepare, "run": run}[args.command](args)


if __name__ == "__main__":
    main()
