"""mepipe report: a build's page (every sample, its QC and pictures, suspects first) and a run's page,
checked in their HTML and, where Chromium is installed, rendered and driven in a real browser."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import openpyxl
import pytest
import zarr
from click.testing import CliRunner

from browser import Browser, chromium_path
from stores import FAST_FLOW, SMALL

from mepipe.cli import main
from mepipe.models.loso import RunOptions, train_run
from mepipe.models.run_report import run_report
from mepipe.pipeline.build import BuildOptions, build
from mepipe.pipeline.build_report import FLAG_RULES, build_report
from mepipe.pipeline.webpage import GENERATOR, PageError, write_page


@pytest.fixture(scope="module")
def faulty(tiny, tmp_path_factory):
    """The tiny CASME II tree with three faults, built (face and flow at 64 px): a clip whose frames
    hold no face, a clip with a truncated frame, and a clip whose annotated apex the sheet moves to
    the frame after its onset, far from its motion. Returns (store, {fault: sample id})."""
    root = tmp_path_factory.mktemp("faulty") / "casme2"
    shutil.copytree(tiny, root)
    first, second = sorted(p for p in (root / "sub01").iterdir() if p.is_dir())[:2]
    moved = sorted(p for p in (root / "sub02").iterdir() if p.is_dir())[0]
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for frame in first.iterdir():
        cv2.imwrite(str(frame), noise)
    truncated = sorted(second.iterdir())[3]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size * 6 // 10])
    sheet = next(root.glob("*.xlsx"))
    book = openpyxl.load_workbook(sheet)
    rows = book.active
    header = [cell.value for cell in rows[1]]
    for row in rows.iter_rows(min_row=2):
        values = dict(zip(header, (cell.value for cell in row)))
        if str(values["Filename"]) == moved.name and f"sub{int(values['Subject']):02d}" == "sub02":
            row[header.index("ApexFrame")].value = int(values["OnsetFrame"]) + 1
    book.save(sheet)
    store = tmp_path_factory.mktemp("faulty-store") / "store.zarr"
    build(BuildOptions("casme2", root=root, store=store, scheduler="threads", workers=2, params=SMALL + FAST_FLOW,
                       artifacts=("flow",)))
    ids = {"no_face": f"casme2/sub01/{first.name}", "truncated": f"casme2/sub01/{second.name}",
           "moved_apex": f"casme2/sub02/{moved.name}"}
    return store, ids


@pytest.fixture(scope="module")
def faulty_page(faulty, tmp_path_factory):
    store, _ = faulty
    path = tmp_path_factory.mktemp("pages") / "report.html"
    result = CliRunner().invoke(main, ["report", "--store", str(store), "--dataset", "casme2", "--out", str(path)])
    assert result.exit_code == 0, result.output
    assert "6 samples of casme2: 2 failed, 1 flagged" in result.output
    return path


@pytest.fixture(scope="module")
def run_directory(variant_build, tmp_path_factory):
    """STSTNet trained LOSO on the tiny tree's own variant, two seeds, two epochs: a run to report."""
    store, _ = variant_build
    result = train_run(RunOptions("ststnet", "casme2", None, store=store, seeds=(0, 1), settings=("epochs=2",),
                                  out=tmp_path_factory.mktemp("runs"), name="ststnet"))
    return result.directory


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium_path()
    with Browser(tmp_path_factory.mktemp("chromium")) as opened:
        yield opened


# ---------------------------------------------------------------- the build's page

def test_failures_then_flagged_samples_come_first_with_their_reasons(faulty):
    store, ids = faulty
    report = build_report(store, "casme2")
    order = [s.sample_id for s in report.samples]
    assert set(order[:2]) == {ids["no_face"], ids["truncated"]}, order
    assert order[2] == ids["moved_apex"] and report.samples[2].flags == ["apex-far"]
    assert all(not s.flags for s in report.samples[3:]), [(s.sample_id, s.flags) for s in report.samples]
    causes = {s.sample_id: s.causes() for s in report.samples[:2]}  # {reason: artifacts}
    assert all(len(c) == 1 and list(c.values()) == [["face", "flow"]] for c in causes.values()), causes
    no_face, truncated = (next(iter(causes[ids[fault]])) for fault in ("no_face", "truncated"))
    assert no_face.startswith("face: no face found in frames 0-5"), no_face
    assert truncated.startswith("frames: ") and "is truncated (no JPEG end-of-image marker" in truncated, truncated
    page = report.html
    for reason in (no_face, truncated):
        assert page.count(_escaped(reason)) >= 2  # in its row and under Failures
    for rule in FLAG_RULES:  # every rule is written with its threshold
        assert _escaped(rule.describe()) in page
        if rule.threshold is not None:
            assert f'<td class="num">{rule.threshold:g}</td>' in page


