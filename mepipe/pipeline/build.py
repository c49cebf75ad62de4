"""The ``build`` job: a raw dataset in, a complete group of the Zarr store out.

The driver reads the dataset with its adapter, prepares the store's group (metadata, one array per
artifact, completion flags), works out per sample which artifacts are missing or stale, and runs one
Dask task per such sample (:func:`mepipe.pipeline.tasks.run_sample`) on a local cluster of threads
or processes, or on a running ``dask.distributed`` scheduler. Only the tasks write artifact data,
each into its own sample's chunks; only the driver writes metadata and attributes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mepipe.datasets.adapters import READERS, read_dataset
from mepipe.datasets.errors import DatasetError
from mepipe.datasets.layouts import LAYOUTS
from mepipe.datasets.manifest import DEFAULT_FPS as MANIFEST_FPS
from mepipe.pipeline.artifacts import ARTIFACTS, DEFAULT_ARTIFACTS, DEPENDS, with_dependencies
from mepipe.pipeline.lock import GroupLock
from mepipe.pipeline.params import ParamError, as_dict, cache_keys, resolve_params
from mepipe.pipeline.store import (
    StoreError, StoreWriteError, default_store, done_flags, failures, group_variant, mark_stale, open_store, prepare_artifact,
    prepare_group, size_on_disk, stale_artifacts, variant_groups, variants_parent,
)
from mepipe.pipeline.tasks import INTERNAL_ERROR, SampleJob, SampleResult, VariantJob, input_fingerprint, run_sample
from mepipe.pipeline.variants import DEFAULT_VARIANT, Target, Variant

DATASETS = (*READERS, "demo")
DEMO_ROOT = Path("cache", "demo", "casme2")
#: Frame rates of the datasets without a synthetic layout (Oulu-CASIA 25 fps, MUG 19 fps; JAFFE
#: has still images).
OTHER_FPS = {"oulu": 25.0, "mug": 19.0, "jaffe": 0.0}
#: Adapters whose samples carry their own frame rate (``Sample.fps``); the group records the rate
#: the most samples share.
PER_SAMPLE_FPS = ("manifest",)
_ADDRESS = re.compile(r"(tcp|tls|ucx|inproc)://\S+")


class BuildError(Exception):
    """The build cannot start or go on; one line that says why."""


@dataclass
class BuildOptions:
    dataset: str
    root: Path | None = None
    #: the dataset's annotation sheet (``--sheet``; a manifest's csv); None: the adapter finds it in the root
    sheet: Path | None = None
    store: Path | None = None
    artifacts: tuple[str, ...] | None = None
    config: Path | None = None
    params: tuple[str, ...] = ()
    scheduler: str = "processes"
    workers: int | None = None
    demo_root: Path = DEMO_ROOT
    #: wait for another build of the same group to end instead of failing at once
    wait: bool = False
    #: retry every recorded failure, not only those whose input files changed
    retry_failed: bool = False
    #: the variants to build (``--for``, resolved by the models' declared inputs); None: one target,
    #: the build's own variant with ``artifacts``
    targets: tuple[Target, ...] | None = None


@dataclass
class ArtifactCount:
    computed: int = 0
    reused: int = 0
    failed: int = 0


@dataclass
class VariantBuild:
    """One variant a build made: where it is stored and what was done there."""

    variant: Variant
    group: str  # its group in the store
    artifacts: tuple[str, ...]
    counts: dict[str, ArtifactCount]
    readers: tuple[str, ...] = ()


@dataclass
class BuildSummary:
    dataset: str
    store: Path
    samples: int
    artifacts: tuple[str, ...]  # of the first variant
    counts: dict[str, ArtifactCount]  # of the first variant; every variant's in ``variants``
    wall_s: float
    size_bytes: int
    failures: list[tuple[str, str, str]]  # (sample_id, artifact, reason)
    results: list[SampleResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    scheduler: str = ""
    workers: int = 0
    variants: list[VariantBuild] = field(default_factory=list)

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
    try:
        params = resolve_params(options.config, options.params)
    except ParamError as error:
        raise BuildError(str(error)) from None
    plans = _plans(options, adapter, params)
    if options.scheduler not in ("threads", "processes") and not _ADDRESS.fullmatch(options.scheduler):
        raise BuildError(f"--scheduler must be threads, processes or a scheduler address such as tcp://host:8786; got {options.scheduler!r}")
    if options.workers is not None and options.workers < 1:
        raise BuildError(f"--workers must be at least 1, got {options.workers}")
    remote = None
    if options.scheduler not in ("threads", "processes"):
        remote = _client(options.scheduler, 0)[0]  # fail early, before anything is written

    try:
        reading = read_dataset(adapter, root, **_reader_options(options, adapter))
    except DatasetError as error:
        raise BuildError(str(error)) from None
    if not reading.samples:
        # a problem of the whole dataset (a manifest's missing column) is the answer: name it
        whole = next((p for p in reading.problems if p.fatal and p.sample_id is None), None)
        first = f"; {whole}" if whole is not None else ""
        raise BuildError(f"{root}: no usable {adapter} samples ({len(reading.problems)} problems{first}; see `mepipe verify --dataset {adapter} --root {root}`)")
    dropped = [p for p in reading.problems if p.fatal]
    if reading.problems:
        say(f"{adapter} at {root}: {len(reading.problems)} problems, {len({p.sample_id for p in dropped})} clips left out "
            f"(`mepipe verify --dataset {adapter} --root {root}` lists them)")

    store_path = Path(options.store) if options.store is not None else default_store()
    _check_apart(root, store_path, group_name)
    notes = _unknown_emotions(adapter, reading.samples)
    try:
        store = open_store(store_path, mode="a")
        with GroupLock(store_path, group_name, wait=options.wait, notice=say) as lock:
            summary = _build_group(options, store, store_path, group_name, adapter, root, reading.samples, plans,
                                   lock, remote, progress, started, notes)
    except StoreWriteError as error:
        raise BuildError(f"{error}; nothing that was not written is marked done: free space (or fix the store) and run the "
                         "same build again to resume") from None
    except StoreError as error:
        raise BuildError(str(error)) from None
    except OSError as error:  # the driver's own writes: metadata, attributes, array creation
        where = f" ({error.filename})" if error.filename else ""
        raise BuildError(f"cannot write the store at {store_path}: {error.strerror or error}{where}; nothing that was not "
                         "written is marked done: free space (or fix the store) and run the same build again to resume") from None
    finally:
        if remote is not None:
            remote.close()
    return summary


@dataclass
class _Plan:
    """One target of the build, resolved: its variant, parameters, keys and artifacts."""

    target: Target
    variant: Variant
    params: dict
    keys: dict
    chosen: tuple[str, ...]
    group: object = None  # its zarr group, once prepared
    rows: list[int] = field(default_factory=list)


def _plans(options: BuildOptions, adapter: str, params: dict) -> list[_Plan]:
    """The build's targets with their variant's parameters and keys; one per variant."""
    if options.targets is not None and options.artifacts is not None:
        raise BuildError("--for and --artifacts cannot be combined: --for builds what the named models read")
    targets = options.targets if options.targets is not None else (Target(None, options.artifacts),)
    if not targets:
        raise BuildError("--for names no model that reads this dataset")
    face = params["face"]
    if options.targets is not None and any(t.variant is not None for t in targets):
        defaults = type(face)()
        set_here = [name for name in ("size", "colour", "eye_fill") if getattr(face, name) != getattr(defaults, name)]
        if set_here:
            raise BuildError(f"face.{set_here[0]} is set by each model's variant with --for; leave the parameter out, "
                             "or build without --for")
    merged: dict[Variant, _Plan] = {}
    for target in targets:
        variant = target.variant or Variant.of_face(face)
        chosen = _artifacts(target.artifacts, adapter)
        if variant in merged:
            plan = merged[variant]
            names = with_dependencies((*plan.chosen, *chosen))
            plan.chosen = names
            plan.target = Target(plan.target.variant or target.variant, names,
                                 tuple(dict.fromkeys((*plan.target.readers, *target.readers))))
            continue
        variant_params = {**params, "face": dataclasses.replace(face, size=variant.size, colour=variant.colour,
                                                                 eye_fill=variant.eye_fill)}
        merged[variant] = _Plan(target, variant, variant_params, cache_keys(variant_params, DEPENDS), chosen)
    return list(merged.values())


def _build_group(options, store, store_path, group_name, adapter, root, samples, plans, lock, remote, progress,
                 started, notes) -> BuildSummary:
    """The part of a build that writes the group; runs while this build holds the group's lock."""
    fps = _group_fps(adapter, samples)
    rows = [_row(group_name, sample, root, fps) for sample in samples]
    meta = dict(adapter=adapter, source_root=root.resolve(), fps=fps, rows=rows)
    update = prepare_group(store, group_name, **meta)
    dataset_group = update.group
    if update.added and update.added < len(samples):
        notes.append(f"{update.added} samples new to {group_name} are added; the others keep their results")
    if update.removed:
        notes.append(f"{len(update.removed)} samples no longer in the dataset: their rows stay with in_dataset false, "
                     "their results removed")
    if update.changed:
        notes.append(f"{len(update.changed)} samples whose onset, apex, offset or frames changed are recomputed")

    # where each variant lives: the dataset's own group holds the variant its first build made (a
    # build without --for: 224 px gray eyes zero-filled unless -p face.size=... said otherwise) for
    # good; every other variant, a later build without --for at another face size included, has a
    # group of its own below variants/, so that no build replaces another variant's arrays
    own = (group_variant(dataset_group) or next((plan.variant for plan in plans if plan.target.variant is None), None)
           or DEFAULT_VARIANT)
    for plan in plans:
        if plan.variant == own:
            plan.group, plan.rows = dataset_group, update.rows
        else:
            parent = variants_parent(dataset_group)
            variant_update = prepare_group(parent, plan.variant.name, **meta)
            plan.group, plan.rows = variant_update.group, variant_update.rows
        readers = sorted(set(plan.group.attrs.get("variant", {}).get("readers", [])) | set(plan.target.readers))
        plan.group.attrs.update({"variant": {"name": plan.variant.name, "size": plan.variant.size, "colour": plan.variant.colour,
                                             "eye_fill": plan.variant.eye_fill, "readers": readers}})
    # the variants this build does not make still follow the dataset: new samples get rows, changed
    # and removed samples lose their results there too
    built = {plan.group.path for plan in plans}
    for name, other in variant_groups(dataset_group).items():
        if other.path not in built and other.path != dataset_group.path:
            prepare_group(variants_parent(dataset_group), name, **meta)

    subjects = [sample.subject for sample in samples]
    for plan in plans:
        group, keys, params = plan.group, plan.keys, plan.params
        where = "" if group is dataset_group else f" in {plan.variant.name}"
        changed_artifacts = [name for name in plan.chosen
                             if prepare_artifact(group, ARTIFACTS[name], keys[name], as_dict(params[name]), plan.variant.size, subjects,
                                                 {dep: keys[dep] for dep in DEPENDS[name]}, colour=plan.variant.colour) == "changed"]
        if changed_artifacts:
            notes.append(f"new parameters (theirs or upstream){where}: {', '.join(changed_artifacts)} recomputed")
        # what is computed from a rebuilt artifact is invalid too, whether or not this build asked for it
        stale = {name: reason for name, reason in stale_artifacts(group).items()
                 if name not in plan.chosen and not group.attrs["artifacts"][name].get("stale")}
        mark_stale(group, stale)
        for name, reason in stale.items():
            notes.append(f"{name}{where} is now stale ({reason}): build it again with --artifacts {name}")

    state = []
    for plan in plans:
        state.append(({name: done_flags(plan.group, name) for name in plan.chosen}, failures(plan.group),
                      {name: ArtifactCount() for name in plan.chosen}))
    failed: list[tuple[str, str, str]] = []
    jobs: list[SampleJob] = []
    retried = 0
    absolute_store = str(store_path.resolve())
    for position, (sample, row) in enumerate(zip(samples, rows)):
        inputs = None
        variant_jobs = []
        for plan, (flags, recorded, counts) in zip(plans, state):
            index = plan.rows[position]
            todo = []
            # the clip's files are stat-ed once, and only for a sample that failed or has work to do
            if inputs is None and (recorded[index] or not all(flags[name][index] for name in plan.chosen)):
                inputs = input_fingerprint(sample.frames)
            for name in plan.chosen:
                failure = recorded[index].get(name, {})
                if flags[name][index]:
                    counts[name].reused += 1
                elif failure.get("key") == plan.keys[name] and not _retry(failure, options.retry_failed, inputs or ""):
                    counts[name].failed += 1
                    failed.append((row["sample_id"], _label(plan, name, dataset_group), failure["reason"]))
                else:
                    retried += bool(failure)
                    todo.append(name)
            if todo:
                variant_jobs.append(VariantJob(plan.group.path, index, plan.variant, tuple(todo), plan.keys, inputs or ""))
        if variant_jobs:
            base = plans[0].params
            jobs.append(SampleJob(
                absolute_store, f"{sample.subject}/{sample.clip}", tuple(str(p) for p in sample.frames),
                sample.onset, sample.apex, sample.offset, sample.fps or fps, {n: base[n] for n in base}, tuple(variant_jobs),
                lock=str(lock.path.resolve()), token=lock.token,
            ))
    if retried:
        notes.append(f"{retried} recorded failures retried (their input files changed, an internal error, or --retry-failed)")

    results: list[SampleResult] = []
    workers = 0
    if jobs:
        workers = options.workers or os.cpu_count() or 1
        if remote is not None:
            workers = len(remote.scheduler_info().get("workers", {})) or workers
        results = _run(jobs, options.scheduler, workers, progress, started, remote)
    sample_ids = {f"{sample.subject}/{sample.clip}": row["sample_id"] for sample, row in zip(samples, rows)}
    by_group = {plan.group.path: (plan, counts) for plan, (_, _, counts) in zip(plans, state)}
    for result in results:
        for group_path, outcome in result.variants.items():
            plan, counts = by_group[group_path]
            for name in outcome.computed:
                counts[name].computed += 1
            for name, reason in outcome.failed.items():
                counts[name].failed += 1
                failed.append((sample_ids[result.key], _label(plan, name, dataset_group), reason))
    wall = time.perf_counter() - started
    try:
        for plan, (_, _, counts) in zip(plans, state):
            plan.group.attrs.update({"last_build": {
                "wall_s": round(wall, 3), "scheduler": options.scheduler if jobs else "none", "workers": workers,
                "computed": {n: c.computed for n, c in counts.items()}, "failed": {n: c.failed for n, c in counts.items()},
            }})
    except OSError as error:
        raise StoreWriteError(f"cannot write the build record of {group_name}: {error.strerror or error} (errno {error.errno})") from None
    variants = [VariantBuild(plan.variant, plan.group.path, plan.chosen, counts, plan.target.readers)
                for plan, (_, _, counts) in zip(plans, state)]
    return BuildSummary(
        group_name, store_path, len(samples), plans[0].chosen, variants[0].counts, wall, size_on_disk(store_path), sorted(failed),
        results, notes, options.scheduler if jobs else "none", workers, variants,
    )


