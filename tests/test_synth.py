"""`mepipe synth` end to end: layouts, sheets, ground truth, measurable motion, determinism, errors."""

import csv
import hashlib
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pytest
from click.testing import CliRunner

from mepipe.cli import main
from mepipe.datasets.layouts import get_layout
from mepipe.features.face import detect_faces
from mepipe.synth.generate import SynthOptions, synthesize
from mepipe.synth.ground_truth import GroundTruth, face_evaluation_mask

CASME2_COLUMNS = ["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", None, "Action Units", "Estimated Emotion"]


def _frames(root: Path, entry: dict, layout) -> list[Path]:
    return [root / entry["path"] / layout.frame_name(entry["subject"], entry["clip"], n)
            for n in range(entry["first_frame"], entry["last_frame"] + 1)]


def test_demo_set_has_the_casme2_layout_and_sheet(demo_set):
    root = demo_set.root
    assert demo_set.clips == 36 and demo_set.subjects == 6
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [f"sub0{i}" for i in range(1, 7)]
    truth = GroundTruth(root)
    layout = get_layout("casme2")
    frames = 0
    for entry in truth.clips:
        paths = _frames(root, entry, layout)
        assert sorted(p.name for p in (root / entry["path"]).iterdir()) == sorted(p.name for p in paths)
        frames += len(paths)
    assert frames == demo_set.frames
    image = cv2.imread(str(paths[0]), cv2.IMREAD_UNCHANGED)
    assert image.shape == (480, 640, 3) and paths[0].read_bytes()[:2] == b"\xff\xd8"  # JPEG
    sheet = openpyxl.load_workbook(root / "CASME2-coding-20140508.xlsx").active
    rows = list(sheet.iter_rows(values_only=True))
    assert list(rows[0]) == CASME2_COLUMNS
    assert len(rows) == 37 and all(isinstance(r[0], int) for r in rows[1:])
    # every class of the 5-class protocol is present
    assert set(demo_set.emotions) == {"happiness", "disgust", "repression", "surprise", "others"}
    assert demo_set.blinks > 0


def test_ground_truth_matches_the_sheet(demo_set):
    truth = GroundTruth(demo_set.root)
    sheet = openpyxl.load_workbook(demo_set.root / "CASME2-coding-20140508.xlsx").active
    rows = list(sheet.iter_rows(min_row=2, values_only=True))
    for entry, row in zip(truth.clips, rows):
        assert f"sub{row[0]:02d}" == entry["subject"] and row[1] == entry["clip"]
        assert (row[2], row[3], row[4]) == (entry["onset"], entry["apex"], entry["offset"])
        assert row[7] == entry["emotion"]
        flow = truth.expression_flow(entry["subject"], entry["clip"])
        assert flow.shape == (2, 480, 640)
        assert 0.5 <= np.hypot(*flow).max() <= 4.0 + 1e-2  # micro-expression amplitudes at 640x480
        assert np.abs(truth.head_flow(entry["subject"], entry["clip"])).max() < 6.0


