"""The ``build`` job: a raw dataset in, a complete group of the Zarr store out.

The driver reads the dataset with its adapter, prepares the store's group (metadata, one array per
artifact, completion flags), works out per sample which artifacts are missing or stale, and runs one
Dask task per such sample (:func:`mepipe.pipeline.tasks.run_sample`) on a local cluster of threads
or processes, or on a running ``dask.distributed`` scheduler. Only the tasks write artifact data,
each into its own sample's chunks; only the driver writes metadata and attributes.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mepipe.datasets.adapters import READERS, read_dataset
from mepipe.datasets.errors import DatasetError
from mepipe.datasets.layouts import LAYOUTS
from mepipe.pipeline.artifacts import ARTIFACTS, DEFAULT_ARTIFACTS, DEPENDS, with_dependencies
from mepipe.pipeline.params import ParamError, as_dict, cache_keys, resolve_params
from mepipe.pipeline.store import (
    StoreError, clear_sample, default_store, done_flags, failures, open_store, prepare_artifact, prepare_group, size_on_disk,
)
from mepipe.pipeline.tasks import SampleJob, SampleResult, run_sample

DATASETS = (*READERS, "demo")
DEMO_ROOT = Path("cache", "demo", "casme2")
#: Frame rates of the datasets without a synthetic layout (Oulu-CASIA 25 fps, MUG 19 fps; JAFFE
#: has still images).
OTHER_FPS = {"oulu": 25.0, "mug": 19.0, "jaffe": 0.0}
_ADDRESS = re.compile(r"(tcp|tls|ucx|inproc)://\S+")


class BuildError(Exception):
    """The build cannot start or go on; one line that says why."""


@dataclass
class BuildOptions:
    dataset: str
    root: Path | None = None
    store: Path | None = None
    artifacts: tuple[str, ...] | None = None
    config: Path | None = None
    params: tuple[str, ...] = ()
    scheduler: str = "processes"
    workers: int | None = None
    demo_root: Path = DEMO_ROOT


@dataclass
class ArtifactCount:
    computed: int = 0
    reused: int = 0
    failed: int = 0


@dataclass
class BuildSummary:
    dataset: str
    store: Path
    samples: int
    artifacts: tuple[str, ...]
    counts: dict[str, ArtifactCount]
    wall_s: float
    size_bytes: int
    failures: list[tuple[str, str, str]]  # (sample_id, artifact, reason)
    results: list[SampleResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    scheduler: str = ""
    workers: int = 0

    @property
    def failed(self) -> bool:
        return bool(self.failures)


Progress = Callable[[int, int, float], None]  # (samples done, samples to do, elapsed seconds)
Notice = Callable[[str], None]


def build(options: BuildOptions, progress: Progress | None = None, notice: Notice | None = None) -> BuildSummary:
    """Build (or bring up to date) one dataset's group of the store; see :class:`BuildSummary`."""
    started = time.perf_counter()
    say = notice or (lambda text: None)
    if options.dataset not in DATASETS:
        raise BuildError(f"unknown dataset {options.dataset!r}; choose one of: {', '.join(DATASETS)}")
    group_name = options.dataset
    adapter = "casme2" if options.dataset == "demo" else options.dataset
    root = _dataset_root(options, say)
    chosen = _artifacts(options.artifacts, adapter)
    try:
        params = resolve_params(options.config, options.params)
    except ParamError as error:
        raise BuildError(str(error)) from None
    keys = cache_keys(params, DEPENDS)
    if options.scheduler not in ("threads", "processes") and not _ADDRESS.fullmatch(options.scheduler):
        raise BuildError(f"--scheduler must be threads, processes or a scheduler address such as tcp://host:8786; got {options.scheduler!r}")
    if options.workers is not None and options.workers < 1:
        raise BuildError(f"--workers must be at least 1, got {options.workers}")
    remote = None
    if options.scheduler not in ("threads", "processes"):
        remote = _client(options.scheduler, 0)[0]  # fail early, before anything is written

    try:
        reading = read_dataset(adapter, root)
    except DatasetError as error:
        raise BuildError(str(error)) from None
    if not reading.samples:
        raise BuildError(f"{root}: no usable {adapter} samples ({len(reading.problems)} problems; see `mepipe verify --dataset {adapter} --root {root}`)")
    dropped = [p for p in reading.problems if p.fatal]
    if reading.problems:
        say(f"{adapter} at {root}: {len(reading.problems)} problems, {len({p.sample_id for p in dropped})} clips left out "
            f"(`mepipe verify --dataset {adapter} --root {root}` lists them)")

    store_path = Path(options.store) if options.store is not None else default_store()
    try:
        store = open_store(store_path, mode="a")
    except StoreError as error:
        raise BuildError(str(error)) from None
    samples = reading.samples
    rows = [_row(group_name, sample, root) for sample in samples]
    fps = LAYOUTS[adapter].fps if adapter in LAYOUTS else OTHER_FPS[adapter]
    group, changed, rebuilt = prepare_group(store, group_name, adapter=adapter, source_root=root.resolve(), fps=fps, rows=rows)
    notes = []
    if rebuilt:
        notes.append(f"the sample list of {group_name} changed: its group was rebuilt")
    for index in changed:
        clear_sample(group, index)
    if changed:
        notes.append(f"{len(changed)} samples whose onset, apex, offset or frames changed are recomputed")
    size = params["face"].size
    subjects = [sample.subject for sample in samples]
    changed_artifacts = [name for name in chosen
                         if prepare_artifact(group, ARTIFACTS[name], keys[name], as_dict(params[name]), size, subjects) == "changed"]
    if changed_artifacts:
        notes.append(f"new parameters (theirs or upstream): {', '.join(changed_artifacts)} recomputed")

    flags = {name: done_flags(group, name) for name in chosen}
    recorded = failures(group)
    counts = {name: ArtifactCount() for name in chosen}
    failed: list[tuple[str, str, str]] = []
    jobs: list[SampleJob] = []
    absolute_store = str(store_path.resolve())
    for index, sample in enumerate(samples):
        todo = []
        for name in chosen:
            if flags[name][index]:
                counts[name].reused += 1
            elif recorded[index].get(name, {}).get("key") == keys[name]:
                counts[name].failed += 1
                failed.append((rows[index]["sample_id"], name, recorded[index][name]["reason"]))
            else:
                todo.append(name)
        if todo:
            jobs.append(SampleJob(
                absolute_store, group_name, index, f"{sample.subject}/{sample.clip}", tuple(str(p) for p in sample.frames),
                sample.onset, sample.apex, sample.offset, fps, tuple(todo), {n: params[n] for n in params}, keys,
            ))

    results: list[SampleResult] = []
    workers = 0
    if jobs:
        workers = options.workers or os.cpu_count() or 1
        if remote is not None:
            workers = len(remote.scheduler_info().get("workers", {})) or workers
        results = _run(jobs, options.scheduler, workers, progress, started, remote)
    for result in results:
        for name in result.computed:
            counts[name].computed += 1
        for name, reason in result.failed.items():
            counts[name].failed += 1
            failed.append((rows[result.index]["sample_id"], name, reason))
    if remote is not None:
        remote.close()
    wall = time.perf_counter() - started
    group.attrs.update({"last_build": {
        "wall_s": round(wall, 3), "scheduler": options.scheduler if jobs else "none", "workers": workers,
        "computed": {n: c.computed for n, c in counts.items()}, "failed": {n: c.failed for n, c in counts.items()},
    }})
    return BuildSummary(
        group_name, store_path, len(samples), chosen, counts, wall, size_on_disk(store_path), sorted(failed), results, notes,
        options.scheduler if jobs else "none", workers,
    )


