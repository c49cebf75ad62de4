"""The papers' own figures (``mepipe.models.paper_figures``): each is found again in its paper's
text at its table's row and column, every model has the protocols its paper reports, and a run's
settings are compared with the paper's.

The papers are read from ``../shared/papers`` beside the repository (skipped without it). The run
directory these figures appear in (``metrics.md``) is checked in ``tests/test_training.py``, on its
full STSTNet run, so that no model is trained for it here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mepipe.models.paper_figures import (PAPERS, PaperRow, figures_markdown, matching_rows, paper_section, reported,
                                        settings_line)
from mepipe.models.recipes import RECIPES, apply_settings, get_recipe, options_dict

PAPERS_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "papers"

#: What each paper reports for its own model (read off the papers; the test that the module agrees).
REPORTED = {
    "ststnet": [("composite", "3class")],
    "mobilevit": [("composite", "3class")],
    "cropnet": [("composite", "3class"), ("casme2", "5class")],
    "cva": [("casme2", "5class"), ("samm", "5class")],
    "msmmt": [("composite", "3class"), ("samm", "5class"), ("smic", "3class")],
    "mfvan": [("composite", "3class"), ("casme2", "5class"), ("samm", "5class"), ("smic", "3class")],
}


def _paper_text(name: str) -> str:
    if not PAPERS_DIR.is_dir():
        pytest.skip(f"no papers folder at {PAPERS_DIR}")
    return (PAPERS_DIR / name).read_text(encoding="utf-8")


def _cells(line: str) -> list[str]:
    """A table line's cells: split at tabs, bold marks and surrounding spaces removed."""
    return [re.sub(r"</?b>", "", cell).strip() for cell in line.split("\t")]


def _table_line(lines: list[str], row: PaperRow) -> int:
    """The index of the row's line: the first after its (unique) anchor that has the label as a cell."""
    anchors = [index for index, line in enumerate(lines) if row.anchor in line]
    assert len(anchors) == 1, f"anchor {row.anchor!r} is on {len(anchors)} lines"
    for index in range(anchors[0] + 1, len(lines)):
        if row.row in _cells(lines[index]):
            return index
    raise AssertionError(f"no line after {row.anchor!r} holds the row {row.row!r}")


def _words(text: str) -> str:
    return " ".join(text.split())


def test_every_model_has_a_paper_entry_with_the_protocols_its_paper_reports():
    assert set(PAPERS) == set(RECIPES)
    for model, expected in REPORTED.items():
        assert reported(model) == expected, model
        main = [row for row in PAPERS[model].rows if not row.when]
        for dataset, protocol in expected:
            metrics = {f.metric for row in main for f in row.figures
                       if (f.dataset, f.protocol, f.part) == (dataset, protocol, None)}
            assert metrics, f"{model} {dataset} {protocol}: no figure of the whole"
    # the composite papers' per-dataset columns (MFVAN's: only SMIC is readable)
    for model in ("ststnet", "mobilevit", "cropnet", "msmmt"):
        parts = {f.part for row in PAPERS[model].rows if not row.when for f in row.figures if f.dataset == "composite"}
        assert parts == {None, "casme2", "samm", "smic"}, model


@pytest.mark.parametrize("model", list(PAPERS))
def test_every_figure_is_printed_in_its_paper_at_its_row_and_column(model):
    paper = PAPERS[model]
    for row in paper.rows:
        source = row.source or paper.file
        assert source, f"{model}: a row of a paper not in shared/papers must name the paper it is printed in"
        text = _paper_text(source)
        assert re.search(rf"\btable\s*{row.table}\b", text, re.IGNORECASE), f"{source} names no Table {row.table}"
        if row.quote:  # the paper gives the figures in a sentence about its table
            assert _words(row.quote) in _words(text), f"{model}: not verbatim in {source}: {row.quote!r}"
            for figure in row.figures:
                assert figure.cell is None
                assert re.search(rf"(?<![\d.]){re.escape(figure.printed)}(?![\d])", row.quote), figure
            continue
        lines = text.splitlines()
        at = _table_line(lines, row)
        cells = _cells(lines[at])
        for figure in row.figures:
            assert figure.cell is not None and figure.cell < len(cells), (model, row.row, figure)
            tokens = cells[figure.cell].split()
            assert tokens[figure.token] == figure.printed, (model, row.row, figure, cells)
        # the table is the one named: its caption or the text's mention of it is close to the row
        near = "\n".join(lines[max(0, at - 40):at + 40])
        assert re.search(rf"\btable\s*{row.table}\b", near, re.IGNORECASE), f"{model} {row.row!r}: Table {row.table} not near"


def test_the_two_reprints_of_ststnet_agree():
    """STSTNet's own paper is not in shared/papers: the MSMMT paper's 4-decimal reprint of its
    figures agrees with the CropNet paper's 3-decimal one (Table 3, same column order) to its last
    digit (that reprint cuts the fourth decimal off: 0.8686 is 0.868 there)."""
    lines = _paper_text("ars-rrs-cropnet-cgpo.md").splitlines()
    cropnet = next(_cells(line) for line in lines if line.startswith("STSTNet (Liong et al., 2019)"))
    (row,) = PAPERS["ststnet"].rows
    for figure in row.figures:
        assert 0 <= figure.value - float(cropnet[figure.cell]) < 0.001, (figure, cropnet)