def _label(plan: _Plan, artifact: str, dataset_group) -> str:
    """How a failure names the artifact: plain in the dataset's own variant, else ``variant/artifact``."""
    return artifact if plan.group is dataset_group else f"{plan.variant.name}/{artifact}"


def _retry(failure: dict, retry_failed: bool, inputs: str) -> bool:
    """Whether a failure recorded under the current key is tried again: on request, after an
    internal error (a fault of the build, not of the sample), or when the clip's files changed."""
    if retry_failed or str(failure.get("reason", "")).startswith(INTERNAL_ERROR):
        return True
    return failure.get("inputs") != inputs


def _check_apart(root: Path, store_path: Path, group: str) -> None:
    """The store and the raw dataset must not overlap: a dataset inside the store could be taken
    for one of its groups, and a store inside the dataset would be read as a clip folder."""
    dataset, store = root.resolve(), store_path.resolve()
    if dataset == store or store in dataset.parents:
        raise BuildError(f"the dataset root {root} lies inside the store {store_path}; keep the raw data outside the store")
    if dataset in store.parents:
        raise BuildError(f"the store {store_path} lies inside the dataset root {root}; put the store outside the raw data")


def _reader_options(options: BuildOptions, adapter: str) -> dict:
    """What the adapter is given besides the root: the ``--sheet``, and for a manifest the
    function that counts a video's frames (the datasets layer decodes nothing itself)."""
    reader_options = {"sheet": options.sheet} if options.sheet is not None else {}
    if adapter == "manifest":
        from mepipe.pipeline.video import video_length

        reader_options["video_length"] = video_length
    return reader_options


