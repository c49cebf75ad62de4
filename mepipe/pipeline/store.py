"""The Zarr store: schema, group preparation, per-sample writes, completion flags, reading back.

Layout (``docs/store.md`` has the full description)::

    <store>/                       attrs: mepipe_schema, mepipe_version
      <group>/                     one per dataset (``casme2``, ``samm``, ``demo``, ...); attrs: adapter,
                                   source root, fps, artifacts (parameters, cache key), last build
        sample_id, subject, ...    (N,) metadata, dimension ``sample``; ``aus`` (N, n_au)
        apex_used                  (N,) the apex index the artifacts were computed with
        in_dataset                 (N,) bool: False for a sample an earlier build had that the dataset
                                   no longer holds (its row stays, its results are removed)
        face, flow, strain, ...    (N, C, S, S), one chunk per sample, dimensions (sample, channel, y, x)
        done/<artifact>            (N,) bool, set only after that sample's data is written
        clips/<kind>/<subject>/<clip>   ragged (T, S, S) uint8 clips: ``frames``, ``magnified``
                                   (``frames`` (T, S, S, 3) RGB in a colour variant)
        qc/...                     (N,) per sample: status, failures, detector score, ...
        variants/<name>/           the same schema for each other input variant of the dataset
                                   (``pipeline.variants``: crop size, colour, eyes), e.g.
                                   ``variants/320-rgb-eyes-kept``; own metadata, keys and flags

Only the build's driver writes metadata and attributes; a sample's task writes only that sample's
chunks (one chunk per sample everywhere it writes, no shards), so concurrent tasks never share a
file. Rows are keyed by sample id: a sample keeps its row for the life of the group, new samples
are appended, and nothing is ever addressed by a position that another build could reuse.

The store guards itself: a folder is a mepipe store only when its root ``zarr.json`` carries the
``mepipe_schema`` attribute, and a group is mepipe's only when it carries ``mepipe_group``.
mepipe writes into a folder only when it is new, empty or such a store, and it removes only nodes
whose every file is one Zarr wrote (:func:`remove_node`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr

from mepipe import __version__
from mepipe.pipeline.artifacts import ARTIFACTS, Artifact, array_specs
from mepipe.pipeline.variants import VARIANTS_GROUP, Variant

SCHEMA = 1
DEFAULT_STORE = Path("cache", "mepipe.zarr")
#: The store's own bookkeeping (build locks), a Zarr group so that Zarr and xarray see no foreign entry.
BOOKKEEPING = ".mepipe"

META_TEXT = ("sample_id", "subject", "clip", "emotion", "action_units", "apex_source", "source")
META_INT = ("onset", "apex", "offset", "n_frames", "onset_frame", "apex_frame", "offset_frame")
#: Per-sample values that, when they change, invalidate everything computed for the sample.
INPUT_FIELDS = ("onset", "apex", "offset", "n_frames", "source")
#: The clip's frame rate (frames per second; a manifest's clips each have one): an input of the
#: magnification. Compared like INPUT_FIELDS, but only where stored: a store made before it was
#: recorded keeps its results (they were computed with the group's rate, which is the rate).
RATE_FIELD = "fps"

QC_FLOAT = ("detector_score", "inter_ocular_px", "roll_degrees", "head_motion_px", "residual_motion_px", "eye_aspect_ratio",
            "detection_frame", "landmark_frame", "apex_spotted")
QC_TEXT = ("status", "fallback", "failures")
#: What Zarr itself writes inside a node: metadata, chunk files under ``c/``, and the temporary
#: ``*.partial`` files of its atomic writes (left behind when a writer is killed).
ZARR_METADATA = "zarr.json"


class StoreError(Exception):
    """The store cannot be used as asked; the message names the path and what was expected."""


class StoreWriteError(StoreError):
    """Writing to the store failed (disk full, permissions, a vanished folder): the build stops."""


class Superseded(Exception):
    """This task's build no longer holds the group's lock: another build took it over."""


def default_store() -> Path:
    return Path(os.environ.get("MEPIPE_STORE", DEFAULT_STORE))


def is_mepipe_store(path: str | Path) -> bool:
    """True when ``path`` holds a Zarr group whose attributes carry ``mepipe_schema``."""
    metadata = Path(path) / ZARR_METADATA
    try:
        document = json.loads(metadata.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(document, dict) and "mepipe_schema" in document.get("attributes", {})


def open_store(path: str | Path, mode: str = "r") -> zarr.Group:
    """The store's root group. ``mode="r"`` needs an existing mepipe store; ``"a"`` creates one.

    ``"a"`` creates a store only in a folder that does not exist or is empty; a non-empty folder
    that is not a mepipe store is refused, so that no build ever writes into a user's folder.
    """
    path = Path(path)
    if mode == "r":
        if not (path / ZARR_METADATA).is_file():
            raise StoreError(f"no mepipe store at {path} (build one with `mepipe build`)")
        if not is_mepipe_store(path):
            raise StoreError(f"{path} is a Zarr store but not a mepipe store (no mepipe_schema attribute)")
        return zarr.open_group(str(path), mode="r")
    _check_writable(path)
    if not is_mepipe_store(path):
        # Zarr's own temporary files of a write in progress do not count: another build may be
        # creating this very store at this moment
        entries = sorted(entry for entry in os.listdir(path) if not entry.endswith(".partial"))
        if entries:
            shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
            raise StoreError(f"{path} is not a mepipe store and is not empty ({len(entries)} entries: {shown}); "
                             "mepipe makes a store only in a new or empty folder: choose another --store")
    # a new store's root metadata is written once, marker included, so that a build starting at
    # the same moment never sees a root without it (and takes the folder for a foreign one)
    try:
        root = zarr.open_group(str(path), mode="a", attributes={"mepipe_schema": SCHEMA, "mepipe_version": __version__})
    except zarr.errors.ContainsGroupError:  # another build created it between Zarr's look and its write
        root = zarr.open_group(str(path), mode="a")
    if root.attrs.get("mepipe_schema") not in (None, SCHEMA):
        raise StoreError(f"{path}: store schema {root.attrs['mepipe_schema']} is not this mepipe's ({SCHEMA}); use a new --store")
    if root.attrs.get("mepipe_schema") != SCHEMA or root.attrs.get("mepipe_version") != __version__:
        root.attrs.update({"mepipe_schema": SCHEMA, "mepipe_version": __version__})
    if BOOKKEEPING not in root:
        try:
            root.create_group(BOOKKEEPING, attributes={"mepipe": "build locks"})
        except zarr.errors.ContainsGroupError:  # another build made it meanwhile
            pass
    return root


def _check_writable(path: Path) -> None:
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise StoreError(f"cannot write the store at {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StoreError(f"cannot write the store at {path}: {existing} is not writable")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(f"cannot create the store at {path}: {error.strerror or error}") from None


def store_path_of(group: zarr.Group) -> Path:
    """The folder of ``group`` on disk (the store is a local or shared-filesystem folder)."""
    return Path(str(group.store.root), group.path)


def is_mepipe_group(group: zarr.Group) -> bool:
    """A group mepipe made: the ``mepipe_group`` marker, or (stores of mepipe 0.1 before it) an
    ``adapter`` attribute beside a ``sample_id`` array."""
    return "mepipe_group" in group.attrs or ("adapter" in group.attrs and "sample_id" in group)


# ---------------------------------------------------------------- driver side: preparing a group

def prepare_group(root: zarr.Group, name: str, *, adapter: str, source_root: Path, fps: float, rows: Sequence[dict]) -> GroupUpdate:
    """Create or update the group of a dataset so that it holds a row for every sample of ``rows``.

    ``rows`` holds one dict per sample with the :data:`META_TEXT` and :data:`META_INT` fields and
    ``aus`` (tuple of AU numbers). Rows are keyed by ``sample_id``: a sample already stored keeps
    its row and its results; a new sample gets a row appended at the end; a stored sample that
    ``rows`` no longer holds keeps its row with ``in_dataset`` False and its results removed. A
    sample whose inputs (onset, apex, offset, frame count or folder) changed has its results
    cleared. Nothing outside the group's own nodes is touched.
    """
    folder = store_path_of(root) / name
    if name in root:
        group = root[name]
        if not isinstance(group, zarr.Group) or not is_mepipe_group(group):
            raise StoreError(f"{folder} is not a group mepipe made; mepipe will not write into it (move it, or use another --store)")
    elif folder.exists():
        raise StoreError(f"{folder} exists but is not a Zarr group mepipe made; mepipe will not write into it "
                         "(move it, or use another --store)")
    else:
        group = None

    ids = [row["sample_id"] for row in rows]
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        twice = next(i for i in ids if i in seen or seen.add(i))
        raise StoreError(f"sample {twice} appears twice in the dataset; a group needs one row per sample")
    stored_ids = _sample_ids(group) if group is not None else []
    position = {sample_id: index for index, sample_id in enumerate(stored_ids)}
    order = stored_ids + [sample_id for sample_id in ids if sample_id not in position]
    n = len(order)
    by_id = {row["sample_id"]: row for row in rows}

    changed: list[int] = []
    was_in = in_dataset(group)[: len(stored_ids)] if group is not None and stored_ids else np.ones(0, bool)
    if group is None:
        group = root.create_group(name, attributes={"mepipe_group": SCHEMA, "artifacts": {}})
    else:
        # a field missing or short (a build killed while it wrote them) counts as changed
        stored = {field: group[field][:] if field in group else np.zeros(0) for field in INPUT_FIELDS}
        compared = INPUT_FIELDS
        if RATE_FIELD in group:
            stored[RATE_FIELD] = group[RATE_FIELD][:]
            compared = (*INPUT_FIELDS, RATE_FIELD)
        for index, sample_id in enumerate(stored_ids):
            row = by_id.get(sample_id)
            if row is not None and was_in[index] and any(
                    index >= len(stored[field]) or str(stored[field][index]) != str(row[field]) for field in compared):
                changed.append(index)
    # per-sample arrays first, metadata last: a build killed in between finds the old sample list
    # and repeats the same resize
    _per_sample_array(group, "apex_used", n, "int32", -1)
    _per_sample_array(group, "in_dataset", n, "bool", False)
    qc = group.require_group("qc")
    for field in QC_FLOAT:
        _per_sample_array(qc, field, n, "float32", np.nan)
    for field in QC_TEXT:
        _per_sample_array(qc, field, n, str, "")
    done = group.require_group("done")
    for artifact in list(done.array_keys()):
        _per_sample_array(done, artifact, n, "bool", False)
    group.require_group("clips")
    for record in group.attrs.get("artifacts", {}).values():
        for array_name in record.get("arrays", ()):
            if array_name in group and group[array_name].shape[0] != n:
                group[array_name].resize((n, *group[array_name].shape[1:]))

    meta_rows = [by_id.get(sample_id) or _stored_row(group, position[sample_id]) for sample_id in order]
    removed = [index for index, sample_id in enumerate(order) if sample_id not in by_id]
    newly_removed = [index for index in removed if index < len(stored_ids) and was_in[index]]
    for index in newly_removed + changed:
        clear_sample(group, index, meta_rows[index])
    flags = np.array([sample_id in by_id for sample_id in order], bool)
    _write_meta(group, meta_rows)
    group["in_dataset"][:] = flags
    group.attrs.update({"adapter": adapter, "source_root": str(source_root), "fps": fps, "mepipe_group": SCHEMA})
    row_of = {sample_id: index for index, sample_id in enumerate(order)}
    return GroupUpdate(group, [row_of[sample_id] for sample_id in ids], changed, n - len(stored_ids), newly_removed)


class GroupUpdate:
    """What :func:`prepare_group` did: the group, the row of each dataset sample, and the changes."""

    def __init__(self, group: zarr.Group, rows: list[int], changed: list[int], added: int, removed: list[int]) -> None:
        self.group = group
        self.rows = rows  # rows[i]: the group row of the dataset's sample i
        self.changed = changed  # rows whose inputs changed (their results were cleared)
        self.added = added  # rows appended for samples the group did not hold
        self.removed = removed  # rows of samples the dataset no longer holds (results removed)


def _per_sample_array(group: zarr.Group, name: str, n: int, dtype, fill) -> zarr.Array:
    if name in group:
        array = group[name]
        if array.shape[0] != n:
            array.resize((n, *array.shape[1:]))
        return array
    return group.create_array(name, shape=(n,), chunks=(1,), dtype=dtype, fill_value=fill, dimension_names=["sample"])


def _stored_row(group: zarr.Group, index: int) -> dict:
    """The stored metadata of row ``index`` (a sample the dataset no longer holds keeps it)."""
    def value(field, default, kind):
        return kind(group[field][index]) if field in group and index < group[field].shape[0] else default

    row = {field: value(field, "", str) for field in META_TEXT}
    row.update({field: value(field, -1, int) for field in META_INT})
    row[RATE_FIELD] = value(RATE_FIELD, 0.0, float)
    numbers = group["au"][:] if "au" in group else np.zeros(0, np.int32)
    coded = group["aus"][index] if "aus" in group and index < group["aus"].shape[0] and group["aus"].shape[1] == len(numbers) else ()
    row["aus"] = tuple(int(number) for number, present in zip(numbers, coded) if present)
    return row


def _write_meta(group: zarr.Group, rows: Sequence[dict]) -> None:
    """Write the metadata, ``sample_id`` last: its length is the group's sample list, and a build
    killed before it finds the previous list whole."""
    n = len(rows)
    for field in META_TEXT:
        if field != "sample_id":
            _whole_array(group, field, np.array([str(row[field]) for row in rows], dtype=object), str)
    for field in META_INT:
        _whole_array(group, field, np.array([row[field] for row in rows], dtype=np.int32), "int32")
    # float64: its text equals the Python float's, which is how a rebuild compares it
    _whole_array(group, RATE_FIELD, np.array([float(row.get(RATE_FIELD, 0.0)) for row in rows], np.float64), "float64")
    numbers = sorted({unit for row in rows for unit in row["aus"]})
    matrix = np.zeros((n, len(numbers)), np.uint8)
    for index, row in enumerate(rows):
        for unit in row["aus"]:
            matrix[index, numbers.index(unit)] = 1
    replace_array(group, "au", shape=(len(numbers),), dtype="int32", dimension_names=["au"])[:] = np.array(numbers, np.int32)
    replace_array(group, "aus", shape=matrix.shape, dtype="uint8", dimension_names=["sample", "au"])[:] = matrix
    _whole_array(group, "sample_id", np.array([str(row["sample_id"]) for row in rows], dtype=object), str)


def _whole_array(group: zarr.Group, name: str, values: np.ndarray, dtype) -> None:
    if name in group and group[name].shape == values.shape:
        group[name][:] = values
    else:
        replace_array(group, name, shape=values.shape, dtype=dtype, dimension_names=["sample"])[:] = values


def replace_array(group: zarr.Group, name: str, **options) -> zarr.Array:
    """``group.create_array(name, overwrite=True, ...)``, refusing if the node it replaces holds a
    file Zarr did not write (Zarr's overwrite deletes the whole folder)."""
    if name in group:
        _refuse_foreign(group, name)
    return group.create_array(name, overwrite=True, **options)


def _refuse_foreign(group: zarr.Group, name: str) -> None:
    folder = store_path_of(group) / name
    foreign = _foreign_file(folder)
    if foreign is not None:
        raise StoreError(f"{folder} holds {foreign}, which mepipe did not write; mepipe will not delete it (move it out of the store)")


def prepare_artifact(group: zarr.Group, artifact: Artifact, key: str, params: dict, size: int, subjects: Sequence[str],
                     upstream: dict[str, str] | None = None, colour: bool = False) -> str:
    """Make the arrays of ``artifact`` match cache key ``key``: ``current``, ``new`` or ``changed``.

    ``colour``: the group is a colour variant; the arrays defined on colour get their channels
    per colour (:func:`mepipe.pipeline.artifacts.array_specs`).

    ``upstream`` (input artifact -> its key) is recorded beside the key, so that a later
    :func:`stale_artifacts` can name the input that changed.

    Stored results under another key are dropped and the completion flags cleared *before* the
    new key is recorded, so a build killed in between starts over cleanly.
    """
    records = dict(group.attrs.get("artifacts", {}))
    n = group["sample_id"].shape[0]
    record = records.get(artifact.name, {})
    current = record.get("key") == key and not record.get("stale") and f"done/{artifact.name}" in group
    specs = array_specs(artifact.name, colour)
    if current:
        current = all(spec.name in group and group[spec.name].shape == (n, len(spec.channels), size, size) for spec in specs)
    if current:
        return "current"
    status = "changed" if artifact.name in records else "new"
    records.pop(artifact.name, None)
    group.attrs.update({"artifacts": records})
    replace_array(group["done"], artifact.name, shape=(n,), chunks=(1,), dtype="bool", fill_value=False, dimension_names=["sample"])
    for spec in specs:
        fill = np.nan if spec.dtype.startswith("float") else 0
        # each array its own channel dimension (flow has 2, strain 1): xarray needs one size per name
        channel = f"{spec.name}_channel"
        replace_array(
            group, spec.name, shape=(n, len(spec.channels), size, size), chunks=(1, len(spec.channels), size, size), dtype=spec.dtype,
            fill_value=fill, dimension_names=["sample", channel, "y", "x"],
            attributes={"channels": list(spec.channels), "artifact": artifact.name},
        )
        names = replace_array(group, channel, shape=(len(spec.channels),), dtype=str, dimension_names=[channel])
        names[:] = np.array(spec.channels, dtype=object)
    if artifact.ragged:
        clips = group["clips"]
        if artifact.ragged in clips:
            remove_node(clips, artifact.ragged)
        kind = clips.create_group(artifact.ragged)
        for subject in sorted(set(subjects)):
            kind.create_group(subject)
    records[artifact.name] = {"key": key, "params": params, "depends": list(artifact.depends),
                              "arrays": [spec.name for spec in specs], "ragged": artifact.ragged, "size": size,
                              "upstream": dict(upstream or {})}
    group.attrs.update({"artifacts": records})
    return status


def mark_stale(group: zarr.Group, stale: dict[str, str]) -> None:
    """Clear the completion flags of the artifacts in ``stale`` and record why they are stale.

    Their records keep their old key, so the next build that asks for them recomputes them.
    """
    records = dict(group.attrs.get("artifacts", {}))
    for name, reason in stale.items():
        if f"done/{name}" in group:
            flags = group["done"][name]
            if flags[:].any():
                flags[:] = False
        records[name] = {**records[name], "stale": reason}
    if stale:
        group.attrs.update({"artifacts": records})


def stale_artifacts(group: zarr.Group) -> dict[str, str]:
    """The recorded artifacts whose results no longer follow from what they were computed from.

    Worked out from the stored records alone, so it holds however the store got here (a build
    killed half-way, a build of other artifacts): an artifact is stale when it was marked so, when
    an artifact it is computed from is missing or stale, or when its key, recomputed from its
    stored parameters and the stored keys of its inputs, differs from its stored key (its input
    was rebuilt with other parameters, or the code version changed). Returns name -> reason.
    """
    from mepipe.pipeline.params import artifact_key

    records = group.attrs.get("artifacts", {})
    stale: dict[str, str] = {}
    for name in ARTIFACTS:
        record = records.get(name)
        if record is None:
            continue
        if record.get("stale"):
            stale[name] = record["stale"]
            continue
        depends = ARTIFACTS[name].depends
        missing = [dep for dep in depends if dep not in records]
        upstream_stale = [dep for dep in depends if dep in stale]
        if missing:
            stale[name] = f"{', '.join(missing)}, which it is computed from, is no longer stored"
        elif upstream_stale:
            stale[name] = f"computed from {', '.join(upstream_stale)}, which is stale"
        else:
            try:
                expected = artifact_key(name, record["params"], {dep: records[dep]["key"] for dep in depends})
            except (KeyError, TypeError):
                expected = None
            if expected != record.get("key"):
                upstream = record.get("upstream", {})
                rebuilt = [dep for dep in depends if upstream.get(dep) != records[dep]["key"]]
                if rebuilt and upstream:
                    stale[name] = f"computed from {' and '.join(rebuilt)} before {'they were' if len(rebuilt) > 1 else 'it was'} rebuilt with other parameters"
                elif depends:
                    stale[name] = f"computed from {' and '.join(depends)} as stored before, or by an older version of its code"
                else:
                    stale[name] = "computed by an older version of its code"
    return stale


def clear_sample(group: zarr.Group, index: int, row: dict | None = None) -> None:
    """Forget everything computed for one sample (its inputs changed, or it left the dataset):
    completion flags, QC, and its ragged clips."""
    for name in group["done"].array_keys():
        group["done"][name][index] = False
    group["qc"]["status"][index] = ""
    group["qc"]["failures"][index] = ""
    if row is not None and "clips" in group:
        subject, clip_name = _clip_path(f"{row['subject']}/{row['clip']}")
        for kind in list(group["clips"].group_keys()):
            parent = group["clips"][kind]
            if subject in parent and clip_name in parent[subject]:
                remove_node(parent[subject], clip_name)


def _sample_ids(group: zarr.Group) -> list[str]:
    if "sample_id" not in group:
        return []
    return [str(value) for value in group["sample_id"][:]]


def remove_node(group: zarr.Group, name: str) -> None:
    """Remove the child node ``name`` of ``group``, refusing if it holds any file Zarr did not write.

    Zarr's own delete removes whole folders; this checks first, so that a user's file that
    somehow lies inside the store (a folder moved there, a dataset root inside it) is never lost.
    """
    _refuse_foreign(group, name)
    del group[name]


def _foreign_file(folder: Path) -> Path | None:
    """The first file under ``folder`` that is not Zarr metadata, a chunk under ``c/`` or a
    ``*.partial`` write; None when every file is Zarr's."""
    for parent, _, files in os.walk(folder):
        inside_chunks = "c" in Path(parent).relative_to(folder).parts or Path(parent).name == "c"
        for file in files:
            if file == ZARR_METADATA or file.endswith(".partial") or (inside_chunks and file.isdigit()):
                continue
            return Path(parent, file)
    return None


# ---------------------------------------------------------------- task side: one sample's writes

class SampleWriter:
    """Writes one sample's results; opened inside the task, on the worker.

    Every write that fails with an ``OSError`` (disk full, permissions) raises
    :class:`StoreWriteError` naming the array: such a failure stops the build, it is not the
    sample's. With ``owner`` (a callable returning False once this task's build has lost the
    group's lock to another build) each completion flag is set only while the build still owns
    the group, so a task left running by a killed build never marks anything done for its
    successor.
    """

    def __init__(self, store: str, group: str, index: int, key: str, owner=None) -> None:
        self.group = zarr.open_group(store, path=group, mode="r+")
        self.index = index
        self.key = key  # subject/clip
        self.owner = owner

    def _guard(self, what: str, write) -> None:
        try:
            write()
        except OSError as error:
            raise StoreWriteError(f"cannot write {what} of {self.group.path}/{self.key} to the store: "
                                  f"{error.strerror or error} (errno {error.errno})") from None

    def check_owner(self) -> None:
        if self.owner is not None and not self.owner():
            raise Superseded(f"{self.group.path}/{self.key}: another build took over the group")

    def array(self, name: str, value: np.ndarray) -> None:
        target = self.group[name]
        self._guard(name, lambda: target.__setitem__(self.index, np.asarray(value, dtype=target.dtype)))

    def ragged(self, kind: str, clip: np.ndarray) -> None:
        subject, clip_name = _clip_path(self.key)

        def write():
            parent = self.group["clips"][kind].require_group(subject)
            chunk = (min(32, clip.shape[0]),) + clip.shape[1:]
            dims = ["frame", "y", "x", "colour"][: clip.ndim]
            array = replace_array(parent, clip_name, shape=clip.shape, chunks=chunk, dtype=clip.dtype, dimension_names=dims)
            array[...] = clip

        self._guard(f"clips/{kind}", write)

    def done(self, artifact: str) -> None:
        self.check_owner()
        self._guard(f"done/{artifact}", lambda: self.group["done"][artifact].__setitem__(self.index, True))

    def scalar(self, name: str, value) -> None:
        self._guard(name, lambda: self.group[name].__setitem__(self.index, value))

    def qc(self, **values) -> None:
        def write():
            for field, value in values.items():
                self.group["qc"][field][self.index] = value

        self._guard("qc", write)


# ---------------------------------------------------------------- reading

def _clip_path(key: str) -> tuple[str, str]:
    # macro-expression clips are named like ``anger/take000``: one array per clip, no nesting
    subject, clip_name = key.split("/", 1)
    return subject, clip_name.replace("/", "__")


def read_clip(group: zarr.Group, kind: str, key: str) -> np.ndarray:
    """The ragged clip ``kind`` (``frames`` or ``magnified``) of sample ``subject/clip``: (T, S, S) uint8."""
    subject, clip_name = _clip_path(key)
    return group["clips"][kind][subject][clip_name][...]


def in_dataset(group: zarr.Group) -> np.ndarray:
    """(N,) bool: the rows of samples the dataset held at its last build (all, in stores made before the flag)."""
    n = group["sample_id"].shape[0]
    return group["in_dataset"][:n].astype(bool) if "in_dataset" in group else np.ones(n, bool)


def done_flags(group: zarr.Group, artifact: str) -> np.ndarray:
    """(N,) completion flags of ``artifact``: False where not done, for a stale artifact, and on the
    rows of samples no longer in the dataset."""
    n = group["sample_id"].shape[0]
    if f"done/{artifact}" not in group or group.attrs.get("artifacts", {}).get(artifact, {}).get("stale"):
        return np.zeros(n, bool)
    flags = group["done"][artifact][:].astype(bool)
    return flags[:n] & in_dataset(group)


def failures(group: zarr.Group) -> list[dict]:
    """JSON failure record of every sample: ``{artifact: {"reason": ..., "key": ..., "inputs": ...}}``."""
    return [json.loads(text) if text else {} for text in group["qc"]["failures"][:]]


def datasets_in(root: zarr.Group) -> list[str]:
    return sorted(name for name, child in root.groups() if name != BOOKKEEPING and "sample_id" in child)


# ---------------------------------------------------------------- input variants

def group_variant(group: zarr.Group) -> Variant | None:
    """The variant a group holds: the one recorded by its build, else that of its ``face``
    parameters (stores made before variants), else None (nothing built)."""
    recorded = group.attrs.get("variant")
    if isinstance(recorded, dict) and "name" in recorded:
        try:
            return Variant.parse(recorded["name"])
        except ValueError:
            return None
    face = group.attrs.get("artifacts", {}).get("face")
    return Variant.of_face(face["params"]) if face and "params" in face else None


def variant_groups(dataset: zarr.Group) -> dict[str, zarr.Group]:
    """Every variant a dataset's group holds, by name: its root's own, then those below
    ``variants/`` (only groups mepipe made)."""
    found: dict[str, zarr.Group] = {}
    own = group_variant(dataset)
    if own is not None:
        found[own.name] = dataset
    if VARIANTS_GROUP in dataset and isinstance(dataset[VARIANTS_GROUP], zarr.Group):
        for name, child in sorted(dataset[VARIANTS_GROUP].groups()):
            if is_mepipe_group(child) and "sample_id" in child and name not in found:
                found[name] = child
    return found


def find_variant(dataset: zarr.Group, variant: Variant) -> zarr.Group | None:
    """The group of ``dataset`` that holds ``variant`` (its root or ``variants/<name>``), or None."""
    return variant_groups(dataset).get(variant.name)


def variants_parent(dataset: zarr.Group) -> zarr.Group:
    """The ``variants`` group of a dataset's group, made when missing (driver side)."""
    if VARIANTS_GROUP in dataset:
        parent = dataset[VARIANTS_GROUP]
        if not isinstance(parent, zarr.Group) or "mepipe_variants" not in parent.attrs:
            raise StoreError(f"{store_path_of(dataset) / VARIANTS_GROUP} is not a group mepipe made; mepipe will not write into it")
        return parent
    folder = store_path_of(dataset) / VARIANTS_GROUP
    if folder.exists():
        raise StoreError(f"{folder} exists but is not a group mepipe made; mepipe will not write into it (move it)")
    return dataset.create_group(VARIANTS_GROUP, attributes={"mepipe_variants": SCHEMA})


def group_name(group: zarr.Group) -> str:
    """The group's path in the store, e.g. ``casme2`` or ``casme2/variants/320-rgb-eyes-kept``."""
    return group.path


def size_on_disk(path: str | Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for file in files:
            try:
                total += os.path.getsize(os.path.join(folder, file))
            except OSError:
                pass
    return total


def artifact_of(name: str) -> Artifact:
    return ARTIFACTS[name]
