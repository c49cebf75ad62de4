"""The SVM head kept as arrays computes what scikit-learn's fitted pipeline computes."""

import numpy as np
import pytest
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mepipe.models.svm_head import SVMHead


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_decisions_and_predictions_equal_scikit_learns(classes):
    rng = np.random.default_rng(classes)
    labels = rng.integers(0, classes, 150) * 2 + 1  # labels need not be 0..k-1
    features = rng.normal(size=(150, 12))
    features[:, 0] += labels  # separable enough to have few support vectors of each class
    pipeline = make_pipeline(StandardScaler(), SVC(kernel="rbf", class_weight="balanced", C=3.0)).fit(features, labels)
    head = SVMHead.from_arrays(SVMHead.from_pipeline(pipeline).arrays())  # through the saved form
    new = rng.normal(size=(300, 12)) * 2.0
    # the same kernel sums in another order: 1e-12 covers the rounding
    np.testing.assert_allclose(head.decision_function(new), pipeline.decision_function(new), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(head.predict(new), pipeline.predict(new))


def test_only_an_rbf_svm_is_taken():
    pipeline = make_pipeline(StandardScaler(), SVC(kernel="linear")).fit(np.eye(4), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="RBF SVM"):
        SVMHead.from_pipeline(pipeline)
