"""Every recipe declares the inputs its paper describes, and the colour models read colour arrays.

The declarations (``INPUTS`` of each ``mepipe/models/recipes/*.py``) are checked against the papers'
text in ``shared/papers/``: every quoted sentence must occur there verbatim (whitespace aside). The
colour checks build a :class:`~mepipe.pipeline.load.LoadedData` by hand in the colour layouts the
store writes (face (N, 6, S, S), residual (N, 6, S, S), dynamic (N, 3, S, S), frames (T, S, S, 3))
and train one tiny fold of each colour model through its recipe.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mepipe.models.recipes import RECIPES, FoldData, RunContext, apply_settings, get_recipe
from mepipe.models.recipes.base import apex_frames, clip_channels, image_channels
from mepipe.models.recipes.cropnet import CropNetOptions, adjust_hue, grayscale, paper_augment
from mepipe.pipeline.load import LoadedData
from mepipe.pipeline.variants import ModelInputs, Variant

REPO = Path(__file__).resolve().parents[1]
PAPERS = REPO.parent / "shared" / "papers"
PROPERTIES = ("artifact", "size", "colour", "eyes", "frames")
#: Each model's paper in shared/papers (STSTNet's, Liong et al. 2019, is not there).
PAPER_FILES = {
    "ststnet": None,
    "mobilevit": "mobilevit-transfer-svm.md",
    "cropnet": "ars-rrs-cropnet-cgpo.md",
    "cva": "cva-fpf-swin-au.md",
    "msmmt": "msmmt-dynamic-image-flow-strain-evm.md",
    "mfvan": "mfvan-multiscale-attention.md",
}
#: The variants the project settled on: only MobileViT masks the eyes.
SETTLED = {
    "ststnet": Variant(224, False, "none"),
    "mobilevit": Variant(256, False, "zero"),
    "cropnet": Variant(320, True, "none"),
    "cva": Variant(224, True, "none"),
    "msmmt": Variant(224, True, "none"),
    "mfvan": Variant(224, True, "none"),
}


def _spec(name: str) -> ModelInputs:
    return get_recipe(name).inputs_spec


def _words(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- the declarations

@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_declares_complete_inputs(name):
    recipe = get_recipe(name)
    spec = recipe.inputs_spec
    assert isinstance(spec, ModelInputs) and spec.model == name
    assert spec.artifacts == recipe.artifacts and spec.artifacts
    assert spec.variant == SETTLED[name]
    assert spec.frames and spec.paper
    assert set(PROPERTIES) <= set(spec.sources), f"{name} lacks {set(PROPERTIES) - set(spec.sources)}"
    for prop, source in spec.sources.items():
        assert source.fact and source.where, f"{name}.{prop}: a fact and where it comes from"
        if not source.quote:  # the paper is silent: say so, with our choice
            assert re.search(r"not stated|not in /work/shared/papers", source.where), f"{name}.{prop}: {source.where}"


@pytest.mark.parametrize("name", list(RECIPES))
def test_quoted_sentences_occur_verbatim_in_the_paper(name):
    if not PAPERS.is_dir():
        pytest.skip(f"no papers folder at {PAPERS}")
    spec = _spec(name)
    quoted = [(prop, source) for prop, source in spec.sources.items() if source.quote]
    if PAPER_FILES[name] is None:
        assert "not in /work/shared/papers" in spec.paper
    for prop, source in quoted:
        paper = PAPER_FILES[name]
        if paper is None:  # quoted from another paper's account of it: the file is named in `where`
            named = re.findall(r"[\w-]+\.md", source.where)
            assert named, f"{name}.{prop}: a quote of another paper must name its file in `where`"
            paper = named[0]
        text = _words((PAPERS / paper).read_text(encoding="utf-8"))
        assert _words(source.quote) in text, f"{name}.{prop}: not verbatim in {paper}: {source.quote!r}"


def test_only_mobilevit_masks_the_eyes_and_the_docs_table_agrees():
    masked = [name for name in RECIPES if _spec(name).variant.masked]
    assert masked == ["mobilevit"]
    table = (REPO / "docs" / "models" / "inputs.md").read_text(encoding="utf-8")
    for name in RECIPES:
        variant = _spec(name).variant
        rows = [line for line in table.splitlines() if line.startswith("|") and f"]({name}.md)" in line]
        assert rows, f"docs/models/inputs.md has no row for {name}"
        assert f"{variant.size}" in rows[0] and ("colour" if variant.colour else "gray") in rows[0]
        assert ("masked" if variant.masked else "kept") in rows[0]
    # the sources table of the same page quotes every sentence the recipes quote
    for name in RECIPES:
        for prop, source in _spec(name).sources.items():
            assert _words(source.quote) in _words(table), f"docs/models/inputs.md lacks {name}.{prop}'s quote"


# ---------------------------------------------------------------- colour arrays through the recipes

N, SIZE, T = 6, 32, 5


def _colour_data(seed: int = 0) -> LoadedData:
    """Six samples of three subjects in the colour layouts of a 32 px colour, eyes-kept variant."""
    rng = np.random.default_rng(seed)
    face = rng.integers(0, 256, (N, 6, SIZE, SIZE), dtype=np.uint8)
    arrays = {
        "face": face,
        "residual": rng.integers(0, 256, (N, 6, SIZE, SIZE)).astype(np.float32),
        "dynamic": rng.integers(0, 256, (N, 3, SIZE, SIZE), dtype=np.uint8),
        "magnified_flow": rng.normal(0, 0.3, (N, 3, SIZE, SIZE)).astype(np.float32),
        "frames": [rng.integers(0, 256, (T + i, SIZE, SIZE, 3), dtype=np.uint8) for i in range(N)],
        "eye_mask": np.zeros((N, 1, SIZE, SIZE), np.uint8),
    }
    ids = np.array([f"casme2/sub0{i // 2}/EP0{i}" for i in range(N)], dtype=object)
    meta = {"sample_id": ids, "subject": np.array([f"sub0{i // 2}" for i in range(N)], dtype=object),
            "action_units": np.array(["4+7", "12", "1+2", "", "4", "14"], dtype=object),
            "label": np.array([0, 1, 2, 0, 1, 2], dtype=np.int64),
            "group": np.array([f"casme2/sub0{i // 2}" for i in range(N)], dtype=object)}
    return LoadedData("casme2", "3class", arrays, meta, ("negative", "positive", "surprise"), [], [])


def _gray(data: LoadedData) -> LoadedData:
    """The same samples in a gray variant's layouts (the first channel of each image)."""
    arrays = dict(data.arrays)
    arrays["face"] = data.arrays["face"][:, [0, 3]]
    arrays["residual"] = data.arrays["residual"][:, [0, 3]]
    arrays["dynamic"] = data.arrays["dynamic"][:, :1]
    arrays["frames"] = [clip[..., 0] for clip in data.arrays["frames"]]
    return LoadedData(data.dataset, data.protocol, arrays, data.meta, data.classes, data.folds, data.missing)


