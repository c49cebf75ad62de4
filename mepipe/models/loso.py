"""Leave-one-subject-out runs: one model per fold, predictions pooled, a run directory per run.

The folds come from the protocol (:func:`mepipe.datasets.protocols.select` via the store's
metadata), never re-derived here. For each seed, every fold trains a fresh model on the other
subjects and predicts its own subject; the predictions of all folds are pooled and scored (UF1,
UAR, accuracy) per source dataset and overall, as the composite papers report them. The spread
over seeds is reported beside the mean.

A run directory holds::

    config.json        what was asked (model, options, data, seeds, device) and what ran (versions, times)
    predictions.csv    one row per (seed, test sample): fold, subject, true and predicted class, scores
    metrics.json       per-seed scores by dataset, and their mean and spread over seeds
    metrics.md         the same as a Markdown table
    confusion.png      the confusion matrix, pooled over folds and seeds
    curves.png         training curves, one faint line per fold (first seed) and their mean
    history.json       every fold's curves and the choices it made (grid search, SVM C)
    log.txt            the progress lines
    checkpoints/       the trained models (``mepipe.models.checkpoint``): the folds' and, with ``final``, one
                       trained on every subject; ``mepipe predict RUN`` applies them to a new clip
    README.md          what each file is

``mepipe evaluate RUN`` recomputes the metrics and pictures from ``predictions.csv`` alone.
"""

from __future__ import annotations

import csv
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from mepipe import __version__
from mepipe.models.checkpoint import CHECKPOINTS, KEEP_CHOICES, checkpoint_stem, json_default, save_checkpoint
from mepipe.models.metrics import Scores, score_by_dataset, summarise
from mepipe.models.paper_figures import paper_section
from mepipe.models.plots import confusion_figure, curves_figure, scores_markdown
from mepipe.models.recipes import FoldData, OptionError, RunContext, apply_settings, get_recipe, options_dict
from mepipe.models.training import Inputs, resolve_device, seed_everything
from mepipe.pipeline.load import labelled_protocol, load
from mepipe.pipeline.store import default_store

PREDICTION_FIELDS = ("seed", "fold", "test_subject", "sample_id", "dataset", "label", "predicted", "true_class",
                     "predicted_class")


class RunError(ValueError):
    """A run that cannot start or a run directory that cannot be read; the message says why."""


@dataclass(frozen=True)
class RunOptions:
    """What ``mepipe train`` asks for.

    folds : positions of the folds to run (a quick look, or a fold per CI job); None for all.
    settings : ``name=value`` overrides of the model's options.
    """

    model: str
    dataset: str
    protocol: str | None = None
    store: Path | None = None
    seeds: tuple[int, ...] = (0, 1, 2)
    out: Path = Path("runs")
    device: str = "auto"
    folds: tuple[int, ...] | None = None
    settings: tuple[str, ...] = ()
    #: the input variant to read instead of the model's own (``320-rgb-eyes-kept``), or ``default``:
    #: each dataset group's own (a build without ``--for``); recorded as a deviation from the paper
    variant: str | None = None
    name: str | None = None
    #: which fold models to keep in ``checkpoints/``: ``all`` seeds', the ``first-seed``'s, ``none``
    checkpoints: str = "first-seed"
    #: also train one model on every subject (the first seed, the same settings), for new data
    final: bool = False


@dataclass
class RunResult:
    directory: Path
    per_seed: list[dict[str, Scores]]
    summary: dict
    markdown: str
    seconds: float
    inference_ms: float | None = None
    fold_seconds: list[float] = field(default_factory=list)


def _run_variant(name: str | None, spec):
    """The variant a run reads: the model's own, one named, or None for ``default``."""
    from mepipe.pipeline.variants import Variant

    if name is None:
        return spec.variant if spec is not None else None
    if name == "default":
        return None
    try:
        return Variant.parse(name)
    except ValueError as error:
        raise RunError(f"--variant {error}") from None


