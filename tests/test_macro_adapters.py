"""The macro-expression adapters (CK+, Oulu-CASIA, JAFFE, MUG) against trees in their published layouts.

CK+ is checked against a synthetic tree from ``mepipe synth`` and its ground truth; the other sets
against small trees of empty files (the adapters list files and never read pixels), named exactly as
the real sets name them.
"""

import re
import shutil
from pathlib import Path

import pytest

from mepipe.datasets.errors import DatasetError
from mepipe.datasets.layouts import ckplus_emotion_file
from mepipe.datasets.macro import MACRO_READERS, read_ckplus, read_jaffe, read_mug, read_oulu

OULU_EXPRESSIONS = ("Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def by_id(reading):
    return {sample.sample_id: sample for sample in reading.samples}


def problems_of(reading, check):
    return [problem for problem in reading.problems if problem.check == check]


# --- CK+ ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckplus_tree(tmp_path_factory):
    """A synthetic CK+ tree (2 subjects x 3 sequences) and its ground-truth clips, made once."""
    from mepipe.synth.generate import SynthOptions, synthesize
    from mepipe.synth.ground_truth import GroundTruth

    root = tmp_path_factory.mktemp("ckplus") / "ck"
    synthesize(SynthOptions(layout="ckplus", out=root, subjects=2, clips_per_subject=3, workers=1))
    return root, GroundTruth(root).clips


@pytest.fixture
def ckplus_copy(ckplus_tree, tmp_path):
    """A copy of the synthetic CK+ tree that a test may damage."""
    root, truth = ckplus_tree
    copy = tmp_path / "ck"
    shutil.copytree(root, copy)
    return copy, truth


def test_ckplus_samples_match_the_ground_truth(ckplus_tree):
    root, truth = ckplus_tree
    reading = read_ckplus(root)

    assert reading.dataset == "ckplus" and reading.root == root
    assert reading.problems == []
    assert [(s.subject, s.clip) for s in reading.samples] == sorted((c["subject"], c["clip"]) for c in truth)
    samples = by_id(reading)
    for clip in truth:
        sample = samples[f"ckplus/{clip['subject']}/{clip['clip']}"]
        assert sample.emotion == clip["emotion"]
        assert sample.frame_numbers == tuple(range(clip["first_frame"], clip["last_frame"] + 1))
        assert [path.name for path in sample.frames] == [
            f"{clip['subject']}_{clip['clip']}_{number:08d}.png" for number in sample.frame_numbers
        ]
        assert all(path.is_file() for path in sample.frames)
        assert sample.onset == 0
        assert sample.apex == sample.offset == sample.n_frames - 1
        assert sample.frame_numbers[sample.apex] == clip["last_frame"] == sample.apex_frame
        assert sample.apex_source == "last frame"
        assert sample.action_units.units == ()
        label = ckplus_emotion_file(clip["subject"], clip["clip"], clip["last_frame"])
        assert sample.sources["emotion"] == str(label)
        assert sample.sources["frames"] == clip["path"]
        assert "last frame" in sample.sources["apex"]


def test_ckplus_unlabelled_sequence_is_left_out_with_a_visible_note(ckplus_copy):
    root, truth = ckplus_copy
    clip = truth[0]
    (root / ckplus_emotion_file(clip["subject"], clip["clip"], clip["last_frame"])).unlink()

    reading = read_ckplus(root)

    sample_id = f"ckplus/{clip['subject']}/{clip['clip']}"
    assert sample_id not in by_id(reading)
    assert len(reading.samples) == len(truth) - 1
    [problem] = reading.problems
    assert problem.check == "unlabelled" and not problem.fatal
    assert problem.sample_id == sample_id
    assert problem.where == str(root / clip["path"])


def test_ckplus_garbage_label_is_a_fatal_problem_naming_the_file_and_content(ckplus_copy):
    root, truth = ckplus_copy
    clip = truth[1]
    label = root / ckplus_emotion_file(clip["subject"], clip["clip"], clip["last_frame"])
    label.write_text("happy-ish\n")
    out_of_range = truth[2]
    label_9 = root / ckplus_emotion_file(out_of_range["subject"], out_of_range["clip"], out_of_range["last_frame"])
    label_9.write_text("   9.0000000e+00\n")

    reading = read_ckplus(root)

    problems = {problem.where: problem for problem in reading.problems}
    assert set(problems) == {str(label), str(label_9)}
    garbage = problems[str(label)]
    assert garbage.check == "label" and garbage.fatal
    assert garbage.sample_id == f"ckplus/{clip['subject']}/{clip['clip']}"
    assert "happy-ish" in garbage.message and "1-7" in garbage.message
    assert "9.0000000e+00" in problems[str(label_9)].message
    assert len(reading.samples) == len(truth) - 2


def test_ckplus_stray_files_empty_sequence_and_label_naming_another_frame(ckplus_copy):
    root, truth = ckplus_copy
    first, second = truth[0], truth[1]
    touch(root / first["path"] / ".DS_Store")
    stray = touch(root / first["path"] / f"{first['subject']}_{first['clip']}_00000001 copy.png")
    empty = root / "cohn-kanade-images" / first["subject"] / "099"
    empty.mkdir()
    label = root / ckplus_emotion_file(second["subject"], second["clip"], second["last_frame"])
    renamed = label.with_name(f"{second['subject']}_{second['clip']}_{second['last_frame'] - 2:08d}_emotion.txt")
    label.rename(renamed)

    reading = read_ckplus(root)

    samples = by_id(reading)
    assert len(samples) == len(truth)
    [empty_problem] = problems_of(reading, "empty clip")
    assert empty_problem.fatal and empty_problem.where == str(empty)
    assert empty_problem.sample_id == f"ckplus/{first['subject']}/099"
    [stray_problem] = problems_of(reading, "stray file")
    assert stray_problem.where == str(stray) and not stray_problem.fatal
    assert samples[f"ckplus/{first['subject']}/{first['clip']}"].n_frames == first["last_frame"]
    [apex_problem] = problems_of(reading, "apex frame")
    assert not apex_problem.fatal and apex_problem.where == str(renamed)
    moved = samples[f"ckplus/{second['subject']}/{second['clip']}"]
    assert moved.apex == moved.n_frames - 1 and moved.apex_frame == second["last_frame"] - 2


def test_ckplus_without_its_label_folder_is_a_dataset_error(ckplus_copy):
    root, _ = ckplus_copy
    shutil.rmtree(root / "Emotion")
    with pytest.raises(DatasetError, match=re.escape(str(root)) + ".*Emotion"):
        read_ckplus(root)


# --- Oulu-CASIA -----------------------------------------------------------------------------------

OULU_LENGTHS = {"P001": 9, "P002": 14}


@pytest.fixture
def oulu_root(tmp_path):
    """``OriginalImg`` with VL/Strong for two subjects (frames 000.jpeg ..) and a VL/Weak decoy."""
    root = tmp_path / "OriginalImg"
    for subject, length in OULU_LENGTHS.items():
        for offset, expression in enumerate(OULU_EXPRESSIONS):
            for number in range(length + offset):
                touch(root / "VL" / "Strong" / subject / expression / f"{number:03d}.jpeg")
    for number in range(5):
        touch(root / "VL" / "Weak" / "P001" / "Anger" / f"{number:03d}.jpeg")
    touch(root / "NI" / "Strong" / "P001" / "Anger" / "000.jpeg")
    touch(root / "VL" / "Strong" / "P001" / "Anger" / ".DS_Store")
    return root


def test_oulu_reads_visible_strong_sequences_with_apex_on_the_last_frame(oulu_root):
    reading = read_oulu(oulu_root)

    assert reading.problems == []
    assert [(s.subject, s.clip) for s in reading.samples] == [
        (subject, expression) for subject in sorted(OULU_LENGTHS) for expression in OULU_EXPRESSIONS
    ]
    for sample in reading.samples:
        length = OULU_LENGTHS[sample.subject] + OULU_EXPRESSIONS.index(sample.clip)
        assert sample.dataset == "oulu" and sample.emotion == sample.clip
        assert sample.frame_numbers == tuple(range(length))
        assert [path.name for path in sample.frames] == [f"{n:03d}.jpeg" for n in range(length)]
        assert sample.onset == 0 and sample.apex == sample.offset == length - 1
        assert sample.apex_source == "last frame"
        assert sample.sources["frames"] == f"VL/Strong/{sample.subject}/{sample.clip}"


def test_oulu_reads_the_condition_asked_for_and_accepts_the_archive_folder(oulu_root):
    weak = read_oulu(oulu_root.parent, illumination="Weak")
    [sample] = weak.samples
    assert sample.sample_id == "oulu/P001/Anger" and sample.n_frames == 5
    assert sample.sources["frames"] == "OriginalImg/VL/Weak/P001/Anger"
    missing = problems_of(weak, "missing clip")
    assert [p.where for p in missing] == [str(oulu_root / "VL" / "Weak" / "P001")]
    assert not missing[0].fatal and "Disgust" in missing[0].message

    with pytest.raises(DatasetError, match="NI/Dark"):
        read_oulu(oulu_root, modality="NI", illumination="Dark")
    with pytest.raises(DatasetError, match="modality 'IR'"):
        read_oulu(oulu_root, modality="IR")


def test_oulu_empty_sequence_and_unexpected_folder(oulu_root):
    empty = oulu_root / "VL" / "Strong" / "P001" / "Fear"
    shutil.rmtree(empty)
    empty.mkdir()
    (oulu_root / "VL" / "Strong" / "P001" / "Contempt").mkdir()

    reading = read_oulu(oulu_root)

    assert "oulu/P001/Fear" not in by_id(reading)
    assert len(reading.samples) == 2 * len(OULU_EXPRESSIONS) - 1
    [empty_problem] = problems_of(reading, "empty clip")
    assert empty_problem.fatal and empty_problem.where == str(empty) and empty_problem.sample_id == "oulu/P001/Fear"
    [unexpected] = problems_of(reading, "unexpected folder")
    assert not unexpected.fatal and "Contempt" in unexpected.message


# --- JAFFE ----------------------------------------------------------------------------------------

JAFFE_FILES = {
    "KA.AN1.39.tiff": ("KA", "anger"),
    "KA.NE1.26.tiff": ("KA", "neutral"),
    "KL.DI4.21.tiff": ("KL", "disgust"),
    "KM.FE3.23.tiff": ("KM", "fear"),
    "NA.HA2.203.tiff": ("NA", "happiness"),
    "TM.SA1.190.tiff": ("TM", "sadness"),
    "YM.SU3.60.tiff": ("YM", "surprise"),
}


@pytest.fixture
def jaffe_root(tmp_path):
    """The folder the Zenodo jaffe.zip unpacks into: ``jaffe/KA.AN1.39.tiff`` and a README."""
    images = tmp_path / "jaffe"
    for name in JAFFE_FILES:
        touch(images / name)
    touch(images / "README_FIRST.txt")
    touch(images / ".DS_Store")
    return tmp_path


def test_jaffe_one_sample_per_image_labelled_from_its_name(jaffe_root):
    reading = read_jaffe(jaffe_root)

    assert reading.problems == []
    assert [s.clip for s in reading.samples] == sorted(name[: -len(".tiff")] for name in JAFFE_FILES)
    for sample in reading.samples:
        name = f"{sample.clip}.tiff"
        assert (sample.subject, sample.emotion) == JAFFE_FILES[name]
        assert sample.frames == (jaffe_root / "jaffe" / name,)
        assert sample.frame_numbers == (0,)
        assert sample.onset == sample.apex == sample.offset == 0
        assert sample.apex_source == "single image"
        assert sample.sources["frames"] == f"jaffe/{name}"
    assert by_id(reading)["jaffe/KA/KA.AN1.39"].sources["emotion"].startswith("expression code AN")


def test_jaffe_misnamed_tiff_is_reported_and_other_files_ignored(jaffe_root):
    images = jaffe_root / "jaffe"
    misnamed = touch(images / "KA.XX1.40.tiff")
    touch(images / "notes.txt")

    reading = read_jaffe(images)

    assert len(reading.samples) == len(JAFFE_FILES)
    [problem] = reading.problems
    assert problem.check == "stray file" and not problem.fatal and problem.where == str(misnamed)
    assert "KA.AN1.39.tiff" in problem.message


# --- MUG ------------------------------------------------------------------------------------------


@pytest.fixture
def mug_root(tmp_path):
    """``subjects3``: 001 with two expressions (one with two takes), 002 with a session level."""
    root = tmp_path / "subjects3"
    for number in range(13):
        touch(root / "001" / "anger" / "take000" / f"img_{number:04d}.jpg")
    for number in range(10):
        touch(root / "001" / "happiness" / "take000" / f"img_{number:04d}.jpg")
    for number in range(5, 12):
        touch(root / "001" / "happiness" / "take001" / f"img_{number:04d}.jpg")
    for number in range(4):
        touch(root / "002" / "session1" / "surprise" / "take000" / f"img_{number:04d}.jpg")
    touch(root / "001" / "anger" / "take000" / "Thumbs.db")
    return root


def test_mug_sequences_with_apex_in_the_middle(mug_root):
    reading = read_mug(mug_root)

    assert reading.problems == []
    expected = {
        "mug/001/anger_take000": ("anger", range(0, 13), 6),
        "mug/001/happiness_take000": ("happiness", range(0, 10), 4),
        "mug/001/happiness_take001": ("happiness", range(5, 12), 3),
        "mug/002/session1_surprise_take000": ("surprise", range(0, 4), 1),
    }
    assert [s.sample_id for s in reading.samples] == list(expected)
    for sample_id, sample in by_id(reading).items():
        emotion, numbers, apex = expected[sample_id]
        assert sample.emotion == emotion
        assert sample.frame_numbers == tuple(numbers)
        assert [path.name for path in sample.frames] == [f"img_{n:04d}.jpg" for n in numbers]
        assert sample.onset == 0 and sample.offset == len(numbers) - 1
        assert sample.apex == apex and sample.apex_source == "middle"
        assert "neutral" in sample.sources["apex"]
    assert by_id(reading)["mug/001/anger_take000"].sources["frames"] == "001/anger/take000"


def test_mug_accepts_the_folder_holding_subjects3_and_reports_odd_folders(mug_root):
    (mug_root / "001" / "anger" / "take002end").mkdir()
    empty = mug_root / "002" / "session1" / "surprise" / "take001"
    empty.mkdir()

    reading = read_mug(mug_root.parent)

    assert len(reading.samples) == 4
    assert reading.samples[0].sources["frames"] == "subjects3/001/anger/take000"
    [unexpected] = problems_of(reading, "unexpected folder")
    assert not unexpected.fatal and unexpected.where == str(mug_root / "001" / "anger" / "take002end")
    [empty_problem] = problems_of(reading, "empty clip")
    assert empty_problem.fatal and empty_problem.where == str(empty)
    assert empty_problem.sample_id == "mug/002/session1_surprise_take001"


# --- frame order, shared errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "reader, clip_folder, frame_name, sample_id",
    [
        (read_oulu, "VL/Strong/P001/Anger", "{}.jpeg", "oulu/P001/Anger"),
        (read_mug, "001/anger/take000", "img{}.jpg", "mug/001/anger_take000"),
    ],
)
def test_frames_are_ordered_by_number_not_by_text(tmp_path, reader, clip_folder, frame_name, sample_id):
    """Re-encoded copies drop the zero padding; img10 must still come after img9."""
    folder = tmp_path / clip_folder
    for number in range(1, 13):
        touch(folder / frame_name.format(number))

    [sample] = reader(tmp_path).samples

    assert sample.sample_id == sample_id
    assert sample.frame_numbers == tuple(range(1, 13))
    assert [path.name for path in sample.frames] == [frame_name.format(n) for n in range(1, 13)]


