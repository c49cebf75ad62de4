"""Label protocols and leave-one-subject-out folds: which samples, which labels, which folds.

:func:`select` is the one place that answers this for any (dataset or ``composite``, protocol)
pair. Later stages take its :class:`Selection` and never derive labels themselves.

Protocols, as the papers in ``shared/papers`` use them:

- ``casme2 / 5class``: happiness, disgust, repression, surprise, others. Fear and sadness are too
  rare (2 and 8 clips) and are left out, as in every 5-class CASME II result.
- ``samm / 5class``: anger, contempt, happiness, surprise, other. Disgust, fear and sadness are
  left out; 136 clips remain.
- ``smic / 3class``: negative, positive, surprise, from the folder names.
- ``composite / 3class``: the MEGC2019 composite (3DB-combined). The 442 clips and their labels come
  from the challenge's list, shipped with mepipe. LOSO runs over 68 subjects (16 SMIC, 24 CASME II,
  28 SAMM).
- ``casme2 / 3class`` and ``samm / 3class``: that dataset's part of the composite.
- The macro-expression sets have ``native`` (their own classes) and ``3class``, which follows the
  composite's rule for datasets outside its list: anger, contempt, disgust, fear, sadness ->
  negative; happiness -> positive; surprise -> surprise; anything else is left out.
- The macro-expression sets also have ``mobilevit``, the classes of MobileViT's transfer set
  (:mod:`mepipe.datasets.macro_frames`): anger, disgust, sadness -> negative; happiness ->
  positive; surprise -> surprise; contempt, fear and neutral are left out, as in the paper.
- ``manifest / native`` (its default): a manifest's emotions are free text, so its classes are
  the distinct emotions of its samples, compared without case or surrounding spaces (``Happiness``
  and ``happiness `` are one class, named ``happiness``), in sorted order; no emotion is unknown.
  The classes therefore follow the samples read (or stored): a manifest that gains an emotion
  gains a class. ``manifest / 3class`` maps them by the composite's rule (:data:`COMPOSITE_RULE`)
  and leaves every other emotion out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mepipe.datasets.coding_tables import read_composite_manifest
from mepipe.datasets.errors import DatasetError
from mepipe.datasets.layouts import get_layout, smic_clip_folder
from mepipe.datasets.macro_frames import MOBILEVIT_DATASETS, MOBILEVIT_LEFT_OUT, MOBILEVIT_PROTOCOL, MOBILEVIT_RULE
from mepipe.datasets.samples import DatasetReading, Sample

COMPOSITE_DATASETS = ("smic", "casme2", "samm")
COMPOSITE_CLASSES = ("negative", "positive", "surprise")

#: The composite's rule for clips outside its list (and the macro-expression sets).
COMPOSITE_RULE = {
    "anger": "negative", "contempt": "negative", "disgust": "negative", "fear": "negative",
    "sadness": "negative", "repression": "negative", "negative": "negative",
    "happiness": "positive", "happy": "positive", "positive": "positive",
    "surprise": "surprise",
}


@dataclass(frozen=True)
class LabelMap:
    """A dataset's classes: coded emotion (lowercase) -> class, and the emotions left out."""

    classes: tuple[str, ...]
    mapping: dict[str, str]
    excluded: frozenset[str]

    def known(self, emotion: str) -> bool:
        key = emotion.strip().lower()
        return key in self.mapping or key in self.excluded


def _identity(classes: Sequence[str], excluded: Sequence[str] = ()) -> LabelMap:
    return LabelMap(tuple(classes), {c: c for c in classes}, frozenset(excluded))


LABEL_MAPS: dict[tuple[str, str], LabelMap] = {
    ("casme2", "5class"): _identity(("happiness", "disgust", "repression", "surprise", "others"), ("fear", "sadness")),
    ("samm", "5class"): _identity(("anger", "contempt", "happiness", "surprise", "other"), ("disgust", "fear", "sadness")),
    ("smic", "3class"): _identity(COMPOSITE_CLASSES),
    ("ckplus", "native"): _identity(("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")),
    ("oulu", "native"): _identity(("anger", "disgust", "fear", "happiness", "sadness", "surprise")),
    ("jaffe", "native"): _identity(("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")),
    ("mug", "native"): _identity(("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")),
}
for _macro in ("ckplus", "oulu", "jaffe", "mug"):
    _native = LABEL_MAPS[(_macro, "native")]
    LABEL_MAPS[(_macro, "3class")] = LabelMap(
        COMPOSITE_CLASSES,
        {e: COMPOSITE_RULE[e] for e in _native.classes if e in COMPOSITE_RULE},
        frozenset(e for e in _native.classes if e not in COMPOSITE_RULE),
    )