def train_run(options: RunOptions, log: Callable[[str], None] = lambda text: None) -> RunResult:
    """Train and test ``options.model`` over the LOSO folds of the protocol; write the run directory."""
    start = time.perf_counter()
    recipe = get_recipe(options.model)
    model_options = apply_settings(recipe.Options(), options.settings)
    if not options.seeds:
        raise RunError("give at least one seed")
    if options.checkpoints not in KEEP_CHOICES:
        raise RunError(f"--checkpoints {options.checkpoints!r}: expected one of {', '.join(KEEP_CHOICES)}")
    store = Path(options.store) if options.store is not None else default_store()
    device = resolve_device(options.device)
    # training needs labels: without a protocol, the dataset's first (load alone would give none)
    protocol = options.protocol or labelled_protocol(store, options.dataset)
    # the model reads its own input variant (its paper's crop size, colour and eyes), never another's
    spec = recipe.inputs_spec
    variant = _run_variant(options.variant, spec)
    own = spec is not None and variant == spec.variant
    data = load(store, options.dataset, recipe.artifacts, protocol, variant=variant, for_model=recipe.name if own else None)
    if not len(data):
        raise RunError(f"{store}: {options.dataset} {data.protocol} has no sample with {', '.join(recipe.artifacts)} built")
    labels, groups = np.asarray(data.meta["label"]), np.asarray(data.meta["group"])
    sources = np.asarray(data.meta["dataset"])
    folds = _chosen_folds(data.folds, options.folds)
    inputs = recipe.inputs(data, model_options)

    directory = _new_directory(options, data.protocol)
    log_file = open(directory / "log.txt", "w")

    def say(text: str) -> None:
        log(text)
        log_file.write(text + "\n")
        log_file.flush()

    config = {
        "model": recipe.name, "options": options_dict(model_options), "settings": list(options.settings),
        "dataset": options.dataset, "protocol": data.protocol, "classes": list(data.classes),
        "store": str(store), "samples": len(data), "subjects": len(set(groups)), "folds": [f.index for f in folds],
        "seeds": list(options.seeds), "device": str(device), "torch_threads": torch.get_num_threads(),
        "mepipe": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "machine": platform.machine(), "started": datetime.now().isoformat(timespec="seconds"), "status": "running",
        "missing": [list(item) for item in data.missing],
        "variant": data.variant.name if data.variant is not None else None,
        "own_variant": spec is not None and data.variant == spec.variant,
        "checkpoints": {"folds": options.checkpoints, "final": options.final, "files": []},
    }
    model_inputs = _inputs_record(store, data, recipe)
    # the paper's figures are looked up under the adapter: the demo group is a CASME II
    config["adapters"] = {name: group["adapter"] for name, group in model_inputs["groups"].items()}
    kept = config["checkpoints"]["files"]

    def keep(output, seed: int, fold, extra: dict | None = None) -> None:
        if output.trained is None:
            return
        train_subjects = sorted(set(groups.tolist())) if fold is None else sorted(set(groups[fold.train].tolist()))
        record = save_checkpoint(
            directory / CHECKPOINTS, checkpoint_stem(seed, None if fold is None else fold.index), recipe,
            model_options, output.trained,
            {"classes": data.classes, "seed": seed, "fold": None if fold is None else fold.index,
             "test_subject": None if fold is None else fold.test_subject, "train_subjects": train_subjects,
             "samples": int(len(labels) if fold is None else len(fold.train)), "inputs": model_inputs,
             **(extra or {})})
        kept.append(f"{CHECKPOINTS}/{record['file']}")
    _write_json(directory / "config.json", config)
    say(f"{recipe.name} on {options.dataset} {data.protocol}: {len(data)} samples, {len(set(groups))} subjects, "
        f"{len(folds)} folds x {len(options.seeds)} seeds on {device}; run directory {directory}")
    if spec is not None and data.variant != spec.variant:
        say(f"reading variant {data.variant.name if data.variant else 'of each group'}, not {recipe.name}'s own "
            f"{spec.variant.name} ({spec.variant.describe()}): a deviation from the paper's inputs")
    context = RunContext(store, tuple(data.classes), device, directory, say, variant)

    rows, histories, per_seed, fold_seconds = [], [], [], []
    inference_ms = None
    first_prepared = None
    for seed in options.seeds:
        seed_everything(seed)
        prepared = recipe.prepare(context, model_options, seed)
        if seed == options.seeds[0]:
            first_prepared = prepared
        truth, predicted, origin = [], [], []
        seed_histories = []
        for number, fold in enumerate(folds, 1):
            if set(groups[fold.train]) & set(groups[fold.test]):
                raise RunError(f"fold {fold.index} shares a subject between training and test")  # never by construction
            fold_start = time.perf_counter()
            seed_everything(seed * 1000 + fold.index)
            output = recipe.train_fold(
                context, model_options, prepared,
                FoldData(inputs[fold.train], labels[fold.train], groups[fold.train], inputs[fold.test]), seed)
            fold_seconds.append(time.perf_counter() - fold_start)
            if options.checkpoints == "all" or (options.checkpoints == "first-seed" and seed == options.seeds[0]):
                keep(output, seed, fold)
            right = int((output.predicted == labels[fold.test]).sum())
            say(f"seed {seed} fold {number}/{len(folds)} ({fold.test_subject}): {right}/{len(fold.test)} right, "
                f"{fold_seconds[-1]:.1f} s")
            for position, guess, scores in zip(fold.test, output.predicted, output.scores):
                rows.append({
                    "seed": seed, "fold": fold.index, "test_subject": fold.test_subject,
                    "sample_id": data.meta["sample_id"][position], "dataset": sources[position],
                    "label": int(labels[position]), "predicted": int(guess),
                    "true_class": data.classes[labels[position]], "predicted_class": data.classes[int(guess)],
                    **{f"score_{name}": float(value) for name, value in zip(data.classes, scores)},
                })
            truth.append(labels[fold.test])
            predicted.append(output.predicted)
            origin.append(sources[fold.test])
            seed_histories.append({"fold": fold.index, "test_subject": fold.test_subject, **output.history,
                                   "notes": output.notes})
            if inference_ms is None and output.predict_one is not None:
                inference_ms = time_per_sample(output.predict_one, inputs[fold.test])
        histories.append({"seed": seed, "folds": seed_histories,
                          "pretrained": None if prepared is None else getattr(prepared, "history", None)})
        per_seed.append(score_by_dataset(np.concatenate(truth), np.concatenate(predicted), list(np.concatenate(origin)),
                                         len(data.classes)))
        say(f"seed {seed}: " + ", ".join(f"{key} UF1 {s.uf1:.3f} UAR {s.uar:.3f}" for key, s in per_seed[-1].items()))

    if options.final:
        seed = options.seeds[0]
        say(f"final model: {recipe.name} trained on all {len(labels)} samples of {len(set(groups))} subjects "
            f"(seed {seed}), for new data")
        seed_everything(seed)
        output = recipe.train_fold(context, model_options, first_prepared,
                                   FoldData(inputs, labels, groups, inputs[:0]), seed)
        keep(output, seed, None, {"history": output.history, "notes": output.notes})
    _write_predictions(directory / "predictions.csv", rows, data.classes)
    _write_json(directory / "history.json", histories)
    _write_readme(directory, config)
    seconds = time.perf_counter() - start
    config.update(status="complete", seconds=round(seconds, 1), inference_ms_per_sample=inference_ms,
                  median_fold_seconds=round(statistics.median(fold_seconds), 2) if fold_seconds else None)
    _write_json(directory / "config.json", config)
    result = _report(directory, per_seed, list(data.classes), [h["folds"] for h in histories][0],
                     f"{recipe.name} on {options.dataset} ({data.protocol})", seconds, inference_ms, config)
    result.fold_seconds = fold_seconds
    say(f"done in {seconds:.0f} s")
    log_file.close()
    return result


