"""CASME II and SAMM annotation sheets: layout as shipped, byte-identical rewrites, and untrusted
sheets refused rather than expanded."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import openpyxl
import pytest

from mepipe.datasets.annotation_sheets import read_annotation_sheet
from mepipe.datasets.errors import DatasetError
from mepipe.synth.sheets import FIXED_TIMESTAMP, SAMM_HEADER_ROW, write_casme2_sheet, write_samm_sheet

CASME2_ROWS = [
    {"subject": "sub01", "clip": "EP02_01f", "onset": 46, "apex": 59, "offset": 86,
     "action_units": "12", "emotion": "happiness"},
    {"subject": "sub04", "clip": "EP12_01f", "onset": 261, "apex": -1, "offset": 321,
     "action_units": "4+7", "emotion": "disgust"},
    {"subject": "sub26", "clip": "EP18_50", "onset": 1, "apex": 10, "offset": 40,
     "action_units": "?", "emotion": "others"},
]


@dataclass(frozen=True)
class SammRecord:
    subject: str
    clip: str
    inducement_code: int
    onset: int
    apex: int | None
    offset: int
    duration: int
    type: str
    action_units: str
    emotion: str
    objective_class: str
    notes: str | None = None


SAMM_ROWS = [
    SammRecord("006", "006_1_2", 1, 5562, 5588, 5632, 71, "Micro - 1/2", "4+7", "Anger", "3"),
    SammRecord("011", "011_2_3", 2, 100, None, 160, 61, "Micro - 1/2", "12", "Happiness", "1", notes="blink"),
    SammRecord("037", "037_3_1", 3, 900, -1, 950, 51, "Micro - 1/2", "(R6 or R12)+R15", "Other", "7"),
]


def sheet_values(path, first_row=1):
    workbook = openpyxl.load_workbook(path)
    sheet = workbook.worksheets[0]
    return sheet.title, [list(row) for row in sheet.iter_rows(min_row=first_row, values_only=True)]


def test_casme2_sheet_layout(tmp_path):
    path = tmp_path / "CASME2-coding-20140508.xlsx"
    write_casme2_sheet(path, CASME2_ROWS)
    title, rows = sheet_values(path)
    assert title == "Sheet1"
    assert rows[0] == [
        "Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame", None, "Action Units", "Estimated Emotion",
    ]
    assert rows[1] == [1, "EP02_01f", 46, 59, 86, None, 12, "happiness"]
    assert rows[2] == [4, "EP12_01f", 261, -1, 321, None, "4+7", "disgust"]
    assert rows[3] == [26, "EP18_50", 1, 10, 40, None, "?", "others"]
    assert all(type(row[0]) is int for row in rows[1:])
    assert len(rows) == 4


def test_samm_sheet_layout(tmp_path):
    path = tmp_path / "SAMM_Micro_FACS_Codes_v2.xlsx"
    write_samm_sheet(path, SAMM_ROWS)
    _, rows = sheet_values(path)
    assert rows[0][0] == "SAMM Micro-Movement Dataset"
    assert rows[1][0] == "FACS coding of micro-movements"
    assert all(value is None for row in rows[:SAMM_HEADER_ROW - 1] for value in row[1:])
    assert SAMM_HEADER_ROW == 13
    assert rows[12] == [
        "Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration",
        "Type", "Action Units", "Notes", "Estimated Emotion", "Objective Classes",
    ]
    assert rows[13] == [6, "006_1_2", 1, 5562, 5588, 5632, 71, "Micro - 1/2", "4+7", None, "Anger", 3]
    assert rows[14] == [11, "011_2_3", 2, 100, None, 160, 61, "Micro - 1/2", 12, "blink", "Happiness", 1]
    assert rows[15][4] == -1
    assert rows[15][8] == "(R6 or R12)+R15"
    assert all(type(row[0]) is int for row in rows[13:])
    assert len(rows) == 16


@pytest.mark.parametrize(
    ("writer", "rows"), [(write_casme2_sheet, CASME2_ROWS), (write_samm_sheet, SAMM_ROWS)]
)
def test_two_writes_are_byte_identical_and_clock_free(tmp_path, writer, rows):
    first, second = tmp_path / "first.xlsx", tmp_path / "second.xlsx"
    writer(first, rows)
    writer(second, rows)
    assert first.read_bytes() == second.read_bytes()

    fixed_stamp = FIXED_TIMESTAMP.strftime("%Y-%m-%dT%H:%M:%SZ")
    with zipfile.ZipFile(io.BytesIO(first.read_bytes())) as archive:
        entries = archive.infolist()
        assert entries[0].filename == "[Content_Types].xml"
        assert all(entry.date_time == FIXED_TIMESTAMP.timetuple()[:6] for entry in entries)
        core = archive.read("docProps/core.xml").decode()
    assert core.count(fixed_stamp) == 2
    properties = openpyxl.load_workbook(first).properties
    assert properties.created == FIXED_TIMESTAMP
    assert properties.modified == FIXED_TIMESTAMP


def test_rewrite_replaces_the_file_whole(tmp_path):
    path = tmp_path / "sheet.xlsx"
    write_casme2_sheet(path, CASME2_ROWS)
    write_casme2_sheet(path, CASME2_ROWS[:1])
    _, rows = sheet_values(path)
    assert len(rows) == 2
    assert [entry.name for entry in tmp_path.iterdir()] == ["sheet.xlsx"]


def test_bad_subject_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match=r"sheet row 1: subject 'subject one' is not a subject folder"):
        write_casme2_sheet(tmp_path / "bad.xlsx", [dict(CASME2_ROWS[0], subject="subject one")])
    with pytest.raises(DatasetError, match=r"sheet row 1: no 'emotion' given"):
        without_emotion = {key: value for key, value in CASME2_ROWS[0].items() if key != "emotion"}
        write_casme2_sheet(tmp_path / "bad.xlsx", [without_emotion])
    assert not (tmp_path / "bad.xlsx").exists()


# --- untrusted sheets -------------------------------------------------------------------------------

# "billion laughs": ten references per level, nine levels, 10**9 copies of "lol" once expanded
_ENTITIES = "".join(f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(1, 10))
_BILLION_LAUGHS = f'<!DOCTYPE lolz [<!ENTITY lol0 "lol">{_ENTITIES}]>'


def _with_entity_payload(path, member, target, replacement):
    """Rewrite one XML member of the xlsx zip: the DOCTYPE payload in front, ``target`` -> ``replacement``."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    xml = members[member].decode()
    assert target in xml
    members[member] = (_BILLION_LAUGHS + xml.replace(target, replacement)).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_openpyxl_parses_with_defusedxml():
    import openpyxl.xml

    assert openpyxl.xml.DEFUSEDXML is True, "defusedxml is a dependency (pyproject.toml); is it installed?"


@pytest.mark.parametrize("member, target, replacement", [
    ("xl/worksheets/sheet1.xml", "<t>EP02_01f</t>", "<t>&lol9;</t>"),
    ("xl/workbook.xml", 'name="Sheet1"', 'name="&lol9;"'),
], ids=["worksheet", "workbook"])
def test_an_entity_expansion_sheet_is_refused_naming_the_file(tmp_path, member, target, replacement):
    import openpyxl.xml

    assert openpyxl.xml.DEFUSEDXML is True  # never parse the payload without it
    path = tmp_path / "CASME2-coding-20140508.xlsx"
    write_casme2_sheet(path, CASME2_ROWS)
    _with_entity_payload(path, member, target, replacement)
    with pytest.raises(DatasetError) as raised:
        read_annotation_sheet(path, {"subject": ("Subject",), "clip": ("Filename",)}, ("subject", "clip"))
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: refused: its XML declares entities (EntitiesForbidden)")
    assert "lol" not in message
