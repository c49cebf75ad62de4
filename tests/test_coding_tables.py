"""Reference-format coding CSVs -> CodingRow records, and the errors for malformed ones."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from mepipe.datasets.coding_tables import CodingRow, read_coding_table, read_composite_manifest
from mepipe.datasets.errors import DatasetError

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"

CASME2_HEADER = "subject,clip,onset,apex,offset,action_units,emotion,first_frame,last_frame,n_frames"
SAMM_HEADER = (
    "subject,clip,inducement_code,onset,apex,offset,duration,type,action_units,emotion,objective_class"
)


@pytest.fixture
def reference() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference tables not found at {REFERENCE} (they live beside the repository)")
    return REFERENCE


def write_table(directory: Path, name: str, lines: list[str]) -> Path:
    path = directory / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_casme2_reference_table(reference):
    table_format, rows = read_coding_table(reference / "casme2_coding.csv")
    assert table_format == "casme2"
    assert len(rows) == 257
    assert Counter(row.emotion for row in rows) == {
        "others": 99, "disgust": 63, "happiness": 33, "repression": 27, "surprise": 25, "sadness": 8, "fear": 2,
    }
    assert sum(row.last_frame - row.first_frame + 1 for row in rows) == 17248
    assert sum(row.n_frames for row in rows) == 17248
    assert {row.dataset for row in rows} == {"casme2"}
    first = rows[0]
    assert first == CodingRow(
        dataset="casme2", subject="sub01", clip="EP02_01f", emotion="happiness", action_units="12",
        onset=46, apex=59, offset=86, first_frame=46, last_frame=86, inducement_code=None,
        objective_class=None, row_number=2,
    )
    assert [row.row_number for row in rows] == list(range(2, 259))


def test_casme2_apex_minus_one_is_kept(reference):
    _, rows = read_coding_table(reference / "casme2_coding.csv", dataset="casme2")
    unknown_apex = {(row.subject, row.clip) for row in rows if row.apex == -1}
    assert unknown_apex == {("sub09", "EP02_02f"), ("sub24", "EP02_07"), ("sub04", "EP12_01f")}
    assert all(row.apex is not None for row in rows)


def test_samm_reference_table(reference):
    table_format, rows = read_coding_table(reference / "samm_coding.csv")
    assert table_format == "samm"
    assert len(rows) == 159
    first = rows[0]
    assert (first.subject, first.clip, first.emotion, first.action_units) == ("006", "006_1_2", "Anger", "4+7")
    assert (first.onset, first.apex, first.offset) == (5562, 5588, 5632)
    assert (first.first_frame, first.last_frame, first.n_frames) == (5562, 5632, 71)
    assert (first.inducement_code, first.objective_class) == (1, "3")
    assert all(row.first_frame == row.onset and row.last_frame == row.offset for row in rows)
    assert any(" or " in row.action_units for row in rows)


def test_composite_reference_table(reference):
    table_format, rows = read_coding_table(reference / "megc2019_composite.csv")
    assert table_format == "composite"
    assert len(rows) == 442
    assert Counter(row.dataset for row in rows) == {"smic": 164, "casme2": 145, "samm": 133}
    assert Counter(row.emotion for row in rows) == {"negative": 250, "positive": 109, "surprise": 83}
    assert len({(row.dataset, row.subject) for row in rows}) == 68
    _, smic = read_coding_table(reference / "megc2019_composite.csv", dataset="smic")
    assert Counter(row.emotion for row in smic) == {"negative": 70, "positive": 51, "surprise": 43}
    assert smic[0].subject == "s01"
    assert all(row.onset is None and row.first_frame is None and row.action_units == "" for row in smic)


def test_packaged_composite_manifest_matches_the_reference(reference):
    packaged = read_composite_manifest()
    assert len(packaged) == 442
    _, from_reference = read_coding_table(reference / "megc2019_composite.csv")
    assert [(row.dataset, row.subject, row.clip, row.emotion) for row in packaged] == [
        (row.dataset, row.subject, row.clip, row.emotion) for row in from_reference
    ]
    samm = read_composite_manifest("samm")
    assert Counter(row.emotion for row in samm) == {"negative": 92, "positive": 26, "surprise": 15}
    assert Counter(row.emotion for row in read_composite_manifest("casme2")) == {
        "negative": 88, "positive": 32, "surprise": 25,
    }


def test_columns_are_found_by_name_in_any_order_and_extras_are_ignored(tmp_path):
    path = write_table(tmp_path, "shuffled.csv", [
        "Emotion,Last Frame,comment,clip,first_frame,subject,apex,onset,offset,Action Units",
        "happiness,86,hello,EP02_01f,46,sub01,,46,86,12",
    ])
    table_format, rows = read_coding_table(path)
    assert table_format == "casme2"
    assert (rows[0].subject, rows[0].clip, rows[0].apex, rows[0].n_frames) == ("sub01", "EP02_01f", None, 41)


def test_samm_empty_apex_is_none(tmp_path):
    path = write_table(tmp_path, "samm.csv", [SAMM_HEADER, "006,006_1_2,1,5562,,5632,71,Micro - 1/2,4+7,Anger,3"])
    _, rows = read_coding_table(path)
    assert rows[0].apex is None


def assert_error(path: Path, *fragments: str, dataset: str | None = None) -> str:
    with pytest.raises(DatasetError) as raised:
        read_coding_table(path, dataset=dataset)
    message = str(raised.value)
    assert "\n" not in message
    assert path.name in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_missing_column(tmp_path):
    path = write_table(tmp_path, "no_apex.csv", [
        "subject,clip,onset,offset,action_units,emotion,first_frame,last_frame,n_frames",
        "sub01,EP02_01f,46,86,12,happiness,46,86,41",
    ])
    assert_error(path, "row 1", "apex", "casme2")


def test_text_in_a_frame_column(tmp_path):
    path = write_table(tmp_path, "bad_onset.csv", [
        CASME2_HEADER,
        "sub01,EP02_01f,46,59,86,12,happiness,46,86,41",
        "sub01,EP03_02,one hundred,139,161,18,others,131,161,31",
    ])
    assert_error(path, "row 3", "column onset", "'one hundred'", "integer")


def test_duplicate_clip_names_both_rows(tmp_path):
    path = write_table(tmp_path, "twice.csv", [
        SAMM_HEADER,
        "006,006_1_2,1,5562,5588,5632,71,Micro - 1/2,4+7,Anger,3",
        "006,006_1_3,1,3912,3948,3988,77,Micro - 1/2,4,Anger,3",
        "006,006_1_2,1,5562,5588,5632,71,Micro - 1/2,4+7,Anger,3",
    ])
    assert_error(path, "row 4", "rows 2 and 4", "subject", "clip", "'006_1_2'")


def test_unknown_header_lists_every_format(tmp_path):
    path = write_table(tmp_path, "unknown.csv", ["name,frames,mood", "a,1,happy"])
    message = assert_error(path, "row 1", "matches no known coding table format")
    for column in ("first_frame", "inducement_code", "objective_class", "label", "dataset"):
        assert column in message


def test_mixed_header(tmp_path):
    path = write_table(tmp_path, "mixed.csv", ["dataset,subject,clip,label,first_frame", "casme2,sub01,EP02_01f,positive,1"])
    assert_error(path, "row 1", "casme2", "composite", "first_frame", "label")


def test_first_frame_after_last_frame(tmp_path):
    path = write_table(tmp_path, "reversed.csv", [CASME2_HEADER, "sub01,EP02_01f,46,59,86,12,happiness,86,46,41"])
    assert_error(path, "row 2", "first_frame", "last_frame")


def test_frame_count_mismatch(tmp_path):
    casme2 = write_table(tmp_path, "count.csv", [CASME2_HEADER, "sub01,EP02_01f,46,59,86,12,happiness,46,86,40"])
    assert_error(casme2, "row 2", "column n_frames", "41")
    samm = write_table(tmp_path, "duration.csv", [SAMM_HEADER, "006,006_1_2,1,5562,5588,5632,70,Micro - 1/2,4+7,Anger,3"])
    assert_error(samm, "row 2", "column duration", "71")


def test_empty_subject_or_clip(tmp_path):
    no_subject = write_table(tmp_path, "no_subject.csv", [CASME2_HEADER, ",EP02_01f,46,59,86,12,happiness,46,86,41"])
    assert_error(no_subject, "row 2", "column subject", "empty")
    no_clip = write_table(tmp_path, "no_clip.csv", ["dataset,subject,clip,label", "smic,s01, ,negative"])
    assert_error(no_clip, "row 2", "column clip", "empty")


def test_bad_action_units_cell(tmp_path):
    path = write_table(tmp_path, "bad_au.csv", [CASME2_HEADER, "sub01,EP02_01f,46,59,86,4++7,happiness,46,86,41"])
    assert_error(path, "row 2", "column action_units", "'4++7'")


def test_unknown_dataset_in_composite(tmp_path):
    path = write_table(tmp_path, "composite.csv", ["dataset,subject,clip,label", "ckplus,S005,001,negative"])
    assert_error(path, "row 2", "column dataset", "'ckplus'")


def test_table_cannot_make_another_dataset(reference):
    with pytest.raises(DatasetError, match="is a samm coding table and cannot make a casme2 set"):
        read_coding_table(reference / "samm_coding.csv", dataset="casme2")


def test_missing_empty_and_binary_files(tmp_path):
    assert_error(tmp_path / "absent.csv", "no such file")
    empty = write_table(tmp_path, "empty.csv", [""])
    assert_error(empty, "empty")
    header_only = write_table(tmp_path, "header_only.csv", [CASME2_HEADER])
    assert_error(header_only, "no data rows")
    binary = tmp_path / "sheet.xlsx"
    binary.write_bytes(b"PK\x03\x04\x14\x00\x00\x00\x08\x00\xff\xfe\x00\x00")
    assert_error(binary, "not a UTF-8 text CSV")


def test_row_numbers_count_blank_lines(tmp_path):
    path = write_table(tmp_path, "gaps.csv", [
        "dataset,subject,clip,label", "smic,s01,s01_ne_01,negative", "", "smic,s01,s01_ne_02,negative",
    ])
    _, rows = read_coding_table(path)
    assert [row.row_number for row in rows] == [2, 4]