@pytest.mark.parametrize("every", [pytest.param(1, marks=pytest.mark.slow), 9])
def test_tvl1_recovers_the_true_expression_field(demo_set, every):
    """Must-show 4: OpenCV's TV-L1 onset -> apex recovers the expression, EPE <= 0.3 px on average.

    Every clip with ``make test-all`` (the ``slow`` marker); every 9th in the default suite.

    The flow is computed on a crop around the face (the face plus a margin of one IOD, as the
    pipeline's aligned crops are) and scored over the face with the eyes excluded; TV-L1 sees
    expression and head motion together, so its field minus the true head field is compared with
    the true expression field.
    """
    truth = GroundTruth(demo_set.root)
    layout = get_layout("casme2")
    tvl1 = cv2.optflow.DualTVL1OpticalFlow_create()
    errors, still = [], []
    for entry in truth.clips[::every]:
        subject, clip = entry["subject"], entry["clip"]
        onset = cv2.imread(str(demo_set.root / entry["path"] / layout.frame_name(subject, clip, entry["true_onset"])), cv2.IMREAD_GRAYSCALE)
        apex = cv2.imread(str(demo_set.root / entry["path"] / layout.frame_name(subject, clip, entry["true_apex"])), cv2.IMREAD_GRAYSCALE)
        landmarks = truth.landmarks(subject, clip, entry["true_onset"])
        margin = np.hypot(*(landmarks[45] - landmarks[36]))
        x0, y0 = np.maximum(landmarks.min(axis=0) - margin, 0).astype(int)
        x1, y1 = np.minimum(landmarks.max(axis=0) + margin, [640, 480]).astype(int)
        flow = tvl1.calc(onset[y0:y1, x0:x1], apex[y0:y1, x0:x1], None).transpose(2, 0, 1)
        expression = truth.expression_flow(subject, clip)[:, y0:y1, x0:x1]
        head = truth.head_flow(subject, clip)[:, y0:y1, x0:x1]
        face = face_evaluation_mask(landmarks, (480, 640))[y0:y1, x0:x1]
        errors.append(np.hypot(*(flow - head - expression))[face].mean())
        still.append(np.hypot(*expression)[face].mean())
    mean_epe = float(np.mean(errors))
    print(f"TV-L1 expression EPE over {len(errors)} clips: mean {mean_epe:.3f} px, max {max(errors):.3f} px; "
          f"zero-flow EPE {np.mean(still):.3f} px")
    assert mean_epe <= 0.3
    # the motion is real: a still field would be much further off
    assert mean_epe < 0.5 * np.mean(still)


@pytest.mark.parametrize("every", [pytest.param(3, marks=pytest.mark.slow), 9])
def test_dlib_finds_exactly_one_face_in_the_frames(demo_set, every):
    """Must-show 3 on every 3rd frame with `make test-all`, every 9th in the default suite;
    `benchmarks/synth.py --detect-all` counts every frame."""
    truth = GroundTruth(demo_set.root)
    layout = get_layout("casme2")
    paths = [p for entry in truth.clips for p in _frames(demo_set.root, entry, layout)][::every]
    one_face = sum(len(detect_faces(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE))) == 1 for p in paths)
    assert one_face / len(paths) >= 0.99, f"{one_face}/{len(paths)}"


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path):
    one = synthesize(SynthOptions(layout="casme2", out=tmp_path / "a", subjects=1, clips_per_subject=2, seed=5, workers=1))
    two = synthesize(SynthOptions(layout="casme2", out=tmp_path / "b", subjects=1, clips_per_subject=2, seed=5, workers=2))
    assert _tree_digest(one.root) == _tree_digest(two.root)
    other = synthesize(SynthOptions(layout="casme2", out=tmp_path / "c", subjects=1, clips_per_subject=2, seed=6, workers=1))
    assert _tree_digest(other.root) != _tree_digest(one.root)


def test_samm_smic_and_ckplus_layouts(tmp_path):
    samm = synthesize(SynthOptions(layout="samm", out=tmp_path / "samm", subjects=1, clips_per_subject=2, workers=1))
    frame = next(samm.root.glob("006/006_*/006_*.jpg"))
    assert cv2.imread(str(frame), cv2.IMREAD_UNCHANGED).shape == (650, 960)  # grayscale
    rows = list(openpyxl.load_workbook(samm.root / "SAMM_Micro_FACS_Codes_v2.xlsx").active.iter_rows(values_only=True))
    assert rows[12][:4] == ("Subject", "Filename", "Inducement Code", "Onset Frame") and rows[13][0] == 6

    smic = synthesize(SynthOptions(layout="smic", out=tmp_path / "smic", subjects=1, clips_per_subject=3, workers=1))
    folders = sorted(str(p.relative_to(smic.root)) for p in smic.root.glob("HS/s1/micro/*/*"))
    assert folders == ["HS/s1/micro/negative/s1_ne_01", "HS/s1/micro/positive/s1_po_01", "HS/s1/micro/surprise/s1_sur_01"]
    assert all(p.suffix == ".bmp" and p.name.startswith("reg_image") for p in smic.root.glob("HS/s1/micro/*/*/*"))
    assert smic.sheet is None and all(c["apex"] is None for c in GroundTruth(smic.root).clips)

    ckplus = synthesize(SynthOptions(layout="ckplus", out=tmp_path / "ck", subjects=1, clips_per_subject=2, workers=1))
    truth = GroundTruth(ckplus.root)
    for entry in truth.clips:
        label = ckplus.root / f"Emotion/S005/{entry['clip']}/S005_{entry['clip']}_{entry['last_frame']:08d}_emotion.txt"
        assert float(label.read_text()) == entry["ckplus_code"]
        assert entry["true_apex"] == entry["last_frame"] and entry["amplitude_px"] >= 8.0  # macro-expression
    assert (ckplus.root / "cohn-kanade-images/S005/001/S005_001_00000001.png").is_file()


