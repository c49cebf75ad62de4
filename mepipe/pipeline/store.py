"""The Zarr store: schema, group preparation, per-sample writes, completion flags, reading back.

Layout (``docs/store.md`` has the full description)::

    <store>/                       attrs: mepipe_schema, mepipe_version
      <group>/                     one per dataset (``casme2``, ``samm``, ``demo``, ...); attrs: adapter,
                                   source root, fps, artifacts (parameters, cache key), last build
        sample_id, subject, ...    (N,) metadata, dimension ``sample``; ``aus`` (N, n_au)
        apex_used                  (N,) the apex index the artifacts were computed with
        face, flow, strain, ...    (N, C, S, S), one chunk per sample, dimensions (sample, channel, y, x)
        done/<artifact>            (N,) bool, set only after that sample's data is written
        clips/<kind>/<subject>/<clip>   ragged (T, S, S) uint8 clips: ``frames``, ``magnified``
        qc/...                     (N,) per sample: status, failures, detector score, ...

Only the build's driver writes metadata and attributes; a sample's task writes only that sample's
chunks (one chunk per sample everywhere it writes, no shards), so concurrent tasks never share a
file.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr

from mepipe import __version__
from mepipe.pipeline.artifacts import ARTIFACTS, Artifact

SCHEMA = 1
DEFAULT_STORE = Path("cache", "mepipe.zarr")

META_TEXT = ("sample_id", "subject", "clip", "emotion", "action_units", "apex_source", "source")
META_INT = ("onset", "apex", "offset", "n_frames", "onset_frame", "apex_frame", "offset_frame")
#: Per-sample values that, when they change, invalidate everything computed for the sample.
INPUT_FIELDS = ("onset", "apex", "offset", "n_frames", "source")

QC_FLOAT = ("detector_score", "inter_ocular_px", "roll_degrees", "head_motion_px", "residual_motion_px", "eye_aspect_ratio")
QC_TEXT = ("status", "fallback", "failures")


class StoreError(Exception):
    """The store cannot be used as asked; the message names the path and what was expected."""


def default_store() -> Path:
    return Path(os.environ.get("MEPIPE_STORE", DEFAULT_STORE))


def open_store(path: str | Path, mode: str = "r") -> zarr.Group:
    """The store's root group. ``mode="r"`` needs an existing mepipe store; ``"a"`` creates one."""
    path = Path(path)
    if mode == "r":
        if not (path / "zarr.json").is_file():
            raise StoreError(f"no mepipe store at {path} (build one with `mepipe build`)")
        root = zarr.open_group(str(path), mode="r")
        if "mepipe_schema" not in root.attrs:
            raise StoreError(f"{path} is a Zarr store but not a mepipe store (no mepipe_schema attribute)")
        return root
    _check_writable(path)
    root = zarr.open_group(str(path), mode="a")
    if root.attrs.get("mepipe_schema") not in (None, SCHEMA):
        raise StoreError(f"{path}: store schema {root.attrs['mepipe_schema']} is not this mepipe's ({SCHEMA}); use a new --store")
    root.attrs.update({"mepipe_schema": SCHEMA, "mepipe_version": __version__})
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


# ---------------------------------------------------------------- driver side: preparing a group