for _macro in MOBILEVIT_DATASETS:
    _native = LABEL_MAPS[(_macro, "native")]
    LABEL_MAPS[(_macro, MOBILEVIT_PROTOCOL)] = LabelMap(
        COMPOSITE_CLASSES,
        {e: MOBILEVIT_RULE[e] for e in _native.classes if e in MOBILEVIT_RULE},
        frozenset(e for e in _native.classes if e in MOBILEVIT_LEFT_OUT),
    )

MANIFEST = "manifest"

#: Every (dataset, protocol) pair :func:`select` answers; the first protocol of a dataset is its default.
PROTOCOLS: dict[str, tuple[str, ...]] = {
    "casme2": ("5class", "3class"),
    "samm": ("5class", "3class"),
    "smic": ("3class",),
    "composite": ("3class",),
    "ckplus": ("native", "3class", MOBILEVIT_PROTOCOL),
    "oulu": ("native", "3class", MOBILEVIT_PROTOCOL),
    "jaffe": ("native", "3class", MOBILEVIT_PROTOCOL),
    "mug": ("native", "3class", MOBILEVIT_PROTOCOL),
    MANIFEST: ("native", "3class"),
}


@dataclass(frozen=True)
class Fold:
    """One leave-one-subject-out fold: indices into the selection's samples."""

    index: int
    test_subject: str
    train: np.ndarray
    test: np.ndarray


@dataclass
class Selection:
    """The samples of a protocol with their labels and LOSO folds.

    ``labels[i]`` indexes ``classes`` for ``samples[i]``; ``groups[i]`` is the sample's subject as
    ``dataset/subject`` (subjects of different datasets are different people); ``excluded`` lists
    the samples left out with the reason, ``missing`` the listed clips no reading holds.
    """

    dataset: str
    protocol: str
    classes: tuple[str, ...]
    samples: list[Sample]
    labels: np.ndarray
    groups: list[str]
    excluded: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def label_names(self) -> list[str]:
        return [self.classes[i] for i in self.labels]

    @property
    def subjects(self) -> list[str]:
        return sorted(set(self.groups), key=_natural_key)

    @property
    def folds(self) -> list[Fold]:
        return loso_folds(self.groups)

    def counts(self) -> dict[str, int]:
        return {name: int((self.labels == i).sum()) for i, name in enumerate(self.classes)}


def loso_folds(groups: Sequence[str]) -> list[Fold]:
    """One fold per subject, in natural subject order (``sub2`` before ``sub10``), deterministic."""
    groups_array = np.array(groups, dtype=object)
    folds = []
    for index, subject in enumerate(sorted(set(groups), key=_natural_key)):
        test = np.flatnonzero(groups_array == subject)
        train = np.flatnonzero(groups_array != subject)
        folds.append(Fold(index, subject, train, test))
    return folds


def default_protocol(dataset: str) -> str:
    return _protocols_of(dataset)[0]


def label_map(dataset: str, protocol: str | None = None, samples: Sequence[Sample] | None = None) -> LabelMap:
    """The label map of a single dataset's protocol (the composite has a list, not a map).

    ``samples``: the dataset's samples, which the ``manifest``'s classes are made of (every other
    dataset's are fixed and ignore them); required for ``manifest``.
    """
    protocol = protocol or default_protocol(dataset)
    if dataset == MANIFEST and protocol in PROTOCOLS[MANIFEST]:
        if samples is None:
            raise DatasetError("the manifest's classes are the emotions of its samples; pass the samples")
        return manifest_label_map(protocol, samples)
    if (dataset, protocol) in LABEL_MAPS:
        return LABEL_MAPS[(dataset, protocol)]
    if protocol == "3class" and dataset in COMPOSITE_DATASETS:
        return LabelMap(COMPOSITE_CLASSES, {e: c for e, c in COMPOSITE_RULE.items()}, frozenset({"others", "other"}))
    raise DatasetError(f"no protocol {protocol!r} for {dataset}; choose one of: {', '.join(_protocols_of(dataset))}")