def _dataset_root(options: BuildOptions, say: Notice) -> Path:
    if options.dataset == "demo":
        root = Path(options.root) if options.root is not None else Path(options.demo_root)
        if not root.exists() or not any(root.iterdir()):
            from mepipe.synth.generate import SynthOptions, synthesize

            say(f"making the demo set (synthetic CASME II, 6 subjects x 6 clips) in {root}")
            synthesize(SynthOptions(layout="casme2", out=root, workers=options.workers))
        return root
    if options.root is None:
        raise BuildError(f"--root is needed for {options.dataset}: the folder holding the raw dataset (only `demo` builds without one)")
    root = Path(options.root)
    if not root.is_dir():
        raise BuildError(f"dataset root {root} does not exist" if not root.exists() else f"dataset root {root} is not a folder")
    return root


def _artifacts(names, adapter: str) -> tuple[str, ...]:
    applicable = DEFAULT_ARTIFACTS[adapter]
    if names is None:
        return applicable
    unknown = [name for name in names if name not in ARTIFACTS]
    if unknown:
        raise BuildError(f"unknown artifact {unknown[0]!r}; artifacts: {', '.join(ARTIFACTS)}")
    wanted = with_dependencies(names)
    outside = [name for name in wanted if name not in applicable]
    if outside:
        raise BuildError(f"artifact {outside[0]!r} does not apply to {adapter}; its artifacts: {', '.join(applicable)}")
    return wanted


