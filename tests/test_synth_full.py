"""Full-size synthetic sets from the reference tables (slow: minutes; `make test-all`)."""

import openpyxl
import pytest

from mepipe.synth.generate import SynthOptions, synthesize
from mepipe.synth.ground_truth import GroundTruth

pytestmark = pytest.mark.slow


def test_casme2_from_its_coding_table(tmp_path, reference_dir):
    made = synthesize(SynthOptions(layout="casme2", out=tmp_path / "casme2", coding=reference_dir / "casme2_coding.csv"))
    assert made.clips == 257 and made.subjects == 26
    assert sum(1 for _ in made.root.rglob("img*.jpg")) == made.frames == 17248
    header = next(openpyxl.load_workbook(made.sheet).active.iter_rows(values_only=True))
    assert header[:5] == ("Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame")
    assert made.emotions == {"others": 99, "disgust": 63, "happiness": 33, "repression": 27, "surprise": 25, "sadness": 8, "fear": 2}
    drawn = [c for c in GroundTruth(made.root).clips if c["apex"] == -1]
    assert len(drawn) == 3 and all(c["apex_source"] == "drawn" for c in drawn)


def test_samm_from_its_coding_table(tmp_path, reference_dir):
    made = synthesize(SynthOptions(layout="samm", out=tmp_path / "samm", coding=reference_dir / "samm_coding.csv"))
    assert made.clips == 159 and sum(1 for _ in made.root.rglob("*.jpg")) == made.frames == 11816
    rows = list(openpyxl.load_workbook(made.sheet).active.iter_rows(values_only=True))
    assert rows[12][0] == "Subject" and len(rows) == 13 + 159


def test_smic_from_the_composite_list(tmp_path, reference_dir):
    made = synthesize(SynthOptions(layout="smic", out=tmp_path / "smic", coding=reference_dir / "megc2019_composite.csv"))
    assert made.clips == 164
    assert made.emotions == {"negative": 70, "positive": 51, "surprise": 43}
    assert len(list(made.root.glob("HS/s*/micro/*/*"))) == 164
