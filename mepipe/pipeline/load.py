"""Reading a built store back: the samples of a protocol, their artifacts, labels and LOSO folds.

:func:`load` is the one call a researcher needs::

    data = mepipe.load("cache/mepipe.zarr", "casme2", ["flow", "strain"], protocol="5class")
    data.arrays["flow"]          # (n, 2, S, S) float32, rows in the order of data.meta
    data.meta["label"]           # (n,) int64 indexing data.classes
    for fold in data.folds:      # leave-one-subject-out, indices into the n rows
        ...

Labels, groups and folds come from :func:`mepipe.datasets.protocols.select`, run on
:class:`~mepipe.datasets.samples.Sample` records rebuilt from the stored metadata; nothing here
derives a label. ``composite`` is a view over the ``smic``, ``casme2`` and ``samm`` groups (read
in place, never copied). A group whose adapter differs from its name (``demo`` is built by the
``casme2`` adapter) takes the protocols of its adapter.

Only samples whose completion flags are set for every requested artifact are returned; the others
are listed in :attr:`LoadedData.missing` with the reason (the QC failure, or ``not built``). An
artifact whose chain of cache keys is not current (it was computed from an input since rebuilt
with other parameters) is refused with a :class:`LoadError` naming the input and the build to
run; rows of samples the dataset no longer holds (``in_dataset`` false) are never returned.

:func:`plan` does the same selection without reading any artifact data; the torch dataset of
:mod:`mepipe.models.data` reads items lazily from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr

from mepipe.datasets.action_units import parse_action_units
from mepipe.datasets.errors import DatasetError
from mepipe.datasets.protocols import COMPOSITE_DATASETS, PROTOCOLS, Fold, select
from mepipe.datasets.samples import DatasetReading, Sample
from mepipe.pipeline.artifacts import ARTIFACTS, with_dependencies
from mepipe.pipeline.store import (
    INPUT_FIELDS, META_INT, META_TEXT, StoreError, _clip_path, datasets_in, done_flags, failures, find_variant, group_variant, in_dataset,
    open_store, read_clip, stale_artifacts, variant_groups,
)
from mepipe.pipeline.variants import Variant

#: Fixed-size arrays (N, C, S, S) -> the artifact that writes them.
ARRAY_ARTIFACT: dict[str, str] = {spec.name: artifact.name for artifact in ARTIFACTS.values() for spec in artifact.arrays}
#: Ragged clip kinds (T, S, S) -> the artifact that writes them.
RAGGED_ARTIFACT: dict[str, str] = {artifact.ragged: artifact.name for artifact in ARTIFACTS.values() if artifact.ragged}
#: Every name :func:`load` accepts in ``artifacts``.
LOADABLE: tuple[str, ...] = (*ARRAY_ARTIFACT, *RAGGED_ARTIFACT)

COMPOSITE = "composite"
META_COLUMNS = ("sample_id", "dataset", "subject", "clip", "emotion", "action_units", "onset", "apex", "offset", "apex_used", "n_frames", "row")


class LoadError(StoreError):
    """The store cannot be read as asked; one line that says why (a :class:`StoreError`)."""


@dataclass
class LoadPlan:
    """Which store rows :func:`load` returns, with their metadata, labels and folds; no pixels.

    ``rows[i]`` is ``(group name, row index in that group)`` of returned sample ``i``.
    """

    store: Path
    dataset: str
    protocol: str | None
    artifacts: tuple[str, ...]
    rows: list[tuple[str, int]]
    meta: dict[str, np.ndarray]
    classes: tuple[str, ...]
    folds: list[Fold]
    missing: list[tuple[str, str]]
    excluded: list[tuple[str, str]] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    variant: Variant | None = None
    #: dataset group name -> the path of the group read for it (its root or one of its variants)
    paths: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)


@dataclass
class LoadedData:
    """What :func:`load` returns.

    Attributes
    ----------
    arrays : artifact name -> data of the returned samples, in row order: fixed-size artifacts
        stacked (n, C, S, S) in their stored dtype (``face``, ``eye_mask``, ``dynamic`` uint8,
        the flow-type ones float32 in pixels); ragged ``frames`` / ``magnified`` as a list of n
        (T, S, S) uint8 arrays.
    meta : column -> (n,) array: ``sample_id`` (``group/subject/clip``), ``dataset`` (the store
        group), ``subject``, ``clip``, ``emotion``, ``action_units`` (the coded text such as
        ``4+R10``, read by :func:`mepipe.datasets.action_units.parse_action_units`), ``onset``,
        ``apex``, ``offset`` (indices into
        the clip), ``apex_used`` (the apex the artifacts were computed with), ``n_frames``, ``row``
        (the row in the group); with a protocol also ``label`` (int64 into ``classes``),
        ``label_name`` and ``group`` (the LOSO group ``dataset/subject``).
    classes : the protocol's class names; empty without a protocol.
    folds : the protocol's leave-one-subject-out folds, indices into the n returned rows (a subject
        none of whose samples is returned has no fold); empty without a protocol.
    missing : (sample_id, reason) of the selected samples left out because a requested artifact
        is not done: the QC failure text, or ``not built``.
    excluded : (sample_id, reason) of the stored samples the protocol leaves out.
    absent : clips the protocol lists (MEGC2019 composite) that the store does not hold.
    variant : the input variant read (crop size, colour, eyes; ``pipeline.variants``).
    channels : array name -> its channel names (``("onset_r", ..., "apex_b")`` for a colour ``face``).
    store, paths : the store read, and for each dataset group the path of the group read for it
        (``casme2`` or ``casme2/variants/320-rgb-eyes-kept``).
    """

    dataset: str
    protocol: str | None
    arrays: dict[str, np.ndarray | list[np.ndarray]]
    meta: dict[str, np.ndarray]
    classes: tuple[str, ...]
    folds: list[Fold]
    missing: list[tuple[str, str]]
    excluded: list[tuple[str, str]] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    variant: Variant | None = None
    channels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    store: Path | None = None
    #: dataset group name -> the store path of the group read for it (its root or a variant)
    paths: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.meta["sample_id"])

    @property
    def labels(self) -> np.ndarray | None:
        return self.meta.get("label")

    def to_pandas(self):
        """The meta table as a ``pandas.DataFrame`` (one row per returned sample)."""
        try:
            import pandas
        except ImportError:
            raise ImportError("LoadedData.to_pandas needs pandas, which is not installed (pip install pandas)") from None
        return pandas.DataFrame({name: column for name, column in self.meta.items()})


def load(store: str | Path, dataset: str, artifacts: str | Sequence[str] = (), protocol: str | None = None,
         variant: Variant | str | None = None, for_model: str | None = None, lazy_clips: bool = False) -> LoadedData:
    """The built artifacts of ``dataset`` (a store group or ``composite``) under ``protocol``.

    ``lazy_clips``: the ragged clips (``frames``, ``magnified``) come as read-only ``zarr.Array``
    handles, read only where indexed (``clip.get_orthogonal_selection((indices,))``), for a few
    frames of long clips without holding every clip in memory.

    ``variant``: the input variant to read (a :class:`~mepipe.pipeline.variants.Variant` or its
    name, ``320-rgb-eyes-kept``); None reads the dataset group's own (a build without ``--for``).
    ``for_model``: the model the variant is read for; a missing variant's error then gives the
    ``mepipe build ... --for MODEL`` that makes it. ``mepipe.load(..., model=...)`` fills both.

    ``artifacts``: array names (``face``, ``eye_mask``, ``flow``, ``strain``, ``residual``,
    ``dynamic``, ``magnified_flow``) and ragged kinds (``frames``, ``magnified``); none gives the
    metadata (and labels) only. ``protocol``: None for every sample without labels, or a protocol
    of the dataset's adapter (``5class``, ``3class``, ``native``; see
    :mod:`mepipe.datasets.protocols`). Raises :class:`LoadError` with a one-line message for a
    missing store, group, artifact or protocol.
    """
    selected = plan(store, dataset, artifacts, protocol, variant, for_model)
    root = _open(selected.store)
    groups = {name: root[selected.paths[name]] for name in {group for group, _ in selected.rows}}
    arrays: dict[str, np.ndarray | list[np.ndarray]] = {}
    channels: dict[str, tuple[str, ...]] = {}
    for name in selected.artifacts:
        if name in ARRAY_ARTIFACT:
            arrays[name] = _read_fixed(groups, selected, name)
            if groups:
                channels[name] = tuple(next(iter(groups.values()))[name].attrs.get("channels", ()))
        else:
            keys = [f"{subject}/{clip}" for subject, clip in zip(selected.meta["subject"], selected.meta["clip"])]
            read = _clip_handle if lazy_clips else read_clip
            arrays[name] = [read(groups[group], name, key) for (group, _), key in zip(selected.rows, keys)]
    return LoadedData(selected.dataset, selected.protocol, arrays, selected.meta, selected.classes, selected.folds,
                      selected.missing, selected.excluded, selected.absent, selected.variant, channels, selected.store,
                      dict(selected.paths))


def _clip_handle(group: zarr.Group, kind: str, key: str) -> zarr.Array:
    """The ragged clip's array itself, unread (``load(..., lazy_clips=True)``)."""
    subject, clip = _clip_path(key)
    return group["clips"][kind][subject][clip]


