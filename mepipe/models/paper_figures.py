"""The figures each model's paper reports, and how a run's settings compare with the paper's.

Every number here is copied from the papers in ``shared/papers`` (STSTNet's from another paper's
reprint of it, see :data:`PAPERS`), exactly as printed, with the table it is printed in, the row's
label and the column it sits in, so ``tests/test_paper_figures.py`` can find each one in the
paper's text again. A run's ``metrics.md`` (:mod:`mepipe.models.loso`) prints the paper's figures
for the run's dataset and protocol beside the run's own, and one line on whether the run used the
paper's settings: :func:`paper_section`.

Datasets and protocols are mepipe's (:mod:`mepipe.datasets.protocols`): ``composite / 3class``
(the MEGC2019 composite), ``casme2 / 5class``, ``samm / 5class`` and ``smic / 3class``. A figure
of a composite run's source dataset (the composite papers' per-dataset columns) has that dataset
as its ``part``; a figure of the whole run has ``part`` None.

Metrics: ``uf1``, ``uar``, ``accuracy``. CVA and MFVAN call their single-dataset UF1 "F1-score"
(CVA: "the average F1-score across the 5 emotional labels"), which is mepipe's UF1.

Rows found to be unusable are left out and said so in the model's ``notes``: MFVAN's Table 2
CASME II and SAMM columns (the markdown's headers name two UF1 columns each), MobileViT's
abstract accuracy (84.27 %, of no stated dataset or table), MSMMT's CASME II single-dataset
figures (the text of Table 1 gives none), MFVAN's fewer-scale rows of Table 3 (which mepipe
``scales`` value each is, is our reading).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mepipe.models.recipes import get_recipe, options_dict

#: The (dataset, protocol) pairs a paper row can be for, in the order they are listed.
PROTOCOL_KEYS = (("composite", "3class"), ("casme2", "5class"), ("samm", "5class"), ("smic", "3class"))
METRIC_NAMES = {"uf1": "UF1", "uar": "UAR", "accuracy": "accuracy"}
RANDOM_WEIGHTS = "random initialisation"


@dataclass(frozen=True)
class Figure:
    """One number of a paper, as printed, and the place it is printed at.

    metric : ``uf1``, ``uar`` or ``accuracy``.
    dataset, protocol : the mepipe protocol it is a figure of (``composite``, ``3class``).
    part : the composite's source dataset (``casme2``) for a per-dataset column; None: the whole.
    printed : the number exactly as the paper prints it (``0.9402``, ``94.35``).
    percent : printed in percent (``94.35`` is 0.9435).
    cell : its column in the table line, the line split at tabs (0 is the first); None when the
        paper gives the figure only in a sentence (the row's ``quote``).
    token : its position among the whitespace-separated numbers of that cell (CVA's Tables 4 and
        5 print two rows' values in one cell).
    """

    metric: str
    dataset: str
    protocol: str
    printed: str
    cell: int | None
    part: str | None = None
    percent: bool = False
    token: int = 0

    @property
    def value(self) -> float:
        number = float(self.printed)
        return number / 100 if self.percent else number

    @property
    def shown(self) -> str:
        """The figure as a fraction, to the paper's precision (``94.35`` % -> ``0.9435``)."""
        if not self.percent:
            return self.printed
        decimals = len(self.printed.partition(".")[2])
        return f"{self.value:.{decimals + 2}f}"


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper's table: its figures, and the settings it was made with.

    table : the table's number in the paper (of ``source``, the paper the row is printed in).
    row : the row's label as printed (a cell of the table line; bold marks aside).
    anchor : text just before the table (its caption when printed above it, else its header or
        the sentence before it): the row is the first line after it that holds ``row``.
    when : the ablation this row reports, as mepipe option values (``{"residual": "rrs"}``);
        empty for the paper's main model.
    settings : the paper's option values for this row where they differ from the recipe's
        defaults (MSMMT's SAMM single-dataset alpha 0.2).
    quote : for figures the paper states only in its text: the sentence (verbatim), whose table
        ``table`` is.
    note : said under the figures in ``metrics.md``.
    """

    table: int
    row: str
    anchor: str
    figures: tuple[Figure, ...]
    when: Mapping[str, Any] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    quote: str = ""
    note: str = ""
    #: the paper file (in ``shared/papers``) the row is printed in; None: the model's own paper
    source: str | None = None


@dataclass(frozen=True)
class PaperModel:
    """A model's paper and what it reports.

    file : its markdown in ``shared/papers`` (None: not there; each row then names its source).
    weights : what the paper's network starts from; None when the paper names no pre-trained
        weights (mepipe's random initialisation is then the paper's too).
    transfer_option : the option that switches mepipe's pre-training on (MobileViT's macro-
        expression ``transfer``), and what that pre-training is; a row whose ``when`` turns it
        off was trained from random weights in the paper too.
    paper_options : the paper's value of an option where the recipe's default is not the paper's
        (MSMMT's ``size``: the paper's ViT-B, mepipe's default a smaller ViT).
    notes : what was left out, and why.
    """

    model: str
    citation: str
    file: str | None
    rows: tuple[PaperRow, ...]
    weights: str | None = None
    transfer_option: tuple[str, str] | None = None
    paper_options: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def ablation_options(self) -> set[str]:
        """The options some row's ``when`` sets: the ablations the paper reports."""
        return {name for row in self.rows for name in row.when}


def _composite(printed: Sequence[str], cells: Sequence[int], layout: Sequence[tuple[str | None, str]]) -> tuple[Figure, ...]:
    """Figures of a composite table line: ``layout`` gives (part, metric) of each printed value."""
    return tuple(Figure(metric, "composite", "3class", value, cell, part=part)
                 for value, cell, (part, metric) in zip(printed, cells, layout, strict=True))


def _pairs(printed: Sequence[str], layout: Sequence[tuple[str, str, str]], percent: Sequence[bool],
           first_cell: int = 1, token: int = 0) -> tuple[Figure, ...]:
    """Figures of a single-dataset table line: ``layout`` gives (dataset, protocol, metric) of each
    printed value, from cell ``first_cell`` on."""
    return tuple(Figure(metric, dataset, protocol, value, first_cell + index, percent=pct, token=token)
                 for index, (value, (dataset, protocol, metric), pct) in enumerate(zip(printed, layout, percent, strict=True)))


#: The MEGC2019 composite columns as most composite tables print them: the whole, SMIC, CASME II, SAMM; UF1 then UAR.
FULL_SMIC_CASME_SAMM = ((None, "uf1"), (None, "uar"), ("smic", "uf1"), ("smic", "uar"),
                        ("casme2", "uf1"), ("casme2", "uar"), ("samm", "uf1"), ("samm", "uar"))
#: MobileViT's Tables 2 and 3: the whole, CASME II, SMIC, SAMM; UAR then UF1.
MOBILEVIT_COLUMNS = ((None, "uar"), (None, "uf1"), ("casme2", "uar"), ("casme2", "uf1"),
                     ("smic", "uar"), ("smic", "uf1"), ("samm", "uar"), ("samm", "uf1"))
#: CVA's Tables 2-7: CASME II (5 classes) accuracy (%), F1; SAMM accuracy (%), F1.
CVA_COLUMNS = (("casme2", "5class", "accuracy"), ("casme2", "5class", "uf1"),
               ("samm", "5class", "accuracy"), ("samm", "5class", "uf1"))
CVA_PERCENT = (True, False, True, False)
#: MFVAN's Tables 1 and 3: SMIC (3) accuracy (%), F1; CASME II (5); SAMM (5).
MFVAN_COLUMNS = (("smic", "3class", "accuracy"), ("smic", "3class", "uf1"), ("casme2", "5class", "accuracy"),
                 ("casme2", "5class", "uf1"), ("samm", "5class", "accuracy"), ("samm", "5class", "uf1"))
MFVAN_PERCENT = (True, False) * 3
EIGHT = tuple(range(1, 9))

MSMMT_FILE = "msmmt-dynamic-image-flow-strain-evm.md"
MSMMT_TABLE_2 = "Some similar and the latest micro-expression recognition algorithms are compared in Table 2"
CROPNET_TABLE_3 = "**TABLE 3 |** Comparison of ME recognition performance composite datasets."
CROPNET_TABLE_4 = "**TABLE 4** | Ablation experiments in CASME II (5 classes)."
MOBILEVIT_TABLE_2 = "For the experimental setup, the authors of MobileViT provided three scales of models"
MOBILEVIT_TABLE_3 = "TABLE 3 | UAR and UF1 performance of different approaches under LOSO protocol"

PAPERS: dict[str, PaperModel] = {
    "ststnet": PaperModel(
        "ststnet",
        "Liong, Gan, See, Khor & Huang 2019 (FG), \"Shallow Triple Stream Three-dimensional CNN (STSTNet) for "
        "Micro-expression Recognition\", not in shared/papers: its figures as the MSMMT paper's Table 2 reprints them",
        None,
        (PaperRow(2, "STSTNet[22](2019)", MSMMT_TABLE_2,
                  _composite(("0.7353", "0.7605", "0.6801", "0.7013", "0.8382", "0.8686", "0.6588", "0.681"), EIGHT,
                             FULL_SMIC_CASME_SAMM),
                  source=MSMMT_FILE,
                  note="STSTNet's own paper is not in shared/papers: Table 2 of the MSMMT paper (Wang et al.) reprints "
                       "its MEGC2019 figures, which its arXiv abstract (1902.03634) confirms: UAR 0.7605 composite, "
                       "0.7013 SMIC, 0.8686 CASME II, 0.6810 SAMM, UF1 0.7353 composite."),),
        notes=("STSTNet's paper (Liong et al. 2019) is not in shared/papers. Its figures are taken from the MSMMT "
               "paper's Table 2 (4 decimals; the CropNet paper's Table 3 reprints them to 3). The composite UF1 and "
               "the four UARs were confirmed against the STSTNet abstract on arXiv (1902.03634, v1 and v2); the "
               "per-dataset UF1s (SMIC 0.6801, CASME II 0.8382, SAMM 0.6588) only against the two reprints and a "
               "benchmark listing (wizwand.com), not the original's table, whose number is not known here.",),
    ),
    "mobilevit": PaperModel(
        "mobilevit",
        "Liu, Li, Yi, Hu, Zhang & Liu 2022, \"Lightweight ViT Model for Micro-Expression Recognition Enhanced by Transfer Learning\"",
        "mobilevit-transfer-svm.md",
        (PaperRow(3, "MobileViT (Ours)", MOBILEVIT_TABLE_3,
                  _composite(("0.6981", "0.7318", "0.6997", "0.7251", "0.7356", "0.7141", "0.6781", "0.7428"), EIGHT,
                             MOBILEVIT_COLUMNS)),
         PaperRow(2, "MobileViT without transfer learning", MOBILEVIT_TABLE_2,
                  _composite(("0.6348", "0.6524", "0.6571", "0.6452", "0.6018", "0.6215", "0.6398", "0.6187"), EIGHT,
                             MOBILEVIT_COLUMNS),
                  when={"transfer": False},
                  note="Table 2's caption is not in the markdown; the text names the table (\"can be seen in Table 2\")."),
         PaperRow(2, "MobileViT without SVM classifier", MOBILEVIT_TABLE_2,
                  _composite(("0.6002", "0.6128", "0.6102", "0.6237", "0.6075", "0.5925", "0.5977", "0.5921"), EIGHT,
                             MOBILEVIT_COLUMNS),
                  when={"svm": False},
                  note="Table 2's caption is not in the markdown; the text names the table (\"can be seen in Table 2\")."),
         ),
        weights="macro-expression transfer",
        transfer_option=("transfer", "macro-expression transfer"),
        notes=("The abstract's accuracy of 84.27 % names no dataset or table; it is left out.",
               "Tables 2 and 3 print UAR before UF1."),
    ),
    "cropnet": PaperModel(
        "cropnet",
        "Zhao, Chen & Luo 2021, \"Micro-Expression Recognition Based on Pixel Residual Sum and Cropped Gaussian "
        "Pyramid\" (Front. Neurobot. 15:746985)",
        "ars-rrs-cropnet-cgpo.md",
        (PaperRow(3, "ARS+CropNet(ours)", CROPNET_TABLE_3,
                  _composite(("0.911", "0.904", "0.855", "0.851", "0.974", "0.979", "0.912", "0.893"), EIGHT,
                             FULL_SMIC_CASME_SAMM)),
         PaperRow(3, "RRS+CropNet(ours)", CROPNET_TABLE_3,
                  _composite(("0.875", "0.877", "0.813", "0.819", "0.972", "0.969", "0.842", "0.827"), EIGHT,
                             FULL_SMIC_CASME_SAMM),
                  when={"residual": "rrs"}),
         PaperRow(4, "CropNet+ARS", CROPNET_TABLE_4,
                  (Figure("uf1", "casme2", "5class", "0.863", 2), Figure("accuracy", "casme2", "5class", "0.862", 3)),
                  note="Table 2 gives the same accuracy (0.862, ARS+CropNet)."),
         PaperRow(4, "CropNet+RRS", CROPNET_TABLE_4,
                  (Figure("uf1", "casme2", "5class", "0.803", 2), Figure("accuracy", "casme2", "5class", "0.790", 3)),
                  when={"residual": "rrs"}, note="Table 2 gives the same accuracy (0.790, RRS+CropNet)."),
         PaperRow(4, "CropNet without GCOP +ARS", CROPNET_TABLE_4,
                  (Figure("uf1", "casme2", "5class", "0.841", 2), Figure("accuracy", "casme2", "5class", "0.813", 3)),
                  when={"cgpo": False}),
         ),
        weights="ImageNet (ReXNet)",
        notes=("Table 4's other rows (Farneback and TV-L1 flow as CropNet's input) have no mepipe option.",),
    ),
    "cva": PaperModel(
        "cva",
        "\"A novel approach for micro-expression recognition incorporating vertical attention and position "
        "localization\" (anonymous, under review)",
        "cva-fpf-swin-au.md",
        (PaperRow(1, "Ours", "Method\tAccuracy(%)\tF1-score",
                  _pairs(("94.35", "0.9402"), CVA_COLUMNS[:2], CVA_PERCENT[:2])),
         PaperRow(2, "CVA block+FPF block + AU Embeddir", "Table 1: Comparison between several SOTA methods",
                  _pairs(("94.35", "0.9402", "86.73", "0.8171"), CVA_COLUMNS, CVA_PERCENT),
                  note="The row's label is cut short in the markdown (\"Embeddir\"); the abstract gives SAMM 86.76 %."),
         PaperRow(3, "Horizontal attention(X)", "Table 2: Evaluate the contribution of AU embedding",
                  _pairs(("84.68", "0.8234", "78.20", "0.6927"), CVA_COLUMNS, CVA_PERCENT),
                  when={"attention": "horizontal"}),
         PaperRow(3, "Both direction attention(X+Y)", "Table 2: Evaluate the contribution of AU embedding",
                  _pairs(("92.74", "0.9276", "85.71", "0.7845"), CVA_COLUMNS, CVA_PERCENT),
                  when={"attention": "both"}),
         PaperRow(4, "Independent attention Continuous attention", "Table 3: Performance comparison of vertical attention",
                  _pairs(("91.94", "0.921", "82.71", "0.7892"), CVA_COLUMNS, CVA_PERCENT, token=0),
                  when={"continuous": False},
                  note="The markdown prints Table 4's two rows in one line: the independent-attention figures are "
                       "the first of each pair."),
         PaperRow(5, "FPF block based on ViT FPF block based on Swin Transfomer",
                  "Additionally, through experimentation, we have demonstrated",
                  _pairs(("91.12", "0.9014", "83.46", "0.8025"), CVA_COLUMNS, CVA_PERCENT, token=0),
                  when={"position": "vit"},
                  note="The markdown prints Table 5's two rows in one line: the ViT figures are the first of each pair."),
         PaperRow(6, "Apex input", "Table 5: Performance comparison between FPF block based on ViT",
                  _pairs(("90.73", "0.9113", "84.96", "0.7845"), CVA_COLUMNS, CVA_PERCENT),
                  when={"frames": "apex"}),
         PaperRow(6, "Onset input", "Table 5: Performance comparison between FPF block based on ViT",
                  _pairs(("91.13", "0.9112", "85.71", "0.7932"), CVA_COLUMNS, CVA_PERCENT),
                  when={"frames": "onset"}),
         PaperRow(7, "Wihout AU embedding", "Table 6: Performance comparison between single-frame input",
                  _pairs(("89.52", "0.9014", "81.20", "0.7519"), CVA_COLUMNS, CVA_PERCENT),
                  when={"use_au": False},
                  note="Table 7's full-model row gives CASME II F1 0.9112, not the 0.9402 of Tables 1-6."),
         ),
        notes=("CVA reports CASME II and SAMM, 5 classes each, accuracy and F1-score; no composite.",),
    ),
    "msmmt": PaperModel(
        "msmmt",
        "Wang, Li, Qi, Wang & Wang, \"Multi-scale multi-modal micro-expression recognition algorithm based on "
        "transformer\"",
        MSMMT_FILE,
        (PaperRow(2, "MSMMT(Ours)", MSMMT_TABLE_2,
                  _composite(("0.8160", "0.8191", "0.7651", "0.7780", "0.9071", "0.8878", "0.7392", "0.7163"), EIGHT,
                             FULL_SMIC_CASME_SAMM)),
         PaperRow(1, "", "", (Figure("accuracy", "smic", "3class", "78.3", None, percent=True),
                              Figure("uf1", "smic", "3class", "0.7216", None)),
                  quote="proposed method in this paper performs the best on the SMIC database with an accuracy of 78.3%, "
                        "which is 5.13% higher than the next best, and UF1 reaches 0.7216",
                  note="Table 1's body is not in the markdown: its SMIC figures as section 4.5.1 states them."),
         PaperRow(1, "", "", (Figure("accuracy", "samm", "5class", "73.83", None, percent=True),),
                  settings={"alpha": 0.2},
                  quote="The accuracy on the SAMM database reached 73.83%",
                  note="Table 1's body is not in the markdown: its SAMM accuracy as section 4.5.1 states it; "
                       "the single-dataset SAMM run used alpha 0.2 (section 4.5.3)."),
         ),
        weights="ImageNet (ViT-B)",
        paper_options={"size": "base"},
        notes=("Table 1 (single datasets) is in the markdown only as the text's account of it: SMIC accuracy and UF1, "
               "SAMM accuracy; no CASME II figure.",),
    ),
    "mfvan": PaperModel(
        "mfvan",
        "Pan, Yang, Xie & Wang 2023, \"Multi-scale fusion visual attention network for facial micro-expression "
        "recognition\" (Front. Neurosci. 17:1216181)",
        "mfvan-multiscale-attention.md",
        (PaperRow(1, "MFVAN", "TABLE 1 Micro-expression recognition performance comparison on the SMIC",
                  _pairs(("79.87", "0.8009", "78.45", "0.7616", "76.47", "0.7325"), MFVAN_COLUMNS, MFVAN_PERCENT)),
         PaperRow(2, "MFVAN", "TABLE 2 Micro-expression recognition performance comparison on the 3DB-combined",
                  (Figure("uf1", "composite", "3class", "0.8322", 7), Figure("uar", "composite", "3class", "0.8289", 8),
                   Figure("uf1", "composite", "3class", "0.7986", 1, part="smic"),
                   Figure("uar", "composite", "3class", "0.7899", 2, part="smic")),
                  note="Table 2's headers are garbled in the markdown (CASME II and SAMM have two UF1 columns each, "
                       "their values repeated swapped): those columns are left out; the 3DB-combined and SMIC columns "
                       "are read as headed."),
         PaperRow(3, "Global+scale1,2,3", "TABLE 3 Evaluation for global and local features on the SMIC",
                  _pairs(("70.10", "0.6941", "75.92", "0.7482", "75.32", "0.7297"), MFVAN_COLUMNS, MFVAN_PERCENT),
                  when={"identity_removal": False}),
         ),
        notes=("Table 3's fewer-scale rows are left out: which mepipe `scales` value each of \"Global\", "
               "\"Global+scale1\" and \"Global+scale1,2\" is, is a reading, not the paper's word.",
               "Table 2's CASME II and SAMM columns are left out (garbled headers in the markdown)."),
    ),
}


# --------------------------------------------------------------------------------------------
# a run beside its paper


def reported(model: str) -> list[tuple[str, str]]:
    """The (dataset, protocol) pairs ``model``'s paper gives figures for (its main model's rows)."""
    paper = PAPERS[model]
    found = {(figure.dataset, figure.protocol) for row in paper.rows if not row.when for figure in row.figures}
    return [key for key in PROTOCOL_KEYS if key in found]


def _same(a: Any, b: Any) -> bool:
    """Option values equal as the run's config.json stores them (tuples as lists, floats as floats)."""
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


def matching_rows(model: str, dataset: str, protocol: str, options: Mapping[str, Any],
                  defaults: Mapping[str, Any]) -> tuple[list[PaperRow], bool]:
    """The paper rows of ``model`` for a run of ``options`` on ``dataset`` / ``protocol``, and
    whether they report the run's own ablation settings.

    A row matches when every ablation option of the paper (:meth:`PaperModel.ablation_options`)
    has, in the run, the row's ``when`` value, or the default where the row sets none. Rows of
    several tables may match (CVA's CASME II in Tables 1 and 2): each figure is then taken from the
    first row listed that has it. When no row matches (an ablation, or a mix of them, the paper
    does not report), the paper's main rows are returned, and False.
    """
    paper = PAPERS[model]
    ablations = paper.ablation_options()

    def for_run(row: PaperRow) -> bool:
        return any(f.dataset == dataset and f.protocol == protocol for f in row.figures)

    def matches(row: PaperRow) -> bool:
        return all(_same(options.get(name, defaults.get(name)), row.when.get(name, defaults.get(name))) for name in ablations)

    rows = [row for row in paper.rows if for_run(row) and matches(row)]
    if rows:
        return rows, True
    return [row for row in paper.rows if for_run(row) and not row.when], False


def _figures_by_part(rows: Sequence[PaperRow], dataset: str, protocol: str) -> dict[str | None, dict[str, tuple[Figure, PaperRow]]]:
    """part -> metric -> (figure, its row): each figure from the first row that gives it."""
    parts: dict[str | None, dict[str, tuple[Figure, PaperRow]]] = {}
    for row in rows:
        for figure in row.figures:
            if figure.dataset == dataset and figure.protocol == protocol:
                parts.setdefault(figure.part, {}).setdefault(figure.metric, (figure, row))
    return parts


def settings_line(model: str, config: Mapping[str, Any], row_settings: Mapping[str, Any] | None = None,
                  ablation: Mapping[str, Any] | None = None) -> str:
    """One line: did the run use the paper's settings, and which did it change?

    It compares the run's ``config.json`` with the paper: the inputs (``variant``, ``own_variant``:
    the model's own variant is the paper's crop size, colour and eyes), the weights it starts from
    (mepipe trains every network from random initialisation; MobileViT from its macro-expression
    transfer), the options (each against the recipe's default, which is the paper's setting or,
    where the paper gives none, ours; against the paper's own value where the recipe's default is
    not it, :attr:`PaperModel.paper_options`, and the row's ``settings``; the ablation the row
    reports is the paper's too) and the folds (all of the protocol's, as in every paper).
    """
    paper = PAPERS[model]
    recipe = get_recipe(model)
    defaults = options_dict(recipe.Options())
    options = dict(config.get("options") or {})
    row_settings, ablation = dict(row_settings or {}), dict(ablation or {})
    expected = {**defaults, **paper.paper_options, **row_settings, **ablation}
    changed, kept = [], []

    own = recipe.inputs_spec.variant.name if recipe.inputs_spec is not None else None
    variant = config.get("variant")
    if config.get("own_variant"):
        kept.append(f"inputs: {model}'s own variant {variant} (the paper's crop size, colour and eyes)")
    elif variant is None:
        changed.append(f"inputs: each dataset group's own variant (--variant default), not {model}'s own {own}")
    else:
        changed.append(f"inputs: variant {variant}, not {model}'s own {own}")

    ours, theirs = RANDOM_WEIGHTS, paper.weights or RANDOM_WEIGHTS
    if paper.transfer_option is not None:
        name, what = paper.transfer_option
        if options.get(name, defaults.get(name)):
            ours = what
        if not expected.get(name, True):  # the paper's own ablation without it
            theirs = RANDOM_WEIGHTS
    if ours == theirs:
        kept.append(f"weights: {ours}" + ("" if paper.weights else " (the paper names no pre-trained weights)"))
    else:
        changed.append(f"weights: {ours} (paper: {theirs})")

    differing = []
    for name, value in options.items():
        if name in expected and not _same(value, expected[name]):
            source = "paper" if name in paper.paper_options or name in row_settings else "default"
            differing.append(f"{name}={_show(value)} ({source} {_show(expected[name])})")
    if differing:
        changed.append("options: " + ", ".join(differing))
    else:
        kept.append("options: the recipe's paper settings" + (
            f" with the paper's ablation {', '.join(f'{k}={_show(v)}' for k, v in ablation.items())}" if ablation else ""))

    folds, subjects = config.get("folds"), config.get("subjects")
    if folds is not None and subjects is not None and len(folds) < int(subjects):
        changed.append(f"folds: {len(folds)} of {subjects} (the paper: every subject's)")

    verdict = "the paper's" if not changed else "not the paper's"
    parts = [f"Changed: {'; '.join(changed)}."] if changed else []
    if kept:
        parts.append(f"As the paper: {'; '.join(kept)}.")
    return f"**Settings**: {verdict}. " + " ".join(parts)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(_show(item) for item in value)
    return str(value)


def _cell(mean_std: tuple[float, float] | None, seeds: int) -> str:
    if mean_std is None:
        return "—"
    mean, std = mean_std
    return f"{mean:.3f} ± {std:.3f}" if seeds > 1 else f"{mean:.3f}"


def paper_section(config: Mapping[str, Any], summary: Mapping[str, Mapping[str, tuple[float, float]]],
                  seeds: int) -> tuple[str, dict]:
    """The Markdown that sets a run beside its paper, and the same as a JSON-ready record.

    ``config`` is the run's ``config.json``; ``summary`` is :func:`mepipe.models.metrics.summarise`
    of its per-seed scores (key ``overall`` and one per source dataset group). The run's dataset is
    looked up under its adapter (``adapters`` in ``config.json``: ``demo`` is built by the
    ``casme2`` adapter), else its name. The table has, for the whole run and (composite) for each
    source dataset the paper gives, the run's UF1, UAR and accuracy and the paper's, with the
    table number and row label; then the settings line (:func:`settings_line`). A model without a
    paper entry gives an empty string and record.
    """
    model = str(config.get("model", ""))
    if model not in PAPERS:
        return "", {}
    paper = PAPERS[model]
    defaults = options_dict(get_recipe(model).Options())
    options = dict(config.get("options") or {})
    name, protocol = str(config.get("dataset", "")), str(config.get("protocol", ""))
    adapters = dict(config.get("adapters") or {})
    dataset = name if name == "composite" else adapters.get(name, name)
    rows, own_ablation = matching_rows(model, dataset, protocol, options, defaults)
    lines = [f"#### Beside the paper: {paper.citation}", ""]
    record: dict[str, Any] = {"citation": paper.citation, "dataset": dataset, "protocol": protocol, "rows": []}
    ablation = {key: options.get(key, defaults.get(key)) for key in paper.ablation_options()
                if not _same(options.get(key, defaults.get(key)), defaults.get(key))}
    if not rows:
        others = ", ".join(f"{d} {p}" for d, p in reported(model)) or "none"
        lines.append(f"The paper reports no figures for {dataset} {protocol} (it reports: {others}).")
        row_settings: dict[str, Any] = {}
    else:
        if not own_ablation:
            lines += [f"The paper reports no row for {', '.join(f'{k}={_show(v)}' for k, v in ablation.items())}: "
                      "its main model's figures.", ""]
        row_settings = {k: v for row in rows for k, v in row.settings.items()}
        parts = _figures_by_part(rows, dataset, protocol)
        lines += ["| dataset | | UF1 | UAR | accuracy | source |", "|:--|:--|--:|--:|--:|:--|"]
        for part in [None, *[p for p in ("smic", "casme2", "samm") if p in parts]]:
            if part not in parts:
                continue
            label = (name if name == dataset else f"{name} ({dataset})") if part is None else part
            run = summary.get("overall" if part is None else part)
            run_cells = " | ".join(_cell(run.get(metric) if run else None, seeds) for metric in METRIC_NAMES)
            lines.append(f"| {label} | this run | {run_cells} | mepipe, {seeds} seed{'s' if seeds > 1 else ''} |")
            figures = parts[part]
            paper_cells = " | ".join(figures[metric][0].shown if metric in figures else "—" for metric in METRIC_NAMES)
            tables = sorted({row.table for _, row in figures.values()})
            labels = list(dict.fromkeys(row.row for _, row in figures.values() if row.row))
            source = f"Table {', '.join(map(str, tables))}" + (f", {'; '.join(labels)}" if labels else " (its text)")
            lines.append(f"| {label} | paper | {paper_cells} | {source} |")
            record["rows"].append({
                "part": part,
                "run": {metric: list(run[metric]) if run and metric in run else None for metric in METRIC_NAMES},
                "paper": {metric: {"value": figure.value, "printed": figure.printed, "table": row.table, "row": row.row}
                          for metric, (figure, row) in figures.items()}})
        notes = list(dict.fromkeys(row.note for row in rows if row.note))
        if notes:
            lines += [""] + [f"Note: {note}" for note in notes]
    settings = settings_line(model, config, row_settings, ablation if own_ablation else None)
    lines += ["", settings]
    record["settings"] = settings
    return "\n".join(lines) + "\n", record


def figures_markdown() -> str:
    """Every model's paper figures as one Markdown table (``docs/paper-figures.md`` holds it).

    One line per paper row and (dataset, protocol, part): the row's ablation (``when``, or the
    main model), UF1, UAR and accuracy as fractions, the table and the row's label.
    """
    lines = ["| model | dataset / protocol | part | ablation | UF1 | UAR | accuracy | table, row |",
             "|:--|:--|:--|:--|--:|--:|--:|:--|"]
    for model, paper in PAPERS.items():
        for row in paper.rows:
            keys = list(dict.fromkeys((f.dataset, f.protocol, f.part) for f in row.figures))
            for dataset, protocol, part in keys:
                figures = {f.metric: f for f in row.figures if (f.dataset, f.protocol, f.part) == (dataset, protocol, part)}
                cells = " | ".join(figures[m].shown if m in figures else "—" for m in METRIC_NAMES)
                ablation = ", ".join(f"`{k}={_show(v)}`" for k, v in row.when.items()) or "the paper's model"
                where = f"Table {row.table}, {row.row}" if row.row else f"Table {row.table} (its text)"
                if row.source:
                    where += f" (in {row.source})"
                lines.append(f"| {model} | {dataset} {protocol} | {part or 'all'} | {ablation} | {cells} | {where} |")
    return "\n".join(lines) + "\n"


__all__ = ["Figure", "PaperRow", "PaperModel", "PAPERS", "PROTOCOL_KEYS", "reported", "matching_rows", "settings_line",
           "paper_section", "figures_markdown"]