def _group_fps(adapter: str, samples) -> float:
    """The frame rate a group records: its dataset's; a manifest's samples each have their own
    (every task is given its sample's), and the group records the one most of them have."""
    if adapter in PER_SAMPLE_FPS:
        rates = Counter(sample.fps or MANIFEST_FPS for sample in samples)
        return max(rates, key=lambda rate: (rates[rate], -rate))
    return LAYOUTS[adapter].fps if adapter in LAYOUTS else OTHER_FPS[adapter]


def _unknown_emotions(adapter: str, samples) -> list[str]:
    """A note per emotion that the dataset's default protocol does not know (stored, never labelled)."""
    from mepipe.datasets.protocols import default_protocol, label_map

    protocol = default_protocol(adapter)
    labels = label_map(adapter, protocol, samples)
    unknown: dict[str, int] = {}
    for sample in samples:
        if not labels.known(sample.emotion):
            unknown[sample.emotion] = unknown.get(sample.emotion, 0) + 1
    return [f"{count} sample{'s' if count > 1 else ''} with emotion {emotion!r}, which {adapter} {protocol} does not know: "
            f"stored, but no protocol labels {'them' if count > 1 else 'it'} (`mepipe verify` lists them)"
            for emotion, count in sorted(unknown.items())]


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
    if not names:
        raise BuildError("--artifacts is empty; name artifacts, e.g. --artifacts flow,strain, or leave the option out for all")
    unknown = [name for name in names if name not in ARTIFACTS]
    if unknown:
        raise BuildError(f"unknown artifact {unknown[0]!r}; artifacts: {', '.join(ARTIFACTS)}")
    wanted = with_dependencies(names)
    outside = [name for name in wanted if name not in applicable]
    if outside:
        raise BuildError(f"artifact {outside[0]!r} does not apply to {adapter}; its artifacts: {', '.join(applicable)}")
    return wanted


