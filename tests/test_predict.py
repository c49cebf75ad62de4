"""``mepipe predict``: a trained run applied to a frame folder or a video, and its one-line errors."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from mepipe.cli import main
from mepipe.datasets.adapters import read_dataset
from mepipe.models.loso import RunOptions, train_run

#: float32 logits of one sample against the same sample in a batch of the fold's test samples
SCORE_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def ststnet_run(variant_build, tmp_path_factory):
    """STSTNet trained LOSO on the tiny CASME II tree (its own variant, 224 px, eyes kept), with
    the final model: (run directory, store)."""
    store, _ = variant_build
    result = train_run(RunOptions("ststnet", "casme2", None, store=store, seeds=(0,), settings=("epochs=3",),
                                  out=tmp_path_factory.mktemp("runs"), name="ststnet", final=True))
    return result.directory, store


@pytest.fixture(scope="module")
def samples(tiny):
    return read_dataset("casme2", tiny).samples


def _predict(*arguments):
    result = CliRunner().invoke(main, ["predict", *map(str, arguments)])
    return result


def test_a_fold_model_gives_the_run_s_predictions_for_every_clip_of_its_subject(ststnet_run, samples):
    run, _ = ststnet_run
    with open(run / "predictions.csv", newline="") as handle:
        rows = {row["sample_id"]: row for row in csv.DictReader(handle)}
    config = json.loads((run / "config.json").read_text())
    subject = "sub01"
    clips = [sample for sample in samples if sample.subject == subject]
    assert len(clips) == 3
    for sample in clips:
        result = _predict(run, "--frames", sample.frames[0].parent, "--onset", sample.onset, "--apex", sample.apex,
                          "--offset", sample.offset, "--fold", subject, "--json")
        assert result.exit_code == 0, result.output
        answer = json.loads(result.output)
        row = rows[f"casme2/{subject}/{sample.clip}"]
        assert answer["test_subject"] == f"casme2/{subject}" and answer["predicted"] == row["predicted_class"]
        for name in config["classes"]:
            assert abs(answer["scores"][name] - float(row[f"score_{name}"])) <= SCORE_TOLERANCE, (sample.clip, name)


def test_a_video_with_the_final_model(ststnet_run, samples, tmp_path):
    from mepipe.models.predict import predict_clip
    from mepipe.pipeline.frames import decode_frames
    from mepipe.pipeline.video import write_video

    run, _ = ststnet_run
    sample = samples[0]
    frames = decode_frames(sample.frames, colour=True)
    video = tmp_path / "clip.mp4"
    codec = write_video(video, frames, 200)
    picture = tmp_path / "prediction.png"
    result = _predict(run, "--video", video, "--onset", sample.onset, "--apex", sample.apex, "--offset", sample.offset,
                      "--json", "--picture", picture)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["test_subject"] is None and answer["frames"] == len(frames) and answer["fps"] == 200
    assert abs(sum(answer["probabilities"].values()) - 1.0) < 1e-9
    assert answer["predicted"] == max(answer["probabilities"], key=answer["probabilities"].get)
    assert {"decode", "face", "flow", "strain", "model"} <= set(answer["seconds"])
    image = np.asarray(Image.open(picture).convert("L"))
    assert image.shape[1] > 800 and image.std() > 10  # panels drawn, not a blank canvas
    # the video's compression changes the pixels, hence the flow: by how much is in docs/predict.md
    from_video = predict_clip(run, video=video, onset=sample.onset, apex=sample.apex, offset=sample.offset)
    from_folder = predict_clip(run, frames=sample.frames[0].parent, onset=sample.onset, apex=sample.apex,
                               offset=sample.offset)
    difference = np.abs(from_video.model_input[:2] - from_folder.model_input[:2]).mean()
    assert codec in ("avc1", "mp4v") and 0 < difference < 0.5 * np.abs(from_folder.model_input[:2]).mean() + 0.05


def test_without_apex_or_bounds_the_apex_is_spotted_in_the_whole_clip(ststnet_run, samples):
    run, _ = ststnet_run
    result = _predict(run, "--frames", samples[0].frames[0].parent)
    assert result.exit_code == 0, result.output
    assert "the whole clip is used" in result.output and "(spotted)" in result.output


def _no_face_video(path):
    from mepipe.pipeline.video import write_video

    rng = np.random.default_rng(0)
    write_video(path, rng.integers(0, 255, (12, 120, 160, 3), dtype=np.uint8), 30)
    return path


@pytest.mark.parametrize("case, expected", [
    ("text file", "is not a readable video"),
    ("no face", "no face"),
    ("apex beyond the clip", "--apex 500 is outside the clip: it has"),
    ("no checkpoints", "has no checkpoints"),
    ("no final model", "has no final model (it was trained without --final)"),
    ("unknown fold", "has no model of a fold testing 'sub99'"),
    ("not a run", "is not a run directory"),
    ("missing folder", "does not exist"),
])
def test_bad_input_is_one_line(ststnet_run, samples, tmp_path, case, expected):
    run, _ = ststnet_run
    folder = samples[0].frames[0].parent
    if case == "text file":
        text = tmp_path / "notes.mp4"
        text.write_text("not a video\n")
        arguments = [run, "--video", text]
    elif case == "no face":
        arguments = [run, "--video", _no_face_video(tmp_path / "noise.mp4"), "--apex", 5]
    elif case == "apex beyond the clip":
        arguments = [run, "--frames", folder, "--apex", 500]
    elif case in ("no checkpoints", "no final model"):
        copy = tmp_path / "run"
        shutil.copytree(run, copy)
        if case == "no checkpoints":
            shutil.rmtree(copy / "checkpoints")
        else:
            for path in (copy / "checkpoints").glob("final.*"):
                path.unlink()
        arguments = [copy, "--frames", folder]
    elif case == "unknown fold":
        arguments = [run, "--frames", folder, "--fold", "sub99"]
    elif case == "not a run":
        arguments = [tmp_path, "--frames", folder]
    else:
        arguments = [run, "--frames", tmp_path / "nowhere"]
    result = _predict(*arguments)
    assert result.exit_code == 1, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_a_checkpoint_whose_file_changed_is_refused(ststnet_run, tmp_path, samples):
    run, _ = ststnet_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    weights = copy / "checkpoints" / "final.pt"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    result = _predict(copy, "--frames", samples[0].frames[0].parent)
    assert result.exit_code == 1 and "does not match the sha256" in result.output


def test_frame_files_are_ordered_by_the_number_in_their_names(tmp_path):
    from mepipe.models.predict import PredictError, frame_files

    for name in ("img10.jpg", "img2.jpg", "img1.png", ".img3.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [path.name for path in frame_files(tmp_path)] == ["img1.png", "img2.jpg", "img10.jpg"]
    (tmp_path / "frame10.jpg").write_bytes(b"")
    with pytest.raises(PredictError, match="frame number 10 is in more than one file name"):
        frame_files(tmp_path)


def test_only_the_checkpoints_the_run_lists_are_its_models(ststnet_run, tmp_path, samples):
    """A run that reused a directory by --name may leave an earlier run's files: they are not offered."""
    run, _ = ststnet_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = json.loads((copy / "config.json").read_text())
    config["checkpoints"]["files"] = [name for name in config["checkpoints"]["files"] if "fold01" not in name]
    (copy / "config.json").write_text(json.dumps(config))
    result = _predict(copy, "--frames", samples[0].frames[0].parent, "--fold", "sub02")
    assert result.exit_code == 1 and "has no model of a fold testing 'sub02'; folds kept: sub01" in result.output