def test_ckplus_frames_are_ordered_by_number_not_by_text(tmp_path):
    folder = tmp_path / "cohn-kanade-images" / "S005" / "001"
    for number in (1, 2, 9, 10, 11, 12):
        touch(folder / f"S005_001_{number:08d}.png")
    (tmp_path / "Emotion" / "S005" / "001").mkdir(parents=True)
    (tmp_path / "Emotion" / "S005" / "001" / "S005_001_00000012_emotion.txt").write_text("   7.0000000e+00\n")

    [sample] = read_ckplus(tmp_path).samples

    assert sample.frame_numbers == (1, 2, 9, 10, 11, 12)
    assert sample.emotion == "surprise" and sample.apex == 5


@pytest.mark.parametrize("name", sorted(MACRO_READERS))
def test_a_missing_root_is_a_dataset_error_naming_it(tmp_path, name):
    root = tmp_path / "not-there"
    with pytest.raises(DatasetError, match=re.escape(str(root)) + ".*does not exist"):
        MACRO_READERS[name](root)


@pytest.mark.parametrize("name", sorted(MACRO_READERS))
def test_a_root_in_another_layout_is_a_dataset_error_naming_it(tmp_path, name):
    touch(tmp_path / "videos" / "clip.avi")
    with pytest.raises(DatasetError, match=re.escape(str(tmp_path)) + ".*expected") as raised:
        MACRO_READERS[name](tmp_path)
    assert "\n" not in str(raised.value)


def test_the_readers_are_registered_under_their_dataset_names():
    assert MACRO_READERS == {"ckplus": read_ckplus, "oulu": read_oulu, "jaffe": read_jaffe, "mug": read_mug}