#: name -> (tiny settings, (image) channels of its network input for colour and for gray)
TINY = {
    "cropnet": (("size=32", "epochs=1", "batch_size=3", "micro_batch=3", "augment=true"), 3, 1),
    "cva": (("size=32", "window=2", "epochs=1", "decay_epochs=1", "batch_size=3", "head_input=pool"), 6, 2),
    "msmmt": (("size=tiny", "image_size=32", "epochs=1", "batch_size=3"), 6, 4),
    "mfvan": (("size=24", "tokens_per_side=3", "dim=16", "depth=1", "heads=2", "epochs=1", "batch_size=3",
               "pretrain_frames=2", "pretrain_epochs=1", "pretrain_batch_size=4"), 6, 2),
}


def _images(x) -> torch.Tensor:
    return x.images if hasattr(x, "images") else x


@pytest.mark.parametrize("name", list(TINY))
def test_colour_arrays_give_colour_network_inputs_and_one_fold_trains(name, tmp_path):
    recipe = get_recipe(name)
    settings, colour_channels, gray_channels = TINY[name]
    options = apply_settings(recipe.Options(), settings)
    data = _colour_data()
    x = recipe.inputs(data, options)
    assert _images(x).shape[:2] == (N, colour_channels) and _images(x).dtype == torch.float32
    assert _images(recipe.inputs(_gray(data), options)).shape[1] == gray_channels
    if name == "mfvan":  # the teacher's frames keep their colour: (N, P, 3, S, S)
        assert x.tensors[1].shape == (N, 2, 3, 24, 24) and x.tensors[1].dtype == torch.uint8
    train, test = np.arange(4), np.arange(4, N)
    context = RunContext(tmp_path, data.classes, torch.device("cpu"), tmp_path, lambda line: None)
    fold = FoldData(x[train], data.meta["label"][train], data.meta["group"][train], x[test])
    output = recipe.train_fold(context, options, recipe.prepare(context, options, 0), fold, seed=0)
    assert output.scores.shape == (len(test), 3) and np.isfinite(output.scores).all()
    assert len(output.history["train_loss"]) == 1 and np.isfinite(output.history["train_loss"]).all()


def test_cropnet_reads_the_chosen_residual_in_colour():
    recipe, data = get_recipe("cropnet"), _colour_data()
    residual = data.arrays["residual"]
    ars = recipe.inputs(data, CropNetOptions(size=SIZE))
    rrs = recipe.inputs(data, CropNetOptions(size=SIZE, residual="rrs"))
    np.testing.assert_allclose(ars.numpy(), residual[:, :3] / 255.0, atol=1e-6)
    np.testing.assert_allclose(rrs.numpy(), residual[:, 3:] / 255.0, atol=1e-6)


def test_apex_frames_read_both_layouts():
    data = _colour_data()
    colour = apex_frames(data, SIZE)
    assert colour.shape == (N, 3, SIZE, SIZE)
    np.testing.assert_allclose(colour.numpy(), data.arrays["face"][:, 3:] / 255.0, atol=1e-6)
    gray = apex_frames(_gray(data), SIZE)
    assert gray.shape == (N, 1, SIZE, SIZE)
    np.testing.assert_allclose(gray[:, 0].numpy(), data.arrays["face"][:, 3] / 255.0, atol=1e-6)
    with pytest.raises(ValueError, match=r"sample casme2/sub00/EP00: face is colour \(6, 32, 32\); MobileViT reads gray"):
        get_recipe("mobilevit").inputs(data, get_recipe("mobilevit").Options(size=SIZE))