def labelled_protocol(store: str | Path, dataset: str) -> str:
    """The protocol a training run uses when none is named: the first of the group's adapter
    (``composite``: ``3class``; ``demo``, built by the ``casme2`` adapter: ``5class``)."""
    if dataset == COMPOSITE:
        return PROTOCOLS[COMPOSITE][0]
    root = _open(Path(store))
    if dataset not in datasets_in(root):
        raise _no_group(store, dataset, datasets_in(root))
    adapter = str(root[dataset].attrs.get("adapter", dataset))
    if adapter not in PROTOCOLS:
        raise LoadError(f"{store}: group {dataset!r} was built by adapter {adapter!r}, which has no protocol")
    return PROTOCOLS[adapter][0]


def plan(store: str | Path, dataset: str, artifacts: str | Sequence[str] = (), protocol: str | None = None,
         variant: Variant | str | None = None, for_model: str | None = None) -> LoadPlan:
    """The rows, metadata, labels and folds :func:`load` would return, reading metadata only."""
    if isinstance(variant, str):
        try:
            variant = Variant.parse(variant)
        except ValueError as error:
            raise LoadError(str(error)) from None
    store = Path(store)
    root = _open(store)
    present = datasets_in(root)
    wanted = (artifacts,) if isinstance(artifacts, str) else tuple(dict.fromkeys(artifacts))
    if dataset == COMPOSITE:
        absent_groups = [name for name in COMPOSITE_DATASETS if name not in present]
        if absent_groups:
            raise LoadError(f"{store}: composite needs the groups {', '.join(COMPOSITE_DATASETS)}; missing {', '.join(absent_groups)} "
                            f"(groups present: {', '.join(present) or 'none'})")
        group_names = list(COMPOSITE_DATASETS)
    elif dataset not in present:
        raise _no_group(store, dataset, present)
    else:
        group_names = [dataset]
    groups = {name: _variant_of(store, name, root[name], variant, for_model) for name in group_names}
    adapters = {name: str(group.attrs.get("adapter", name)) for name, group in groups.items()}
    if dataset == COMPOSITE:
        wrong = [f"{name} (adapter {adapter})" for name, adapter in adapters.items() if adapter != name]
        if wrong:
            raise LoadError(f"{store}: composite needs groups built by their own adapter; {', '.join(wrong)}")
    for name, group in groups.items():
        _check_group(store, name, group)
        _check_artifacts(store, name, group, wanted, for_model)
    protocol_dataset = COMPOSITE if dataset == COMPOSITE else adapters[dataset]
    if protocol is not None:
        known = PROTOCOLS.get(protocol_dataset, ())
        if protocol not in known:
            via = "" if protocol_dataset == dataset else f" (adapter {protocol_dataset})"
            raise LoadError(f"no protocol {protocol!r} for {dataset}{via}; choose one of: {', '.join(known) or 'none'}")

    # the stored metadata of every group, and a Sample record per row
    columns: dict[str, dict[str, np.ndarray]] = {}
    samples: dict[str, list[Sample]] = {}
    sample_rows: dict[str, np.ndarray] = {}
    for name, group in groups.items():
        columns[name] = _read_meta(group)
        sample_rows[name] = np.flatnonzero(in_dataset(group))
        samples[name] = _samples(columns[name], adapters[name], sample_rows[name])

    origin = {id(sample): (name, int(row)) for name, group_samples in samples.items()
              for row, sample in zip(sample_rows[name], group_samples)}
    if protocol is None:
        chosen = [(name, int(row)) for name in group_names for row in sample_rows[name]]
        labels = groups_of = None
        classes: tuple[str, ...] = ()
        selection_folds: list[Fold] = []
        excluded: list[tuple[str, str]] = []
        absent: list[str] = []
    else:
        readings = {adapters[name]: DatasetReading(adapters[name], Path(str(groups[name].attrs.get("source_root", ""))), samples[name], [])
                    for name in group_names}
        try:
            selection = select(protocol_dataset, protocol, readings)
        except DatasetError as error:
            raise LoadError(str(error)) from None
        chosen = [origin[id(sample)] for sample in selection.samples]
        labels, groups_of, classes = selection.labels, selection.groups, selection.classes
        selection_folds = selection.folds
        to_store_id = {sample.sample_id: _store_id(*origin[id(sample)], columns) for sample in _all(samples)}
        excluded = [(to_store_id.get(sample_id, sample_id), reason) for sample_id, reason in selection.excluded]
        absent = list(selection.missing)

    # keep the samples whose artifacts are all done
    needed = with_dependencies(ARRAY_ARTIFACT.get(name) or RAGGED_ARTIFACT[name] for name in wanted)
    flags = {name: _done(group, needed) for name, group in groups.items()}
    done = {name: np.logical_and.reduce([np.ones(len(columns[name]["sample_id"]), bool), *flags[name].values()]) for name in groups}
    kept: list[int] = []
    missing: list[tuple[str, str]] = []
    failure_records: dict[str, list[dict]] = {}
    for position, (name, index) in enumerate(chosen):
        if done[name][index]:
            kept.append(position)
            continue
        if name not in failure_records:
            failure_records[name] = failures(groups[name])
        reason = _reason(groups[name], flags[name], index, failure_records[name][index])
        missing.append((str(columns[name]["sample_id"][index]), reason))

    rows = [chosen[position] for position in kept]
    meta = _meta_table(rows, columns)
    if labels is not None:
        kept_array = np.array(kept, dtype=np.int64)
        meta["label"] = np.asarray(labels, dtype=np.int64)[kept_array] if kept else np.zeros(0, np.int64)
        meta["label_name"] = np.array([classes[i] for i in meta["label"]], dtype=object)
        meta["group"] = np.array([groups_of[i] for i in kept], dtype=object)
    folds = reindex_folds(selection_folds, kept, len(chosen))
    read = variant if variant is not None else next((group_variant(g) for g in groups.values() if group_variant(g)), None)
    return LoadPlan(store, dataset, protocol, wanted, rows, meta, tuple(classes), folds, missing, excluded, absent, read,
                    {name: group.path for name, group in groups.items()})