def _row(group: str, sample, root: Path) -> dict:
    try:
        source = str(Path(sample.frames[0]).parent.relative_to(root))
    except ValueError:
        source = str(Path(sample.frames[0]).parent)
    return {
        "sample_id": f"{group}/{sample.subject}/{sample.clip}", "subject": sample.subject, "clip": sample.clip,
        "emotion": sample.emotion, "action_units": str(sample.action_units), "apex_source": sample.apex_source, "source": source,
        "onset": sample.onset, "apex": sample.apex, "offset": sample.offset, "n_frames": sample.n_frames,
        "onset_frame": _or_minus_one(sample.onset_frame), "apex_frame": _or_minus_one(sample.apex_frame),
        "offset_frame": _or_minus_one(sample.offset_frame), "aus": sample.action_units.numbers,
    }


def _or_minus_one(value) -> int:
    return -1 if value is None else int(value)


def _run(jobs: list[SampleJob], scheduler: str, workers: int, progress: Progress | None, started: float, remote=None) -> list[SampleResult]:
    import dask
    from distributed import as_completed

    client, cluster = (remote, None) if remote is not None else _client(scheduler, workers)
    try:
        tasks = [dask.delayed(run_sample, pure=False)(job, dask_key_name=f"sample-{job.group}-{job.index}") for job in jobs]
        futures = client.compute(tasks)
        results = []
        if progress:
            progress(0, len(jobs), time.perf_counter() - started)
        for future in as_completed(futures):
            results.append(future.result())
            if progress:
                progress(len(results), len(jobs), time.perf_counter() - started)
        return sorted(results, key=lambda result: result.index)
    finally:
        if cluster is not None:
            client.close()
            cluster.close()


def _client(scheduler: str, workers: int):
    from distributed import Client, LocalCluster

    # a free port for the scheduler's HTTP endpoints: two builds at once must not fight over 8787
    quiet = {"dashboard_address": ":0", "silence_logs": logging.ERROR}
    if scheduler == "threads":
        cluster = LocalCluster(n_workers=1, threads_per_worker=workers, processes=False, **quiet)
        return Client(cluster), cluster
    if scheduler == "processes":
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, **quiet)
        return Client(cluster), cluster
    try:
        return Client(scheduler, timeout="10s"), None
    except (OSError, TimeoutError) as error:
        raise BuildError(f"no Dask scheduler answers at {scheduler} ({type(error).__name__}); start one with `dask scheduler` or use --scheduler processes") from None