def test_the_build_records_the_spotted_apex_and_the_anchor_frames_as_qc(faulty):
    store, ids = faulty
    group = zarr.open_group(str(store / "casme2"), mode="r")
    rows = [str(s) for s in group["sample_id"][:]]
    spotted, used = group["qc"]["apex_spotted"][:], group["apex_used"][:]
    built = [i for i, sample in enumerate(rows) if sample not in (ids["no_face"], ids["truncated"])]
    moved = rows.index(ids["moved_apex"])
    assert used[moved] == group["onset"][moved] + 1
    for i in built:  # the synthetic clips' motion peaks where the sheet put the apex, but for the moved one
        if i != moved:
            assert abs(spotted[i] - used[i]) <= 3, (rows[i], spotted[i], used[i])
    assert spotted[moved] - used[moved] > 0.25 * (group["offset"][moved] - group["onset"][moved])
    assert np.isfinite(group["qc"]["landmark_frame"][built]).all() and np.isfinite(group["qc"]["detection_frame"][built]).all()
    assert np.isnan(spotted[rows.index(ids["no_face"])])


def test_the_page_is_self_contained_and_names_every_sample(faulty, faulty_page):
    store, _ = faulty
    text = faulty_page.read_text()
    assert f'<meta name="generator" content="{GENERATOR}">' in text
    assert not re.search(r'(src|href)="(?!data:|#)', text), "every picture is embedded and every link stays in the page"
    assert "<link" not in text and "@import" not in text
    group = zarr.open_group(str(store / "casme2"), mode="r")
    for sample in group["sample_id"][:]:
        assert f">{sample}<" in text
    assert text.count('<img class="thumb"') == 4  # the two failed samples have no pictures


def test_a_report_never_replaces_a_file_mepipe_did_not_write(faulty, faulty_page, tmp_path):
    store, _ = faulty
    foreign = tmp_path / "notes.html"
    foreign.write_text("<html>my notes</html>")
    result = CliRunner().invoke(main, ["report", "--store", str(store), "--dataset", "casme2", "--out", str(foreign)])
    assert result.exit_code == 1 and "is not a report mepipe wrote; it is left as it is" in result.output
    assert foreign.read_text() == "<html>my notes</html>"
    with pytest.raises(PageError, match="is a folder"):
        write_page(tmp_path, "<html></html>")
    # its own report is replaced
    again = CliRunner().invoke(main, ["report", "--store", str(store), "--dataset", "casme2", "--out", str(faulty_page)])
    assert again.exit_code == 0, again.output
    assert not list(faulty_page.parent.glob("*.partial"))


def test_bad_report_arguments_are_one_line_errors(faulty, tmp_path):
    store, _ = faulty
    runner = CliRunner()
    missing = runner.invoke(main, ["report", "--store", str(store), "--dataset", "samm", "--out", str(tmp_path / "r.html")])
    assert missing.exit_code == 1 and "has no dataset 'samm'; it holds: casme2" in missing.output
    variant = runner.invoke(main, ["report", "--store", str(store), "--dataset", "casme2", "--variant", "320-rgb-eyes-kept",
                                   "--out", str(tmp_path / "r.html")])
    assert variant.exit_code == 1 and "has no variant 320-rgb-eyes-kept" in variant.output
    neither = runner.invoke(main, ["report"])
    assert neither.exit_code == 2 and "give either RUN" in neither.output
    not_run = runner.invoke(main, ["report", str(tmp_path)])
    assert not_run.exit_code == 1 and "config.json is missing" in not_run.output
    assert "Traceback" not in missing.output + variant.output + not_run.output


# ---------------------------------------------------------------- a run's page

def test_a_run_s_page_has_its_scores_subjects_and_worst_samples_with_pictures(run_directory):
    report = run_report(run_directory)
    page = report.html
    for seed in (0, 1):
        assert f"<th>seed {seed}</th>" in page
    assert "<th>mean ± sd</th>" in page
    # each seed's UF1 as evaluate computes it from predictions.csv
    for seed in json.loads((run_directory / "metrics.json").read_text())["per_seed"]:
        assert f'<td class="num">{seed["overall"]["uf1"]:.4f}</td>' in page
    subjects = re.search(r'<table class="sortable" id="subjects">(.*?)</table>', page).group(1)
    assert 'data-sort="casme2/sub01"' in subjects and 'data-sort="casme2/sub02"' in subjects
    # the confusion matrix counts every prediction of both seeds once
    rows = (run_directory / "predictions.csv").read_text().strip().splitlines()[1:]
    cells = re.search(r'<table class="matrix">(.*?)</table>', page).group(1)
    assert sum(int(v) for v in re.findall(r">(\d+)</td>", cells)) == len(rows)
    assert report.worst and report.thumbnails == len(report.worst)
    assert page.count('<img class="thumb"') == len(report.worst)
    assert "curves.png" not in page and 'alt="training curves, one line per fold"' in page
    # no store, no pictures, and the page says why
    gone = run_report(run_directory, store=run_directory / "no-such-store.zarr")
    assert gone.thumbnails == 0 and "No thumbnails: the run's store cannot be opened" in gone.html


def test_cli_report_of_a_run_writes_into_its_directory(run_directory):
    result = CliRunner().invoke(main, ["report", str(run_directory)])
    assert result.exit_code == 0, result.output
    assert (run_directory / "report.html").is_file() and "worst-predicted samples" in result.output


# ---------------------------------------------------------------- in a browser