def _no_group(store, dataset: str, present: Sequence[str]) -> LoadError:
    return LoadError(f"{store}: no dataset group {dataset!r}; groups present: {', '.join(present) or 'none'}")


def reindex_folds(folds: Sequence[Fold], kept: Sequence[int], total: int) -> list[Fold]:
    """``folds`` (indices into ``total`` rows) restricted to the rows ``kept``, renumbered to them.

    A fold whose test subject has no kept row is dropped; the remaining folds are numbered 0.. in
    their original order.
    """
    position = np.full(total, -1, dtype=np.int64)
    position[np.asarray(kept, dtype=np.int64)] = np.arange(len(kept))
    out: list[Fold] = []
    for fold in folds:
        test = position[fold.test]
        test = test[test >= 0]
        if not len(test):
            continue
        train = position[fold.train]
        out.append(Fold(len(out), fold.test_subject, train[train >= 0], test))
    return out


# ---------------------------------------------------------------- helpers

def _open(store: Path) -> zarr.Group:
    try:
        return open_store(store, mode="r")
    except StoreError as error:
        raise LoadError(str(error)) from None


def _built(group: zarr.Group) -> list[str]:
    """The loadable names built in ``group`` (arrays present and recorded, ragged kinds recorded)."""
    records = group.attrs.get("artifacts", {})
    names = []
    for name in LOADABLE:
        artifact = ARRAY_ARTIFACT.get(name) or RAGGED_ARTIFACT[name]
        if artifact not in records or f"done/{artifact}" not in group:
            continue
        if name in ARRAY_ARTIFACT and name not in group:
            continue
        if name in RAGGED_ARTIFACT and f"clips/{name}" not in group:
            continue
        names.append(name)
    return names


