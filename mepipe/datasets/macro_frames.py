"""MobileViT's macro-expression transfer set as its paper builds it: which frames, which classes, how many.

Liu et al. 2022, "Lightweight ViT Model for Micro-Expression Recognition Enhanced by Transfer
Learning" (``shared/papers/mobilevit-transfer-svm.md``), section Experiments > Datasets >
Macro-Expression Datasets. No pixels here: the rule answers with frame indices into a sample's
clip (the stored aligned clip has the sample's frames, in order, one for one), and the recipe
(``mepipe.models.recipes.mobilevit``) takes those frames from the store.

**Frames per sequence** (:func:`paper_frames`, :func:`frame_indices`):

- CK+: "Each clip starts from the normal facial expression frame and ends at the vertex frame.
  The last three frames were selected from the corresponding video clips of the three types of
  emotions desired in the experiment." -> indices ``n-3, n-2, n-1``.
- Oulu-CASIA: "The last three frames of each video captured by the visible light system were
  selected in this experiment." -> indices ``n-3, n-2, n-1``. mepipe's ``oulu`` group is what
  :func:`~mepipe.datasets.macro.read_oulu` reads by default, ``VL/Strong``: visible light, as the
  paper says (it does not say which of the three illuminations; mepipe builds one).
- JAFFE: "In this experiment, the image with the correct expression label was selected from the
  corresponding images." A JAFFE sample is one image -> index ``0``; every labelled image of the
  three classes is taken (the paper's JAFFE is one of its "four macro-expression datasets").
- MUG: "Each clip contained between 50 and 160 frames, starting and ending with the normal
  expression frame and ending with the vertex frame in between; six to 10 frames close to the
  vertex were selected from each segment in this experiment." The paper gives neither the peak
  frame nor how many of 6-10 it took from which clip. mepipe's MUG adapter has no peak
  annotation: its apex is the middle frame (``apex_source`` ``middle``), and the recipe passes
  the apex the build used (the same, unless the build spotted it with ``face.apex=spot``). Our
  reading (:func:`mug_frame_count`): the count grows with the clip's length, linearly from 6 at
  the paper's shortest clip (50 frames) to 10 at its longest (160), rounded half up, and stays
  at 6 / 10 below / above that range; the frames are a run of that many consecutive frames
  around the apex, ``(k - 1) // 2`` before it and ``k // 2`` after it, shifted inside the clip
  where the apex lies near an end. A clip shorter than the count gives all its frames.

**Classes** (the protocol :data:`MOBILEVIT_PROTOCOL`, registered in
:mod:`mepipe.datasets.protocols` for ckplus, oulu, jaffe and mug): "The number of emotion
categories in the experiment was 3: positive emotions, negative emotions, and surprise. Positive
emotions included only happiness, and negative emotions contained anger, disgust, and sadness."
Contempt (CK+), fear (all four) and neutral (JAFFE, MUG) are in none of the three and are left
out. The classes are the composite's (negative, positive, surprise, in that order), so the
transfer set's labels index the micro-expression classes.

**Counts** (:data:`PAPER_COUNTS`): "From the four macro-expression datasets, 9,342 images were
selected for migration learning, including 3,085 samples of positive emotions, 3,263 samples of
negative emotions, and 2,994 samples of surprising emotions." (section Method, said again at
the end of Macro-Expression Datasets). The paper gives no count per source; it adds "We take
samples by looking at factors such as background and head tilt angle to get as close as
possible to the micro-expression samples taken", a selection by eye that mepipe does not
repeat. The synthetic macro sets of ``mepipe synth`` cannot match these numbers; the rule per
sequence can be checked exactly (``tests/test_macro_frames.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

from mepipe.datasets.samples import Sample

#: The protocol name of the paper's macro-expression classes.
MOBILEVIT_PROTOCOL = "mobilevit"
#: The datasets the protocol applies to (those of the paper's transfer set).
MOBILEVIT_DATASETS = ("ckplus", "oulu", "jaffe", "mug")
#: Emotion (lowercase, as the adapters spell it; CK+ writes ``happy``) -> the paper's class.
MOBILEVIT_RULE: dict[str, str] = {
    "anger": "negative", "disgust": "negative", "sadness": "negative",
    "happiness": "positive", "happy": "positive",
    "surprise": "surprise",
}
#: The macro sets' emotions in none of the paper's three classes.
MOBILEVIT_LEFT_OUT = frozenset({"contempt", "fear", "neutral"})

#: The paper's transfer set: 9,342 images of the four macro-expression datasets (section Method,
#: and the last paragraph of Experiments > Datasets > Macro-Expression Datasets). No per-source counts.
PAPER_TOTAL = 9342
PAPER_COUNTS: dict[str, int] = {"negative": 3263, "positive": 3085, "surprise": 2994}
#: What the paper says of each source's size (Macro-Expression Datasets), for the recipe's log.
PAPER_SOURCES: dict[str, str] = {
    "ckplus": "593 clips of 123 subjects, 327 labelled; last 3 frames",
    "oulu": "80 subjects, 6 expressions, visible light; last 3 frames",
    "jaffe": "219 images of 10 subjects; the labelled image",
    "mug": "1,032 clips of 86 subjects, 50-160 frames; 6-10 frames near the peak",
}

#: The last frames taken from each CK+ and Oulu-CASIA sequence.
LAST_FRAMES = 3
#: MUG: the paper's count range (frames per clip) and its clip length range (frames).
MUG_COUNT = (6, 10)
MUG_LENGTH = (50, 160)


def mug_frame_count(n_frames: int) -> int:
    """Frames taken from a MUG clip of ``n_frames``: 6 at <= 50 frames, 10 at >= 160, linear between.

    Rounded half up: 50 -> 6, 64 -> 7, 105 -> 8, 160 -> 10.
    """
    (low, high), (short, long) = MUG_COUNT, MUG_LENGTH
    length = min(max(n_frames, short), long)
    span = long - short
    return low + ((high - low) * (length - short) * 2 + span) // (2 * span)


def frame_indices(dataset: str, n_frames: int, apex: int) -> tuple[int, ...]:
    """The indices (into the clip of ``n_frames``) the paper takes for one sequence of ``dataset``.

    ``apex`` is used for MUG only (the frames around it). Raises ValueError for a dataset outside
    the paper's four, an empty clip, or an apex outside the clip.
    """
    if n_frames < 1:
        raise ValueError(f"{dataset}: a sequence of {n_frames} frames has none to take")
    if dataset in ("ckplus", "oulu"):
        return tuple(range(max(0, n_frames - LAST_FRAMES), n_frames))
    if dataset == "jaffe":
        return (0,)
    if dataset == "mug":
        if not 0 <= apex < n_frames:
            raise ValueError(f"mug: apex {apex} is outside the clip of {n_frames} frames")
        count = min(mug_frame_count(n_frames), n_frames)
        start = min(max(apex - (count - 1) // 2, 0), n_frames - count)
        return tuple(range(start, start + count))
    raise ValueError(f"no MobileViT frame rule for {dataset!r}; the paper's macro sets are {', '.join(MOBILEVIT_DATASETS)}")


def paper_frames(sample: Sample, n_frames: int | None = None, apex: int | None = None) -> tuple[int, ...]:
    """:func:`frame_indices` of a sample: its dataset, its frame count and its apex.

    A sample read by an adapter lists its frames; one rebuilt from the store (no frame paths)
    needs ``n_frames``, the length of its stored clip. ``apex`` defaults to ``sample.apex``.
    """
    count = n_frames if n_frames is not None else sample.n_frames
    return frame_indices(sample.dataset, count, sample.apex if apex is None else apex)


def counts_table(taken: Mapping[tuple[str, str], tuple[int, int]], classes: tuple[str, ...]) -> list[str]:
    """Lines of a table: per source, the frames taken per class with the sequences they came from,
    then the total beside the paper's counts.

    ``taken`` maps (source, class) to (frames, sequences).
    """
    sources = list(dict.fromkeys(source for source, _ in taken))
    width = max([len("paper (real sets)"), *map(len, sources)])
    header = f"{'source':<{width}}  " + "  ".join(f"{c:>17}" for c in classes) + f"  {'total':>17}"
    lines = [header]

    def cell(frames: int, sequences: int | None) -> str:
        return f"{frames:>6}" + (f" of {sequences:>4} seq" if sequences is not None else " " * 11)

    total = {c: [0, 0] for c in classes}
    for source in sources:
        row = [taken.get((source, c), (0, 0)) for c in classes]
        for c, (frames, sequences) in zip(classes, row):
            total[c][0] += frames
            total[c][1] += sequences
        frames_sum, sequences_sum = sum(r[0] for r in row), sum(r[1] for r in row)
        lines.append(f"{source:<{width}}  " + "  ".join(cell(*r) for r in row) + f"  {cell(frames_sum, sequences_sum)}")
    all_frames = sum(v[0] for v in total.values())
    all_sequences = sum(v[1] for v in total.values())
    lines.append(f"{'all':<{width}}  " + "  ".join(cell(*total[c]) for c in classes) + f"  {cell(all_frames, all_sequences)}")
    paper = [PAPER_COUNTS.get(c) for c in classes]
    lines.append(f"{'paper (real sets)':<{width}}  " + "  ".join(
        cell(p, None) if p is not None else f"{'-':>17}" for p in paper) + f"  {cell(PAPER_TOTAL, None)}")
    return lines