def manifest_label_map(protocol: str, samples: Sequence[Sample]) -> LabelMap:
    """A manifest's classes under ``protocol``: ``native``, its distinct emotions (lowercase,
    trimmed), sorted; ``3class``, the composite's classes by :data:`COMPOSITE_RULE`, every other
    emotion left out."""
    emotions = sorted({sample.emotion.strip().lower() for sample in samples})
    if protocol == "native":
        return _identity(emotions)
    if protocol == "3class":
        return LabelMap(COMPOSITE_CLASSES, {e: COMPOSITE_RULE[e] for e in emotions if e in COMPOSITE_RULE},
                        frozenset(e for e in emotions if e not in COMPOSITE_RULE))
    raise DatasetError(f"no protocol {protocol!r} for {MANIFEST}; choose one of: {', '.join(PROTOCOLS[MANIFEST])}")


def select(dataset: str, protocol: str | None, readings: Mapping[str, DatasetReading]) -> Selection:
    """The samples, labels and folds of ``dataset`` (or ``composite``) under ``protocol``.

    ``readings`` maps dataset names to what their adapters read; the composite needs casme2, samm
    and smic. Raises DatasetError for an unknown pair or a missing reading.
    """
    protocol = protocol or default_protocol(dataset)
    if protocol not in _protocols_of(dataset):
        raise DatasetError(f"no protocol {protocol!r} for {dataset}; choose one of: {', '.join(_protocols_of(dataset))}")
    if protocol == "3class" and dataset in ("composite", "casme2", "samm"):
        return _select_from_manifest(dataset, readings)
    reading = _reading(readings, dataset)
    labels = label_map(dataset, protocol, reading.samples)
    chosen, label_ids, excluded = [], [], []
    for sample in reading.samples:
        key = sample.emotion.strip().lower()
        if key in labels.mapping:
            chosen.append(sample)
            label_ids.append(labels.classes.index(labels.mapping[key]))
        elif key in labels.excluded:
            excluded.append((sample.sample_id, f"emotion {sample.emotion!r} is not a class of {dataset} {protocol}"))
        else:
            excluded.append((sample.sample_id, f"unknown emotion {sample.emotion!r} for {dataset} {protocol}"))
    return Selection(dataset, protocol, labels.classes, chosen, np.array(label_ids, dtype=np.int64),
                     [f"{s.dataset}/{s.subject}" for s in chosen], excluded)


def _select_from_manifest(dataset: str, readings: Mapping[str, DatasetReading]) -> Selection:
    datasets = COMPOSITE_DATASETS if dataset == "composite" else (dataset,)
    by_key: dict[tuple[str, str, str], Sample] = {}
    for name in datasets:
        for sample in _reading(readings, name).samples:
            by_key[(name, sample.subject, sample.clip)] = sample
    chosen, label_ids, missing = [], [], []
    for row in read_composite_manifest():
        if row.dataset not in datasets:
            continue
        layout = get_layout(row.dataset)
        clip = smic_clip_folder(row.clip) if row.dataset == "smic" else row.clip
        key = (row.dataset, layout.subject_folder(row.subject), clip)
        sample = by_key.get(key)
        if sample is None:
            missing.append("/".join(key))
            continue
        chosen.append(sample)
        label_ids.append(COMPOSITE_CLASSES.index(row.emotion))
    listed = {id(s) for s in chosen}
    excluded = [(s.sample_id, "not in the MEGC2019 composite list") for s in by_key.values() if id(s) not in listed]
    return Selection(dataset, "3class", COMPOSITE_CLASSES, chosen, np.array(label_ids, dtype=np.int64),
                     [f"{s.dataset}/{s.subject}" for s in chosen], excluded, missing)


def _reading(readings: Mapping[str, DatasetReading], name: str) -> DatasetReading:
    if name not in readings:
        raise DatasetError(f"this protocol needs the {name} dataset, which was not read (pass its root)")
    return readings[name]


def _protocols_of(dataset: str) -> tuple[str, ...]:
    if dataset not in PROTOCOLS:
        raise DatasetError(f"unknown dataset {dataset!r}; choose one of: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[dataset]


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]