def evaluate_run(directory: str | Path) -> RunResult:
    """Recompute a run's metrics, table and pictures from its ``predictions.csv``."""
    directory = Path(directory)
    config_path, predictions_path = directory / "config.json", directory / "predictions.csv"
    for path in (config_path, predictions_path):
        if not path.is_file():
            raise RunError(f"{directory} is not a finished run directory: {path.name} is missing")
    try:
        config = json.loads(config_path.read_text())
        classes = list(config["classes"])
    except (ValueError, KeyError) as error:
        raise RunError(f"{config_path}: not a run configuration ({error})") from None
    by_seed: dict[int, list[dict]] = {}
    with open(predictions_path, newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                by_seed.setdefault(int(row["seed"]), []).append(
                    {"label": int(row["label"]), "predicted": int(row["predicted"]), "dataset": row["dataset"]})
            except (KeyError, TypeError, ValueError):
                raise RunError(f"{predictions_path}, line {line}: expected integer seed, label and predicted") from None
    if not by_seed:
        raise RunError(f"{predictions_path} has no predictions")
    per_seed = [score_by_dataset(np.array([r["label"] for r in rows]), np.array([r["predicted"] for r in rows]),
                                 [r["dataset"] for r in rows], len(classes)) for _, rows in sorted(by_seed.items())]
    folds = []
    if (directory / "history.json").is_file():
        folds = json.loads((directory / "history.json").read_text())[0]["folds"]
    title = f"{config.get('model', '?')} on {config.get('dataset', '?')} ({config.get('protocol', '?')})"
    return _report(directory, per_seed, classes, folds, title, config.get("seconds"), config.get("inference_ms_per_sample"),
                   config)


def _inputs_record(store: Path, data, recipe) -> dict:
    """What a checkpoint needs to compute a new clip's inputs as the run's were: the variant, the
    artifacts read, and for each dataset group read its build's parameters and frame rate."""
    from mepipe.pipeline.store import open_store

    root = open_store(store)
    groups = {}
    for name, path in data.paths.items():
        group = root[path]
        records = group.attrs.get("artifacts", {})
        groups[name] = {"path": path, "adapter": str(group.attrs.get("adapter", name)),
                        "fps": float(group.attrs.get("fps", 0.0)) or None,
                        "params": {artifact: record.get("params", {}) for artifact, record in records.items()}}
    variant = data.variant
    return {"variant": None if variant is None else {"name": variant.name, "size": variant.size,
                                                     "colour": variant.colour, "eye_fill": variant.eye_fill},
            "artifacts": list(recipe.artifacts), "groups": groups}


#: What each file of a run directory is, for its README.
RUN_FILES = {
    "config.json": "what was run: model, options, dataset, protocol, classes, variant, seeds, machine, checkpoints",
    "log.txt": "the run's log, as printed",
    "predictions.csv": "one row per test sample, seed and fold: true and predicted class, and each class's score "
                       "(logit, or SVM decision value)",
    "history.json": "per seed and fold: training curves and the choices the recipe made",
    "metrics.json": "UF1, UAR, accuracy per seed and dataset, with mean and standard deviation",
    "metrics.md": "the same, as the table printed at the end",
    "confusion.png": "the confusion matrix, pooled over folds and seeds",
    "curves.png": "training curves, one line per fold",
    f"{CHECKPOINTS}/": "trained models: seed<S>-fold<FF>.pt (tensors, torch.load(weights_only=True)) and .json "
                       "(options, classes, the fold's subjects, the inputs' build parameters, the file's sha256); "
                       "final.pt/.json trained on every subject with --final. Used by mepipe predict RUN.",
}


def _write_readme(directory: Path, config: dict) -> None:
    lines = [f"# Run {directory.name}", "",
             f"{config['model']} on {config['dataset']} ({config['protocol']}), leave-one-subject-out, "
             f"seeds {', '.join(map(str, config['seeds']))}. Made by mepipe {config['mepipe']} on {config['started']}.",
             "", "| file | what it is |", "|---|---|"]
    lines += [f"| `{name}` | {text} |" for name, text in RUN_FILES.items()]
    files = config.get("checkpoints", {}).get("files", [])
    lines += ["", f"Checkpoints kept: {len(files)} ({config['checkpoints']['folds']} folds"
                  f"{', and the final model' if config['checkpoints']['final'] else ''}).",
              "Recompute the metrics: `mepipe evaluate RUN`. Predict a new clip: "
              "`mepipe predict RUN --video FILE` (needs --final) or `--fold SUBJECT`."]
    (directory / "README.md").write_text("\n".join(lines) + "\n")


def time_per_sample(predict_one: Callable[[torch.Tensor], int], samples: torch.Tensor | Inputs, runs: int = 20) -> float:
    """Median milliseconds of one batch-1 prediction, after two warm-up calls (NaN without samples)."""
    if not len(samples):
        return float("nan")
    for index in range(2):
        predict_one(samples[index % len(samples)])
    times = []
    for index in range(runs):
        begin = time.perf_counter()
        predict_one(samples[index % len(samples)])
        times.append((time.perf_counter() - begin) * 1000)
    return round(float(np.median(times)), 2)


def _report(directory: Path, per_seed, classes, folds, title, seconds, inference_ms, config: dict) -> RunResult:
    """Write metrics.json, metrics.md and the pictures. The Markdown (metrics.md, and the
    ``markdown`` that ``mepipe train`` and ``evaluate`` print) ends with the paper's figures for the
    run's dataset and protocol beside the run's, and whether the run used the paper's settings
    (:func:`mepipe.models.paper_figures.paper_section`)."""
    summary = summarise(per_seed)
    paper_markdown, paper_record = paper_section(config, summary, len(per_seed))
    _write_json(directory / "metrics.json", {
        "classes": classes,
        "per_seed": [{key: scores.to_dict() for key, scores in seed.items()} for seed in per_seed],
        "summary": {key: {metric: {"mean": m, "std": s} for metric, (m, s) in values.items()}
                    for key, values in summary.items()},
        "seconds": seconds, "inference_ms_per_sample": inference_ms,
        "paper": paper_record,
    })
    seeds = len(per_seed)
    markdown = scores_markdown(per_seed, title=f"{title}: LOSO, {seeds} seed{'s' if seeds > 1 else ''}")
    footer = []
    if seconds is not None:
        footer.append(f"wall time {seconds:.0f} s")
    if inference_ms is not None:
        footer.append(f"inference {inference_ms:.1f} ms per sample (batch 1)")
    paper = "\n" + paper_markdown if paper_markdown else ""
    (directory / "metrics.md").write_text(markdown + ("\n" + ", ".join(footer) + "\n" if footer else "") + paper)
    markdown += paper
    pooled = sum(seed["overall"].confusion for seed in per_seed)
    confusion_figure(pooled, classes, directory / "confusion.png",
                     title=f"{title}\npooled over folds" + (f" and {seeds} seeds" if seeds > 1 else ""))
    curves = [{key: fold.get(key, []) for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")}
              for fold in folds]
    if any(any(values) for curve in curves for values in curve.values()):
        curves_figure(curves, directory / "curves.png", title=f"{title}: training, one line per fold")
    return RunResult(directory, per_seed, summary, markdown, seconds or 0.0, inference_ms)


def _chosen_folds(folds, wanted: Sequence[int] | None):
    if wanted is None:
        return list(folds)
    unknown = [index for index in wanted if not 0 <= index < len(folds)]
    if unknown:
        raise RunError(f"fold {unknown[0]} does not exist: this protocol has folds 0..{len(folds) - 1}")
    return [folds[index] for index in wanted]


def _new_directory(options: RunOptions, protocol: str | None) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = options.name or f"{options.model}-{options.dataset}-{protocol}-{stamp}"
    directory = Path(options.out) / name
    try:
        directory.mkdir(parents=True, exist_ok=options.name is not None)
    except FileExistsError:
        directory = Path(options.out) / f"{name}-{time.time_ns() % 10**6}"
        directory.mkdir(parents=True)
    except OSError as error:
        raise RunError(f"cannot make the run directory {directory}: {error.strerror}") from None
    return directory


def _write_predictions(path: Path, rows: list[dict], classes: Sequence[str]) -> None:
    fields = list(PREDICTION_FIELDS) + [f"score_{name}" for name in classes]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, default=json_default) + "\n")


__all__ = ["RunOptions", "RunResult", "RunError", "OptionError", "train_run", "evaluate_run", "time_per_sample"]