def _rows(browser) -> list[str]:
    return browser.evaluate("Array.from(document.querySelectorAll('#samples tbody tr')).filter(r => !r.hidden)"
                            ".map(r => r.cells[2].getAttribute('data-sort'))")


def _choose(browser, control: str, value: str) -> None:
    browser.evaluate(f"(() => {{ const c = document.getElementById('samples-{control}'); c.value = {value!r}; "
                     f"c.dispatchEvent(new Event(c.tagName === 'INPUT' ? 'input' : 'change')); return 1; }})()")


def _click(browser, title: str) -> None:
    browser.evaluate(f"(() => {{ const h = Array.from(document.querySelectorAll('#samples thead th'))"
                     f".find(h => h.textContent === {title!r}); h.click(); return 1; }})()")


def _not_blank(path: Path) -> None:
    image = cv2.imread(str(path))
    assert image is not None and image.shape[0] > 500 and image.shape[1] > 800, None if image is None else image.shape
    not_white = (image < 235).any(axis=2).mean()
    assert not_white > 0.03, f"{path.name}: only {not_white:.1%} of the pixels are not white"
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 500  # pictures, not flat colour


def test_the_build_page_renders_filters_and_sorts_in_chromium(faulty, faulty_page, browser, tmp_path):
    store, ids = faulty
    browser.open(faulty_page)
    assert not [e for e in browser._events if e.get("method") == "Runtime.exceptionThrown"], "the page's script threw"
    shot = browser.screenshot(tmp_path / "build-report.png", height=2400)
    _not_blank(shot)
    text = browser.evaluate("document.body.innerText")
    group = zarr.open_group(str(store / "casme2"), mode="r")
    every = [str(s) for s in group["sample_id"][:]]
    assert all(sample in text for sample in every)
    original = _rows(browser)
    assert set(original[:2]) == {ids["no_face"], ids["truncated"]} and original[2] == ids["moved_apex"]
    assert browser.evaluate("document.getElementById('samples-count').textContent") == "showing 6 of 6"

    _choose(browser, "subject", "sub02")
    assert sorted(_rows(browser)) == sorted(s for s in every if "/sub02/" in s)
    _choose(browser, "flag", "failed")
    assert _rows(browser) == []  # sub02 has no failure: both filters hold
    _choose(browser, "subject", "")
    assert sorted(_rows(browser)) == sorted([ids["no_face"], ids["truncated"]])
    _choose(browser, "flag", "-")
    assert sorted(_rows(browser)) == sorted(set(every) - set(ids.values()))
    _choose(browser, "flag", "*")
    assert sorted(_rows(browser)) == sorted(ids.values())
    _choose(browser, "flag", "")
    emotion = str(group["emotion"][every.index(ids["moved_apex"])])
    _choose(browser, "emotion", emotion)
    assert sorted(_rows(browser)) == sorted(s for i, s in enumerate(every) if str(group["emotion"][i]) == emotion)
    _choose(browser, "emotion", "")
    _choose(browser, "search", ids["moved_apex"].split("/")[-1])
    assert _rows(browser) == [ids["moved_apex"]]
    _choose(browser, "search", "")
    assert browser.evaluate("document.getElementById('samples-count').textContent") == "showing 6 of 6"

    scores = {s: float(group["qc"]["detector_score"][i]) for i, s in enumerate(every)}
    built = sorted((s for s in every if np.isfinite(scores[s])), key=lambda s: (scores[s], s))
    _click(browser, "detector score")
    ascending = _rows(browser)
    assert [s for s in ascending if s in built] == sorted(built, key=lambda s: scores[s])
    assert set(ascending[-2:]) == {ids["no_face"], ids["truncated"]}  # no score: last
    _click(browser, "detector score")
    descending = _rows(browser)
    assert [s for s in descending if s in built] == sorted(built, key=lambda s: -scores[s])
    assert set(descending[-2:]) == {ids["no_face"], ids["truncated"]}  # still last
    _click(browser, "sample")
    assert _rows(browser) == sorted(every)
    _click(browser, "#")
    assert _rows(browser) == original


def test_the_run_page_renders_in_chromium(run_directory, browser, tmp_path):
    page = run_directory / "report.html"
    write_page(page, run_report(run_directory).html)
    browser.open(page)
    assert not [e for e in browser._events if e.get("method") == "Runtime.exceptionThrown"]
    _not_blank(browser.screenshot(tmp_path / "run-report.png", height=2400))
    text = browser.evaluate("document.body.innerText")
    assert "Worst-predicted samples" in text and "Per subject (per fold)" in text
    before = browser.evaluate("Array.from(document.querySelectorAll('#subjects tbody tr')).map(r => r.cells[3].textContent)")
    browser.evaluate("(() => { Array.from(document.querySelectorAll('#subjects thead th')).find(h => h.textContent === 'UF1')"
                     ".click(); return 1; })()")
    after = browser.evaluate("Array.from(document.querySelectorAll('#subjects tbody tr')).map(r => r.cells[3].textContent)")
    assert [float(v) for v in after] == sorted(float(v) for v in before)


def _escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)
