"""Action-unit strings of the CASME II and SAMM sheets -> ActionUnitSet."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mepipe.datasets.action_units import ActionUnit, parse_action_units
from mepipe.datasets.errors import DatasetError

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def reference_action_unit_cells(file_name: str) -> list[str]:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference tables not found at {REFERENCE} (they live beside the repository)")
    with open(REFERENCE / file_name, newline="", encoding="utf-8") as table:
        return [row["action_units"] for row in csv.DictReader(table)]


@pytest.mark.parametrize("file_name", ["casme2_coding.csv", "samm_coding.csv"])
def test_every_reference_cell_parses(file_name):
    cells = reference_action_unit_cells(file_name)
    assert cells
    for cell in cells:
        parsed = parse_action_units(cell)
        assert parsed.raw == cell
        assert parsed.numbers or parsed.uncertain, cell
        # The canonical string of the certain units reads back to the same certain units.
        canonical = parse_action_units(str(parsed))
        assert canonical.numbers == parsed.numbers
        assert str(canonical) == str(parsed)


@pytest.mark.parametrize(
    ("text", "canonical", "numbers"),
    [
        ("12", "12", (12,)),
        ("4+7", "4+7", (4, 7)),
        ("4+7+6", "4+6+7", (4, 6, 7)),
        ("L12", "L12", (12,)),
        ("R10", "R10", (10,)),
        ("4+R10", "4+R10", (4, 10)),
        ("L1+L2", "L1+L2", (1, 2)),
        ("1+R2+25", "1+R2+25", (1, 2, 25)),
        ("15A+17", "15A+17", (15, 17)),
        ("12C", "12C", (12,)),
        ("12+15 ", "12+15", (12, 15)),
        ("L12 + 61", "L12+61", (12, 61)),
        ("13+T18+39", "13+T18+39", (13, 18, 39)),
        ("B18+25", "B18+25", (18, 25)),
        ("A12", "A12", (12,)),
        ("A12+A7", "A7+A12", (7, 12)),
        ("A1B+A2C", "A1B+A2C", (1, 2)),
        ("A/L12", "A/L12", (12,)),
        ("7C+A12B", "7C+A12B", (7, 12)),
        ("4+6+7+9+43E", "4+6+7+9+43E", (4, 6, 7, 9, 43)),
    ],
)
def test_certain_strings(text, canonical, numbers):
    parsed = parse_action_units(text)
    assert str(parsed) == canonical
    assert parsed.numbers == numbers
    assert parsed.uncertain is False
    assert parsed.alternatives == ()


def test_sides_intensities_and_asymmetry():
    assert parse_action_units("4+R10").units == (ActionUnit(4), ActionUnit(10, side="R"))
    assert parse_action_units("15A+17").units == (ActionUnit(15, intensity="A"), ActionUnit(17))
    # A leading A is SAMM's asymmetry mark, never an intensity.
    assert parse_action_units("A12").units == (ActionUnit(12, side=None, intensity=None, asymmetric=True),)
    assert parse_action_units("A/L12").units == (ActionUnit(12, side="L", asymmetric=True),)
    assert parse_action_units("A14C").units == (ActionUnit(14, intensity="C", asymmetric=True),)
    assert parse_action_units("T23").units == (ActionUnit(23, side="T"),)


def test_question_mark_is_an_uncertain_empty_set():
    parsed = parse_action_units("?")
    assert parsed.units == ()
    assert parsed.numbers == ()
    assert parsed.uncertain is True
    assert str(parsed) == ""


def test_intensity_range_keeps_first_letter_and_marks_the_set_uncertain():
    parsed = parse_action_units("10A/B")
    assert parsed.units == (ActionUnit(10, intensity="A"),)
    assert parsed.numbers == (10,)
    assert parsed.uncertain is True


@pytest.mark.parametrize("text", ["(R6 or R12)+R15", "(R6 or R12) + R15"])
def test_bracketed_alternative_stays_out_of_the_units(text):
    parsed = parse_action_units(text)
    assert parsed.numbers == (15,)
    assert str(parsed) == "R15"
    assert parsed.uncertain is True
    assert parsed.alternatives == (
        (ActionUnit(6, side="R", uncertain=True), ActionUnit(12, side="R", uncertain=True)),
    )


def test_bare_alternatives_are_kept_whole():
    parsed = parse_action_units("L12 or L14")
    assert parsed.units == ()
    assert [[str(unit) for unit in group] for group in parsed.alternatives] == [["L12", "L14"]]
    three = parse_action_units("R14A or 17A or 24A")
    assert [[str(unit) for unit in group] for group in three.alternatives] == [["R14A", "17A", "24A"]]
    assert three.uncertain is True


@pytest.mark.parametrize(
    ("text", "certain", "referenced"),
    [
        ("ref(7B)+43", "43", ["7B"]),
        ("7B+ ref(43)", "7B", ["43"]),
        ("ref(L10)+A12B", "A12B", ["L10"]),
        ("A9E+ref(10)", "A9E", ["10"]),
        ("4D+ref(6)+7C+43E", "4D+7C+43E", ["6"]),
    ],
)
def test_references_are_uncertain_units(text, certain, referenced):
    parsed = parse_action_units(text)
    assert parsed.uncertain is True
    assert str(parsed) == certain
    assert [str(unit) for unit in parsed.units if unit.uncertain] == referenced
    assert all(unit.number not in parsed.numbers for unit in parsed.units if unit.uncertain)


def test_descriptor_is_kept_apart():
    parsed = parse_action_units("R14+17+soft focus")
    assert str(parsed) == "R14+17"
    assert parsed.descriptors == ("soft focus",)
    assert parsed.uncertain is False


@pytest.mark.parametrize(("cell", "numbers"), [(12, (12,)), (12.0, (12,)), (4.0, (4,))])
def test_spreadsheet_numbers(cell, numbers):
    parsed = parse_action_units(cell)
    assert parsed.numbers == numbers
    assert parsed.raw == str(numbers[0])


@pytest.mark.parametrize("cell", [None, "", "   ", float("nan")])
def test_empty_cells(cell):
    parsed = parse_action_units(cell)
    assert (parsed.units, parsed.uncertain, parsed.alternatives, parsed.numbers) == ((), False, (), ())
    assert str(parsed) == ""


def test_duplicates_are_dropped_and_order_is_canonical():
    parsed = parse_action_units("R12+4+R12+L10")
    assert str(parsed) == "4+L10+R12"
    assert len(parsed.units) == 3


@pytest.mark.parametrize(
    "text",
    ["x", "4++7", "+4", "4+", "(4", "4)", "12F", "0", "ref()", "ref(12", "L", "A/", "12.5", "happy", "(12)", "4 7"],
)
def test_unparseable_text_names_the_text(text):
    with pytest.raises(DatasetError) as raised:
        parse_action_units(text)
    assert repr(text) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_bad_spreadsheet_values():
    for bad in (12.5, True):
        with pytest.raises(DatasetError):
            parse_action_units(bad)


def test_location_is_put_in_front_of_errors():
    with pytest.raises(DatasetError, match=r"^sheet.xlsx row 5, column Action Units: cannot read action units 'x'"):
        parse_action_units("x", where="sheet.xlsx row 5, column Action Units")