def _check_group(store: Path, name: str, group: zarr.Group) -> None:
    """A group missing one of the arrays every build writes was damaged (or is being made)."""
    needed = (*META_TEXT, *META_INT, "apex_used", "done", "qc")
    absent = [field for field in needed if field not in group]
    if absent:
        raise LoadError(f"group {name} of {store} is incomplete (no {', '.join(absent[:3])}{', ...' if len(absent) > 3 else ''}); "
                        f"build it again: mepipe build --dataset {name} --root {group.attrs.get('source_root', 'ROOT')} --store {store}")
    if not set(INPUT_FIELDS) <= set(group.array_keys()):
        raise LoadError(f"group {name} of {store} has no input fields; it was not made by this mepipe")


def _build_hint(store: Path, name: str, group: zarr.Group, artifact: str, for_model: str | None = None) -> str:
    root = group.attrs.get("source_root", "ROOT")
    dataset = "demo" if name == "demo" else str(group.attrs.get("adapter", name))
    what = f"--for {for_model}" if for_model else f"--artifacts {artifact}"
    return f"mepipe build --dataset {dataset} --root {root} --store {store} {what}"


def _variant_of(store: Path, name: str, group: zarr.Group, variant: Variant | None, for_model: str | None) -> zarr.Group:
    """The group of dataset ``name`` that holds ``variant`` (its own when None)."""
    if variant is None:
        return group
    found = find_variant(group, variant)
    if found is None:
        held = ", ".join(variant_groups(group)) or "none"
        if for_model:
            how = f"build it: `{_build_hint(store, name, group, 'face', for_model)}`"
            who = f"{for_model} reads"
        else:  # not a model's own: only a build without --for makes it, as the dataset group's own variant
            settings = f"-p face.size={variant.size} -p face.colour={str(variant.colour).lower()} -p face.eye_fill={variant.eye_fill}"
            command = _build_hint(store, name, group, "face").rsplit(" --artifacts", 1)[0]
            how = f"a build without --for makes it: `{command} {settings}`"
            who = "was asked for"
        raise LoadError(f"{name} in {store} has no variant {variant.name} ({variant.describe()}), which {who}; variants built: "
                        f"{held}; {how}")
    return found