def test_coding_table_clips_are_reproduced_exactly(tmp_path, reference_dir):
    rows = list(csv.DictReader(open(reference_dir / "casme2_coding.csv")))
    chosen = [r for r in rows if r["apex"] == "-1"][:1] + [r for r in rows if r["action_units"] == "?"][:1] + rows[:2]
    table = tmp_path / "coding.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    made = synthesize(SynthOptions(layout="casme2", out=tmp_path / "tree", coding=table, workers=2))
    truth = GroundTruth(made.root)
    for row, entry in zip(chosen, truth.clips):
        assert (entry["subject"], entry["clip"]) == (row["subject"], row["clip"])
        frames = sorted(int(p.stem[3:]) for p in (made.root / row["subject"] / row["clip"]).glob("img*.jpg"))
        assert frames == list(range(int(row["first_frame"]), int(row["last_frame"]) + 1))
        assert entry["action_units"] == row["action_units"] and entry["emotion"] == row["emotion"]
        assert entry["apex"] == int(row["apex"])
        if row["apex"] == "-1":
            assert entry["apex_source"] == "drawn" and entry["onset"] <= entry["true_apex"] <= entry["offset"]
        if row["action_units"] == "?":
            assert entry["action_units_source"] == "emotion"
    sheet = list(openpyxl.load_workbook(made.root / "CASME2-coding-20140508.xlsx").active.iter_rows(min_row=2, values_only=True))
    assert [r[3] for r in sheet] == [int(r["apex"]) for r in chosen]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--layout", "casme3"], "unknown layout 'casme3'"),
        (["--faces", "/nonexistent/faces"], "--faces /nonexistent/faces: not a readable folder"),
        (["--subjects", "0"], "--subjects and --clips-per-subject must be at least 1"),
        (["--preview", "preview.jpg"], "the preview is a PNG"),
        (["--preview", "/proc/no/such/preview.png"], "cannot create its folder"),
        (["--coding", "/nonexistent/coding.csv"], "/nonexistent/coding.csv: no such file"),
        (["--layout", "ckplus", "--coding", "/nonexistent/coding.csv"], "CK+ has no coding table"),
    ],
)
def test_bad_options_end_with_one_clear_line(tmp_path, arguments, message):
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "out"), *arguments])
    assert result.exit_code != 0
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.output
    assert "Traceback" not in result.output


def test_photo_without_a_face_is_named(tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    cv2.imwrite(str(faces / "wall.png"), np.full((300, 300, 3), 128, np.uint8))
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "out"), "--faces", str(faces)])
    assert result.exit_code != 0
    assert "no face found in" in result.output and "wall.png" in result.output


def test_faces_folder_with_a_real_face_is_used(tmp_path):
    from skimage import data

    faces = tmp_path / "faces"
    faces.mkdir()
    cv2.imwrite(str(faces / "astronaut.jpg"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    made = synthesize(SynthOptions(layout="casme2", out=tmp_path / "out", subjects=1, clips_per_subject=1, faces=faces, workers=1))
    assert GroundTruth(made.root).manifest["faces"] == [str(faces / "astronaut.jpg")]


def test_malformed_coding_table_is_named(tmp_path):
    table = tmp_path / "broken.csv"
    table.write_text("subject,clip,onset,apex,offset,action_units,emotion,first_frame,last_frame,n_frames\n"
                     "sub01,EP02_01f,46,fifty,86,12,happiness,46,86,41\n")
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "out"), "--coding", str(table)])
    assert result.exit_code != 0
    assert "broken.csv" in result.output and "row 2" in result.output and "apex" in result.output


def test_refuses_to_write_into_a_foreign_folder(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    result = CliRunner().invoke(main, ["synth", "--out", str(tmp_path / "mine")])
    assert result.exit_code != 0 and "not made by mepipe synth" in result.output
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
