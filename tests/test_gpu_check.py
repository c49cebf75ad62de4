"""The prepared device check of issue 21 (``benchmarks/gpu_check.py``), run dry on the CPU.

The device run itself needs a lent GPU; what can rot without one is checked here on every run of
the suite: the preparation (``benchmarks/prepare_gpu_check.py``, on two 64 px pairs), every
section of the check with tiny inputs (``--dry-run``, in this process: its imports are already
paid for by the suite), the same imports with dask, zarr, dlib and click refused as on the device
(a child process), and that the list of CUDA tests the check runs is the suite's.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _prepare_module():
    key = "_benchmarks_prepare_gpu_check"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "benchmarks" / "prepare_gpu_check.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


@pytest.fixture(scope="module")
def prepared(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check") / "prepared"
    manifest = _prepare_module().prepare(tiny, out, count=2, size=64, runs=1, tiny=True)
    return out, manifest


def _numbers(value, path=""):
    """(path, number) of every int or float in a JSON tree."""
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _numbers(item, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _numbers(item, f"{path}/{index}")


def test_the_prepared_folder_holds_the_pairs_truth_figures_shapes_and_folds(prepared):
    out, manifest = prepared
    with np.load(out / "pairs.npz") as pairs:
        assert pairs["onset"].shape == pairs["apex"].shape == (2, 64, 64) and pairs["onset"].dtype == np.uint8
        assert pairs["truth"].shape == pairs["opencv"].shape == (2, 2, 64, 64)
        assert pairs["mask"].dtype == bool and pairs["mask"].any(axis=(1, 2)).all()
        assert np.isfinite(pairs["truth"]).all() and np.isfinite(pairs["opencv"]).all()
    figures = manifest["cpu_figures"]
    for key in ("opencv_pairs_per_s", "torch_batch_1_pairs_per_s", "torch_batch_n_pairs_per_s"):
        assert figures[key] > 0 and math.isfinite(figures[key])
    # OpenCV's TV-L1 of the carried pairs is far better than a zero field against the truth
    assert figures["epe_opencv"] < figures["epe_zero"]
    assert set(manifest["models"]) == {"ststnet", "mobilevit", "cropnet", "cva", "msmmt", "mfvan"}
    assert manifest["models"]["cropnet"]["inputs"] == [{"shape": [3, 320, 320], "dtype": "float32"}]
    assert manifest["models"]["mfvan"]["inputs"][1] == {"shape": [8, 3, 224, 224], "dtype": "uint8"}
    folds = manifest["folds"]
    assert (folds["synthetic"]["subjects"], folds["megc2019"]["subjects"]) == (18, 68)
    for table in (folds["synthetic"], folds["megc2019"]):
        assert all(sum(f["train_class_counts"]) == f["train"] == table["samples"] - f["test"] for f in table["folds"])
        assert len(table["fold0"]["train_labels"]) == table["folds"][0]["train"]


def test_the_dry_run_runs_every_section_and_writes_finite_figures(prepared, tmp_path):
    gpu_check = _prepare_module().gpu_check
    folder, _ = prepared
    # the imports as on the device (dask, zarr, dlib, click refused), beside the dry run
    imports = subprocess.Popen([sys.executable, str(SCRIPT), "--check-imports", "--simulate-device"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = tmp_path / "out"
    models = "ststnet,mobilevit,cropnet,cva,msmmt:scales=1,mfvan"
    assert gpu_check.main(["--dry-run", "--prepared", str(folder), "--out", str(out), "--models", models,
                           "--bf16-models", "ststnet"]) == 0
    output, _ = imports.communicate(timeout=120)
    assert imports.returncode == 0, output
    checked = json.loads(output.strip().splitlines()[-1])
    assert checked["guard"]["stand_ins"] == ["zarr"] and checked["cuda_test_modules"] == "imported"

    results = json.loads((out / "gpu_check.json").read_text())
    assert results["status"] == {section: "ok" for section in gpu_check.SECTIONS}, results["status"]
    bad = [(path, number) for path, number in _numbers(results) if not math.isfinite(number)]
    assert not bad, bad
    assert results["tests"]["passed"] and results["tests"]["pytest"]["ran"]
    assert set(results["tests"]["pytest"]["outcomes"]) == {t.split("/")[-1].replace(".py", "") for t in gpu_check.CUDA_TESTS}
    accuracy = results["tvl1_accuracy"]
    assert accuracy["epe_device"] < accuracy["epe_zero"] and accuracy["agrees_with_cpu"]
    rows = results["tvl1_throughput"]["rows"]
    assert [row["batch"] for row in rows if row["what"] == "torch cpu"] == list(gpu_check.DRY_BATCHES)
    assert all(row["pairs_per_s"] > 0 for row in rows)
    assert results["tvl1_largest"]["batch"] == gpu_check.DRY_LARGEST and results["tvl1_largest"]["finite"]
    assert results["tvl1_profile"]["cpu_operators"] > 0
    for key, expected in (("models_fp32", 6), ("models_bf16", 1)):
        entries = results[key]["models"]
        assert len(entries) == expected and all(e["status"] == "ok" for e in entries.values()), entries
        for entry in entries.values():
            assert entry["seconds_one_epoch_each"] > 0 and entry["loso_68_folds"] == 68 and entry["loso_18_folds"] == 18
            assert entry["loso_68_seconds"] >= entry["one_fold_seconds"] > 0
    assert "macro" in results["models_fp32"]["models"]["mobilevit"]
    assert set(results["models_fp32"]["models"]["mfvan"]["seconds_per_epoch"]) == {"pretrain_epochs", "epochs"}
    table = (out / "gpu_check.md").read_text()
    for heading in ("## CUDA tests", "## TV-L1: device against CPU and truth", "## TV-L1 throughput",
                    "## Training at the papers' settings, fp32", "## Training at the papers' settings, bf16"):
        assert heading in table
    assert "| msmmt (scales=1) |" in table


def test_the_check_runs_every_cuda_test_of_the_suite():
    """Every test that skips without CUDA is in ``CUDA_TESTS``, and every entry there exists."""
    gpu_check = _prepare_module().gpu_check
    found = set()
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        text = path.read_text()
        for match in re.finditer(r"@pytest\.mark\.skipif\(not torch\.cuda\.is_available\(\)[^\n]*\n(?:@[^\n]*\n)*def (\w+)", text):
            found.add(f"tests/{path.name}::{match.group(1)}")
    assert found == set(gpu_check.CUDA_TESTS)
