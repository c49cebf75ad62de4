"""``mepipe report RUN``: one self-contained HTML page of a training run directory.

It shows what was run (``config.json``), the scores per dataset and seed (recomputed from
``predictions.csv`` with :mod:`mepipe.models.metrics`, as ``mepipe evaluate`` does), the confusion
matrix pooled over folds and seeds, the training curves (``curves.png``), UF1 per test subject
(per fold) and the worst-predicted samples: the wrong predictions whose true class scored
furthest below the predicted one, averaged over the seeds, with their thumbnails taken from the
store the run read when it is still there. Nothing in the run directory is changed; the page is
the only file written.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mepipe import __version__
from mepipe.models.metrics import confusion_matrix, score_by_dataset, summarise, uf1
from mepipe.models.paper_figures import METRIC_NAMES, paper_section
from mepipe.pipeline.build_report import Thumbnails
from mepipe.pipeline.store import StoreError, open_store, variant_groups
from mepipe.pipeline.variants import Variant
from mepipe.pipeline.webpage import (
    Column, Row, cell, escape, file_uri, img, matrix_html, page_html, section, stacked_bars_svg, table_html,
)

#: How many of the worst-predicted samples the page shows.
WORST_SHOWN = 24


class RunReportError(ValueError):
    """A run directory cannot be reported; one line naming the file and what was expected."""


@dataclass(frozen=True)
class Prediction:
    seed: int
    fold: str
    subject: str
    sample_id: str
    dataset: str
    label: int
    predicted: int
    scores: tuple[float, ...]


@dataclass
class RunReport:
    html: str
    worst: list[str]  # the sample ids shown as worst predicted, worst first
    thumbnails: int  # how many of them have pictures from the store
    seconds: float


def read_predictions(path: Path, classes: list[str]) -> list[Prediction]:
    """The rows of a run's ``predictions.csv``; a row that is not one names its line."""
    rows = []
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                scores = tuple(float(row[f"score_{name}"]) for name in classes)
                rows.append(Prediction(int(row["seed"]), str(row["fold"]), row["test_subject"], row["sample_id"], row["dataset"],
                                       int(row["label"]), int(row["predicted"]), scores))
            except (KeyError, TypeError, ValueError):
                raise RunReportError(f"{path}, line {line}: expected integer seed, label and predicted, and a score "
                                     f"for each class ({', '.join(classes)})") from None
    if not rows:
        raise RunReportError(f"{path} has no predictions")
    return rows


def run_report(directory: str | Path, *, store: str | Path | None = None,
               progress: Callable[[str], None] | None = None) -> RunReport:
    """The HTML report of the run directory ``directory`` (read-only).

    store : where to take the worst samples' thumbnails from; default: the store its
        ``config.json`` names. A store that is gone leaves the samples without pictures (said on
        the page).

    Raises
    ------
    RunReportError
        Not a run directory (``config.json`` or ``predictions.csv`` missing or unreadable).
    """
    started = time.perf_counter()
    directory = Path(directory)
    config_path, predictions_path = directory / "config.json", directory / "predictions.csv"
    if not directory.is_dir():
        raise RunReportError(f"{directory} does not exist or is not a folder; expected a run directory of mepipe train")
    for path in (config_path, predictions_path):
        if not path.is_file():
            raise RunReportError(f"{directory} is not a finished run directory: {path.name} is missing")
    try:
        config = json.loads(config_path.read_text())
        classes = [str(name) for name in config["classes"]]
    except (ValueError, KeyError, TypeError) as error:
        raise RunReportError(f"{config_path}: not a run configuration ({error})") from None
    predictions = read_predictions(predictions_path, classes)
    seeds = sorted({p.seed for p in predictions})
    per_seed = []
    for seed in seeds:
        rows = [p for p in predictions if p.seed == seed]
        per_seed.append(score_by_dataset([p.label for p in rows], [p.predicted for p in rows], [p.dataset for p in rows],
                                         len(classes)))
    title = f"mepipe report: {config.get('model', '?')} on {config.get('dataset', '?')} ({config.get('protocol', '?')})"
    subtitle = (f"run directory {escape(directory.resolve())}; made {time.strftime('%Y-%m-%d %H:%M')} by mepipe "
                f"{escape(__version__)}")
    if progress:
        progress("scores")
    worst, thumbnails, store_note = _worst_section(predictions, classes, config, store, progress)
    body = [
        _config_section(config, seeds),
        _scores_section(per_seed, seeds, directory),
        _paper_section(config, per_seed),
        _confusion_section(predictions, classes, seeds, directory),
        _curves_section(directory),
        _subjects_section(predictions, classes, seeds),
        worst[0],
    ]
    if store_note:
        body.append(store_note)
    nav = [("run", "the run"), ("scores", "scores"), ("paper", "beside the paper"), ("confusion", "confusion matrix"),
           ("curves", "curves"),
           ("subjects", "per subject"), ("worst", "worst predicted")]
    text = page_html(title, body, subtitle=subtitle, nav=nav)
    return RunReport(text, worst[1], thumbnails, time.perf_counter() - started)


