"""The check the model tests share: a run's kept fold models, loaded back from their files, give
exactly the predictions the run wrote for those folds' test samples."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

#: float32 networks evaluated in another batch composition: logits agree to rounding
SCORE_TOLERANCE = 1e-4


def assert_checkpoints_reproduce(directory: Path, store: Path) -> int:
    """Every fold checkpoint of run ``directory`` reloaded (``torch.load(weights_only=True)``)
    predicts its fold's test samples, read from ``store``, with the class and scores of
    ``predictions.csv``. Returns the number of samples compared."""
    from mepipe.models.checkpoint import load_checkpoint, run_checkpoints
    from mepipe.pipeline.load import load
    from mepipe.pipeline.variants import Variant

    config = json.loads((directory / "config.json").read_text())
    with open(directory / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = [record for record in run_checkpoints(directory) if record["fold"] is not None]
    assert records, f"{directory} kept no fold checkpoint"
    compared = 0
    for record in records:
        checkpoint = load_checkpoint(record["path"])
        assert checkpoint.classes == tuple(config["classes"])
        recorded = record["inputs"]["variant"]
        variant = Variant(recorded["size"], recorded["colour"], recorded["eye_fill"]) if recorded else None
        data = load(store, config["dataset"], checkpoint.recipe.artifacts, config["protocol"], variant=variant)
        x = checkpoint.recipe.inputs(data, checkpoint.options)
        ids = list(data.meta["sample_id"])
        fold_rows = [row for row in rows if int(row["seed"]) == record["seed"] and int(row["fold"]) == record["fold"]]
        assert fold_rows, record["path"]
        positions = [ids.index(row["sample_id"]) for row in fold_rows]
        predicted, scores = checkpoint.trained.predict(x[positions], "cpu")
        for row, guess, score in zip(fold_rows, predicted, scores):
            assert checkpoint.classes[int(guess)] == row["predicted_class"], row["sample_id"]
            written = np.array([float(row[f"score_{name}"]) for name in checkpoint.classes])
            np.testing.assert_allclose(score, written, rtol=SCORE_TOLERANCE, atol=SCORE_TOLERANCE,
                                       err_msg=row["sample_id"])
            compared += 1
    return compared
