"""MobileViT's macro-expression transfer set (mepipe.datasets.macro_frames, the ``mobilevit`` protocol,
and the recipe's ``_macro_samples``) against the paper's rule, sequence by sequence.

CK+ is the only macro layout ``mepipe synth`` writes: a synthetic tree of one subject with all seven
CK+ emotions is made and built (face only, 32 px) once for the module. Oulu-CASIA, JAFFE and MUG are
checked on trees of empty files named as the real sets name them, read by their adapters.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mepipe.datasets.macro import read_jaffe, read_mug, read_oulu
from mepipe.datasets.macro_frames import (MOBILEVIT_PROTOCOL, PAPER_COUNTS, PAPER_TOTAL, counts_table, frame_indices,
                                          mug_frame_count, paper_frames)
from mepipe.datasets.protocols import PROTOCOLS, label_map, select

# The paper's classes (Experiments > Datasets): happiness; anger, disgust, sadness; surprise.
PAPER_CLASS = {"anger": "negative", "disgust": "negative", "sadness": "negative",
               "happy": "positive", "happiness": "positive", "surprise": "surprise"}
CLASSES = ("negative", "positive", "surprise")


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def hand_counts(samples, frames_of) -> dict[str, tuple[int, int]]:
    """class -> (frames, sequences), from the emotions as written, contempt, fear and neutral dropped."""
    out = {c: [0, 0] for c in CLASSES}
    for sample in samples:
        cls = PAPER_CLASS.get(sample.emotion.lower())
        if cls is None:
            assert sample.emotion.lower() in ("contempt", "fear", "neutral"), sample.emotion
            continue
        out[cls][0] += len(frames_of(sample))
        out[cls][1] += 1
    return {c: tuple(v) for c, v in out.items()}


# --- CK+: the synthetic tree and its store ---------------------------------------------------------


@pytest.fixture(scope="module")
def ckplus(tmp_path_factory):
    """A synthetic CK+ tree (1 subject x 7 sequences: the seven CK+ emotions once each, 10-20
    frames) and a store of its ``face`` artifact at 32 px."""
    from mepipe.pipeline.build import BuildOptions, build
    from mepipe.synth.generate import SynthOptions, synthesize
    from mepipe.synth.ground_truth import GroundTruth

    tmp = tmp_path_factory.mktemp("macro_frames")
    root, store = tmp / "ck", tmp / "store.zarr"
    synthesize(SynthOptions(layout="ckplus", out=root, subjects=1, clips_per_subject=7, workers=2))
    summary = build(BuildOptions("ckplus", root=root, store=store, scheduler="threads", workers=2,
                                 artifacts=("face",), params=("face.size=32",)))
    assert not summary.failures, summary.failures
    return root, store, GroundTruth(root).clips


def test_ckplus_takes_the_last_three_frames_of_every_sequence(ckplus):
    from mepipe.datasets.macro import read_ckplus

    root, _, truth = ckplus
    reading = read_ckplus(root)
    assert Counter(s.emotion for s in reading.samples) == Counter(
        ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise"))
    last_frames = {(c["subject"], c["clip"]): c["last_frame"] for c in truth}
    for sample in reading.samples:
        chosen = paper_frames(sample)
        assert chosen == (sample.n_frames - 3, sample.n_frames - 2, sample.n_frames - 1)
        last = last_frames[(sample.subject, sample.clip)]
        assert [sample.frame_numbers[i] for i in chosen] == [last - 2, last - 1, last]  # ends at the peak

    selection = select("ckplus", MOBILEVIT_PROTOCOL, {"ckplus": reading})
    assert selection.classes == CLASSES
    assert selection.counts() == {c: n for c, (_, n) in hand_counts(reading.samples, paper_frames).items()}
    assert selection.counts() == {"negative": 3, "positive": 1, "surprise": 1}
    assert sorted(sample_id.split("/")[-1] for sample_id, _ in selection.excluded) == sorted(
        s.clip for s in reading.samples if s.emotion in ("contempt", "fear"))
    # the 3class protocol other users read is unchanged: contempt and fear stay negative
    assert select("ckplus", "3class", {"ckplus": reading}).counts() == {"negative": 5, "positive": 1, "surprise": 1}


def test_the_recipe_takes_the_rule_s_frames_from_the_stored_clips_with_the_eyes_zeroed(ckplus):
    import zarr

    from mepipe.datasets.macro import read_ckplus
    from mepipe.models.recipes.mobilevit import MobileViTOptions, MobileViTRecipe, transfer_frames
    from mepipe.pipeline.load import load
    from mepipe.pipeline.store import read_clip

    root, store, _ = ckplus
    reading = read_ckplus(root)
    macro = MobileViTRecipe()._macro_samples(store, MobileViTOptions(size=32), None)

    expected = hand_counts(reading.samples, paper_frames)
    assert macro.names == ["ckplus"] and macro.classes == CLASSES
    assert macro.taken == {("ckplus", c): expected[c] for c in CLASSES}
    assert {c: int((macro.y == i).sum()) for i, c in enumerate(CLASSES)} == {c: f for c, (f, _) in expected.items()}
    assert len(macro.y) == len(macro.groups) == macro.x.shape[0] == 15 and tuple(macro.x.shape[1:]) == (1, 32, 32)
    assert set(macro.groups) == {f"ckplus/{s.subject}" for s in reading.samples} == {"ckplus/S005"}

    # pixel for pixel: the last three frames of each stored clip, eye-mask pixels 0
    group = zarr.open_group(str(store / "ckplus"), mode="r")
    data = load(store, "ckplus", ["frames", "eye_mask"], MOBILEVIT_PROTOCOL)
    images, rows = transfer_frames(data, "ckplus")
    assert np.array_equal(images.astype(np.float32) / 255.0, macro.x[:, 0].numpy())
    position = 0
    for row in range(len(data)):
        clip = read_clip(group, "frames", f"{data.meta['subject'][row]}/{data.meta['clip'][row]}")
        assert len(clip) == data.meta["n_frames"][row]
        mask = data.arrays["eye_mask"][row, 0].astype(bool)
        assert mask.any() and not mask.all()
        taken = images[rows == row]
        assert len(taken) == 3
        assert np.array_equal(taken[:, ~mask], clip[-3:][:, ~mask])
        assert (taken[:, mask] == 0).all()
        assert np.array_equal(rows[position:position + 3], [row] * 3)
        position += 3


def test_the_recipe_logs_the_counts_beside_the_paper_s(ckplus):
    from mepipe.models.recipes.mobilevit import MobileViTOptions, MobileViTRecipe

    _, store, _ = ckplus
    macro = MobileViTRecipe()._macro_samples(store, MobileViTOptions(size=32), None)
    lines = counts_table(macro.taken, macro.classes)
    assert lines[0].split() == ["source", *CLASSES, "total"]
    assert lines[1].split() == ["ckplus", "9", "of", "3", "seq", "3", "of", "1", "seq", "3", "of", "1", "seq",
                                "15", "of", "5", "seq"]
    assert lines[-1].split() == ["paper", "(real", "sets)", "3263", "3085", "2994", "9342"]


# --- Oulu-CASIA, JAFFE, MUG: empty-file trees read by their adapters -------------------------------


def test_oulu_takes_the_last_three_frames_of_each_visible_light_sequence(tmp_path):
    expressions = ("Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
    lengths = {"P001": (9, 10, 11, 12, 13, 14), "P002": (2, 3, 4, 20, 21, 22)}
    for subject, counts in lengths.items():
        for expression, length in zip(expressions, counts):
            for number in range(length):
                touch(tmp_path / "VL" / "Strong" / subject / expression / f"{number:03d}.jpeg")
    reading = read_oulu(tmp_path)
    assert len(reading.samples) == 12 and reading.problems == []
    expected = {("P001", "Anger"): (6, 7, 8), ("P001", "Surprise"): (11, 12, 13),
                ("P002", "Anger"): (0, 1), ("P002", "Disgust"): (0, 1, 2), ("P002", "Fear"): (1, 2, 3),
                ("P002", "Surprise"): (19, 20, 21)}
    for sample in reading.samples:
        chosen = paper_frames(sample)
        assert chosen == tuple(range(max(0, sample.n_frames - 3), sample.n_frames))
        if (sample.subject, sample.clip) in expected:
            assert chosen == expected[(sample.subject, sample.clip)]
    selection = select("oulu", MOBILEVIT_PROTOCOL, {"oulu": reading})
    assert selection.counts() == {"negative": 6, "positive": 2, "surprise": 2}
    assert [sid for sid, _ in selection.excluded] == ["oulu/P001/Fear", "oulu/P002/Fear"]
    frames = hand_counts(reading.samples, paper_frames)
    assert frames == {"negative": (3 + 3 + 3 + 2 + 3 + 3, 6), "positive": (6, 2), "surprise": (6, 2)}


def test_jaffe_takes_each_labelled_image_and_leaves_out_fear_and_neutral(tmp_path):
    names = ["KA.AN1.39.tiff", "KA.NE1.26.tiff", "KL.DI4.21.tiff", "KM.FE3.23.tiff", "NA.HA2.203.tiff",
             "TM.SA1.190.tiff", "YM.SU3.60.tiff", "YM.SU2.59.tiff"]
    for name in names:
        touch(tmp_path / "jaffe" / name)
    reading = read_jaffe(tmp_path)
    assert all(paper_frames(sample) == (0,) for sample in reading.samples)
    selection = select("jaffe", MOBILEVIT_PROTOCOL, {"jaffe": reading})
    assert selection.counts() == {"negative": 3, "positive": 1, "surprise": 2}
    assert sorted(sid for sid, _ in selection.excluded) == ["jaffe/KA/KA.NE1.26", "jaffe/KM/KM.FE3.23"]


def test_mug_takes_6_to_10_frames_around_the_peak_by_clip_length(tmp_path):
    root = tmp_path / "subjects3"
    clips = {  # (subject, expression, take) -> (first frame number, frames)
        ("001", "anger", "take000"): (0, 50),
        ("001", "disgust", "take000"): (3, 64),
        ("001", "fear", "take000"): (0, 70),
        ("001", "happiness", "take000"): (0, 105),
        ("001", "neutral", "take000"): (0, 80),
        ("002", "sadness", "take000"): (0, 160),
        ("002", "surprise", "take000"): (10, 200),
        ("002", "surprise", "take001"): (0, 4),
    }
    for (subject, expression, take), (first, length) in clips.items():
        for number in range(first, first + length):
            touch(root / subject / expression / take / f"img_{number:04d}.jpg")
    reading = read_mug(root)
    samples = {sample.clip: sample for sample in reading.samples}
    assert len(samples) == len(clips) and reading.problems == []
    # the MUG adapter's apex is the middle frame, (n - 1) // 2; around it (k - 1) // 2 before, k // 2 after
    expected = {
        "anger_take000": tuple(range(22, 28)),       # 50 frames, apex 24: 6 frames
        "disgust_take000": tuple(range(28, 35)),     # 64 frames, apex 31: 7
        "happiness_take000": tuple(range(49, 57)),   # 105 frames, apex 52: 8
        "sadness_take000": tuple(range(75, 85)),     # 160 frames, apex 79: 10
        "surprise_take000": tuple(range(95, 105)),   # 200 frames, apex 99: 10
        "surprise_take001": (0, 1, 2, 3),            # shorter than 6: all of it
    }
    for clip, indices in expected.items():
        sample = samples[clip]
        assert paper_frames(sample) == indices, clip
        assert sample.apex in indices
    for sample in samples.values():
        chosen = paper_frames(sample)
        assert len(chosen) == min(sample.n_frames, mug_frame_count(sample.n_frames))
        assert 6 <= mug_frame_count(sample.n_frames) <= 10
        assert chosen == tuple(range(chosen[0], chosen[0] + len(chosen)))  # consecutive
    disgust = samples["disgust_take000"]  # frame numbers from 3
    assert [disgust.frame_numbers[i] for i in paper_frames(disgust)] == list(range(31, 38))

    selection = select("mug", MOBILEVIT_PROTOCOL, {"mug": reading})
    assert selection.counts() == {"negative": 3, "positive": 1, "surprise": 2}
    assert sorted(sid for sid, _ in selection.excluded) == ["mug/001/fear_take000", "mug/001/neutral_take000"]
    assert hand_counts(reading.samples, paper_frames) == {"negative": (6 + 7 + 10, 3), "positive": (8, 1),
                                                          "surprise": (10 + 4, 2)}


def test_mug_window_stays_inside_the_clip_and_the_count_follows_the_length():
    # 6 + 4 (n - 50) / 110 rounded half up: 7 from 64 frames, 8 from 92, 9 from 119, 10 from 147
    assert [mug_frame_count(n) for n in (1, 50, 63, 64, 91, 92, 105, 118, 119, 146, 147, 160, 400)] == \
        [6, 6, 6, 7, 7, 8, 8, 8, 9, 9, 10, 10, 10]
    counts = [mug_frame_count(n) for n in range(1, 300)]
    assert counts == sorted(counts)
    assert frame_indices("mug", 50, 0) == tuple(range(0, 6))
    assert frame_indices("mug", 50, 49) == tuple(range(44, 50))
    assert frame_indices("mug", 160, 100) == tuple(range(96, 106))
    with pytest.raises(ValueError, match="apex 50 is outside the clip of 50 frames"):
        frame_indices("mug", 50, 50)
    with pytest.raises(ValueError, match="no MobileViT frame rule for 'casme2'"):
        frame_indices("casme2", 30, 10)
    with pytest.raises(ValueError, match="0 frames"):
        frame_indices("ckplus", 0, 0)


# --- the protocol and the paper's numbers ----------------------------------------------------------


@pytest.mark.parametrize("dataset", ["ckplus", "oulu", "jaffe", "mug"])
def test_the_mobilevit_protocol_is_the_paper_s_three_classes(dataset):
    assert PROTOCOLS[dataset] == ("native", "3class", MOBILEVIT_PROTOCOL)  # native stays the default
    labels, native = label_map(dataset, MOBILEVIT_PROTOCOL), label_map(dataset, "native")
    assert labels.classes == CLASSES
    assert labels.mapping == {e: PAPER_CLASS[e] for e in native.classes if e in PAPER_CLASS}
    assert labels.excluded == {e for e in native.classes if e in ("contempt", "fear", "neutral")}
    assert set(labels.mapping) | labels.excluded == set(native.classes)  # every emotion known


def test_the_paper_s_counts():
    assert PAPER_TOTAL == 9342 == sum(PAPER_COUNTS.values())
    assert PAPER_COUNTS == {"negative": 3263, "positive": 3085, "surprise": 2994}