# ---------------------------------------------------------------- sections

def _config_section(config: dict, seeds: list[int]) -> str:
    options = config.get("options", {})
    rows = [
        ("model", config.get("model")), ("dataset", config.get("dataset")), ("protocol", config.get("protocol")),
        ("classes", ", ".join(config.get("classes", []))), ("samples", config.get("samples")),
        ("subjects (folds)", config.get("subjects")), ("seeds", ", ".join(map(str, seeds))),
        ("input variant", f"{config.get('variant')}" + (" (the model's own)" if config.get("own_variant") else "")),
        ("settings (-s)", ", ".join(config.get("settings", [])) or "the recipe's defaults"),
        ("options", ", ".join(f"{k}={v}" for k, v in options.items())),
        ("store", config.get("store")), ("status", config.get("status")),
        ("wall time", f"{config['seconds']:.0f} s" if isinstance(config.get("seconds"), (int, float)) else None),
        ("inference", f"{config['inference_ms_per_sample']:.1f} ms per sample (batch 1)"
         if isinstance(config.get("inference_ms_per_sample"), (int, float)) else None),
        ("started", config.get("started")), ("device", config.get("device")),
        ("versions", f"mepipe {config.get('mepipe')}, torch {config.get('torch')}, Python {config.get('python')}"),
    ]
    body = "".join(f"<tr><th>{escape(name)}</th><td>{escape(value)}</td></tr>" for name, value in rows if value not in (None, ""))
    return section("The run", f"<table>{body}</table>", anchor="run")


def _scores_section(per_seed, seeds: list[int], directory: Path) -> str:
    summary = summarise(per_seed)
    keys = list(summary)
    if len(keys) == 2 and "overall" in keys:  # one dataset: its rows would repeat the overall ones
        keys = ["overall"]
    head = "".join(f"<th>seed {seed}</th>" for seed in seeds) + ("<th>mean ± sd</th>" if len(seeds) > 1 else "")
    lines = []
    for metric in ("uf1", "uar", "accuracy"):
        for key in keys:
            values = [getattr(seed_scores[key], metric) if key in seed_scores else float("nan") for seed_scores in per_seed]
            mean, std = summary[key][metric]
            cells = "".join(f'<td class="num">{value:.4f}</td>' for value in values)
            if len(seeds) > 1:
                cells += f'<td class="num"><b>{mean:.4f} ± {std:.4f}</b></td>'
            lines.append(f"<tr><th>{escape(metric.upper() if metric != 'accuracy' else metric)}</th><td>{escape(key)}</td>{cells}</tr>")
    table = f"<table><thead><tr><th>metric</th><th>data</th>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"
    paper = ""
    markdown = directory / "metrics.md"
    if markdown.is_file():
        paper = (f"<details><summary>metrics.md as the run wrote it</summary><pre>{escape(markdown.read_text())}</pre></details>")
    return section("Scores", "<p>Leave-one-subject-out, the test predictions of every fold pooled per seed "
                   "(UF1 and UAR as the papers define them; recomputed from predictions.csv).</p>", table, paper,
                   anchor="scores")