def _row(group: str, sample, root: Path, fps: float) -> dict:
    # the clip's frame folder, or its video file, relative to the root where it lies inside it
    clip_path = sample.video or Path(sample.frames[0]).parent
    try:
        source = str(Path(clip_path).relative_to(root))
    except ValueError:
        source = str(clip_path)
    return {
        "sample_id": f"{group}/{sample.subject}/{sample.clip}", "subject": sample.subject, "clip": sample.clip,
        "emotion": sample.emotion, "action_units": str(sample.action_units), "apex_source": sample.apex_source, "source": source,
        "onset": sample.onset, "apex": sample.apex, "offset": sample.offset, "n_frames": sample.n_frames,
        "onset_frame": _or_minus_one(sample.onset_frame), "apex_frame": _or_minus_one(sample.apex_frame),
        "offset_frame": _or_minus_one(sample.offset_frame), "aus": sample.action_units.numbers,
        "fps": float(sample.fps or fps),  # the rate its task is given: a change recomputes the sample
    }


def _or_minus_one(value) -> int:
    return -1 if value is None else int(value)


def _run(jobs: list[SampleJob], scheduler: str, workers: int, progress: Progress | None, started: float, remote=None) -> list[SampleResult]:
    import dask
    from distributed import as_completed

    client, cluster = (remote, None) if remote is not None else _client(scheduler, workers)
    futures = []
    try:
        tasks = [dask.delayed(run_sample, pure=False)(job, dask_key_name=f"sample-{job.group}-{job.index}") for job in jobs]
        futures = client.compute(tasks)
        results = []
        if progress:
            progress(0, len(jobs), time.perf_counter() - started)
        for future in as_completed(futures):
            result = future.result()  # a StoreWriteError raised in the task is raised here
            if result.superseded:
                raise StoreError(f"{result.key}: this build lost the lock of its group to another build; stopped")
            results.append(result)
            if progress:
                progress(len(results), len(jobs), time.perf_counter() - started)
        return sorted(results, key=lambda result: result.index)
    finally:
        if futures:
            client.cancel(futures)
        if cluster is not None:
            client.close()
            cluster.close()


