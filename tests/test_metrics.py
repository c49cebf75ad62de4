"""mepipe.models.metrics against scikit-learn and hand-worked cases; mepipe.models.plots outputs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
from sklearn import metrics as sk

from mepipe.models.metrics import (Scores, accuracy, confusion_matrix, score, score_by_dataset,
                                   summarise, uar, uf1)
from mepipe.models.plots import MAX_PNG_BYTES, confusion_figure, curves_figure, scores_markdown

PNG_LIMIT = 150 * 1024


# --------------------------------------------------------------------------------------------
# against scikit-learn


def _draws(n_classes: int, count: int, seed: int):
    """Random pooled predictions with every class present in the truth."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        n = int(rng.integers(n_classes, 80))
        y_true = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, n - n_classes)])
        rng.shuffle(y_true)
        # a mix of good and poor classifiers: keep the truth with probability p, else guess
        p = rng.random()
        y_pred = np.where(rng.random(n) < p, y_true, rng.integers(0, n_classes, n))
        yield y_true, y_pred


@pytest.mark.parametrize("n_classes", [3, 5])
def test_matches_sklearn_on_random_draws(n_classes):
    labels = list(range(n_classes))
    for y_true, y_pred in _draws(n_classes, 200, seed=n_classes):
        assert uf1(y_true, y_pred, n_classes) == pytest.approx(
            sk.f1_score(y_true, y_pred, average="macro", zero_division=0), abs=1e-12)
        expected_uar = sk.recall_score(y_true, y_pred, average="macro", zero_division=0)
        assert uar(y_true, y_pred, n_classes) == pytest.approx(expected_uar, abs=1e-12)
        assert uar(y_true, y_pred, n_classes) == pytest.approx(
            sk.balanced_accuracy_score(y_true, y_pred), abs=1e-12)
        assert accuracy(y_true, y_pred) == pytest.approx(sk.accuracy_score(y_true, y_pred), abs=1e-12)
        np.testing.assert_array_equal(confusion_matrix(y_true, y_pred, n_classes),
                                      sk.confusion_matrix(y_true, y_pred, labels=labels))


def test_matches_sklearn_defaults_when_classes_are_missing():
    """Classes absent from the truth (and some from both): UF1 = f1_score's default label set,
    UAR = balanced_accuracy_score."""
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 30))
        y_true = rng.integers(0, 3, n)          # classes 3 and 4 never true
        y_pred = rng.integers(0, 4, n)          # class 4 never predicted either
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected_f1 = sk.f1_score(y_true, y_pred, average="macro", zero_division=0)
            expected_uar = sk.balanced_accuracy_score(y_true, y_pred)
        assert uf1(y_true, y_pred, 5) == pytest.approx(expected_f1, abs=1e-12)
        assert uar(y_true, y_pred, 5) == pytest.approx(expected_uar, abs=1e-12)