def _paper_section(config: dict, per_seed) -> str:
    """The paper's figures for the run's dataset and protocol beside the run's, and the settings
    line (:func:`mepipe.models.paper_figures.paper_section`, as metrics.md has them)."""
    _, record = paper_section(config, summarise(per_seed), len(per_seed))
    if not record:
        return section("Beside the paper", f"<p>mepipe holds no paper figures for {escape(config.get('model'))}.</p>",
                       anchor="paper")
    lines = []
    for row in record.get("rows", []):
        label = row["part"] or config.get("dataset", "")
        run = "".join(f'<td class="num">{_mean_sd(row["run"].get(metric))}</td>' for metric in METRIC_NAMES)
        paper = "".join(f'<td class="num">{escape(row["paper"][metric]["printed"]) if metric in row["paper"] else "&ndash;"}</td>'
                        for metric in METRIC_NAMES)
        sources = sorted({f"Table {figure['table']}" + (f", {figure['row']}" if figure.get("row") else "")
                          for figure in row["paper"].values()})
        seeds = f"{len(per_seed)} seed{'s' if len(per_seed) > 1 else ''}"
        lines.append(f"<tr><td>{escape(label)}</td><td>this run</td>{run}<td>mepipe, {seeds}</td></tr>"
                     f"<tr><td>{escape(label)}</td><td>paper</td>{paper}<td>{escape('; '.join(sources))}</td></tr>")
    table = ("<table><thead><tr><th>dataset</th><th></th><th>UF1</th><th>UAR</th><th>accuracy</th><th>source</th></tr>"
             f"</thead><tbody>{''.join(lines)}</tbody></table>" if lines else
             f"<p>The paper reports no figures for {escape(record.get('dataset'))} {escape(record.get('protocol'))}.</p>")
    return section("Beside the paper", f"<p>{escape(record['citation'])}</p>", table,
                   f"<p>{escape(record.get('settings', '')).replace('**', '')}</p>", anchor="paper")


def _mean_sd(values) -> str:
    if not values:
        return "&ndash;"
    mean, sd = values
    return f"{mean:.3f} ± {sd:.3f}" if sd else f"{mean:.3f}"


def _confusion_section(predictions: list[Prediction], classes: list[str], seeds: list[int], directory: Path) -> str:
    matrix = confusion_matrix([p.label for p in predictions], [p.predicted for p in predictions], len(classes))
    parts = [f"<p>Pooled over folds and {len(seeds)} seed{'s' if len(seeds) > 1 else ''}: rows are the true class, "
             "columns the predicted one, each cell shaded by its share of its row.</p>",
             matrix_html(matrix, classes, classes, corner="true \\ predicted")]
    return section("Confusion matrix", *parts, anchor="confusion")


def _curves_section(directory: Path) -> str:
    picture = directory / "curves.png"
    if not picture.is_file():
        return section("Training curves", "<p>This run has no curves (the recipe records none, or it was stopped).</p>",
                       anchor="curves")
    return section("Training curves", img(file_uri(picture), "training curves, one line per fold", css="figure"),
                   anchor="curves")


def _subjects_section(predictions: list[Prediction], classes: list[str], seeds: list[int]) -> str:
    subjects = sorted({p.subject for p in predictions})
    rows, counts_correct, counts_wrong = [], [], []
    for subject in subjects:
        mine = [p for p in predictions if p.subject == subject]
        per_seed = [uf1([p.label for p in mine if p.seed == seed], [p.predicted for p in mine if p.seed == seed], len(classes))
                    for seed in seeds if any(p.seed == seed for p in mine)]
        correct = sum(p.label == p.predicted for p in mine)
        samples = len(mine) // max(len(per_seed), 1)
        accuracy = correct / len(mine)
        counts_correct.append(correct)
        counts_wrong.append(len(mine) - correct)
        dataset = mine[0].dataset
        rows.append(Row(cells={
            "subject": cell(subject), "dataset": cell(dataset), "samples": cell(samples),
            "uf1": cell(float(np.mean(per_seed)), digits=3), "accuracy": cell(accuracy, digits=3),
            "classes": cell(", ".join(sorted({classes[p.label] for p in mine}))),
        }))
    columns = (Column("subject", "test subject (fold)"), Column("dataset", "dataset"),
               Column("samples", "samples", numeric=True),
               Column("uf1", "UF1", "the fold's UF1 on its own test samples, mean over seeds", numeric=True),
               Column("accuracy", "accuracy", "share of the fold's predictions that are right, all seeds", numeric=True),
               Column("classes", "true classes", "the classes of the subject's samples"))
    chart = stacked_bars_svg(subjects, {"right": counts_correct, "wrong": counts_wrong},
                             title="predictions per test subject, right and wrong, all seeds")
    return section("Per subject (per fold)", "<p>A fold's UF1 counts only the classes its subject shows, so it is noisy "
                   "for subjects with few samples; the pooled scores above are the ones to quote.</p>",
                   table_html("subjects", columns, rows), chart, anchor="subjects")


