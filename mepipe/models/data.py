"""Torch datasets over the store: the samples of a protocol, read lazily, one item at a time.

:class:`StoreDataset` selects its samples with :func:`mepipe.pipeline.load.plan` (metadata only:
the protocol's samples whose requested artifacts are all built, their labels and LOSO folds) and
reads each item's artifacts from the Zarr store when it is asked for, so a dataset of any size
costs only its metadata in memory. The store is opened on first use in each process (never
pickled), so the dataset works in ``DataLoader`` worker processes::

    data = StoreDataset("cache/mepipe.zarr", "casme2", ["flow", "strain"], "5class", size=112)
    for fold in data.folds:
        train, test = data.subset(fold.train), data.subset(fold.test)
        loader = DataLoader(train, batch_size=32, shuffle=True, num_workers=2)

Values of an item (a dict):

- each requested artifact as a float32 tensor (C, S, S) (ragged ``frames`` / ``magnified``:
  (T, S, S)). uint8 artifacts (``face``, ``eye_mask``, ``dynamic``, ``frames``, ``magnified``) are
  scaled to 0..1 (divided by 255); float artifacts keep their stored values: flows in pixels,
  strain and the residual images as computed.
- with ``size``, every artifact is resized to (size, size) with bilinear interpolation (antialiased
  when shrinking). Displacement channels (``u``, ``v`` of ``flow`` and ``magnified_flow``) are
  multiplied by size / S, so they stay in pixels of the returned grid; strain is a ratio of
  displacements and is not scaled. A resized ``eye_mask`` has fractional values at its border.
- ``label``: int64 tensor indexing :attr:`StoreDataset.classes` (-1 without a protocol);
  ``index``: the item's position in this dataset.

Ragged clips have a different T per sample: batch them with ``batch_size=1`` or a collate
function of your own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import zarr
from torch.utils.data import Dataset

from mepipe.datasets.protocols import Fold
from mepipe.pipeline.artifacts import ARTIFACTS
from mepipe.pipeline.load import ARRAY_ARTIFACT, LoadPlan, plan, reindex_folds
from mepipe.pipeline.store import read_clip

#: Channels holding displacements in pixels, rescaled with the image.
_DISPLACEMENT = {spec.name: tuple(i for i, c in enumerate(spec.channels) if c in ("u", "v"))
                 for artifact in ARTIFACTS.values() for spec in artifact.arrays}


class StoreDataset(Dataset):
    """The samples of ``dataset`` under ``protocol`` from a built store, one dict per item.

    Parameters
    ----------
    store : path of the Zarr store.
    dataset : a group of the store or ``composite``.
    artifacts : the names to read (see :data:`mepipe.pipeline.load.LOADABLE`).
    protocol : a protocol of the dataset (``5class``, ``3class``, ``native``) or None (no labels).
    indices : positions into the protocol's selection (e.g. a LOSO fold's ``train`` / ``test``
        from :attr:`folds` of the dataset made without ``indices``); None for all.
    transform : called on each item dict, returns the item.
    size : resize every artifact to (size, size); None keeps the stored size.
    variant : the input variant to read (``320-rgb-eyes-kept``, ``pipeline.variants``); None: each
        group's own (a build without ``--for``).
    """

    def __init__(
        self,
        store: str | Path,
        dataset: str,
        artifacts: str | Sequence[str],
        protocol: str | None = None,
        indices: Sequence[int] | np.ndarray | None = None,
        transform: Callable[[dict], dict] | None = None,
        size: int | None = None,
        variant=None,
    ) -> None:
        if size is not None and (int(size) != size or size < 1):
            raise ValueError(f"size must be a positive integer, got {size!r}")
        self._plan: LoadPlan = plan(store, dataset, artifacts, protocol, variant)
        self.transform = transform
        self.size = None if size is None else int(size)
        self._select(indices)
        self._handles: dict[str, zarr.Group | zarr.Array] = {}
        self._pid = os.getpid()

    # ---------------------------------------------------------------- selection

    def _select(self, indices) -> None:
        total = len(self._plan)
        if indices is None:
            positions = np.arange(total, dtype=np.int64)
        else:
            positions = np.asarray(indices, dtype=np.int64).reshape(-1)
            if positions.size and (positions.min() < -total or positions.max() >= total):
                raise IndexError(f"indices must lie in 0..{total - 1} (the protocol's {total} samples)")
            positions = positions % max(total, 1)
        self._positions = positions
        labels = self._plan.meta.get("label")
        self._labels = labels[positions] if labels is not None else np.full(len(positions), -1, np.int64)
        group_column = self._plan.meta.get("group")
        self._loso = group_column[positions] if group_column is not None else np.zeros(0, dtype=object)
        self._folds = reindex_folds(self._plan.folds, positions, total) if len(np.unique(positions)) == len(positions) else []

    def subset(self, indices: Sequence[int] | np.ndarray) -> StoreDataset:
        """A dataset of the items ``indices`` of this one (e.g. ``fold.train``), sharing its selection."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        other = object.__new__(StoreDataset)
        other._plan = self._plan
        other.transform, other.size = self.transform, self.size
        other._select(self._positions[indices])
        other._handles, other._pid = {}, os.getpid()
        return other

    # ---------------------------------------------------------------- what a training loop needs

    @property
    def classes(self) -> tuple[str, ...]:
        return self._plan.classes

    @property
    def labels(self) -> np.ndarray:
        """(n,) int64 label of each item (-1 without a protocol)."""
        return self._labels

    @property
    def groups(self) -> np.ndarray:
        """(n,) LOSO group (``dataset/subject``) of each item; empty without a protocol."""
        return self._loso

    @property
    def folds(self) -> list[Fold]:
        """The protocol's leave-one-subject-out folds, indices into this dataset's items."""
        return self._folds

    @property
    def artifacts(self) -> tuple[str, ...]:
        return self._plan.artifacts

    @property
    def meta(self) -> dict[str, np.ndarray]:
        """The metadata columns of :func:`mepipe.pipeline.load.load`, for this dataset's items."""
        return {name: column[self._positions] for name, column in self._plan.meta.items()}

    @property
    def missing(self) -> list[tuple[str, str]]:
        return self._plan.missing

    def __len__(self) -> int:
        return len(self._positions)

    # ---------------------------------------------------------------- reading

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = {}  # an open group is never shipped to a worker: it reopens there
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def _open(self) -> dict:
        """This process's open groups and arrays (reopened after a fork: never shared with the parent)."""
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        return self._handles

    def _group(self, name: str) -> zarr.Group:
        handles = self._open()
        if name not in handles:
            handles[name] = zarr.open_group(str(self._plan.store), path=self._plan.paths.get(name, name), mode="r")
        return handles[name]

    def _array(self, group_name: str, name: str) -> zarr.Array:
        handles, key = self._open(), f"{group_name}/{name}"
        if key not in handles:
            handles[key] = self._group(group_name)[name]
        return handles[key]

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index = int(index) % len(self)
        position = int(self._positions[index])
        group_name, row = self._plan.rows[position]
        group = self._group(group_name)
        item: dict = {}
        for name in self._plan.artifacts:
            if name in ARRAY_ARTIFACT:
                value = self._array(group_name, name)[row]
            else:
                value = read_clip(group, name, f"{self._plan.meta['subject'][position]}/{self._plan.meta['clip'][position]}")
            item[name] = self._tensor(name, np.asarray(value))
        item["label"] = torch.tensor(int(self._labels[index]), dtype=torch.int64)
        item["index"] = index
        if self.transform is not None:
            item = self.transform(item)
        return item

    def _tensor(self, name: str, value: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(value))
        tensor = tensor.float().div_(255.0) if value.dtype == np.uint8 else tensor.float()
        if name in ("frames", "magnified") and tensor.ndim == 4:  # a colour clip (T, S, S, 3): resized as (T, 3, S, S)
            if self.size is None or tuple(tensor.shape[1:3]) == (self.size, self.size):
                return tensor
            shrinking = self.size < min(tensor.shape[1:3])
            moved = F.interpolate(tensor.permute(0, 3, 1, 2), size=(self.size, self.size), mode="bilinear",
                                  align_corners=False, antialias=shrinking)
            return moved.permute(0, 2, 3, 1).contiguous()
        if self.size is None or tuple(tensor.shape[-2:]) == (self.size, self.size):
            return tensor
        stored = tensor.shape[-1]
        shrinking = self.size < min(tensor.shape[-2:])
        tensor = F.interpolate(tensor[None], size=(self.size, self.size), mode="bilinear", align_corners=False,
                               antialias=shrinking)[0]
        channels = _DISPLACEMENT.get(name, ())
        if channels:
            tensor[list(channels)] *= self.size / stored
        return tensor
