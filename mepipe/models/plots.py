"""Pictures and tables for a run directory: confusion matrix, training curves, scores table.

- :func:`confusion_figure`: one PNG of a confusion matrix (rows true, columns predicted). Cells are
  coloured by their share of the true class (row-normalised, so the diagonal reads as per-class
  recall) and annotated with the count and that share in percent; the row labels give each true
  class's sample count.
- :func:`curves_figure`: one PNG with two panels, loss and accuracy against the epoch (1-based),
  from one training history per fold: a faint line per fold, the mean over the folds that reached
  each epoch in bold, and a band of +-1 sample standard deviation (none where only one fold is
  left). Train and validation have their own colours.
- :func:`scores_markdown`: a Markdown table of :class:`~mepipe.models.metrics.Scores` over one or
  several seeds.

The figures are drawn on a :class:`matplotlib.figure.Figure` with its own Agg canvas, never through
``pyplot``: no global backend switch, no figure registry, nothing to close, safe in worker
processes and beside other matplotlib users. Each PNG is about 100 dpi and well under 150 KB.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from PIL import Image

from mepipe.models.metrics import METRICS, Scores, summarise

DPI = 100
#: Size a PNG should stay under (see :func:`_save`).
MAX_PNG_BYTES = 140_000
#: Colours of the two splits in :func:`curves_figure`.
SPLIT_COLOURS = {"train": "#1f77b4", "val": "#d95f02"}
SPLITS = ("train", "val")
PANELS = (("loss", "loss"), ("accuracy", "accuracy"))


def _save(figure: Figure, path: str | Path) -> Path:
    """Render with Agg and write a PNG under :data:`MAX_PNG_BYTES`: full colour when that fits,
    else a 256- then 128-colour palette (dozens of faint overlapping fold lines, or a confusion
    matrix of many classes, make full-colour PNGs large; a palette looks much the same)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgb = Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3])
    # median cut keeps the exact colours of large flat areas (confusion cells); the octree is
    # smaller for plots full of thin blended lines
    candidates = (lambda: rgb,
                  lambda: rgb.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE),
                  lambda: rgb.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE),
                  lambda: rgb.quantize(128, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE))
    for candidate in candidates:
        buffer = io.BytesIO()
        candidate().save(buffer, format="PNG", optimize=True, dpi=(DPI, DPI))
        if buffer.tell() <= MAX_PNG_BYTES:
            break
    path.write_bytes(buffer.getvalue())
    return path


# --------------------------------------------------------------------------------------------
# confusion matrix


def confusion_figure(confusion: np.ndarray, classes: Sequence[str], path: str | Path,
                     title: str = "") -> Path:
    """Write the confusion matrix (rows true, columns predicted) as a PNG at ``path``."""
    matrix = np.asarray(confusion)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"confusion: expected a square (C, C) matrix, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)) or (matrix < 0).any():
        raise ValueError("confusion: expected non-negative finite counts")
    classes = [str(c) for c in classes]
    n = matrix.shape[0]
    if len(classes) != n:
        raise ValueError(f"classes: expected {n} names (one per row of the confusion matrix), "
                         f"got {len(classes)}")
    support = matrix.sum(axis=1)
    share = np.divide(matrix, support[:, None], out=np.zeros(matrix.shape, dtype=np.float64),
                      where=support[:, None] > 0)

    longest = max(len(c) for c in classes)
    cell = 0.95 if n <= 6 else max(0.45, 5.7 / n)
    side = max(3.2, cell * n)
    label_room = 0.6 + 0.075 * min(longest, 16)
    figure = Figure(figsize=(side + label_room + 2.2, side + label_room + (0.9 if title else 0.5)),
                    dpi=DPI, layout="constrained")
    ax = figure.add_subplot()
    cmap = colormaps["Blues"]
    norm = Normalize(vmin=0.0, vmax=1.0)
    image = ax.imshow(share, cmap=cmap, norm=norm, interpolation="nearest", aspect="equal")

    fontsize = 10 if n <= 6 else max(6, 10 - (n - 6) * 0.5)
    for i in range(n):
        for j in range(n):
            count = matrix[i, j]
            count_text = f"{int(count)}" if float(count).is_integer() else f"{count:.1f}"
            percent = f"{100 * share[i, j]:.0f}%" if support[i] > 0 else "–"
            r, g, b, _ = cmap(norm(share[i, j]))
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.55
            ax.text(j, i, f"{count_text}\n{percent}", ha="center", va="center",
                    fontsize=fontsize, color="white" if dark else "#1a1a1a",
                    fontweight="bold" if i == j else "normal", linespacing=1.15)

    tilt = longest * 0.08 > cell  # names wider than a cell (about 0.08 in a character)
    ax.set_xticks(range(n), classes, rotation=30 if tilt else 0, ha="right" if tilt else "center",
                  rotation_mode="anchor")
    ax.set_yticks(range(n), [f"{c}\n(n={int(s)})" for c, s in zip(classes, support)])
    ax.set_xlabel("predicted", fontsize=11)
    ax.set_ylabel("true", fontsize=11)
    ax.tick_params(length=0)
    ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    colorbar = figure.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    colorbar.set_label("share of the true class (row)")
    colorbar.ax.yaxis.set_major_formatter(lambda value, _: f"{100 * value:.0f}%")
    if title:
        ax.set_title(title, fontsize=11)
    return _save(figure, path)