def _check_artifacts(store: Path, name: str, group: zarr.Group, wanted: tuple[str, ...], for_model: str | None = None) -> None:
    built = _built(group)
    stale = stale_artifacts(group)
    for artifact in wanted:
        if artifact not in LOADABLE:
            raise LoadError(f"unknown artifact {artifact!r}; {name} in {store} has: {', '.join(built) or 'none'} "
                            f"(loadable names: {', '.join(LOADABLE)})")
        if artifact not in built:
            producer = ARRAY_ARTIFACT.get(artifact) or RAGGED_ARTIFACT[artifact]
            raise LoadError(f"artifact {artifact!r} is not built in group {name} of {store} (built: {', '.join(built) or 'none'}); "
                            f"run `{_build_hint(store, name, group, producer, for_model)}`")
        producer = ARRAY_ARTIFACT.get(artifact) or RAGGED_ARTIFACT[artifact]
        chain = [link for link in with_dependencies([producer]) if link in stale]
        if chain:
            raise LoadError(f"artifact {artifact!r} of group {name} in {store} is stale: {chain[-1]} was {stale[chain[-1]]}; "
                            f"rebuild it: `{_build_hint(store, name, group, chain[-1], for_model)}`")


def _read_meta(group: zarr.Group) -> dict[str, np.ndarray]:
    out = {}
    for field_name in ("sample_id", "subject", "clip", "emotion", "action_units", "apex_source"):
        out[field_name] = np.asarray(group[field_name][:], dtype=object)
    for field_name in ("onset", "apex", "offset", "n_frames", "onset_frame", "apex_frame", "offset_frame", "apex_used"):
        out[field_name] = np.asarray(group[field_name][:], dtype=np.int64)
    return out


