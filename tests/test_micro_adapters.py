"""CASME II, SAMM and SMIC adapters, protocols and LOSO folds, on trees in the real layouts."""

import shutil
from collections import Counter

import openpyxl
import pytest

from mepipe.datasets.adapters import read_dataset
from mepipe.datasets.errors import DatasetError
from mepipe.datasets.micro import read_casme2, read_samm, read_smic
from mepipe.datasets.protocols import COMPOSITE_CLASSES, loso_folds, select
from trees import layout_tree

CASME2_EMOTIONS = {"others": 99, "disgust": 63, "happiness": 33, "repression": 27, "surprise": 25, "sadness": 8, "fear": 2}


@pytest.fixture(scope="module")
def reference_trees(tmp_path_factory, reference_dir):
    """CASME II and SAMM trees made from their coding tables, SMIC from the composite list."""
    root = tmp_path_factory.mktemp("reference_trees")
    layout_tree("casme2", root / "casme2", reference_dir / "casme2_coding.csv")
    layout_tree("samm", root / "samm", reference_dir / "samm_coding.csv")
    layout_tree("smic", root / "smic", reference_dir / "megc2019_composite.csv")
    return {name: read_dataset(name, root / name) for name in ("casme2", "samm", "smic")}


def test_casme2_reads_every_clip_of_the_table(reference_trees):
    reading = reference_trees["casme2"]
    assert len(reading.samples) == 257
    assert Counter(s.emotion for s in reading.samples) == CASME2_EMOTIONS
    five = select("casme2", "5class", reference_trees)
    assert five.counts() == {"happiness": 33, "disgust": 63, "repression": 27, "surprise": 25, "others": 99}
    assert len(five.samples) == 247 and len(five.folds) == 26
    resolved = {s.sample_id: s for s in reading.samples if s.apex_frame == -1}
    assert set(resolved) == {"casme2/sub09/EP02_02f", "casme2/sub24/EP02_07", "casme2/sub04/EP12_01f"}
    for sample in resolved.values():
        assert sample.apex_resolved and sample.apex_source == "middle"
        assert sample.onset <= sample.apex <= sample.offset
        assert "policy 'middle'" in sample.sources["apex"]
    flagged = {p.sample_id for p in reading.problems if p.check == "apex" and "-1" in p.message}
    assert flagged == set(resolved)


def test_frames_are_ordered_numerically_and_indices_match_the_sheet(reference_trees):
    sample = next(s for s in reference_trees["casme2"].samples if s.sample_id == "casme2/sub01/EP02_01f")
    assert sample.frame_numbers == tuple(range(46, 87))
    assert [p.name for p in sample.frames[:3]] == ["img46.jpg", "img47.jpg", "img48.jpg"]
    assert sample.frame_numbers[sample.onset] == 46 and sample.frame_numbers[sample.apex] == 59 and sample.frame_numbers[sample.offset] == 86
    assert (sample.onset_frame, sample.apex_frame, sample.offset_frame) == (46, 59, 86)
    assert str(sample.action_units) == "12" and sample.apex_source == "sheet"
    assert "row 2" in sample.sources["emotion"] and "Estimated Emotion" in sample.sources["emotion"]