def prepare_group(root: zarr.Group, name: str, *, adapter: str, source_root: Path, fps: float, rows: Sequence[dict]) -> tuple[zarr.Group, list[int], bool]:
    """Create or update the group of a dataset; returns (group, samples whose inputs changed, rebuilt).

    ``rows`` holds one dict per sample with the :data:`META_TEXT` and :data:`META_INT` fields and
    ``aus`` (tuple of AU numbers). A group whose sample list differs is rebuilt from nothing (the
    per-sample chunks are addressed by position); a sample whose inputs (onset, apex, offset,
    frame count or folder) changed has its completion flags cleared.
    """
    ids = [row["sample_id"] for row in rows]
    changed: list[int] = []
    rebuilt = False
    if name in root and _sample_ids(root[name]) == ids:
        group = root[name]
        stored = {field: group[field][:] for field in INPUT_FIELDS}
        for index, row in enumerate(rows):
            if any(str(stored[field][index]) != str(row[field]) for field in INPUT_FIELDS):
                changed.append(index)
    else:
        rebuilt = name in root
        if rebuilt:
            _delete(root, name)
        group = root.create_group(name)
        group.attrs.update({"artifacts": {}})
        n = len(rows)
        group.create_array("apex_used", shape=(n,), chunks=(1,), dtype="int32", fill_value=-1, dimension_names=["sample"])
        qc = group.create_group("qc")
        for field in QC_FLOAT:
            qc.create_array(field, shape=(n,), chunks=(1,), dtype="float32", fill_value=np.nan, dimension_names=["sample"])
        for field in QC_TEXT:
            qc.create_array(field, shape=(n,), chunks=(1,), dtype=str, dimension_names=["sample"])
        group.create_group("done")
        group.create_group("clips")
    _write_meta(group, rows)
    group.attrs.update({"adapter": adapter, "source_root": str(source_root), "fps": fps})
    return group, changed, rebuilt


def _write_meta(group: zarr.Group, rows: Sequence[dict]) -> None:
    n = len(rows)
    for field in META_TEXT:
        array = group[field] if field in group else group.create_array(field, shape=(n,), dtype=str, dimension_names=["sample"])
        array[:] = np.array([str(row[field]) for row in rows], dtype=object)
    for field in META_INT:
        array = group[field] if field in group else group.create_array(field, shape=(n,), dtype="int32", dimension_names=["sample"])
        array[:] = np.array([row[field] for row in rows], dtype=np.int32)
    numbers = sorted({unit for row in rows for unit in row["aus"]})
    matrix = np.zeros((n, len(numbers)), np.uint8)
    for index, row in enumerate(rows):
        for unit in row["aus"]:
            matrix[index, numbers.index(unit)] = 1
    for array_name in ("aus", "au"):
        if array_name in group:
            del group[array_name]
    group.create_array("au", shape=(len(numbers),), dtype="int32", dimension_names=["au"])[:] = np.array(numbers, np.int32)
    group.create_array("aus", shape=matrix.shape, dtype="uint8", dimension_names=["sample", "au"])[:] = matrix


def prepare_artifact(group: zarr.Group, artifact: Artifact, key: str, params: dict, size: int, subjects: Sequence[str]) -> str:
    """Make the arrays of ``artifact`` match cache key ``key``: ``current``, ``new`` or ``changed``.

    Stored results under another key are dropped and the completion flags cleared *before* the
    new key is recorded, so a build killed in between starts over cleanly.
    """
    records = dict(group.attrs.get("artifacts", {}))
    n = group["sample_id"].shape[0]
    current = records.get(artifact.name, {}).get("key") == key and f"done/{artifact.name}" in group
    if current:
        current = all(spec.name in group and group[spec.name].shape == (n, len(spec.channels), size, size) for spec in artifact.arrays)
    if current:
        return "current"
    status = "changed" if artifact.name in records else "new"
    records.pop(artifact.name, None)
    group.attrs.update({"artifacts": records})
    group["done"].create_array(artifact.name, shape=(n,), chunks=(1,), dtype="bool", fill_value=False, dimension_names=["sample"], overwrite=True)
    for spec in artifact.arrays:
        fill = np.nan if spec.dtype.startswith("float") else 0
        # each array its own channel dimension (flow has 2, strain 1): xarray needs one size per name
        channel = f"{spec.name}_channel"
        group.create_array(
            spec.name, shape=(n, len(spec.channels), size, size), chunks=(1, len(spec.channels), size, size), dtype=spec.dtype,
            fill_value=fill, dimension_names=["sample", channel, "y", "x"], overwrite=True,
            attributes={"channels": list(spec.channels), "artifact": artifact.name},
        )
        names = group.create_array(channel, shape=(len(spec.channels),), dtype=str, dimension_names=[channel], overwrite=True)
        names[:] = np.array(spec.channels, dtype=object)
    if artifact.ragged:
        clips = group["clips"]
        if artifact.ragged in clips:
            _delete(clips, artifact.ragged)
        kind = clips.create_group(artifact.ragged)
        for subject in sorted(set(subjects)):
            kind.create_group(subject)
    records[artifact.name] = {"key": key, "params": params, "depends": list(artifact.depends),
                              "arrays": [spec.name for spec in artifact.arrays], "ragged": artifact.ragged, "size": size}
    group.attrs.update({"artifacts": records})
    return status