def _worst_section(predictions: list[Prediction], classes: list[str], config: dict, store: str | Path | None,
                   progress) -> tuple[tuple[str, list[str]], int, str]:
    by_sample: dict[str, list[Prediction]] = {}
    for p in predictions:
        by_sample.setdefault(p.sample_id, []).append(p)
    ranked = []
    for sample_id, rows in by_sample.items():
        margins = [p.scores[p.label] - max(s for c, s in enumerate(p.scores) if c != p.label) for p in rows]
        wrong = sum(p.label != p.predicted for p in rows)
        if wrong:
            ranked.append((float(np.mean(margins)), wrong, sample_id, rows))
    ranked.sort(key=lambda item: (item[0], item[2]))
    shown = ranked[:WORST_SHOWN]
    groups, note = _store_groups(config, store)
    rows, pictures = [], 0
    for position, (margin, wrong, sample_id, mine) in enumerate(shown, start=1):
        strip = None
        found = groups(sample_id)
        if found is not None:
            strip = found[0].strip(found[1])
        pictures += strip is not None
        predicted = ", ".join(sorted({classes[p.predicted] for p in mine if p.predicted != p.label}))
        picture = (f'<img class="thumb" src="{strip}" alt="{escape(sample_id)}: onset, apex, difference, flow" height="80">'
                   if strip else '<span class="none">not in the store</span>')
        rows.append(Row(cells={
            "rank": cell(position), "sample": cell(sample_id), "subject": cell(mine[0].subject),
            "true": cell(classes[mine[0].label]), "predicted": cell(predicted),
            "wrong": (f"{wrong} of {len(mine)}", wrong / len(mine)), "margin": cell(margin, digits=3),
            "pictures": (picture, ""),
        }))
        if progress:
            progress(f"worst {position}/{len(shown)}")
    columns = (Column("rank", "#", numeric=True), Column("sample", "sample"), Column("subject", "subject"),
               Column("true", "true class"), Column("predicted", "predicted instead"),
               Column("wrong", "wrong", "seeds that predicted it wrong", numeric=True),
               Column("margin", "margin", "true class's score minus the best other class's, mean over seeds "
                      "(probabilities, or an SVM's decision values)", numeric=True),
               Column("pictures", "onset · apex · |apex−onset|×8 · flow", sortable=False))
    text = (f"<p>{len(ranked)} samples are predicted wrong by at least one seed; the {len(shown)} whose true class scored "
            f"furthest below the predicted one are shown, worst first.</p>")
    body = section("Worst-predicted samples", text, table_html("worst", columns, rows) if rows else "<p>None: every "
                   "prediction is right.</p>", anchor="worst")
    return (body, [item[2] for item in shown]), pictures, note


def _store_groups(config: dict, store: str | Path | None):
    """A function from a sample id to (its group's Thumbnails, row) in the run's store and variant, or None; and a
    note for the page when the store cannot be read."""
    path = Path(store if store is not None else config.get("store", ""))
    try:
        root = open_store(path, "r")
    except (StoreError, OSError) as error:
        note = section("Pictures", f"<p>No thumbnails: the run's store cannot be opened ({escape(error)}). Pass "
                       f"<code>--store</code> to take them from another copy.</p>")
        return (lambda sample_id: None), note
    variant = None
    if config.get("variant"):
        try:
            variant = Variant.parse(config["variant"]).name
        except ValueError:
            variant = None
    cache: dict[str, tuple] = {}

    def find(sample_id: str):
        name = sample_id.split("/", 1)[0]
        if name not in cache:
            cache[name] = (None, {})
            if name in root:
                held = variant_groups(root[name])
                group = held.get(variant) if variant else root[name]
                if group is not None:
                    cache[name] = (Thumbnails(group), {str(s): i for i, s in enumerate(group["sample_id"][:])})
        group, rows = cache[name]
        if group is None or sample_id not in rows:
            return None
        return group, rows[sample_id]

    return find, ""
