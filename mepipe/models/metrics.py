"""Micro-expression recognition metrics as the papers define them: UF1, UAR and accuracy.

The MER papers (MEGC2019; Liu et al. 2022, ``shared/papers/mobilevit-transfer-svm.md``,
"Experimental Setup") score a leave-one-subject-out run on the predictions of all folds pooled
together, with, for C classes and TP_c, FP_c, FN_c, N_c the true positives, false positives,
false negatives and true samples of class c::

    UF1 = 1/C * sum_c  2 TP_c / (2 TP_c + FP_c + FN_c)     (= 2 P_c R_c / (P_c + R_c))
    UAR = 1/C * sum_c  TP_c / N_c                          (N_c = TP_c + FN_c)
    accuracy = sum_c TP_c / N                               (N = number of samples)

Labels are integer class indices in ``[0, n_classes)``. The confusion matrix has the true class in
its rows and the predicted class in its columns, so TP_c is its diagonal, N_c its row sums and
TP_c + FP_c its column sums.

Which classes the 1/C averages run over, when a class does not occur everywhere:

- UF1 averages over the classes that occur in ``y_true`` or ``y_pred`` (the labels
  ``sklearn.metrics.f1_score(average="macro")`` uses by default). A class absent from both has
  2TP + FP + FN = 0, its F1 is undefined, and it is not counted. A class only predicted (never
  true) has TP = 0 and FP > 0, so its F1 is 0 and it is counted. When every class occurs this is
  the papers' 1/C sum.
- UAR averages recall over the classes that occur in ``y_true`` (N_c > 0); recall is undefined for
  the others. This equals ``sklearn.metrics.balanced_accuracy_score``, and
  ``recall_score(average="macro")`` whenever every predicted class also occurs in the truth.

Inputs are checked: a :class:`ValueError` names what was expected for inputs of different
lengths, empty inputs, labels outside ``[0, n_classes)`` and labels that are not integers
(floats are accepted only when they hold whole numbers).

:func:`score` gives the three metrics with the confusion matrix as :class:`Scores`;
:func:`score_by_dataset` scores the pooled predictions of a composite run as a whole
(``"overall"``) and per source dataset; :func:`summarise` gives mean and sample standard deviation
over repeated runs (seeds)::

    per_seed = [score_by_dataset(y, p, datasets, 3) for y, p in runs]
    summarise(per_seed)["overall"]["uf1"]   # (mean, std)

This module is pure numpy (scikit-learn serves as the independent reference in the tests).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: The metrics :func:`summarise` reports, in this order.
METRICS = ("uf1", "uar", "accuracy")


# --------------------------------------------------------------------------------------------
# validation


def _labels(values: Any, name: str) -> np.ndarray:
    """``values`` as a 1-D int64 array, or a ValueError saying what was expected."""
    try:
        array = np.asarray(values)
    except Exception as error:  # ragged nested sequences and the like
        raise ValueError(f"{name}: expected a 1-D sequence of integer class indices ({error})") from None
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D sequence of integer class indices, "
                         f"got an array of shape {array.shape}")
    if array.dtype.kind in "iu":
        return array.astype(np.int64, copy=False)
    if array.dtype.kind == "f":
        if array.size and not (np.all(np.isfinite(array)) and np.all(array == np.round(array))):
            bad = array[~(np.isfinite(array) & (array == np.round(array)))][:1].tolist()[0]
            raise ValueError(f"{name}: expected integer class indices, got the non-integer label {bad!r}")
        return array.astype(np.int64)
    if array.size == 0:
        return np.zeros(0, dtype=np.int64)
    raise ValueError(f"{name}: expected integer class indices, got values of dtype {array.dtype} "
                     f"(first: {array[:1].tolist()[0]!r})")


def _n_classes(n_classes: Any) -> int:
    if isinstance(n_classes, (bool, np.bool_)) or not isinstance(n_classes, (int, np.integer)):
        raise ValueError(f"n_classes: expected a positive integer, got {n_classes!r}")
    if n_classes < 1:
        raise ValueError(f"n_classes: expected a positive integer, got {n_classes}")
    return int(n_classes)


def _pair(y_true: Any, y_pred: Any, n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Checked ``(y_true, y_pred)``: same length, not empty, labels in ``[0, n_classes)``."""
    true, pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if len(true) != len(pred):
        raise ValueError(f"y_true and y_pred: expected the same length, got {len(true)} and {len(pred)}")
    if len(true) == 0:
        raise ValueError("y_true and y_pred: expected at least one sample, got empty inputs")
    if n_classes is not None:
        for name, array in (("y_true", true), ("y_pred", pred)):
            outside = (array < 0) | (array >= n_classes)
            if outside.any():
                raise ValueError(f"{name}: expected labels in [0, {n_classes}), "
                                 f"got {int(array[outside][0])}")
    return true, pred