def clear_sample(group: zarr.Group, index: int) -> None:
    """Forget everything computed for one sample (its inputs changed)."""
    for name in group["done"].array_keys():
        group["done"][name][index] = False
    group["qc"]["status"][index] = ""
    group["qc"]["failures"][index] = ""


def _sample_ids(group: zarr.Group) -> list[str] | None:
    if "sample_id" not in group:
        return None
    return [str(value) for value in group["sample_id"][:]]


def _delete(group: zarr.Group, name: str) -> None:
    path = Path(str(group.store.root), group.path, name) if hasattr(group.store, "root") else None
    if path is not None and path.exists():
        shutil.rmtree(path)
    else:
        del group[name]


# ---------------------------------------------------------------- task side: one sample's writes

class SampleWriter:
    """Writes one sample's results; opened inside the task, on the worker."""

    def __init__(self, store: str, group: str, index: int, key: str) -> None:
        self.group = zarr.open_group(store, path=group, mode="r+")
        self.index = index
        self.key = key  # subject/clip

    def array(self, name: str, value: np.ndarray) -> None:
        target = self.group[name]
        target[self.index] = np.asarray(value, dtype=target.dtype)

    def ragged(self, kind: str, clip: np.ndarray) -> None:
        subject, clip_name = _clip_path(self.key)
        parent = self.group["clips"][kind][subject]
        chunk = (min(32, clip.shape[0]),) + clip.shape[1:]
        array = parent.create_array(clip_name, shape=clip.shape, chunks=chunk, dtype=clip.dtype, dimension_names=["frame", "y", "x"], overwrite=True)
        array[...] = clip

    def done(self, artifact: str) -> None:
        self.group["done"][artifact][self.index] = True

    def scalar(self, name: str, value) -> None:
        self.group[name][self.index] = value

    def qc(self, **values) -> None:
        for field, value in values.items():
            self.group["qc"][field][self.index] = value


# ---------------------------------------------------------------- reading

def _clip_path(key: str) -> tuple[str, str]:
    # macro-expression clips are named like ``anger/take000``: one array per clip, no nesting
    subject, clip_name = key.split("/", 1)
    return subject, clip_name.replace("/", "__")


def read_clip(group: zarr.Group, kind: str, key: str) -> np.ndarray:
    """The ragged clip ``kind`` (``frames`` or ``magnified``) of sample ``subject/clip``: (T, S, S) uint8."""
    subject, clip_name = _clip_path(key)
    return group["clips"][kind][subject][clip_name][...]


def done_flags(group: zarr.Group, artifact: str) -> np.ndarray:
    if f"done/{artifact}" not in group:
        return np.zeros(group["sample_id"].shape[0], bool)
    return group["done"][artifact][:]


def failures(group: zarr.Group) -> list[dict]:
    """JSON failure record of every sample: ``{artifact: {"reason": ..., "key": ...}}``."""
    return [json.loads(text) if text else {} for text in group["qc"]["failures"][:]]


def datasets_in(root: zarr.Group) -> list[str]:
    return sorted(name for name, _ in root.groups() if "sample_id" in root[name])


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
