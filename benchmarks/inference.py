"""Benchmark of the papers' classifiers: parameter count and batch-1 inference time per sample.

    python benchmarks/inference.py [--runs 30] [--warmup 5] [--threads N] [--repeats 3]

For every model of :data:`REGISTRY`, on the CPU (and on the GPU when CUDA is available): the model
in eval mode under ``torch.inference_mode``, ``--warmup`` untimed runs, then ``--runs`` timed runs of
one random input of the registered shape (batch 1, so the time per run is the time per sample);
printed as a Markdown table with the median and the interquartile range, in milliseconds, beside
the paper's own figures. ``--repeats R`` measures each model R times in turn (each time its own
warm-up and runs) and prints the median of the R medians, with the R medians beside it, so a
burst of load on a shared machine shows as one odd repeat instead of moving the figure. GPU timings ``torch.cuda.synchronize`` before reading the clock.

``--threads`` sets ``torch.set_num_threads`` (default: torch's own choice). On a machine whose cores
are busy with other work, use ``--threads 1``: torch's per-operation thread team otherwise waits for
descheduled threads and the CPU figures vary several-fold from run to run (the load average is
printed with them).

The paper's figures differ in setting: MobileViT-S 35.4 ms per sample (Liu et al. 2022, Table 4)
was measured with Keras 2.2.4 on an Intel Core i9-9980HK laptop with an AMD Radeon Pro 5500M (the
paper does not say which of the two ran it), for the 3-class micro-expression model; 5.6 M
parameters (Table 1) is the 1000-class ImageNet configuration. CropNet's paper gives its ReXNet-1.3x
extractor as about 7.6 M parameters (section 3.2, the ImageNet form). MSMMT's paper runs one
ViT-B per modality and gives no count; 86 M is ViT-B/16's own figure (Dosovitskiy et al. 2021). CVA, MFVAN and STSTNet's papers give no parameter count and none of the four gives a
time per sample.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mepipe.models.cropnet import cropnet, rexnet  # noqa: E402
from mepipe.models.cva import cva_net  # noqa: E402
from mepipe.models.mfvan import mfvan  # noqa: E402
from mepipe.models.mobilevit import mobilevit_s  # noqa: E402
from mepipe.models.msmmt import VIT_SIZES, MultiScaleViT, msmmt  # noqa: E402
from mepipe.models.ststnet import ststnet  # noqa: E402

#: name -> (constructor, input shape (batch 1) or a tuple of them for a model of several inputs,
#: paper's parameter count or None, paper's ms per sample or None).
REGISTRY: dict[str, tuple[Callable[[], nn.Module], tuple, int | None, float | None]] = {
    "MobileViT-S, 1 ch, 3 classes": (lambda: mobilevit_s(num_classes=3, in_chans=1), (1, 1, 256, 256), None, 35.4),
    "MobileViT-S, 3 ch, 1000 classes": (lambda: mobilevit_s(num_classes=1000, in_chans=3), (1, 3, 256, 256),
                                        5_600_000, None),
    "STSTNet": (ststnet, (1, 3, 28, 28), None, None),
    "ReXNet-1.3x, 3 ch, 1000 classes (CropNet's extractor)": (lambda: rexnet(num_classes=1000, in_chans=3),
                                                              (1, 3, 224, 224), 7_600_000, None),
    "CropNet (CGPO, ARS 320 px)": (lambda: cropnet(num_classes=3, in_chans=1), (1, 1, 320, 320), None, None),
    "CVA + Swin FPF + AU (224 px)": (lambda: cva_net(num_classes=3), ((1, 2, 224, 224), (1, 21)), None, None),
    "MSMMT small (dynamic + magnified flow, 224 px)": (lambda: msmmt(num_classes=3, size="small"), (1, 4, 224, 224),
                                                      None, None),
    "MSMMT base (the paper's ViT-B, 224 px)": (lambda: msmmt(num_classes=3, size="base"), (1, 4, 224, 224),
                                               None, None),
    "one modality's ViT-B, 3 scales (224 px)": (lambda: MultiScaleViT(3, 224, *VIT_SIZES["base"]), (1, 3, 224, 224),
                                                86_000_000, None),
    "MFVAN (onset + apex, 224 px)": (lambda: mfvan(num_classes=3), (1, 2, 224, 224), None, None),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _shapes(shape: tuple) -> tuple[tuple[int, ...], ...]:
    return shape if isinstance(shape[0], tuple) else (shape,)


def time_model(model: nn.Module, shape: tuple, device: torch.device, runs: int,
               warmup: int) -> list[float]:
    """Seconds per forward pass of random inputs of ``shape`` (one shape, or one per input),
    ``runs`` of them after ``warmup``."""
    model = model.to(device).eval()
    inputs = [torch.randn(one, device=device) for one in _shapes(shape)]
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(*inputs)
        _sync(device)
        for _ in range(runs):
            start = time.perf_counter()
            model(*inputs)
            _sync(device)
            times.append(time.perf_counter() - start)
    return times


def _millions(count: int | None) -> str:
    return "" if count is None else f"{count / 1e6:.2f} M"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per model and device (at least 2)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs first")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=1, help="measure each model this many times; median of medians")
    args = parser.parse_args(argv)
    if args.runs < 2:
        parser.error("--runs must be at least 2 for an interquartile range")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    devices = [torch.device("cpu")]
    print(f"torch {torch.__version__}; CPU: {_cpu_name()}, {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.2f}")
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
        print(f"GPU: {torch.cuda.get_device_name()}")
    else:
        print("GPU: skipped (torch.cuda.is_available() is False)")
    print(f"batch 1, {args.warmup} warm-up + {args.runs} timed runs, {args.repeats} repeat(s), eval, "
          f"torch.inference_mode\n")

    print("| model | input | params | paper params | device | median ms/sample | IQR ms | repeats' medians ms "
          "| paper ms/sample |")
    print("|---|---|---:|---:|---|---:|---:|---|---:|")
    for name, (build, shape, paper_params, paper_ms) in REGISTRY.items():
        torch.manual_seed(0)
        model = build()
        params = sum(p.numel() for p in model.parameters())
        for device in devices:
            medians, spreads = [], []
            for _ in range(args.repeats):
                times = [t * 1e3 for t in time_model(model, shape, device, args.runs, args.warmup)]
                q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
                medians.append(median)
                spreads.append(q3 - q1)
            middle = sorted(range(args.repeats), key=medians.__getitem__)[(args.repeats - 1) // 2]
            paper = "" if paper_ms is None else f"{paper_ms:.1f}"
            inputs = " + ".join("x".join(map(str, one)) for one in _shapes(shape))
            print(f"| {name} | {inputs} | {params:,} | {_millions(paper_params)} | {device.type} "
                  f"| {statistics.median(medians):.1f} | {spreads[middle]:.1f} "
                  f"| {', '.join(f'{m:.1f}' for m in medians)} | {paper} |", flush=True)
    print("\nPapers: MobileViT, Liu et al. 2022 (Table 1 parameters; Table 4 time, Keras 2.2.4, i9-9980HK laptop); "
          "ReXNet-1.3x 7.6 M (CropNet paper, section 3.2); ViT-B 86 M (ViT-B/16, the ViT the MSMMT paper "
          "names; the paper states no count).")


if __name__ == "__main__":
    main()