def test_metrics_module_is_pure_numpy_and_plots_avoid_pyplot():
    code = ("import sys, mepipe.models.metrics, mepipe.models.plots; "
            "assert 'sklearn' not in sys.modules, 'sklearn'; "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------------------------
# hand-worked cases


def test_hand_worked_example():
    # y_true = 0 0 0 1 1 2, y_pred = 0 0 1 1 2 2
    # confusion (rows true): [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # class 0: TP 2, FP 0, FN 1 -> F1 4/5,  recall 2/3
    # class 1: TP 1, FP 1, FN 1 -> F1 2/4,  recall 1/2
    # class 2: TP 1, FP 1, FN 0 -> F1 2/3,  recall 1
    # UF1 = (4/5 + 1/2 + 2/3) / 3 = 59/90;  UAR = (2/3 + 1/2 + 1) / 3 = 13/18;  accuracy = 4/6
    y_true, y_pred = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(confusion_matrix(y_true, y_pred, 3),
                                  [[2, 1, 0], [0, 1, 1], [0, 0, 1]])
    assert confusion_matrix(y_true, y_pred, 3).dtype == np.int64
    assert uf1(y_true, y_pred, 3) == pytest.approx(59 / 90, abs=1e-15)
    assert uar(y_true, y_pred, 3) == pytest.approx(13 / 18, abs=1e-15)
    assert accuracy(y_true, y_pred) == pytest.approx(2 / 3, abs=1e-15)
    s = score(y_true, y_pred, 3)
    assert (s.uf1, s.uar, s.accuracy, s.n, s.n_classes) == (
        pytest.approx(59 / 90), pytest.approx(13 / 18), pytest.approx(2 / 3), 6, 3)


def test_class_absent_from_both_is_not_counted():
    # the example above with a 4th class nobody used: same UF1 and UAR (not 3/4 of them)
    y_true, y_pred = [0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2]
    assert uf1(y_true, y_pred, 4) == pytest.approx(59 / 90, abs=1e-15)
    assert uar(y_true, y_pred, 4) == pytest.approx(13 / 18, abs=1e-15)
    assert confusion_matrix(y_true, y_pred, 4).shape == (4, 4)


def test_class_only_predicted():
    # y_true = 0 0 1 1, y_pred = 0 2 1 1: class 2 is predicted once, never true
    # F1: class 0 2/3, class 1 1, class 2 0 (TP 0, FP 1)  -> UF1 = 5/9 (counted)
    # recall: class 0 1/2, class 1 1; class 2 has N = 0  -> UAR = 3/4 (not counted)
    y_true, y_pred = [0, 0, 1, 1], [0, 2, 1, 1]
    assert uf1(y_true, y_pred, 3) == pytest.approx(5 / 9, abs=1e-15)
    assert uar(y_true, y_pred, 3) == pytest.approx(3 / 4, abs=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert uar(y_true, y_pred, 3) == pytest.approx(sk.balanced_accuracy_score(y_true, y_pred))
        # recall_score(average="macro") counts class 2 as recall 0: the documented difference
        assert sk.recall_score(y_true, y_pred, average="macro", zero_division=0) == pytest.approx(0.5)


def test_perfect_and_single_sample():
    assert uf1([2, 0, 1], [2, 0, 1], 3) == uar([2, 0, 1], [2, 0, 1], 3) == 1.0
    assert (uf1([1], [1], 2), uar([1], [1], 2), accuracy([1], [1])) == (1.0, 1.0, 1.0)
    assert (uf1([1], [0], 2), uar([1], [0], 2), accuracy([1], [0])) == (0.0, 0.0, 0.0)


def test_accepted_label_types():
    expected = uf1([0, 1, 1], [0, 1, 0], 2)
    assert uf1(np.array([0, 1, 1], dtype=np.uint8), (0, 1, 0), 2) == expected
    assert uf1(np.array([0.0, 1.0, 1.0]), [0, 1, 0], 2) == expected  # whole-number floats
    assert uf1([0, 1, 1], [0, 1, 0], np.int64(2)) == expected


@pytest.mark.parametrize("call, message", [
    (lambda: uf1([0, 1], [0], 2), "same length"),
    (lambda: uar([0, 1, 2], [0, 1], 3), "same length"),
    (lambda: accuracy([0], [0, 1]), "same length"),
    (lambda: uf1([], [], 2), "at least one sample"),
    (lambda: accuracy([], []), "at least one sample"),
    (lambda: confusion_matrix([], [], 2), "at least one sample"),
    (lambda: uf1([0, 2], [0, 1], 2), r"y_true: expected labels in \[0, 2\), got 2"),
    (lambda: uar([0, 1], [0, -1], 2), r"y_pred: expected labels in \[0, 2\), got -1"),
    (lambda: confusion_matrix([0, 3], [0, 1], 3), r"labels in \[0, 3\)"),
    (lambda: uf1([0, 1.5], [0, 1], 2), "non-integer label 1.5"),
    (lambda: uar([0, 1], [0, float("nan")], 2), "non-integer label"),
    (lambda: accuracy(["a", "b"], ["a", "b"]), "integer class indices"),
    (lambda: uf1([[0, 1]], [[0, 1]], 2), "1-D"),
    (lambda: uf1([0, 1], [0, 1], 0), "n_classes: expected a positive integer"),
    (lambda: uf1([0, 1], [0, 1], 2.0), "n_classes: expected a positive integer"),
])
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------------------------
# Scores, score_by_dataset, summarise


def test_scores_round_trip_through_json():
    s = score([0, 0, 1, 2, 2], [0, 1, 1, 2, 0], 3)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert set(d) == {"uf1", "uar", "accuracy", "n", "confusion"}
    back = Scores.from_dict(d)
    assert back == s
    assert back.confusion.dtype == np.int64 and not back.confusion.flags.writeable
    with pytest.raises(ValueError, match="missing n"):
        Scores.from_dict({k: v for k, v in d.items() if k != "n"})


def test_score_by_dataset():
    rng = np.random.default_rng(3)
    names = np.array(["smic", "casme2", "samm"])[rng.integers(0, 3, 120)]
    names[:3] = ["samm", "smic", "samm"]
    y_true = rng.integers(0, 3, 120)
    y_pred = np.where(rng.random(120) < 0.6, y_true, rng.integers(0, 3, 120))
    result = score_by_dataset(y_true, y_pred, list(names), 3)
    assert list(result) == ["overall", "samm", "smic", "casme2"]
    assert result["overall"] == score(y_true, y_pred, 3)
    for name in ("samm", "smic", "casme2"):
        mask = names == name
        assert result[name] == score(y_true[mask], y_pred[mask], 3)
    assert sum(result[name].n for name in ("samm", "smic", "casme2")) == 120
    np.testing.assert_array_equal(
        sum(result[name].confusion for name in ("samm", "smic", "casme2")), result["overall"].confusion)


def test_score_by_dataset_single_dataset_and_errors():
    result = score_by_dataset([0, 1, 1], [0, 1, 0], ["casme2"] * 3, 2)
    assert list(result) == ["overall", "casme2"]
    assert result["overall"] == result["casme2"]
    with pytest.raises(ValueError, match="one name per sample"):
        score_by_dataset([0, 1], [0, 1], ["a"], 2)
    with pytest.raises(ValueError, match="reserved"):
        score_by_dataset([0, 1], [0, 1], ["overall", "a"], 2)
    with pytest.raises(ValueError, match="same length"):
        score_by_dataset([0, 1], [0], ["a", "a"], 2)


def _scores(uf1_: float, uar_: float, accuracy_: float, n: int) -> Scores:
    return Scores(uf1=uf1_, uar=uar_, accuracy=accuracy_, n=n, confusion=np.eye(3, dtype=int) * n // 3)


def test_summarise_hand_example():
    # uf1 over seeds 0.5, 0.7, 0.6: mean 0.6, sample std sqrt((0.01 + 0.01 + 0) / 2) = 0.1
    # uar 0.4, 0.4, 0.4: std 0;  accuracy 0.6, 0.9, 0.9: mean 0.8, std sqrt((0.04+0.01+0.01)/2)
    runs = [{"overall": _scores(0.5, 0.4, 0.6, 9)},
            {"overall": _scores(0.7, 0.4, 0.9, 9)},
            {"overall": _scores(0.6, 0.4, 0.9, 9)}]
    summary = summarise(runs)
    assert list(summary) == ["overall"] and list(summary["overall"]) == ["uf1", "uar", "accuracy"]
    assert summary["overall"]["uf1"] == (pytest.approx(0.6), pytest.approx(0.1))
    assert summary["overall"]["uar"] == (pytest.approx(0.4), pytest.approx(0.0, abs=1e-15))
    assert summary["overall"]["accuracy"] == (pytest.approx(0.8), pytest.approx(math.sqrt(0.03)))


def test_summarise_single_run_and_key_order():
    run = score_by_dataset([0, 1, 2, 0], [0, 1, 1, 0], ["b", "a", "b", "a"], 3)
    summary = summarise([run])
    assert list(summary) == ["overall", "b", "a"]
    for key, scores in run.items():
        for metric in ("uf1", "uar", "accuracy"):
            assert summary[key][metric] == (getattr(scores, metric), 0.0)


def test_summarise_errors():
    with pytest.raises(ValueError, match="at least one run"):
        summarise([])
    with pytest.raises(ValueError, match="same keys|the keys"):
        summarise([{"overall": _scores(.5, .5, .5, 3)}, {"x": _scores(.5, .5, .5, 3)}])


# --------------------------------------------------------------------------------------------
# figures


def _check_png(path, min_width=300, min_height=250):
    assert path.is_file()
    assert path.stat().st_size < PNG_LIMIT and path.stat().st_size <= MAX_PNG_BYTES
    image = cv2.imread(str(path))
    assert image is not None, "not a readable PNG"
    height, width = image.shape[:2]
    assert min_width <= width <= 1400 and min_height <= height <= 1000, (width, height)
    assert image.std() > 10  # not blank
    return image


def test_confusion_figure(tmp_path):
    confusion = np.array([[105, 17, 12], [22, 94, 24], [27, 21, 120]])
    path = confusion_figure(confusion, ["negative", "positive", "surprise"],
                            tmp_path / "deep" / "er" / "confusion.png", title="composite")
    assert path == tmp_path / "deep" / "er" / "confusion.png"
    _check_png(path)


def test_confusion_figure_many_classes_and_empty_row(tmp_path):
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 500, (10, 10))
    confusion[4] = 0  # a class with no samples
    _check_png(confusion_figure(confusion, [f"class {i} long name" for i in range(10)],
                                tmp_path / "c10.png"))
    with pytest.raises(ValueError, match="expected 3 names"):
        confusion_figure(np.eye(3, dtype=int), ["a", "b"], tmp_path / "bad.png")


def test_curves_figure_unequal_lengths_and_missing_keys(tmp_path):
    rng = np.random.default_rng(1)
    histories = []
    for fold in range(6):
        n = 5 + 3 * fold
        history = {"train_loss": list(np.exp(-np.arange(n) / 5) + 0.05 * rng.random(n)),
                   "val_loss": list(np.exp(-np.arange(n) / 8) + 0.3 + 0.1 * rng.random(n)),
                   "train_accuracy": list(1 - 0.6 * np.exp(-np.arange(n) / 4))}
        if fold % 2:
            history["val_accuracy"] = list(0.4 + 0.2 * rng.random(n))
        if fold == 3:
            history["val_loss"] = []  # empty: skipped
        histories.append(history)
    path = curves_figure(histories, tmp_path / "runs" / "curves.png", title="6 folds")
    assert path == tmp_path / "runs" / "curves.png"
    _check_png(path)
    # a single panel's worth of data, one fold, one epoch
    _check_png(curves_figure([{"train_loss": [0.7]}, {}], tmp_path / "sparse.png"))


def test_curves_figure_many_noisy_folds_stays_small(tmp_path):
    rng = np.random.default_rng(2)
    histories = [{key: rng.random(120) for key in ("train_loss", "train_accuracy", "val_loss",
                                                    "val_accuracy")} for _ in range(68)]
    _check_png(curves_figure(histories, tmp_path / "noisy.png"))


def test_curves_figure_errors(tmp_path):
    with pytest.raises(ValueError, match="at least one fold"):
        curves_figure([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="one value per epoch"):
        curves_figure([{"train_loss": [[1, 2]]}], tmp_path / "x.png")


# --------------------------------------------------------------------------------------------
# scores table


def test_scores_markdown_two_seeds():
    seeds = [
        {"overall": _scores(0.70, 0.65, 0.72, 20), "casme2": _scores(0.80, 0.75, 0.82, 12),
         "samm": _scores(0.60, 0.55, 0.62, 8)},
        {"overall": _scores(0.60, 0.55, 0.66, 20), "casme2": _scores(0.70, 0.65, 0.76, 12),
         "samm": _scores(0.50, 0.45, 0.56, 8)},
    ]
    # std of two values a, b = |a - b| / sqrt(2): 0.1 -> 0.071, 0.06 -> 0.042
    assert scores_markdown(seeds, title="composite 3class") == (
        "### composite 3class\n"
        "\n"
        "| dataset | UF1 | UAR | accuracy | samples |\n"
        "|:--|--:|--:|--:|--:|\n"
        "| composite | 0.650 ± 0.071 | 0.600 ± 0.071 | 0.690 ± 0.042 | 20 |\n"
        "| casme2 | 0.750 ± 0.071 | 0.700 ± 0.071 | 0.790 ± 0.042 | 12 |\n"
        "| samm | 0.550 ± 0.071 | 0.500 ± 0.071 | 0.590 ± 0.042 | 8 |\n"
        "\n"
        "Mean ± sample standard deviation over 2 seeds.\n")


def test_scores_markdown_one_seed_one_dataset():
    run = {"overall": _scores(0.71249, 0.5, 0.6666, 30), "casme2": _scores(0.71249, 0.5, 0.6666, 30)}
    assert scores_markdown([run]) == (
        "| dataset | UF1 | UAR | accuracy | samples |\n"
        "|:--|--:|--:|--:|--:|\n"
        "| casme2 | 0.712 | 0.500 | 0.667 | 30 |\n")
    only_overall = scores_markdown([{"overall": _scores(0.5, 0.5, 0.5, 3)},
                                    {"overall": _scores(0.5, 0.5, 0.5, 6)}])
    assert "| overall | 0.500 ± 0.000 | 0.500 ± 0.000 | 0.500 ± 0.000 | 3–6 |" in only_overall