def test_samm_and_smic(reference_trees):
    samm = reference_trees["samm"]
    assert len(samm.samples) == 159 and not samm.problems
    assert select("samm", "5class", reference_trees).counts() == {"anger": 57, "contempt": 12, "happiness": 26, "surprise": 15, "other": 26}
    smic = reference_trees["smic"]
    assert len(smic.samples) == 164
    assert all(s.apex_source == "middle" and s.apex == (s.n_frames - 1) // 2 for s in smic.samples)
    assert select("smic", None, reference_trees).counts() == {"negative": 70, "positive": 51, "surprise": 43}


def test_composite_protocol_is_the_megc2019_list(reference_trees):
    """Must-show 2: 442 samples, 68 subjects, per-dataset and per-class counts, 68 LOSO folds."""
    composite = select("composite", "3class", reference_trees)
    assert len(composite.samples) == 442 and not composite.missing
    assert Counter(s.dataset for s in composite.samples) == {"smic": 164, "casme2": 145, "samm": 133}
    assert composite.counts() == {"negative": 250, "positive": 109, "surprise": 83}
    assert composite.classes == COMPOSITE_CLASSES
    assert len(composite.subjects) == 68
    folds = composite.folds
    assert len(folds) == 68
    groups = composite.groups
    held_out = set()
    for fold in folds:
        assert {groups[i] for i in fold.test} == {fold.test_subject}  # exactly one subject held out
        assert fold.test_subject not in {groups[i] for i in fold.train}
        assert len(fold.train) + len(fold.test) == 442
        held_out.add(fold.test_subject)
    assert len(held_out) == 68
    # deterministic: the same folds every time
    again = select("composite", "3class", reference_trees).folds
    assert [f.test_subject for f in again] == [f.test_subject for f in folds]


def test_casme2_3class_is_its_part_of_the_composite(reference_trees):
    three = select("casme2", "3class", reference_trees)
    assert three.counts() == {"negative": 88, "positive": 32, "surprise": 25}


def test_loso_folds_order_subjects_naturally():
    folds = loso_folds(["casme2/sub10", "casme2/sub2", "casme2/sub2", "casme2/sub1"])
    assert [f.test_subject for f in folds] == ["casme2/sub1", "casme2/sub2", "casme2/sub10"]
    assert list(folds[1].test) == [1, 2]


def test_cropped_casme2_tree(tmp_path):
    plans = layout_tree("casme2", tmp_path / "raw", subjects=1, clips_per_subject=2)
    cropped = tmp_path / "dataset" / "Cropped"
    for plan in plans:
        folder = cropped / plan.subject / plan.clip
        folder.mkdir(parents=True)
        for n in plan.frame_numbers:
            (folder / f"reg_img{n}.jpg").touch()
    shutil.copy(tmp_path / "raw" / "CASME2-coding-20140508.xlsx", tmp_path / "dataset")
    reading = read_casme2(tmp_path / "dataset")
    assert len(reading.samples) == 2 and reading.samples[0].frames[0].name.startswith("reg_img")
    assert not reading.problems


def test_csv_export_of_the_sheet_is_read(tmp_path):
    layout_tree("casme2", tmp_path, subjects=1, clips_per_subject=2)
    sheet = tmp_path / "CASME2-coding-20140508.xlsx"
    rows = list(openpyxl.load_workbook(sheet).active.iter_rows(values_only=True))
    sheet.unlink()
    with open(tmp_path / "CASME2-coding-20140508.csv", "w") as handle:
        for row in rows:
            handle.write(",".join("" if v is None else str(v) for v in row) + "\n")
    reading = read_casme2(tmp_path)
    assert len(reading.samples) == 2 and not reading.problems


def test_samm_header_on_row_14_is_found(tmp_path):
    layout_tree("samm", tmp_path, subjects=1, clips_per_subject=2)
    sheet = tmp_path / "SAMM_Micro_FACS_Codes_v2.xlsx"
    workbook = openpyxl.load_workbook(sheet)
    workbook.active.insert_rows(1)
    workbook.save(sheet)
    assert len(read_samm(tmp_path).samples) == 2


# --- bad input: each message names the file and the row or clip --------------------------------


@pytest.fixture
def small_casme2(tmp_path):
    layout_tree("casme2", tmp_path / "casme2", subjects=2, clips_per_subject=2)
    return tmp_path / "casme2"


def _edit_sheet(root, row, column_name, value):
    path = root / "CASME2-coding-20140508.xlsx"
    workbook = openpyxl.load_workbook(path)
    sheet = workbook.active
    header = [c.value for c in sheet[1]]
    sheet.cell(row=row, column=header.index(column_name) + 1, value=value)
    workbook.save(path)


def test_missing_sheet(small_casme2):
    (small_casme2 / "CASME2-coding-20140508.xlsx").unlink()
    with pytest.raises(DatasetError, match=r"no annotation sheet; expected CASME2-coding-\*\.xlsx"):
        read_casme2(small_casme2)


def test_unreadable_xlsx(small_casme2):
    (small_casme2 / "CASME2-coding-20140508.xlsx").write_bytes(b"this is not a workbook")
    with pytest.raises(DatasetError, match="CASME2-coding-20140508.xlsx: cannot read it as an xlsx workbook"):
        read_casme2(small_casme2)


def test_missing_column_is_named(small_casme2):
    path = small_casme2 / "CASME2-coding-20140508.xlsx"
    workbook = openpyxl.load_workbook(path)
    workbook.active.delete_cols(4)  # ApexFrame
    workbook.save(path)
    with pytest.raises(DatasetError, match=r"CASME2-coding-20140508.xlsx, row 1: missing column 'ApexFrame'"):
        read_casme2(small_casme2)


def test_text_where_a_frame_number_belongs(small_casme2):
    _edit_sheet(small_casme2, 3, "OnsetFrame", "fifty")
    reading = read_casme2(small_casme2)
    problem = next(p for p in reading.problems if p.check == "sheet")
    assert str(problem) == "CASME2-coding-20140508.xlsx, row 3, column 'OnsetFrame': 'fifty' is not a frame number; expected an integer"
    assert len(reading.samples) == 3  # the other clips are read


def test_empty_clip_folder(small_casme2):
    folder = next(small_casme2.glob("sub01/*"))
    for frame in folder.iterdir():
        frame.unlink()
    reading = read_casme2(small_casme2)
    problem = next(p for p in reading.problems if p.check == "empty clip")
    assert problem.where == f"sub01/{folder.name}" and problem.fatal
    assert len(reading.samples) == 3


def test_bad_roots_and_options(tmp_path):
    with pytest.raises(DatasetError, match="no such folder; expected the CASME II dataset root"):
        read_casme2(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="no CASME II clip folders found"):
        read_casme2(tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset 'casme3'"):
        read_dataset("casme3", tmp_path)
    with pytest.raises(DatasetError, match="option 'sheet' does not apply to smic"):
        read_dataset("smic", tmp_path, sheet="x.xlsx")
    with pytest.raises(DatasetError, match="apex policy 'spot' needs the apex-spotting feature"):
        read_smic(tmp_path, apex_policy="spot")


def test_smic_vis_subset(tmp_path):
    for clip, emotion in (("s3_po_01", "positive"), ("s3_sur_02", "surprise")):
        folder = tmp_path / "VIS" / "s3" / "micro" / emotion / clip
        folder.mkdir(parents=True)
        for number in (9, 10, 11, 12):
            (folder / f"image{number:06d}.bmp").touch()
    (tmp_path / "VIS" / "s3" / "micro" / "happy").mkdir()
    reading = read_smic(tmp_path, subset="VIS")
    assert [(s.clip, s.emotion, s.frame_numbers) for s in reading.samples] == [
        ("s3_po_01", "positive", (9, 10, 11, 12)), ("s3_sur_02", "surprise", (9, 10, 11, 12))]
    assert [p.check for p in reading.problems] == ["emotion"] and "happy" in reading.problems[0].message


# --- onset, offset and duplicate rows: fatal when the clip is unusable, else resolved and said so --


def _sheet_rows(root):
    return list(openpyxl.load_workbook(root / "CASME2-coding-20140508.xlsx").active.iter_rows(min_row=2, values_only=True))


def _first_clip(root):
    """(sample_id, first frame, last frame) of the clip on sheet row 2."""
    sample = read_casme2(root).samples[0]
    return sample.sample_id, sample.frame_numbers[0], sample.frame_numbers[-1]


@pytest.mark.parametrize("onset_shift, offset_shift", [(5, -20), (30, 2)], ids=["offset-before-folder", "onset-after-folder"])
def test_onset_after_offset_names_the_row_not_the_frames(small_casme2, onset_shift, offset_shift):
    """The inverted window used to be clamped first and reported as lying outside the frames."""
    sample_id, first, last = _first_clip(small_casme2)
    onset, offset = (first + onset_shift, first + offset_shift) if offset_shift < 0 else (last + onset_shift, last + offset_shift)
    _edit_sheet(small_casme2, 2, "OnsetFrame", onset)
    _edit_sheet(small_casme2, 2, "OffsetFrame", offset)
    reading = read_casme2(small_casme2)
    [problem] = [p for p in reading.problems if p.sample_id == sample_id]
    assert problem.check == "onset after offset" and problem.fatal
    assert str(problem) == f"CASME2-coding-20140508.xlsx, row 2: onset {onset} comes after offset {offset}; expected onset <= offset"
    assert sample_id not in {s.sample_id for s in reading.samples} and len(reading.samples) == 3


def test_empty_onset_with_an_offset_before_the_folder_uses_the_whole_folder(small_casme2):
    sample_id, first, last = _first_clip(small_casme2)
    _edit_sheet(small_casme2, 2, "OnsetFrame", "")  # value=None would leave the cell as it is
    _edit_sheet(small_casme2, 2, "OffsetFrame", first - 10)
    reading = read_casme2(small_casme2)
    sample = next(s for s in reading.samples if s.sample_id == sample_id)
    assert (sample.onset, sample.offset) == (0, sample.n_frames - 1)
    window = next(p for p in reading.problems if p.sample_id == sample_id and p.check == "missing frames")
    assert not window.fatal and f"onset..offset empty..{first - 10} lies outside the frames" in window.message
    assert window.message.endswith("the whole folder is used")


def test_a_window_inside_a_numbering_gap_is_fatal(small_casme2):
    sample_id, first, last = _first_clip(small_casme2)
    folder = small_casme2 / sample_id.split("/", 1)[1]
    gap = first + 3
    (folder / f"img{gap}.jpg").unlink()
    _edit_sheet(small_casme2, 2, "OnsetFrame", gap)
    _edit_sheet(small_casme2, 2, "OffsetFrame", gap)
    reading = read_casme2(small_casme2)
    fatal = [p for p in reading.problems if p.sample_id == sample_id and p.fatal]
    assert [p.message for p in fatal] == [f"no frame of {sample_id.split('/', 1)[1]} lies in onset..offset {gap}..{gap}"]
    assert sample_id not in {s.sample_id for s in reading.samples}


def test_a_row_repeated_exactly_is_ignored_with_a_warning(small_casme2):
    path = small_casme2 / "CASME2-coding-20140508.xlsx"
    workbook = openpyxl.load_workbook(path)
    workbook.active.append(list(_sheet_rows(small_casme2)[0]))
    workbook.save(path)
    reading = read_casme2(small_casme2)
    [problem] = [p for p in reading.problems if p.check == "duplicate clip"]
    assert not problem.fatal and problem.where == "CASME2-coding-20140508.xlsx, row 6"
    assert problem.message.endswith("repeats row 2 exactly; this row is ignored")
    assert len(reading.samples) == 4


def test_rows_that_code_one_clip_differently_leave_it_unusable(small_casme2):
    path = small_casme2 / "CASME2-coding-20140508.xlsx"
    first = list(_sheet_rows(small_casme2)[0])
    first[-1] = "surprise" if first[-1] != "surprise" else "disgust"
    workbook = openpyxl.load_workbook(path)
    workbook.active.append(first)
    workbook.save(path)
    reading = read_casme2(small_casme2)
    [problem] = [p for p in reading.problems if p.check == "duplicate clip"]
    assert problem.fatal and "is also on row 2, with a different Estimated Emotion; neither row is used" in problem.message
    assert problem.sample_id not in {s.sample_id for s in reading.samples} and len(reading.samples) == 3