@pytest.mark.parametrize("model", list(PAPERS))
def test_the_rows_settings_are_options_of_the_recipe(model):
    """Every ablation, row setting and paper option names an option of the recipe with a value it
    takes, so a recipe's renamed option cannot leave a paper row unreachable."""
    recipe = get_recipe(model)
    paper = PAPERS[model]
    named = [*paper.paper_options.items()] + [item for row in paper.rows for item in (*row.when.items(), *row.settings.items())]
    for name, value in named:
        text = str(value).lower() if isinstance(value, bool) else str(value)
        assert getattr(apply_settings(recipe.Options(), [f"{name}={text}"]), name) == value
    if paper.transfer_option is not None:
        assert hasattr(recipe.Options(), paper.transfer_option[0])


def _config(model: str, dataset: str, protocol: str, **changes) -> dict:
    recipe = get_recipe(model)
    options = options_dict(recipe.Options())
    options.update(changes)
    return {"model": model, "dataset": dataset, "protocol": protocol, "options": options, "subjects": 6,
            "folds": list(range(6)), "variant": recipe.inputs_spec.variant.name, "own_variant": True}


def test_a_run_gets_the_row_of_its_ablation_or_the_main_row_when_the_paper_has_none():
    defaults = options_dict(get_recipe("cropnet").Options())
    rows, own = matching_rows("cropnet", "casme2", "5class", {**defaults, "residual": "rrs"}, defaults)
    assert own and [row.row for row in rows] == ["CropNet+RRS"]
    rows, own = matching_rows("cropnet", "composite", "3class", {**defaults, "cgpo": False}, defaults)
    assert not own and [row.row for row in rows] == ["ARS+CropNet(ours)"]
    defaults = options_dict(get_recipe("cva").Options())
    rows, own = matching_rows("cva", "samm", "5class", {**defaults, "use_au": False, "frames": "apex"}, defaults)
    assert not own and {row.table for row in rows} == {2}  # Table 1 has no SAMM column


def test_settings_line_says_what_a_run_changed_from_the_paper():
    # CVA at its defaults on its own variant: the paper names no pre-trained weights
    assert settings_line("cva", _config("cva", "casme2", "5class")).startswith("**Settings**: the paper's. As the paper:")
    line = settings_line("cropnet", {**_config("cropnet", "casme2", "5class", epochs=6, size=32),
                                     "variant": None, "own_variant": False, "folds": [0, 1]})
    assert line.startswith("**Settings**: not the paper's. Changed:")
    for part in ("each dataset group's own variant (--variant default), not cropnet's own 320-rgb-eyes-kept",
                 "weights: random initialisation (paper: ImageNet (ReXNet))", "size=32 (default 320)",
                 "epochs=6 (default 50)", "folds: 2 of 6"):
        assert part in line, part
    # MSMMT's default ViT is not the paper's ViT-B; its SAMM single-dataset row used alpha 0.2
    line = settings_line("msmmt", _config("msmmt", "samm", "5class"), {"alpha": 0.2})
    assert "size=small (paper base)" in line and "alpha=0.1 (paper 0.2)" in line
    # MobileViT without transfer is the paper's Table 2 ablation: random weights there too
    line = settings_line("mobilevit", _config("mobilevit", "composite", "3class", transfer=False), ablation={"transfer": False})
    assert "As the paper:" in line and "weights: random initialisation" in line and "Changed" not in line


def test_a_demo_run_is_looked_up_under_its_adapter_with_the_table_number():
    summary = {"overall": {"uf1": (0.41, 0.0), "uar": (0.40, 0.0), "accuracy": (0.44, 0.0)},
               "demo": {"uf1": (0.41, 0.0), "uar": (0.40, 0.0), "accuracy": (0.44, 0.0)}}
    config = {**_config("cropnet", "demo", "5class", epochs=6), "adapters": {"demo": "casme2"}}
    markdown, record = paper_section(config, summary, 1)
    assert "| demo (casme2) | this run | 0.410 | 0.400 | 0.440 |" in markdown
    assert "| demo (casme2) | paper | 0.863 | — | 0.862 | Table 4, CropNet+ARS |" in markdown
    assert record["rows"][0]["paper"]["uf1"] == {"value": 0.863, "printed": "0.863", "table": 4, "row": "CropNet+ARS"}
    # without the adapter record the group's name is all there is: no paper row, and it says so
    markdown, _ = paper_section({**config, "adapters": {}}, summary, 1)
    assert "reports no figures for demo 5class (it reports: composite 3class, casme2 5class)" in markdown


def test_the_docs_page_lists_every_figure_as_the_module_holds_it():
    page = (Path(__file__).resolve().parents[1] / "docs" / "paper-figures.md").read_text(encoding="utf-8")
    assert figures_markdown() in page, "docs/paper-figures.md is stale: paste figures_markdown() into it"
