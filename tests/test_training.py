"""Training stages: the loop's pieces, the LOSO runner, run directories, and one fold of each model.

The tiny composite store (casme2, samm and smic clips of the MEGC2019 list, 7 samples of 6
subjects, and a 9-clip CK+) is built once for the module at 48 px.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import f1_score, recall_score

from checkpoints import assert_checkpoints_reproduce

from mepipe.cli import main
from mepipe.models.loso import RunError, RunOptions, evaluate_run, train_run
from mepipe.models.metrics import uar, uf1
from mepipe.models.recipes import OptionError, apply_settings
from mepipe.models.recipes.mobilevit import _progressive_unfreezing
from mepipe.models.recipes.ststnet import STSTNetOptions
from mepipe.models.training import (Inputs, TrainConfig, balanced_order, extract_features, fit, predict_logits,
                                    random_spatial, resolve_device, subject_split)
from mepipe.pipeline.load import load


@pytest.fixture(scope="module")
def store(model_store):
    """The session's composite with its CK+ group (one build for the models' and these tests)."""
    return model_store


# ---------------------------------------------------------------- the loop's pieces

def test_balanced_order_tops_every_class_up_to_the_largest_and_marks_only_the_copies():
    labels = np.array([0] * 6 + [1] * 2 + [2] * 3)
    order, copies = balanced_order(labels, np.random.default_rng(0))
    assert np.bincount(labels[order]).tolist() == [6, 6, 6]
    assert sorted(order[~copies].tolist()) == list(range(len(labels)))  # every sample once, untransformed
    assert set(labels[order[copies]]) == {1, 2} and copies.sum() == 4 + 3
    plain, none_copied = balanced_order(labels, np.random.default_rng(0), mode="none")
    assert sorted(plain.tolist()) == list(range(len(labels))) and not none_copied.any()
    sampled, sampled_copies = balanced_order(labels, np.random.default_rng(0), mode="sampler")
    assert np.bincount(labels[sampled]).tolist() == [6, 6, 6] and not sampled_copies.any()


def test_random_spatial_shifts_with_zeros_and_a_flip_negates_u():
    rng = np.random.default_rng(1)
    field = torch.zeros(1, 2, 8, 8)
    field[0, 0, :, 5] = 1.0  # u = +1 in column 5
    field[0, 1, :, 5] = 1.0
    seen_flip = seen_plain = False
    for _ in range(40):
        out = random_spatial(field, rng, max_shift=0.25, flip_negates=(0,))
        u, v = out[0, 0], out[0, 1]
        assert torch.equal(u.abs(), v)  # same pixels moved; only u's sign may change
        assert v.sum() <= 8  # nothing wraps around: shifted-in pixels are zero
        if u.sum() < 0:
            seen_flip = True
        elif u.sum() > 0:
            seen_plain = True
    assert seen_flip and seen_plain


def test_subject_split_holds_out_whole_training_subjects():
    groups = np.array(["a/1"] * 3 + ["a/2"] * 2 + ["b/1"] * 4 + ["b/2"])
    train, val = subject_split(groups, 0.5, np.random.default_rng(0))
    assert not set(groups[train]) & set(groups[val])
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(len(groups)))
    assert len(set(groups[val])) == 2
    with pytest.raises(ValueError, match="2 or more training subjects"):
        subject_split(np.array(["a/1"] * 3), 0.5, np.random.default_rng(0))


def test_fit_keeps_the_best_validation_epoch_and_learns_a_separable_problem():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 40)
    x = torch.from_numpy(rng.normal(size=(80, 1, 4, 4)).astype(np.float32))
    x[y == 1] += 1.5
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    config = TrainConfig(epochs=15, batch_size=16, lr=0.05, balance="none", patience=15)
    history = fit(model, x[:60], y[:60], config, seed=0, device=torch.device("cpu"), x_val=x[60:], y_val=y[60:])
    assert len(history.train_loss) == 15 and history.train_loss[-1] < history.train_loss[0]
    assert history.best_epoch == int(np.argmax(history.val_uf1))
    predicted = model(x[60:]).argmax(1).numpy()
    assert uf1(y[60:], predicted, 2) == pytest.approx(max(history.val_uf1))  # the best epoch's weights


class _ImageAndVector(torch.nn.Module):
    """Logits from a vector beside the image; the image only through a zero-initialised weight."""

    def __init__(self):
        super().__init__()
        self.image = torch.nn.Linear(16, 2)
        self.vector = torch.nn.Linear(3, 2)
        torch.nn.init.zeros_(self.image.weight)

    def forward_features(self, images, vectors):
        return torch.cat([images.flatten(1), vectors], dim=1)

    def forward(self, images, vectors):
        return self.image(images.flatten(1)) + self.vector(vectors)


def test_inputs_index_every_tensor_together_and_refuse_unequal_lengths():
    images, vectors = torch.arange(5.0).view(5, 1, 1, 1), torch.arange(10.0).view(5, 2)
    inputs = Inputs(images, vectors)
    picked = inputs[np.array([4, 1])]
    assert len(picked) == 2 and picked.images.flatten().tolist() == [4.0, 1.0]
    assert picked.tensors[1].tolist() == [[8.0, 9.0], [2.0, 3.0]]
    assert inputs[3][None].tensors[1].shape == (1, 2)  # one sample, batched again (batch-1 timing)
    assert inputs.map_images(lambda x: x * 2)[2].images.item() == 4.0
    with pytest.raises(ValueError, match="differ in their number of samples"):
        Inputs(images, vectors[:4])


def test_fit_trains_a_model_of_several_inputs_and_augments_only_the_image():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 1], 20)  # unbalanced: the augmented copies of class 0 go through random_spatial
    vectors = torch.from_numpy(rng.normal(size=(60, 3)).astype(np.float32))
    vectors[:, 0] += torch.from_numpy(np.where(y == 1, 2.0, -2.0).astype(np.float32))
    images = torch.from_numpy(rng.normal(size=(60, 1, 4, 4)).astype(np.float32))
    model = _ImageAndVector()
    config = TrainConfig(epochs=20, batch_size=16, lr=0.05, max_shift=0.25)
    history = fit(model, Inputs(images, vectors), y, config, seed=0, device=torch.device("cpu"))
    assert history.train_loss[-1] < history.train_loss[0]
    assert (predict_logits(model, Inputs(images, vectors), device=torch.device("cpu")).argmax(1).numpy() == y).mean() > 0.9
    assert extract_features(model, Inputs(images, vectors), device=torch.device("cpu")).shape == (60, 19)


def test_a_criterion_replaces_the_loss_and_sees_every_training_batch():
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 10)
    x = torch.from_numpy(rng.normal(size=(20, 1, 4, 4)).astype(np.float32))
    seen = []

    def criterion(model, inputs, targets):
        logits = model(inputs)
        seen.append(len(targets))
        # class 0 whatever the label: the trained model must follow the criterion, not the labels
        return torch.nn.functional.cross_entropy(logits, torch.zeros_like(targets)), logits

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    fit(model, x, y, TrainConfig(epochs=20, batch_size=8, lr=0.1, balance="none"), seed=0,
        device=torch.device("cpu"), criterion=criterion)
    assert seen == [8, 8, 4] * 20
    assert (model(x).argmax(1) == 0).all()


def test_progressive_unfreezing_goes_deepest_first_and_frozen_batch_norms_keep_their_statistics():
    from mepipe.models.mobilevit import mobilevit_s

    model = mobilevit_s(num_classes=3, in_chans=1)
    names = [name for name, _ in model.transfer_modules()]
    schedule = _progressive_unfreezing(model, frozen_epochs=2, every=2)
    modules = dict(model.transfer_modules())

    def trainable():
        return [name for name in names if next(modules[name].parameters()).requires_grad]

    assert trainable() == [] and not schedule(1, model)
    assert schedule(2, model) and trainable() == names[-1:]
    assert not schedule(3, model)
    assert schedule(4, model) and trainable() == names[-2:]
    schedule(100, model)
    assert trainable() == names
    # fit puts frozen batch norms in eval mode, so their running statistics stay as transferred
    model = mobilevit_s(num_classes=3, in_chans=1)
    _progressive_unfreezing(model, frozen_epochs=5, every=1)
    stem_norm = next(m for m in model.stem.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = stem_norm.running_mean.clone()
    fit(model, torch.rand(4, 1, 64, 64), np.array([0, 1, 2, 0]), TrainConfig(epochs=1, batch_size=4, balance="none"),
        seed=0, device=torch.device("cpu"))
    assert torch.equal(stem_norm.running_mean, before)


def test_settings_are_typed_and_errors_name_the_option():
    options = apply_settings(STSTNetOptions(), ["epochs=7", "lr=0.01", "balance=none"])
    assert (options.epochs, options.lr, options.balance) == (7, 0.01, "none")
    with pytest.raises(OptionError, match="no option 'epoch'; options: epochs"):
        apply_settings(STSTNetOptions(), ["epoch=7"])
    with pytest.raises(OptionError, match="expected int"):
        apply_settings(STSTNetOptions(), ["epochs=many"])
    with pytest.raises(ValueError, match="torch sees no CUDA GPU") if not torch.cuda.is_available() else _nothing():
        resolve_device("cuda")


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------- LOSO on the tiny composite

def test_loso_folds_never_share_a_subject_and_test_every_sample_once(store):
    data = load(store, "composite", ["flow"], "3class")
    groups = data.meta["group"]
    assert len(data.folds) == len(set(groups)) == 6
    tested = np.concatenate([fold.test for fold in data.folds])
    assert sorted(tested.tolist()) == list(range(len(data)))
    for fold in data.folds:
        assert not set(groups[fold.train]) & set(groups[fold.test])
        assert set(groups[fold.test]) == {fold.test_subject}
        assert len(fold.train) + len(fold.test) == len(data)


def test_a_full_ststnet_run_writes_its_directory_and_evaluate_recomputes_it(store, tmp_path):
    lines = []
    result = train_run(RunOptions("ststnet", "composite", "3class", variant="default", store=store, seeds=(0, 1), out=tmp_path,
                                  settings=("epochs=3",), name="run"), log=lines.append)
    # the first seed's fold models are kept, and reloaded they predict as the run did
    assert assert_checkpoints_reproduce(result.directory, store) == result.per_seed[0]["overall"].n
    directory = result.directory
    for name in ("config.json", "predictions.csv", "metrics.json", "metrics.md", "confusion.png", "curves.png",
                 "history.json", "log.txt"):
        assert (directory / name).is_file(), name
    config = json.loads((directory / "config.json").read_text())
    assert config["status"] == "complete" and config["options"]["epochs"] == 3 and config["seeds"] == [0, 1]
    assert config["inference_ms_per_sample"] > 0
    with open(directory / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    data = load(store, "composite", ["flow"], "3class")
    group_of = dict(zip(data.meta["sample_id"], data.meta["group"]))
    for seed in ("0", "1"):
        mine = [row for row in rows if row["seed"] == seed]
        assert sorted(row["sample_id"] for row in mine) == sorted(data.meta["sample_id"])  # each sample once
        for row in mine:
            assert group_of[row["sample_id"]] == row["test_subject"]  # tested only in its own subject's fold
    # the metrics are those of the pooled predictions, per source dataset and overall
    seed0 = [row for row in rows if row["seed"] == "0"]
    truth = np.array([int(r["label"]) for r in seed0])
    guess = np.array([int(r["predicted"]) for r in seed0])
    overall = result.per_seed[0]["overall"]
    assert overall.uf1 == pytest.approx(uf1(truth, guess, 3))
    assert overall.uar == pytest.approx(uar(truth, guess, 3))
    assert set(result.per_seed[0]) == {"overall", "casme2", "samm", "smic"}
    assert "| composite |" in result.markdown and "± " in result.markdown
    # beside the run's figures, its paper's (STSTNet's, as the MSMMT paper's Table 2 reprints them),
    # and what the run changed from the paper's settings
    metrics_md = (directory / "metrics.md").read_text()
    mean = result.summary["overall"]["uf1"]
    assert f"| composite | this run | {mean[0]:.3f} ± {mean[1]:.3f} |" in metrics_md
    assert "| composite | paper | 0.7353 | 0.7605 | — | Table 2, STSTNet[22](2019) |" in metrics_md
    assert "| casme2 | paper | 0.8382 | 0.8686 | — | Table 2, STSTNet[22](2019) |" in metrics_md
    settings = next(line for line in metrics_md.splitlines() if line.startswith("**Settings**"))
    # --variant default read the group's own 48 px variant, not STSTNet's: a deviation, as is epochs
    assert settings.startswith("**Settings**: not the paper's. Changed: inputs: variant 48-gray-eyes-zero, "
                               "not ststnet's own 224-gray-eyes-kept; options: epochs=3 (default 100).")
    assert "As the paper: weights: random initialisation" in settings
    assert config["adapters"] == {"casme2": "casme2", "samm": "samm", "smic": "smic"}
    again = evaluate_run(directory)
    assert again.summary == result.summary
    # mepipe evaluate prints again.markdown: the same paper rows and settings line
    assert again.markdown.split("#### Beside the paper")[1] == result.markdown.split("#### Beside the paper")[1]
    assert (directory / "metrics.md").read_text() == metrics_md
    assert any("fold 6/6" in line for line in lines)


def test_uf1_and_uar_of_a_run_equal_scikit_learn_on_its_pooled_predictions(store, tmp_path):
    result = train_run(RunOptions("ststnet", "composite", "3class", variant="default", store=store, seeds=(0,), out=tmp_path,
                                  settings=("epochs=2",), name="sk"))
    with open(result.directory / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    truth = [int(r["label"]) for r in rows]
    guess = [int(r["predicted"]) for r in rows]
    labels = sorted(set(truth) | set(guess))
    assert result.per_seed[0]["overall"].uf1 == pytest.approx(f1_score(truth, guess, average="macro"), abs=1e-12)
    present = sorted(set(truth))
    assert result.per_seed[0]["overall"].uar == pytest.approx(
        recall_score(truth, guess, average="macro", labels=present, zero_division=0), abs=1e-12)
    assert labels  # the pooled predictions are not empty


def test_one_fold_of_mobilevit_with_transfer_grid_search_and_svm(store, tmp_path):
    lines = []
    settings = ("size=64", "macro_epochs=2", "macro_batch_size=4", "epochs=2", "frozen_epochs=1", "unfreeze_every=1",
                "grid_batch=4", "grid_lr=0.001", "grid_epochs=1,2", "grid_validation=0.3", "svm_c=1,10")
    result = train_run(RunOptions("mobilevit", "composite", "3class", variant="default", store=store, seeds=(0,), folds=(0,),
                                  out=tmp_path, settings=settings, name="mvit"), log=lines.append)
    assert assert_checkpoints_reproduce(result.directory, store) == result.per_seed[0]["overall"].n  # the SVM head
    assert any("macro-expression transfer: 15 frames of 5 sequences of ckplus" in line for line in lines)
    history = json.loads((result.directory / "history.json").read_text())
    fold = history[0]["folds"][0]
    assert fold["notes"]["svm_c"] in (1.0, 10.0) and len(fold["notes"]["grid"]) == 2
    assert history[0]["pretrained"]["train_loss"]
    assert result.per_seed[0]["overall"].n == 2  # fold 0 tests casme2/sub01 only: its 2 clips
    config = json.loads((result.directory / "config.json").read_text())
    assert config["folds"] == [0] and config["inference_ms_per_sample"] > 0


def test_mobilevit_ablations_run_without_transfer_and_without_svm(store, tmp_path):
    result = train_run(RunOptions("mobilevit", "composite", "3class", variant="default", store=store, seeds=(0,), folds=(1,),
                                  out=tmp_path, settings=("size=64", "transfer=false", "svm=false", "grid=false",
                                                          "epochs=1", "batch_size=4")))
    with open(result.directory / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(np.isfinite(float(row["score_negative"])) for row in rows)  # softmax scores, no SVM


def test_mobilevit_transfer_without_a_macro_group_says_what_to_build(model_store, tmp_path):
    # the session store holds CK+ but no MUG: the transfer asked from MUG alone finds no group
    with pytest.raises(OptionError, match=r"needs a macro-expression group \(mug\).*--for mobilevit.*transfer=false"):
        train_run(RunOptions("mobilevit", "composite", "3class", variant="default", store=model_store, seeds=(0,), folds=(0,),
                             out=tmp_path / "runs", settings=("size=32", "macro=mug")))


@pytest.mark.parametrize("arguments, expected", [
    (["--model", "resnet"], "unknown model 'resnet'; models: ststnet, mobilevit"),
    (["--model", "ststnet", "-s", "epoch=3"], "no option 'epoch'"),
    (["--model", "ststnet", "--folds", "40"], "fold 40 does not exist: this protocol has folds 0..5"),
    (["--model", "ststnet", "--seeds", "a"], "expected comma-separated integers"),
    (["--model", "ststnet", "--device", "tpu"], "unknown device 'tpu'"),
])
def test_bad_train_options_are_one_line_errors(store, tmp_path, arguments, expected):
    runner = CliRunner()
    outcome = runner.invoke(main, ["train", "--dataset", "composite", "--protocol", "3class", "--store", str(store),
                                   "--out", str(tmp_path), "--variant", "default", *arguments])
    assert outcome.exit_code != 0
    assert expected in outcome.output and "Traceback" not in outcome.output


def test_evaluate_of_something_else_is_a_one_line_error(tmp_path):
    outcome = CliRunner().invoke(main, ["evaluate", str(tmp_path)])
    assert outcome.exit_code != 0 and "is not a finished run directory: config.json is missing" in outcome.output
    with pytest.raises(RunError):
        evaluate_run(tmp_path)


def test_the_cli_trains_and_evaluates(store, tmp_path):
    runner = CliRunner()
    outcome = runner.invoke(main, ["train", "--model", "ststnet", "--dataset", "composite", "--protocol", "3class",
                                   "--store", str(store), "--out", str(tmp_path), "--seeds", "0", "--name", "cli",
                                   "-s", "epochs=2", "--variant", "default"])
    assert outcome.exit_code == 0, outcome.output
    assert "| composite |" in outcome.output and "run directory:" in outcome.output
    evaluated = runner.invoke(main, ["evaluate", str(tmp_path / "cli")])
    assert evaluated.exit_code == 0 and "| composite |" in evaluated.output
    assert "| composite | paper | 0.7353 | 0.7605 |" in evaluated.output and "**Settings**: not the paper's" in evaluated.output


def test_without_a_protocol_training_takes_the_dataset_s_first(store, tmp_path):
    result = train_run(RunOptions("ststnet", "casme2", None, variant="default", store=store, seeds=(0,), out=tmp_path, folds=(0,),
                                  settings=("epochs=1",), name="p"))
    assert json.loads((result.directory / "config.json").read_text())["protocol"] == "5class"