def _samples(columns: dict[str, np.ndarray], adapter: str, rows: np.ndarray) -> list[Sample]:
    def frame(value) -> int | None:
        return None if value == -1 else int(value)

    samples = []
    for index in rows:
        samples.append(Sample(
            dataset=adapter, subject=str(columns["subject"][index]), clip=str(columns["clip"][index]), frames=(), frame_numbers=(),
            onset=int(columns["onset"][index]), apex=int(columns["apex"][index]), offset=int(columns["offset"][index]),
            emotion=str(columns["emotion"][index]), action_units=_action_units(columns, index),
            apex_source=str(columns["apex_source"][index]), onset_frame=frame(columns["onset_frame"][index]),
            apex_frame=frame(columns["apex_frame"][index]), offset_frame=frame(columns["offset_frame"][index]),
        ))
    return samples


def _action_units(columns: dict[str, np.ndarray], index: int):
    sample_id = str(columns["sample_id"][index])
    try:
        return parse_action_units(str(columns["action_units"][index]), where=f"stored action_units of {sample_id}")
    except DatasetError as error:
        raise LoadError(str(error)) from None


def _all(samples: dict[str, list[Sample]]):
    return [sample for group_samples in samples.values() for sample in group_samples]


def _store_id(name: str, index: int, columns: dict[str, dict[str, np.ndarray]]) -> str:
    return str(columns[name]["sample_id"][index])


def _done(group: zarr.Group, needed: tuple[str, ...]) -> dict[str, np.ndarray]:
    """(N,) completion flags of each artifact in ``needed`` (all False where none are stored)."""
    return {artifact: done_flags(group, artifact) for artifact in needed}


def _reason(group: zarr.Group, flags: dict[str, np.ndarray], index: int, recorded: dict) -> str:
    """Why sample ``index`` is not done: the QC failures recorded under the current keys, else ``not built``."""
    keys = {name: record.get("key") for name, record in group.attrs.get("artifacts", {}).items()}
    reasons = []
    for artifact, done in flags.items():
        if done[index]:
            continue
        failure = recorded.get(artifact)
        if failure and failure.get("key") == keys.get(artifact):
            reasons.append(f"{artifact}: {failure.get('reason', 'failed')}")
    return "; ".join(dict.fromkeys(reasons)) or "not built"


def _meta_table(rows: list[tuple[str, int]], columns: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    meta: dict[str, np.ndarray] = {}
    text = ("sample_id", "subject", "clip", "emotion", "action_units")
    numbers = ("onset", "apex", "offset", "apex_used", "n_frames")
    for column in META_COLUMNS:
        if column == "dataset":
            meta[column] = np.array([name for name, _ in rows], dtype=object)
        elif column == "row":
            meta[column] = np.array([index for _, index in rows], dtype=np.int64)
        elif column in text:
            meta[column] = np.array([columns[name][column][index] for name, index in rows], dtype=object)
        elif column in numbers:
            meta[column] = np.array([columns[name][column][index] for name, index in rows], dtype=np.int64)
    return meta


def _read_fixed(groups: dict[str, zarr.Group], selected: LoadPlan, name: str) -> np.ndarray:
    """One orthogonal read per group (or a slice when the rows are a contiguous run)."""
    rows = selected.rows
    shapes = {group: groups[group][name].shape[1:] for group in groups}
    if len(set(shapes.values())) > 1:
        described = ", ".join(f"{group} {shape}" for group, shape in sorted(shapes.items()))
        raise LoadError(f"{name} has different shapes across the groups ({described}); build them with the same face.size")
    if not rows:
        template = next(iter(groups.values()))[name] if groups else None
        shape = template.shape[1:] if template is not None else (0, 0, 0)
        dtype = template.dtype if template is not None else np.float32
        return np.zeros((0, *shape), dtype=dtype)
    dtype = groups[rows[0][0]][name].dtype
    out = np.empty((len(rows), *shapes[rows[0][0]]), dtype=dtype)
    for group_name, group in groups.items():
        positions = np.array([i for i, (g, _) in enumerate(rows) if g == group_name], dtype=np.int64)
        if not len(positions):
            continue
        indices = np.array([rows[i][1] for i in positions], dtype=np.int64)
        order = np.argsort(indices, kind="stable")
        sorted_indices = indices[order]
        array = group[name]
        if np.array_equal(sorted_indices, np.arange(sorted_indices[0], sorted_indices[0] + len(sorted_indices))):
            block = array[int(sorted_indices[0]): int(sorted_indices[-1]) + 1]
        else:
            block = array.get_orthogonal_selection((sorted_indices, slice(None), slice(None), slice(None)))
        out[positions[order]] = block
    return out