# --------------------------------------------------------------------------------------------
# metrics


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """(C, C) int64 counts: rows are the true class, columns the predicted class."""
    n_classes = _n_classes(n_classes)
    true, pred = _pair(y_true, y_pred, n_classes)
    counts = np.bincount(true * n_classes + pred, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes).astype(np.int64)


def _check_confusion(confusion: Any) -> np.ndarray:
    matrix = np.asarray(confusion)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"confusion: expected a non-empty square (C, C) matrix, got shape {matrix.shape}")
    if matrix.dtype.kind not in "iu":
        if matrix.dtype.kind != "f" or not np.all(matrix == np.round(matrix)):
            raise ValueError(f"confusion: expected integer counts, got dtype {matrix.dtype}")
    matrix = matrix.astype(np.int64)
    if (matrix < 0).any():
        raise ValueError("confusion: expected non-negative counts")
    return matrix


def _uf1_from_confusion(confusion: np.ndarray) -> float:
    tp = np.diag(confusion).astype(np.float64)
    fp = confusion.sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp
    denominator = 2 * tp + fp + fn
    present = denominator > 0          # classes in y_true or y_pred
    if not present.any():
        raise ValueError("confusion: expected at least one sample, got an empty matrix")
    return float(np.mean(2 * tp[present] / denominator[present]))


def _uar_from_confusion(confusion: np.ndarray) -> float:
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1)
    present = support > 0              # classes in y_true
    if not present.any():
        raise ValueError("confusion: expected at least one sample, got an empty matrix")
    return float(np.mean(tp[present] / support[present]))


def _accuracy_from_confusion(confusion: np.ndarray) -> float:
    total = confusion.sum()
    if total == 0:
        raise ValueError("confusion: expected at least one sample, got an empty matrix")
    return float(np.trace(confusion) / total)


