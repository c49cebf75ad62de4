"""`mepipe verify`: clean tree exits 0; a tree with four defects exits 1 and lists all four;
warnings (quirks a policy resolves) exit 0 unless --strict, errors (unusable clips) exit 1."""

import shutil

import openpyxl
import pytest
from click.testing import CliRunner

from mepipe.cli import main


@pytest.fixture(scope="module")
def synthetic_casme2(tiny):
    """The session's tiny CASME II tree (2 subjects x 3 clips); tests that change it change a copy."""
    return tiny


def test_clean_tree_exits_0(synthetic_casme2):
    result = CliRunner().invoke(main, ["verify", "--dataset", "casme2", "--root", str(synthetic_casme2)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"casme2 at {synthetic_casme2}: 6 samples, 2 subjects; 0 errors, 0 warnings. Clean."


def test_four_defects_are_all_listed(synthetic_casme2, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(synthetic_casme2, root)
    sheet_path = root / "CASME2-coding-20140508.xlsx"
    workbook = openpyxl.load_workbook(sheet_path)
    sheet = workbook.active
    rows = list(sheet.iter_rows(min_row=2, values_only=True))

    # 1. a deleted frame, inside onset..offset of the first clip
    subject, clip, onset, _, offset = f"sub{rows[0][0]:02d}", rows[0][1], rows[0][2], rows[0][3], rows[0][4]
    deleted = (onset + offset) // 2
    (root / subject / clip / f"img{deleted}.jpg").unlink()
    # 2. an apex outside its clip (second row)
    sheet.cell(row=3, column=4, value=rows[1][4] + 50)
    # 3. a clip folder that the sheet does not list
    shutil.copytree(root / f"sub{rows[2][0]:02d}" / rows[2][1], root / "sub01" / "EP99_99")
    # 4. a sheet row with no folder
    sheet.append([2, "EP98_01", 10, 20, 30, None, "12", "happiness"])
    workbook.save(sheet_path)

    result = CliRunner().invoke(main, ["verify", "--dataset", "casme2", "--root", str(root)])
    assert result.exit_code == 1
    out = result.output
    assert f"frame numbers are not contiguous: {deleted} missing" in out
    assert f"frame {deleted} of onset..offset {onset}..{offset} are missing" in out
    assert f"apex {rows[1][4] + 50} lies outside onset..offset {rows[1][2]}..{rows[1][4]}" in out
    assert "sub01/EP99_99" in out and "clip folder has no row in CASME2-coding-20140508.xlsx" in out
    assert "CASME2-coding-20140508.xlsx, row 8" in out and "clip sub02/EP98_01 has no folder sub02/EP98_01" in out
    errors, warnings = out.rsplit("\n\n", 1)[0].split("\nwarnings\n")
    assert errors.startswith("errors\n") and "not in sheet" in errors and "no folder" in errors
    assert "apex" in warnings and "numbering" in warnings and "not in sheet" not in warnings
    assert out.splitlines()[-1] == (
        f"casme2 at {root}: 6 samples, 2 subjects; 2 errors (1 no folder, 1 not in sheet), "
        "3 warnings (1 numbering, 1 missing frames, 1 apex); 2 clips unusable. NOT CLEAN"
    )


def test_unreadable_root_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["verify", "--dataset", "samm", "--root", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {tmp_path / 'none'}: no such folder; expected the SAMM dataset root"


def _copy_with_sheet_edit(source, root, row, column_name, value):
    """A copy of the synthetic tree with one cell of its coding sheet changed (row 1 is the header)."""
    shutil.copytree(source, root)
    path = root / "CASME2-coding-20140508.xlsx"
    workbook = openpyxl.load_workbook(path)
    sheet = workbook.active
    header = [cell.value for cell in sheet[1]]
    sheet.cell(row=row, column=header.index(column_name) + 1, value=value)
    workbook.save(path)
    return root


def _verify(root, *extra):
    return CliRunner().invoke(main, ["verify", "--dataset", "casme2", "--root", str(root), *extra])


def test_an_apex_of_minus_1_is_a_warning_and_exits_0(synthetic_casme2, tmp_path):
    root = _copy_with_sheet_edit(synthetic_casme2, tmp_path / "apex", 3, "ApexFrame", -1)
    result = _verify(root)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "warnings" and "errors" not in lines
    [warning] = [line for line in lines if line.startswith("apex ")]
    assert "CASME2-coding-20140508.xlsx, row 3, column 'ApexFrame'" in warning
    assert "apex is -1 (not coded); resolved by policy 'middle' to frame" in warning
    assert lines[-1] == f"casme2 at {root}: 6 samples, 2 subjects; 0 errors, 1 warning (1 apex). Usable."


def test_strict_makes_warnings_fail(synthetic_casme2, tmp_path):
    root = _copy_with_sheet_edit(synthetic_casme2, tmp_path / "apex", 3, "ApexFrame", -1)
    result = _verify(root, "--strict")
    assert result.exit_code == 1
    assert "apex is -1 (not coded)" in result.output
    assert result.output.splitlines()[-1].endswith("0 errors, 1 warning (1 apex). NOT CLEAN (--strict: warnings count)")


def test_strict_passes_a_clean_tree(synthetic_casme2):
    assert _verify(synthetic_casme2, "--strict").exit_code == 0


def test_a_missing_frame_folder_is_an_error_and_exits_1(synthetic_casme2, tmp_path):
    root = tmp_path / "no_folder"
    shutil.copytree(synthetic_casme2, root)
    rows = list(openpyxl.load_workbook(root / "CASME2-coding-20140508.xlsx").active.iter_rows(min_row=2, values_only=True))
    subject, clip = f"sub{rows[0][0]:02d}", rows[0][1]
    shutil.rmtree(root / subject / clip)
    result = _verify(root)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == "errors" and "warnings" not in lines
    assert f"clip {subject}/{clip} has no folder {subject}/{clip}" in result.output
    assert lines[-1] == f"casme2 at {root}: 5 samples, 2 subjects; 1 error (1 no folder), 0 warnings; 1 clip unusable. NOT CLEAN"


def test_an_unknown_emotion_is_a_warning_saying_the_protocol_leaves_it_out(synthetic_casme2, tmp_path):
    root = _copy_with_sheet_edit(synthetic_casme2, tmp_path / "emotion", 2, "Estimated Emotion", "hapiness")
    result = _verify(root)
    assert result.exit_code == 0, result.output
    assert "unknown emotion 'hapiness' for casme2 5class" in result.output
    assert "the sample is kept, and casme2 5class leaves it out of its classes" in result.output
    assert result.output.splitlines()[-1].endswith("0 errors, 1 warning (1 emotion). Usable.")


def test_an_onset_after_its_offset_is_an_error_naming_the_row(synthetic_casme2, tmp_path):
    """Onset beyond the folder's last frame and after the offset: not a window outside the frames."""
    rows = list(openpyxl.load_workbook(synthetic_casme2 / "CASME2-coding-20140508.xlsx").active.iter_rows(min_row=2, values_only=True))
    offset = rows[1][4]
    root = _copy_with_sheet_edit(synthetic_casme2, tmp_path / "inverted", 3, "OnsetFrame", offset + 40)
    result = _verify(root)
    assert result.exit_code == 1
    assert f"CASME2-coding-20140508.xlsx, row 3  onset {offset + 40} comes after offset {offset}" in result.output
    assert "outside the frames" not in result.output


def test_the_real_casme2_table_is_usable_with_its_documented_quirks(tmp_path, reference_dir):
    """The reference coding table on a layout-only tree (tests/test_synth_full.py renders it)."""
    from trees import layout_tree

    layout_tree("casme2", tmp_path / "casme2", reference_dir / "casme2_coding.csv")
    result = _verify(tmp_path / "casme2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "warnings" and "errors" not in lines
    minus_one = [line for line in lines if "apex is -1 (not coded); resolved by policy 'middle'" in line]
    assert [line.split(", column")[0].split(", ")[1] for line in minus_one] == ["row 31", "row 73", "row 226"]
    assert lines[-1] == (f"casme2 at {tmp_path / 'casme2'}: 257 samples, 26 subjects; "
                         "0 errors, 13 warnings (7 apex, 6 missing frames). Usable.")