@contextlib.contextmanager
def _sigint_ignored():
    """Start child processes with SIGINT ignored: an ignored signal stays ignored through exec,
    where a blocked one does not (multiprocessing's spawn resets the mask). The cost: a Ctrl-C
    during the seconds the workers start is lost, and the next one stops the build."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _client(scheduler: str, workers: int):
    from distributed import Client, LocalCluster

    # a free port for the scheduler's HTTP endpoints (two builds at once must not fight over
    # 8787), on loopback like the scheduler itself: a local build serves nothing to the network
    # workers' own logs are silenced: a task's failure comes back through its future, and the
    # heartbeat errors of workers whose scheduler stopped (Ctrl-C) are not the user's to read
    quiet = {"dashboard_address": "127.0.0.1:0", "silence_logs": logging.CRITICAL}
    if scheduler == "threads":
        cluster = LocalCluster(n_workers=1, threads_per_worker=workers, processes=False, **quiet)
        return Client(cluster), cluster
    if scheduler == "processes":
        # Ctrl-C reaches the whole terminal process group; the driver alone handles it (one line,
        # exit 130) and stops the workers, which therefore start with SIGINT ignored
        with _sigint_ignored():
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1", **quiet)
        return Client(cluster), cluster
    try:
        return Client(scheduler, timeout="10s"), None
    except (OSError, TimeoutError) as error:
        raise BuildError(f"no Dask scheduler answers at {scheduler} ({type(error).__name__}); start one with `dask scheduler` or use --scheduler processes") from None