def uf1(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> float:
    """Unweighted F1: mean over the classes present in ``y_true`` or ``y_pred`` of 2TP/(2TP+FP+FN)."""
    return _uf1_from_confusion(confusion_matrix(y_true, y_pred, n_classes))


def uar(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> float:
    """Unweighted average recall: mean over the classes present in ``y_true`` of TP_c / N_c."""
    return _uar_from_confusion(confusion_matrix(y_true, y_pred, n_classes))


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    """Share of samples whose prediction equals the truth."""
    true, pred = _pair(y_true, y_pred)
    return float(np.mean(true == pred))


# --------------------------------------------------------------------------------------------
# scores


@dataclass(frozen=True, eq=False)
class Scores:
    """The metrics of one set of pooled predictions, with its confusion matrix (read-only)."""

    uf1: float
    uar: float
    accuracy: float
    n: int
    confusion: np.ndarray  # (C, C), rows true, columns predicted

    def __post_init__(self) -> None:
        matrix = _check_confusion(self.confusion)
        matrix.setflags(write=False)
        object.__setattr__(self, "confusion", matrix)
        for name in METRICS:
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "n", int(self.n))

    @property
    def n_classes(self) -> int:
        return int(self.confusion.shape[0])

    @classmethod
    def from_confusion(cls, confusion: Any) -> Scores:
        """The scores of a confusion matrix (rows true, columns predicted)."""
        matrix = _check_confusion(confusion)
        return cls(uf1=_uf1_from_confusion(matrix), uar=_uar_from_confusion(matrix),
                   accuracy=_accuracy_from_confusion(matrix), n=int(matrix.sum()), confusion=matrix)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: plain floats and ints, the confusion matrix as nested lists."""
        return {"uf1": self.uf1, "uar": self.uar, "accuracy": self.accuracy, "n": self.n,
                "confusion": self.confusion.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Scores:
        missing = [key for key in (*METRICS, "n", "confusion") if key not in d]
        if missing:
            raise ValueError(f"Scores.from_dict: expected the keys uf1, uar, accuracy, n, confusion; "
                             f"missing {', '.join(missing)}")
        return cls(uf1=d["uf1"], uar=d["uar"], accuracy=d["accuracy"], n=d["n"],
                   confusion=np.asarray(d["confusion"], dtype=np.int64))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scores):
            return NotImplemented
        return (self.uf1 == other.uf1 and self.uar == other.uar and self.accuracy == other.accuracy
                and self.n == other.n and np.array_equal(self.confusion, other.confusion))

    __hash__ = None  # type: ignore[assignment]


def score(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> Scores:
    """UF1, UAR, accuracy, sample count and confusion matrix of pooled predictions."""
    return Scores.from_confusion(confusion_matrix(y_true, y_pred, n_classes))


def score_by_dataset(y_true: Sequence[int], y_pred: Sequence[int], datasets: Sequence[str],
                     n_classes: int) -> dict[str, Scores]:
    """Scores of all samples (``"overall"``, first) and of each source dataset's samples.

    The dataset keys follow the order in which each dataset first appears in ``datasets``. With a
    single dataset the result has ``"overall"`` and that dataset (equal scores).
    """
    n_classes = _n_classes(n_classes)
    true, pred = _pair(y_true, y_pred, n_classes)
    if isinstance(datasets, str):
        raise ValueError("datasets: expected one dataset name per sample, got a single string")
    names = list(datasets)
    if len(names) != len(true):
        raise ValueError(f"datasets: expected one name per sample ({len(true)}), got {len(names)}")
    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"datasets: expected dataset names (str), got {name!r}")
    if "overall" in names:
        raise ValueError('datasets: "overall" is reserved for the scores of all samples')
    order = list(dict.fromkeys(names))
    labels = np.asarray(names, dtype=object)
    result = {"overall": score(true, pred, n_classes)}
    for name in order:
        mask = labels == name
        result[name] = score(true[mask], pred[mask], n_classes)
    return result


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    mean = float(np.mean(array))
    std = float(np.std(array, ddof=1)) if len(array) > 1 else 0.0
    return mean, std


def summarise(per_seed: Sequence[Mapping[str, Scores]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single run) over repeated runs.

    ``per_seed`` holds one mapping key -> :class:`Scores` per run (as :func:`score_by_dataset`
    gives); every run must have the same keys. The result maps each key (in the first run's order)
    to ``{"uf1": (mean, std), "uar": (mean, std), "accuracy": (mean, std)}``.
    """
    runs = list(per_seed)
    if not runs:
        raise ValueError("per_seed: expected at least one run, got none")
    keys = list(runs[0])
    if not keys:
        raise ValueError("per_seed: expected scores under at least one key, got an empty mapping")
    for index, run in enumerate(runs):
        if set(run) != set(keys):
            raise ValueError(f"per_seed: expected every run to have the keys {keys}, "
                             f"run {index} has {list(run)}")
        for key in keys:
            if not isinstance(run[key], Scores):
                raise ValueError(f"per_seed: expected Scores under {key!r} in run {index}, "
                                 f"got {type(run[key]).__name__}")
    summary: dict[str, dict[str, tuple[float, float]]] = {}
    for key in keys:
        summary[key] = {}
        for metric in METRICS:
            mean, std = _mean_std([getattr(run[key], metric) for run in runs])
            if not (math.isfinite(mean) and math.isfinite(std)):
                raise ValueError(f"per_seed: non-finite {metric} under {key!r}")
            summary[key][metric] = (mean, std)
    return summary
