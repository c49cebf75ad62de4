"""An RBF SVM head kept as plain arrays: saved without pickle, evaluated without scikit-learn.

MobileViT's recipe fits scikit-learn's ``StandardScaler`` + ``SVC(kernel="rbf")`` on the network's
features (``recipes.base.fit_svm``). A checkpoint must load with ``torch.load(weights_only=True)``
and JSON, never by unpickling arbitrary objects, so :class:`SVMHead` takes the fitted arrays out
of the pipeline and computes the same decisions from them: the standardisation, the one-vs-one
decision values of libsvm, its votes for ``predict``, and scikit-learn's one-vs-rest transform for
``decision_function``. ``tests/test_svm_head.py`` checks both against scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SVMHead:
    """A fitted RBF SVM on standardised features.

    mean, scale : (F,) the scaler's ``mean_`` and ``scale_``: x -> (x - mean) / scale.
    support_vectors : (n_SV, F) in the standardised space, grouped by class (libsvm's order).
    dual_coef : (n_classes - 1, n_SV) scikit-learn's ``dual_coef_``.
    intercept : (n_classes (n_classes - 1) / 2,) scikit-learn's ``intercept_``.
    n_support : (n_classes,) support vectors of each class.
    gamma : the RBF kernel's gamma, k(x, y) = exp(-gamma |x - y|^2).
    classes : (n_classes,) the labels the SVM saw (a fold may lack a class).
    """

    mean: np.ndarray
    scale: np.ndarray
    support_vectors: np.ndarray
    dual_coef: np.ndarray
    intercept: np.ndarray
    n_support: np.ndarray
    gamma: float
    classes: np.ndarray

    @classmethod
    def from_pipeline(cls, pipeline) -> SVMHead:
        """The arrays of a fitted ``make_pipeline(StandardScaler(), SVC(kernel="rbf"))``."""
        scaler, svc = pipeline[0], pipeline[-1]
        if getattr(svc, "kernel", None) != "rbf":
            raise ValueError(f"SVMHead holds an RBF SVM, not kernel {getattr(svc, 'kernel', None)!r}")
        return cls(np.asarray(scaler.mean_, np.float64), np.asarray(scaler.scale_, np.float64),
                   np.asarray(svc.support_vectors_, np.float64), np.asarray(svc.dual_coef_, np.float64),
                   np.asarray(svc.intercept_, np.float64), np.asarray(svc.n_support_, np.int64),
                   float(svc._gamma), np.asarray(svc.classes_, np.int64))

    def arrays(self) -> dict[str, np.ndarray]:
        """Every field as an array, for a tensor file (see :meth:`from_arrays`)."""
        return {"mean": self.mean, "scale": self.scale, "support_vectors": self.support_vectors,
                "dual_coef": self.dual_coef, "intercept": self.intercept, "n_support": self.n_support,
                "gamma": np.array([self.gamma]), "classes": self.classes}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> SVMHead:
        fields = dict(arrays)
        fields["gamma"] = float(np.asarray(fields["gamma"]).reshape(-1)[0])
        return cls(**{name: value if name == "gamma" else np.asarray(value) for name, value in fields.items()})

    def _pairwise(self, features: np.ndarray) -> np.ndarray:
        """(N, n_pairs) libsvm's one-vs-one decision values: positive votes for the first class of
        the pair (pairs (0, 1), (0, 2), ..., (1, 2), ... in scikit-learn's order)."""
        x = (np.asarray(features, np.float64) - self.mean) / self.scale
        squared = ((x * x).sum(1)[:, None] + (self.support_vectors ** 2).sum(1)[None, :]
                   - 2.0 * x @ self.support_vectors.T)
        kernel = np.exp(-self.gamma * np.maximum(squared, 0.0))
        starts = np.concatenate([[0], np.cumsum(self.n_support)])
        n_classes = len(self.classes)
        if n_classes == 2:
            # scikit-learn flips the binary coefficients' sign (positive: the second class)
            return -(kernel @ self.dual_coef[0] + self.intercept[0])[:, None]
        values = []
        pair = 0
        for i in range(n_classes):
            for j in range(i + 1, n_classes):
                first, second = slice(starts[i], starts[i + 1]), slice(starts[j], starts[j + 1])
                values.append(kernel[:, first] @ self.dual_coef[j - 1, first]
                              + kernel[:, second] @ self.dual_coef[i, second] + self.intercept[pair])
                pair += 1
        return np.stack(values, axis=1)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(N,) labels: libsvm's one-vs-one votes, a tie to the lowest class (``SVC.predict``)."""
        pairwise = self._pairwise(features)
        votes = np.zeros((len(pairwise), len(self.classes)), np.int64)
        pair = 0
        for i in range(len(self.classes)):
            for j in range(i + 1, len(self.classes)):
                wins = pairwise[:, pair] > 0
                votes[wins, i] += 1
                votes[~wins, j] += 1
                pair += 1
        return self.classes[votes.argmax(1)]

    def decision_function(self, features: np.ndarray) -> np.ndarray:
        """(N, n_classes) scores as ``SVC.decision_function`` (one-vs-rest shape): votes plus
        the confidences squashed below 1/3; with two classes (N,) signed distances, positive for
        ``classes[1]``."""
        pairwise = self._pairwise(features)
        n_classes = len(self.classes)
        if n_classes == 2:
            return -pairwise[:, 0]
        votes = np.zeros((len(pairwise), n_classes))
        confidence = np.zeros((len(pairwise), n_classes))
        pair = 0
        for i in range(n_classes):
            for j in range(i + 1, n_classes):
                confidence[:, i] += pairwise[:, pair]
                confidence[:, j] -= pairwise[:, pair]
                votes[pairwise[:, pair] >= 0, i] += 1  # scikit-learn's transform counts dec < 0 for j
                votes[pairwise[:, pair] < 0, j] += 1
                pair += 1
        return votes + confidence / (3 * (np.abs(confidence) + 1))
