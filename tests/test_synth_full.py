"""Full-size synthetic sets from the reference tables, read back by the adapters (slow: ~9 minutes
on 2 cores; `make test-all`). The quick suite checks the same facts on layout-only trees."""

from collections import Counter

import openpyxl
import pytest
from click.testing import CliRunner

from mepipe.cli import main
from mepipe.datasets.adapters import read_dataset
from mepipe.datasets.protocols import select
from mepipe.synth.generate import SynthOptions, synthesize
from mepipe.synth.ground_truth import GroundTruth

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full_sets(tmp_path_factory, reference_dir):
    root = tmp_path_factory.mktemp("full")
    return {
        "casme2": synthesize(SynthOptions(layout="casme2", out=root / "casme2", coding=reference_dir / "casme2_coding.csv")),
        "samm": synthesize(SynthOptions(layout="samm", out=root / "samm", coding=reference_dir / "samm_coding.csv")),
        "smic": synthesize(SynthOptions(layout="smic", out=root / "smic", coding=reference_dir / "megc2019_composite.csv")),
    }


def test_casme2_from_its_coding_table(full_sets):
    made = full_sets["casme2"]
    assert made.clips == 257 and made.subjects == 26
    assert sum(1 for _ in made.root.rglob("img*.jpg")) == made.frames == 17248
    header = next(openpyxl.load_workbook(made.sheet).active.iter_rows(values_only=True))
    assert header[:5] == ("Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame")
    assert made.emotions == {"others": 99, "disgust": 63, "happiness": 33, "repression": 27, "surprise": 25, "sadness": 8, "fear": 2}
    drawn = [c for c in GroundTruth(made.root).clips if c["apex"] == -1]
    assert len(drawn) == 3 and all(c["apex_source"] == "drawn" for c in drawn)


def test_samm_from_its_coding_table(full_sets):
    made = full_sets["samm"]
    assert made.clips == 159 and sum(1 for _ in made.root.rglob("*.jpg")) == made.frames == 11816
    rows = list(openpyxl.load_workbook(made.sheet).active.iter_rows(values_only=True))
    assert rows[12][0] == "Subject" and len(rows) == 13 + 159


def test_smic_from_the_composite_list(full_sets):
    made = full_sets["smic"]
    assert made.clips == 164
    assert made.emotions == {"negative": 70, "positive": 51, "surprise": 43}


def test_adapters_and_composite_on_the_rendered_trees(full_sets):
    """Issue 3, must-shows 1 and 2, on trees rendered by `mepipe synth`."""
    readings = {name: read_dataset(name, made.root) for name, made in full_sets.items()}
    casme2 = readings["casme2"]
    assert len(casme2.samples) == 257
    assert select("casme2", "5class", readings).counts() == {"happiness": 33, "disgust": 63, "repression": 27, "surprise": 25, "others": 99}
    resolved = [s for s in casme2.samples if s.apex_frame == -1]
    assert len(resolved) == 3 and all(s.apex_resolved for s in resolved)
    composite = select("composite", "3class", readings)
    assert len(composite.samples) == 442 and len(composite.subjects) == 68 and len(composite.folds) == 68
    assert Counter(s.dataset for s in composite.samples) == {"smic": 164, "casme2": 145, "samm": 133}
    assert composite.counts() == {"negative": 250, "positive": 109, "surprise": 83}
    assert all(len({composite.groups[i] for i in fold.test}) == 1 for fold in composite.folds)


def test_verify_passes_the_rendered_casme2_tree_with_its_warnings(full_sets):
    """The real table's quirks are all resolved by policy: exit 0, its three apex -1 rows listed."""
    root = full_sets["casme2"].root
    result = CliRunner().invoke(main, ["verify", "--dataset", "casme2", "--root", str(root)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "warnings" and "errors" not in lines
    assert sum("apex is -1 (not coded); resolved by policy 'middle'" in line for line in lines) == 3
    assert lines[-1] == f"casme2 at {root}: 257 samples, 26 subjects; 0 errors, 13 warnings (7 apex, 6 missing frames). Usable."
    strict = CliRunner().invoke(main, ["verify", "--dataset", "casme2", "--root", str(root), "--strict"])
    assert strict.exit_code == 1 and strict.output.splitlines()[-1].endswith("NOT CLEAN (--strict: warnings count)")