def test_shape_errors_name_the_sample_and_the_expected_shapes():
    data = _colour_data()
    data.arrays["face"] = data.arrays["face"][:, :4]
    with pytest.raises(ValueError, match=r"^sample casme2/sub00/EP00: face is \(4, 32, 32\); CVA reads onset and apex "
                                         r"as \(2, S, S\) gray or \(6, S, S\) colour$"):
        get_recipe("cva").inputs(data, get_recipe("cva").Options(size=SIZE, window=2))
    assert image_channels(_colour_data(), "dynamic", "MSMMT", "the dynamic image") == 3
    clips = _colour_data()
    clips.arrays["frames"][2] = clips.arrays["frames"][2][..., 0]  # one gray clip among colour ones
    with pytest.raises(ValueError, match=r"^sample casme2/sub01/EP02: its frames clip is \(7, 32, 32\); MFVAN reads "
                                         r"\(T, S, S, 3\) colour, as the clips before it, T >= 1$"):
        clip_channels(clips, "frames", "MFVAN")
    mixed = _colour_data()
    mixed.arrays["frames"] = _gray(mixed).arrays["frames"]
    with pytest.raises(ValueError, match="face is colour but its frames clip is gray"):
        get_recipe("mfvan").inputs(mixed, apply_settings(get_recipe("mfvan").Options(), TINY["mfvan"][0]))


# ---------------------------------------------------------------- CropNet's colour augmentations

def test_hue_and_grayscale_follow_torchvision():
    red = torch.zeros(3, 2, 2)
    red[0] = 0.8
    green = adjust_hue(red, 1 / 3)
    torch.testing.assert_close(green, red[[1, 0, 2]], atol=1e-6, rtol=0)  # red turned a third is green
    cyan = adjust_hue(red, 0.5)
    torch.testing.assert_close(cyan, torch.stack([red[1], red[0], red[0]]), atol=1e-6, rtol=0)
    image = torch.rand(3, 4, 4)
    torch.testing.assert_close(adjust_hue(image, 0.0), image, atol=1e-6, rtol=0)
    torch.testing.assert_close(adjust_hue(adjust_hue(image, 0.2), -0.2), image, atol=1e-5, rtol=0)
    luma = grayscale(image)
    torch.testing.assert_close(luma[0], 0.2989 * image[0] + 0.587 * image[1] + 0.114 * image[2])
    with pytest.raises(ValueError, match=r"hue offset must be in \[-0.5, 0.5\]"):
        adjust_hue(image, 0.7)


def test_paper_augment_acts_on_colour():
    images = torch.rand(4, 3, 16, 16)
    still = CropNetOptions(jitter=(1.0, 1.0), hue=0.0, grayscale=0.0, flip=0.0, rotation=0.0)
    torch.testing.assert_close(paper_augment(images, np.random.default_rng(0), still), images, atol=1e-5, rtol=0)
    gray = paper_augment(images, np.random.default_rng(0), CropNetOptions(jitter=(1.0, 1.0), hue=0.0, grayscale=1.0,
                                                                          flip=0.0, rotation=0.0))
    torch.testing.assert_close(gray[:, 0], gray[:, 1])
    torch.testing.assert_close(gray[:, 1], gray[:, 2])
    torch.testing.assert_close(gray[:, :1], torch.stack([grayscale(image) for image in images]), atol=1e-6, rtol=0)
    black = paper_augment(images, np.random.default_rng(0), CropNetOptions(jitter=(0.0, 0.0), hue=0.0, grayscale=0.0,
                                                                           flip=0.0, rotation=0.0))
    assert float(black.amax()) == 0.0  # brightness 0 makes black, whatever the order of the four jitters
    hued = paper_augment(images, np.random.default_rng(1), CropNetOptions(jitter=(1.0, 1.0), grayscale=0.0,
                                                                          flip=0.0, rotation=0.0))
    assert not torch.allclose(hued, images, atol=1e-3)  # the hue turns the colours
    torch.testing.assert_close(hued.amax(1), images.amax(1), atol=1e-5, rtol=0)  # a hue turn keeps V = max(R, G, B)
    out = paper_augment(images, np.random.default_rng(2), CropNetOptions())
    assert out.shape == images.shape and 0 <= float(out.min()) and float(out.max()) <= 1


def test_gray_augmentation_draws_as_before():
    """A gray image takes exactly the draws it took before colour existed: gray runs repeat."""
    options = CropNetOptions()
    used = np.random.default_rng(5)
    paper_augment(torch.rand(2, 1, 8, 8), used, options)
    expected = np.random.default_rng(5)
    for _ in range(2):
        [expected.uniform(0.2, 1.8) for _ in range(3)], expected.uniform(-0.5, 0.5), expected.permutation(2)
        expected.random(), expected.random()
    expected.uniform(-15, 15, size=2)
    assert used.random() == expected.random()