# --------------------------------------------------------------------------------------------
# training curves


def _fold_series(histories: Sequence[Mapping[str, Sequence[float]]], key: str) -> list[np.ndarray]:
    series = []
    for index, history in enumerate(histories):
        values = history.get(key)
        if values is None:
            continue
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1:
            raise ValueError(f"histories[{index}][{key!r}]: expected one value per epoch, "
                             f"got shape {array.shape}")
        if array.size:
            series.append(array)
    return series


def _mean_band(series: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample std (0 where one fold is left) and fold count per epoch, NaN-aware."""
    length = max(len(s) for s in series)
    stacked = np.full((len(series), length), np.nan)
    for row, values in zip(stacked, series):
        row[: len(values)] = values
    valid = np.isfinite(stacked)
    count = valid.sum(axis=0)
    filled = np.where(valid, stacked, 0.0)
    mean = np.divide(filled.sum(axis=0), count, out=np.full(length, np.nan), where=count > 0)
    squares = np.where(valid, (stacked - mean) ** 2, 0.0).sum(axis=0)
    std = np.divide(squares, count - 1, out=np.zeros(length), where=count > 1) ** 0.5
    return mean, std, count


def curves_figure(histories: Sequence[Mapping[str, Sequence[float]]], path: str | Path,
                  title: str = "") -> Path:
    """Write loss and accuracy curves over the folds' training histories as a PNG at ``path``.

    Each history maps ``train_loss``, ``train_accuracy``, ``val_loss``, ``val_accuracy`` (any
    subset; other keys are ignored, missing or empty ones skipped) to one value per epoch; folds
    may have run for different numbers of epochs. The mean at an epoch is over the folds that
    reached it.
    """
    histories = list(histories)
    if not histories:
        raise ValueError("histories: expected at least one fold's history, got none")
    for index, history in enumerate(histories):
        if not isinstance(history, Mapping):
            raise ValueError(f"histories[{index}]: expected a mapping of metric name to values, "
                             f"got {type(history).__name__}")

    figure = Figure(figsize=(10, 4), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, (metric, label) in zip(axes, PANELS):
        drawn, several = [], False
        for split in SPLITS:
            series = _fold_series(histories, f"{split}_{metric}")
            if not series:
                continue
            colour = SPLIT_COLOURS[split]
            faint = min(0.35, max(0.1, 4 / len(series)))  # many folds: fainter lines
            for values in series:
                ax.plot(np.arange(1, len(values) + 1), values, color=colour, linewidth=0.7,
                        alpha=faint, zorder=1)
            several = several or len(series) > 1
            mean, std, _ = _mean_band(series)
            epochs = np.arange(1, len(mean) + 1)
            ax.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.18, linewidth=0,
                            zorder=2)
            ax.plot(epochs, mean, color=colour, linewidth=2.2, zorder=3)
            drawn.append(Line2D([], [], color=colour, linewidth=2.2,
                                label=f"{split} mean ({len(series)} fold{'s' if len(series) > 1 else ''})"))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_title(label, fontsize=11)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, linewidth=0.6)
        if several:
            drawn += [Line2D([], [], color="grey", linewidth=0.7, alpha=0.6, label="one fold"),
                      Patch(facecolor="grey", alpha=0.25, label="±1 std over folds")]
        if drawn:
            ax.legend(handles=drawn, fontsize=8, frameon=False,
                      loc="upper right" if metric == "loss" else "lower right")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes,
                    color="grey")
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        figure.suptitle(title, fontsize=12)
    return _save(figure, path)


# --------------------------------------------------------------------------------------------
# scores table


def scores_markdown(per_seed: Sequence[Mapping[str, Scores]], title: str = "") -> str:
    """A Markdown table of the scores, one row per key, mean ± std over seeds with several.

    Rows: ``"overall"`` first, labelled ``composite`` when the runs cover more than one dataset; with
    a single dataset the overall row is that dataset's row (the same samples) and is labelled by its
    name; a mapping holding only ``"overall"`` gives one row labelled ``overall``. Then one row per
    dataset. Columns UF1, UAR, accuracy (3 decimals) and the number of samples (a range if the runs
    differ). With a title, a ``###`` heading comes first; with several seeds, a note follows.
    """
    runs = list(per_seed)
    summary = summarise(runs)
    datasets = [key for key in summary if key != "overall"]
    rows: list[tuple[str, str]] = []
    if "overall" in summary:
        if len(datasets) > 1:
            rows.append(("composite", "overall"))
        elif len(datasets) == 1:
            rows.append((datasets[0], "overall"))
            datasets = []
        else:
            rows.append(("overall", "overall"))
    rows += [(name, name) for name in datasets]

    def cell(mean: float, std: float) -> str:
        return f"{mean:.3f} ± {std:.3f}" if len(runs) > 1 else f"{mean:.3f}"

    lines = []
    if title:
        lines += [f"### {title}", ""]
    lines += ["| dataset | UF1 | UAR | accuracy | samples |",
              "|:--|--:|--:|--:|--:|"]
    for label, key in rows:
        counts = [run[key].n for run in runs]
        samples = str(counts[0]) if min(counts) == max(counts) else f"{min(counts)}–{max(counts)}"
        cells = [cell(*summary[key][metric]) for metric in METRICS]
        lines.append(f"| {label} | {' | '.join(cells)} | {samples} |")
    if len(runs) > 1:
        lines += ["", f"Mean ± sample standard deviation over {len(runs)} seeds."]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# one clip's prediction (``mepipe predict --picture``)


def prediction_figure(onset: np.ndarray, apex: np.ndarray, model_input: np.ndarray, scores: Mapping[str, float],
                      predicted: str, path: str | Path, *, title: str = "", kind: str = "probability",
                      channel_names: Sequence[str] | None = None) -> Path:
    """One PNG of a clip's prediction: the aligned onset and apex crops, ``|apex - onset|``
    stretched to its 99th percentile, up to four channels of the model's input (``model_input``
    (C, H, W); signed channels on a diverging map centred on 0, with their range) and a bar per
    class of ``scores`` (``kind``: ``probability`` on 0..1, else a decision value), the predicted
    class in colour. ``onset``/``apex``: (S, S) gray or (S, S, 3) RGB uint8."""
    model_input = np.asarray(model_input, np.float32)
    channels = model_input[:4]
    names = list(channel_names or [f"input channel {index}" for index in range(len(model_input))])
    images = 3 + len(channels)
    figure = Figure(figsize=(2.0 * images + 3.6, 2.9), dpi=DPI)
    # a spacer column before the bars leaves room for the class names
    grid = figure.add_gridspec(1, images + 2, width_ratios=[1] * images + [0.55, 1.8], wspace=0.25)
    gray = colormaps["gray"]

    def show(position: int, image: np.ndarray, caption: str, **style) -> None:
        axis = figure.add_subplot(grid[0, position])
        axis.imshow(image, interpolation="nearest", **style)
        axis.set_title(caption, fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([])

    show(0, onset, "aligned onset", cmap=gray, vmin=0, vmax=255)
    show(1, apex, "aligned apex", cmap=gray, vmin=0, vmax=255)
    difference = np.abs(apex.astype(np.float32) - onset.astype(np.float32))
    difference = difference.mean(-1) if difference.ndim == 3 else difference
    top = max(float(np.percentile(difference, 99)), 1.0)
    show(2, difference, f"|apex - onset|, 0..{top:.0f}", cmap=colormaps["magma"], vmin=0, vmax=top)
    for index, channel in enumerate(channels):
        low, high = float(channel.min()), float(channel.max())
        if low < 0 < high:
            bound = max(-low, high)
            style = dict(cmap=colormaps["RdBu_r"], vmin=-bound, vmax=bound)
        else:
            style = dict(cmap=gray, vmin=low, vmax=high if high > low else low + 1)
        show(3 + index, channel, f"{names[index]}\n{low:.2g}..{high:.2g}", **style)
    axis = figure.add_subplot(grid[0, images + 1])
    labels = list(scores)
    values = [scores[label] for label in labels]
    colours = ["#d95f02" if label == predicted else "#9ecae1" for label in labels]
    axis.barh(range(len(labels)), values, color=colours)
    axis.set_yticks(range(len(labels)), labels, fontsize=8)
    axis.invert_yaxis()
    axis.tick_params(axis="x", labelsize=7)
    if kind == "probability":
        axis.set_xlim(0, 1)
    else:
        axis.axvline(0, color="black", linewidth=0.6)
    axis.set_title(f"{kind}: {predicted}", fontsize=9)
    for position, value in enumerate(values):
        axis.text(value, position, f" {value:.2f}", va="center", fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.subplots_adjust(left=0.02, right=0.97, top=0.78, bottom=0.1)
    return _save(figure, path)
