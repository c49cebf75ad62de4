"""``mepipe info --check``: every completion flag's data exists and decodes; damaged samples are cleared.

A done flag promises that the sample's data of that artifact is in the store. A disk that lost a
file, a copy cut short or a chunk overwritten by hand breaks the promise silently: Zarr returns
the fill value for a missing chunk. The check reads every flagged chunk back; where a chunk is
missing or does not decode, it clears that sample's flag of that artifact (what mepipe wrote and
no longer holds), so that the next build recomputes exactly those. It also removes the
``*.partial`` files that Zarr's atomic writes leave when a writer is killed.

A missing chunk counts as damage for every array: no artifact of a computed sample is all fill
value (NaN for the float arrays; an all-zero face, eye mask or dynamic image is itself broken).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from zarr.core.sync import sync

from mepipe.pipeline.artifacts import ARTIFACTS
from mepipe.pipeline.lock import GroupLock
from mepipe.pipeline.store import _clip_path, datasets_in, open_store, stale_artifacts, store_path_of, variant_groups


@dataclass
class Damage:
    sample_id: str
    artifact: str
    reason: str


@dataclass
class CheckReport:
    group: str
    samples: int
    checked: int  # (sample, artifact) pairs whose flag was set
    damaged: list[Damage] = field(default_factory=list)
    partial_files: int = 0


def check_store(path: str | Path, repair: bool = True, wait: bool = False) -> list[CheckReport]:
    """Check every group of the store at ``path``; with ``repair``, clear the damaged flags.

    Each group is checked while holding its build lock, so no build writes it meanwhile.
    """
    path = Path(path)
    root = open_store(path, mode="r")
    reports = []
    for name in datasets_in(root):
        # one lock per dataset covers its own group and its variants (as a build holds it)
        with GroupLock(path, name, wait=wait, command="info --check"):
            for member in [name, *(child.path for child in variant_groups(root[name]).values() if child.path != name)]:
                group = zarr.open_group(str(path), path=member, mode="r+" if repair else "r")
                reports.append(check_group(group, repair))
    return reports


def check_group(group: zarr.Group, repair: bool = True) -> CheckReport:
    ids = [str(value) for value in group["sample_id"][:]]
    subjects = [str(value) for value in group["subject"][:]]
    clips = [str(value) for value in group["clip"][:]]
    n_frames = group["n_frames"][:]
    report = CheckReport(group.path, len(ids), 0)
    records = group.attrs.get("artifacts", {})
    stale = stale_artifacts(group)
    for name, record in records.items():
        if name in stale or f"done/{name}" not in group:
            continue
        flags = _flags(group["done"][name], len(ids))
        artifact = ARTIFACTS[name]
        for index in np.flatnonzero(flags):
            reason = None
            for array_name in record.get("arrays", ()):
                reason = reason or _chunk_problem(group[array_name], index)
            if reason is None and artifact.ragged:
                subject, clip_name = _clip_path(f"{subjects[index]}/{clips[index]}")
                reason = _clip_problem(group, f"clips/{artifact.ragged}/{subject}/{clip_name}", int(n_frames[index]))
            report.checked += 1
            if reason is not None:
                report.damaged.append(Damage(ids[index], name, reason))
                if repair:
                    group["done"][name][int(index)] = False
    if repair:
        report.partial_files = _remove_partial_files(store_path_of(group))
    return report


def _flags(array: zarr.Array, n: int) -> np.ndarray:
    """The flags, read chunk by chunk so that one damaged flag reads as not done, not as an error."""
    try:
        return array[:n].astype(bool)
    except Exception:
        flags = np.zeros(n, bool)
        for index in range(n):
            try:
                flags[index] = bool(array[index])
            except Exception:
                flags[index] = False
        return flags


def _chunk_problem(array: zarr.Array, index: int) -> str | None:
    chunk = (int(index),) + (0,) * (array.ndim - 1)
    key = f"{array.path}/{array.metadata.encode_chunk_key(chunk)}"
    if not sync(array.store.exists(key)):
        return f"{array.path}: chunk missing"
    try:
        values = array[int(index)]
    except Exception as error:
        return f"{array.path}: chunk does not decode ({type(error).__name__})"
    if values.dtype.kind == "f" and np.isnan(values).all():
        return f"{array.path}: chunk holds no values"
    return None


def _clip_problem(group: zarr.Group, path: str, frames: int) -> str | None:
    if path not in group:
        return f"{path}: missing"
    array = group[path]
    if array.shape[0] != frames:
        return f"{path}: {array.shape[0]} frames, the sample has {frames}"
    for chunk in range(array.nchunks):
        start = chunk * array.chunks[0]
        key = f"{array.path}/{array.metadata.encode_chunk_key((chunk,) + (0,) * (array.ndim - 1))}"  # (T, S, S[, 3])
        if not sync(array.store.exists(key)):
            return f"{path}: frames {start}.. missing"
        try:
            array[start: start + array.chunks[0]]
        except Exception as error:
            return f"{path}: frames {start}.. do not decode ({type(error).__name__})"
    return None


def _remove_partial_files(folder: Path) -> int:
    removed = 0
    for parent, _, files in os.walk(folder):
        for file in files:
            if file.endswith(".partial"):
                try:
                    os.unlink(os.path.join(parent, file))
                    removed += 1
                except OSError:
                    pass
    return removed
