"""`mepipe verify`: clean tree exits 0; a tree with four defects exits 1 and lists all four."""

import shutil

import openpyxl
import pytest
from click.testing import CliRunner

from mepipe.cli import main
from mepipe.synth.generate import SynthOptions, synthesize


@pytest.fixture(scope="module")
def synthetic_casme2(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify") / "casme2"
    synthesize(SynthOptions(layout="casme2", out=root, subjects=2, clips_per_subject=3, workers=2))
    return root


def test_clean_tree_exits_0(synthetic_casme2):
    result = CliRunner().invoke(main, ["verify", "--dataset", "casme2", "--root", str(synthetic_casme2)])
    assert result.exit_code == 0, result.output
    assert "6 samples, 2 subjects, no problems. Clean." in result.output


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
    assert "NOT CLEAN" in out.splitlines()[-1]


def test_unreadable_root_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["verify", "--dataset", "samm", "--root", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {tmp_path / 'none'}: no such folder; expected the SAMM dataset root"
