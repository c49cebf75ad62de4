"""Trained models kept in a run directory, and loaded back without unpickling anything.

``mepipe train`` writes ``checkpoints/`` in its run directory: for each kept fold
``seed<S>-fold<FF>.pt`` and ``.json``, and with ``--final`` ``final.pt`` / ``final.json``, one
model trained on every subject. The ``.pt`` file is a flat ``{name: tensor}`` dictionary saved
with ``torch.save`` and read with ``torch.load(weights_only=True)``: the network's state
(``network.*``), the input scaling fitted on the training subjects (``normaliser.*``) and an SVM
head's arrays (``head.*``). The ``.json`` file says everything else, in plain text:

- ``model``, ``options`` (every option of the recipe), ``classes`` (the protocol's, in score order),
  ``shape`` (what rebuilds the same network: ``in_chans`` ...), ``images_only``, ``head``;
- ``seed``, ``fold``, ``test_subject`` (None for the final model), ``train_subjects``;
- ``inputs``: the input variant, the artifacts the recipe reads, and per dataset group read the
  build's parameters of each artifact and the group's frame rate: what ``mepipe predict``
  computes a new clip's inputs with;
- ``file``, ``sha256``, ``bytes`` of the tensor file (checked when loading), ``mepipe``, ``torch``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mepipe import __version__

#: The folder of a run directory that holds its checkpoints.
CHECKPOINTS = "checkpoints"
FORMAT = "mepipe-checkpoint/1"
#: Which fold models ``mepipe train --checkpoints`` keeps: every seed's, the first seed's, none.
KEEP_CHOICES = ("all", "first-seed", "none")


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged or not mepipe's; the message names the file."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: its recipe, options and trained model, and its JSON record."""

    recipe: object
    options: object
    trained: object  # recipes.base.TrainedModel
    meta: dict
    path: Path

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.meta["classes"])


def checkpoint_stem(seed: int | None, fold: int | None) -> str:
    """``seed0-fold03``, or ``final`` for the model trained on every subject."""
    return "final" if fold is None else f"seed{seed}-fold{fold:02d}"


def save_checkpoint(directory: Path, stem: str, recipe, options, trained, meta: dict) -> dict:
    """Write ``directory/stem.pt`` and ``directory/stem.json``; returns the JSON record.

    ``meta`` adds the run's facts (seed, fold, subjects, inputs) to what the trained model says.
    The tensor file is written first and renamed into place, then the record that names its
    sha256, so that a record never vouches for a file that is not complete.
    """
    from mepipe.models.recipes import options_dict

    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"network.{name}": value.detach().cpu().contiguous()
               for name, value in trained.network.state_dict().items()}
    if trained.normaliser is not None:
        tensors.update({f"normaliser.{name}": value.detach().cpu().contiguous()
                        for name, value in trained.normaliser.state_dict().items()})
    if trained.head is not None:
        tensors.update({f"head.{name}": torch.from_numpy(np.ascontiguousarray(value))
                        for name, value in trained.head.arrays().items()})
    weights = directory / f"{stem}.pt"
    partial = weights.with_suffix(".pt.partial")
    torch.save(tensors, partial)
    partial.replace(weights)
    record = {
        "format": FORMAT, "model": recipe.name, "options": options_dict(options), "classes": list(meta.pop("classes")),
        "shape": dict(trained.shape), "images_only": bool(trained.images_only),
        "normaliser": trained.normaliser is not None, "head": "svm" if trained.head is not None else None,
        **meta,
        "file": weights.name, "sha256": file_sha256(weights), "bytes": weights.stat().st_size,
        "mepipe": __version__, "torch": torch.__version__,
    }
    (directory / f"{stem}.json").write_text(json.dumps(record, indent=2, default=json_default) + "\n")
    return record


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """The checkpoint whose record is ``path`` (``.json``, or its ``.pt``), ready to predict.

    Raises :class:`CheckpointError` naming the file when the record is not a mepipe checkpoint's,
    the tensor file is missing or does not match its recorded sha256, or its tensors do not fit
    the network the record describes.
    """
    from mepipe.models.recipes import OptionError, get_recipe
    from mepipe.models.recipes.base import Normaliser, TrainedModel
    from mepipe.models.svm_head import SVMHead

    path = Path(path).with_suffix(".json")
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint record ({error})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a mepipe checkpoint record (expected format {FORMAT})")
    weights = path.with_name(meta["file"])
    if not weights.is_file():
        raise CheckpointError(f"{weights} is missing (named by {path.name})")
    if file_sha256(weights) != meta["sha256"]:
        raise CheckpointError(f"{weights} does not match the sha256 its record {path.name} gives: the file was "
                              "changed or damaged")
    try:
        recipe = get_recipe(meta["model"])
        options = options_from_dict(recipe.Options, meta["options"])
    except OptionError as error:
        raise CheckpointError(f"{path}: {error}") from None
    tensors = torch.load(weights, map_location="cpu", weights_only=True)
    parts: dict[str, dict[str, torch.Tensor]] = {"network": {}, "normaliser": {}, "head": {}}
    for name, value in tensors.items():
        part, _, rest = name.partition(".")
        if part not in parts:
            raise CheckpointError(f"{weights}: unexpected tensor {name!r}")
        parts[part][rest] = value
    network = recipe.network(options, len(meta["classes"]), **meta.get("shape", {}))
    try:
        network.load_state_dict(parts["network"], strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{weights}: its weights do not fit the {meta['model']} network its record "
                              f"describes ({first})") from None
    network.to(device).eval()
    normaliser = None
    if meta.get("normaliser"):
        normaliser = Normaliser(parts["normaliser"]["mean"], parts["normaliser"]["scale"])
    head = SVMHead.from_arrays({k: v.numpy() for k, v in parts["head"].items()}) if meta.get("head") == "svm" else None
    trained = TrainedModel(network, len(meta["classes"]), dict(meta.get("shape", {})), normaliser, head,
                           bool(meta.get("images_only")))
    return Checkpoint(recipe, options, trained, meta, path)


def run_checkpoints(run: str | Path) -> list[dict]:
    """The records of the checkpoints run directory ``run``'s last run kept (empty when none).

    Only the files its ``config.json`` lists count: a run that reused a directory by ``--name``
    may leave an earlier run's checkpoints beside its own, and those are not its models. A run
    that stopped before it ended lists none.
    """
    run = Path(run)
    folder = run / CHECKPOINTS
    try:
        listed = set(json.loads((run / "config.json").read_text()).get("checkpoints", {}).get("files", []))
    except (OSError, ValueError, AttributeError):
        return []
    records = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (isinstance(record, dict) and record.get("format") == FORMAT
                and f"{CHECKPOINTS}/{record.get('file')}" in listed):
            records.append({**record, "path": str(path)})
    return records


def options_from_dict(options_type, values: dict):
    """The recipe's options dataclass from a record's ``options`` (lists back to tuples)."""
    from mepipe.models.recipes import OptionError

    fields = {field.name: field for field in dataclasses.fields(options_type)}
    unknown = [name for name in values if name not in fields]
    if unknown:
        raise OptionError(f"options {', '.join(unknown)} are not {options_type.__name__}'s (a newer mepipe's run?)")
    defaults = options_type()
    converted = {name: tuple(value) if isinstance(getattr(defaults, name), tuple) else value
                 for name, value in values.items()}
    return dataclasses.replace(defaults, **converted)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def json_default(value):
    """``json.dumps``' ``default``: numpy scalars and arrays, paths."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
