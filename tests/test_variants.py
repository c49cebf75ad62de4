"""Input variants side by side in one store: each model's own crops, colour and eyes (issue 17).

One session build of the small synthetic CASME II with ``--for all`` serves most tests: every
model's variant is read back and checked against what its recipe declares.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import zarr

from stores import FAST_FLOW

from mepipe.pipeline.variants import DEFAULT_VARIANT, Variant

MODELS = ("ststnet", "mobilevit", "cropnet", "cva", "msmmt", "mfvan")


def test_variant_names_round_trip():
    for variant in (DEFAULT_VARIANT, Variant(320, True, "none"), Variant(256, False, "mean")):
        assert Variant.parse(variant.name) == variant
    assert DEFAULT_VARIANT.name == "224-gray-eyes-zero"
    with pytest.raises(ValueError, match="expected SIZE"):
        Variant.parse("320-colour-eyes")


def test_for_all_builds_every_variant_once_per_clip(variant_build):
    store, summary = variant_build
    assert not summary.failures, summary.failures
    built = {v.variant.name: v for v in summary.variants}
    from mepipe.models.recipes import model_inputs

    for model in MODELS:
        assert model_inputs(model).variant.name in built, model
    # the default build's variant is the dataset's own group, the others sit below variants/
    assert built[DEFAULT_VARIANT.name].group == "casme2"
    assert all(v.group == f"casme2/variants/{name}" for name, v in built.items() if name != DEFAULT_VARIANT.name)
    # the face stage (decoding, detection, landmarks, alignment) ran once per clip for all variants
    assert summary.results and all(result.face_runs == 1 for result in summary.results)
    assert {result.frames_decoded > 0 for result in summary.results} == {True}
    assert all(len(result.variants) == len(built) for result in summary.results)


@pytest.mark.parametrize("model", MODELS)
def test_each_model_reads_its_papers_variant(variant_build, model):
    """What each recipe's load returns has exactly its declared size, channels and eyes."""
    import mepipe
    from mepipe.models.recipes import model_inputs

    store, _ = variant_build
    spec = model_inputs(model)
    data = mepipe.load(store, "casme2", model=model)
    assert len(data) == 6 and data.variant == spec.variant
    size, colour, masked = spec.variant.size, spec.variant.colour, spec.variant.masked
    mask = mepipe.load(store, "casme2", ["eye_mask"], variant=spec.variant).arrays["eye_mask"][:, 0].astype(bool)
    assert mask.shape == (6, size, size) and mask.any(axis=(1, 2)).all()
    for name, value in data.arrays.items():
        if name == "frames":
            for clip in value:
                assert clip.shape[1:] == ((size, size, 3) if colour else (size, size)) and clip.dtype == np.uint8
            continue
        assert value.shape[0] == 6 and value.shape[-2:] == (size, size), (name, value.shape)
        channels = data.channels[name]
        if name in ("face", "residual", "dynamic"):
            per_image = {"face": 2, "residual": 2, "dynamic": 1}[name]
            assert value.shape[1] == per_image * (3 if colour else 1), (name, value.shape)
            assert all(c.endswith(("_r", "_g", "_b")) for c in channels) == colour
        inside = value.transpose(1, 0, 2, 3)[:, mask]  # (C, pixels in the eyes)
        if masked:
            assert not inside.any(), f"{model}: {name} is not zero in the eye mask"
        else:
            assert np.abs(inside).sum() > 0, f"{model}: {name} is zero in the eyes, which its variant keeps"


def test_colour_is_gray_plus_chroma(variant_build):
    """A colour variant's stored clip gives its gray crops back exactly (BT.601 luma), so the
    flow of a colour variant equals the flow of the gray variant of its size."""
    import mepipe
    from mepipe.features.face import to_gray

    store, _ = variant_build
    colour = mepipe.load(store, "casme2", ["frames", "flow"], variant="224-rgb-eyes-kept")
    gray = mepipe.load(store, "casme2", ["frames", "flow"], variant="224-gray-eyes-kept")
    for rgb, plain in zip(colour.arrays["frames"], gray.arrays["frames"]):
        assert np.array_equal(np.stack([to_gray(frame) for frame in rgb]), plain)
    assert np.array_equal(colour.arrays["flow"], gray.arrays["flow"])
    # the masked default variant's flow is that flow with the eyes zeroed, nothing else
    masked = mepipe.load(store, "casme2", ["flow", "eye_mask"])
    mask = masked.arrays["eye_mask"][:, 0].astype(bool)
    expected = gray.arrays["flow"].copy()
    expected.transpose(1, 0, 2, 3)[:, mask] = 0
    assert np.array_equal(masked.arrays["flow"], expected)


def test_default_build_after_for_all_computes_nothing(variant_build, tiny, tmp_path):
    from mepipe.pipeline.build import BuildOptions, build

    store, _ = variant_build
    copy = tmp_path / "store.zarr"
    shutil.copytree(store, copy)
    again = build(BuildOptions("casme2", root=tiny, store=copy, scheduler="threads", workers=2, params=FAST_FLOW))
    assert not again.results
    assert all(count.computed == 0 and count.reused == 6 for count in again.counts.values())


def test_one_variant_never_touches_another(variant_build, tiny, tmp_path):
    """``--for cropnet`` after the others (MobileViT's among them) leaves their arrays and
    attributes byte-identical: CropNet's variant is removed from a copy of the store and built again."""
    from stores import store_arrays

    from mepipe.models.recipes import build_targets
    from mepipe.pipeline.build import BuildOptions, build

    store = tmp_path / "store.zarr"
    shutil.copytree(variant_build[0], store)
    shutil.rmtree(store / "casme2" / "variants" / "320-rgb-eyes-kept")
    others = {name: store / "casme2" / "variants" / name for name in ("224-gray-eyes-kept", "256-gray-eyes-zero", "224-rgb-eyes-kept")}

    def snapshot():
        return {name: (store_arrays(zarr.open_group(str(path), mode="r")), dict(zarr.open_group(str(path), mode="r").attrs))
                for name, path in others.items()}

    before = snapshot()
    summary = build(BuildOptions("casme2", root=tiny, store=store, scheduler="threads", workers=2, params=FAST_FLOW,
                                 targets=build_targets(["cropnet"], "casme2")))
    assert summary.counts["residual"].computed == 6 and summary.counts["face"].computed == 6
    after = snapshot()
    for name, (arrays, attributes) in before.items():
        assert sorted(arrays) == sorted(after[name][0]), name
        for array in arrays:
            assert np.array_equal(arrays[array], after[name][0][array], equal_nan=arrays[array].dtype.kind == "f"), (name, array)
        assert after[name][1] == attributes, name


def test_a_first_build_for_a_model_leaves_the_dataset_group_to_the_default(tiny, tmp_path):
    """``--for mobilevit`` on a new store makes its variant below variants/; the dataset group holds
    metadata only, for the default build to come."""
    from mepipe.models.recipes import build_targets
    from mepipe.pipeline.build import BuildOptions, build

    store = tmp_path / "store.zarr"
    build(BuildOptions("casme2", root=tiny, store=store, scheduler="threads", workers=2,
                       targets=build_targets(["mobilevit"], "casme2")))
    assert not zarr.open_group(str(store / "casme2"), mode="r").attrs.get("artifacts")
    assert zarr.open_group(str(store / "casme2/variants/256-gray-eyes-zero"), mode="r")["face"].shape == (6, 2, 256, 256)


def test_for_and_face_parameters_conflict(tiny, tmp_path):
    from mepipe.models.recipes import build_targets
    from mepipe.pipeline.build import BuildError, BuildOptions, build

    with pytest.raises(BuildError, match="face.size is set by each model's variant"):
        build(BuildOptions("casme2", root=tiny, store=tmp_path / "s.zarr", params=("face.size=64",),
                           targets=build_targets(["cropnet"], "casme2")))
    with pytest.raises(BuildError, match="cannot be combined"):
        build(BuildOptions("casme2", root=tiny, store=tmp_path / "s.zarr", artifacts=("flow",),
                           targets=build_targets(["cropnet"], "casme2")))


def test_for_names_only_models_that_read_the_dataset():
    from mepipe.models.recipes import OptionError, build_targets

    with pytest.raises(OptionError, match="cropnet does not read ckplus; the models that do: mobilevit"):
        build_targets(["cropnet"], "ckplus")
    with pytest.raises(OptionError, match="unknown model 'resnet'"):
        build_targets(["resnet"], "casme2")
    names = [t.readers for t in build_targets(["all"], "ckplus")]
    assert names == [(), ("mobilevit",)]


def test_train_without_its_variant_gives_the_build_command(reference_store, tiny):
    """``mepipe train --model cropnet`` on a store without CropNet's variant: one line, the command."""
    from mepipe.models.loso import RunOptions, train_run
    from mepipe.pipeline.load import LoadError

    with pytest.raises(LoadError) as caught:
        train_run(RunOptions(model="cropnet", dataset="casme2", store=reference_store, seeds=(0,), folds=(0,)))
    message = str(caught.value)
    assert "\n" not in message
    assert f"`mepipe build --dataset casme2 --root {tiny.resolve()} --store {reference_store} --for cropnet`" in message
    assert "320-rgb-eyes-kept" in message
    # and from the command line: that one line, no traceback, before any run directory is made
    from click.testing import CliRunner

    from mepipe.cli import main

    outcome = CliRunner().invoke(main, ["train", "--model", "cropnet", "--dataset", "casme2", "--store", str(reference_store),
                                        "--seeds", "0", "--out", str(tiny.parent / "no-runs")])
    assert outcome.exit_code == 1 and "Traceback" not in outcome.output
    assert outcome.output.strip().count("\n") == 0 and "--for cropnet" in outcome.output
    assert not (tiny.parent / "no-runs").exists()


def test_info_lists_every_variant(variant_build):
    from mepipe.pipeline.report import store_report

    store, _ = variant_build
    text = store_report(store)
    for name in ("224-gray-eyes-zero", "224-gray-eyes-kept", "256-gray-eyes-zero", "320-rgb-eyes-kept", "224-rgb-eyes-kept"):
        assert name in text
    assert "read by cropnet" in text and "320 px, colour, eyes kept" in text


def test_variants_open_with_plain_zarr(variant_build):
    """Each variant is a Zarr group of its own; xarray opens it as docs/store.md says."""
    store, _ = variant_build
    xarray = pytest.importorskip("xarray")
    with xarray.open_zarr(str(store), group="casme2/variants/320-rgb-eyes-kept", consolidated=False) as dataset:
        ars = dataset.residual.sel(residual_channel=["ars_r", "ars_g", "ars_b"])
        assert ars.dims == ("sample", "residual_channel", "y", "x") and ars.shape == (6, 3, 320, 320)
        assert list(dataset.sample_id.values[:1]) == [str(zarr.open_group(str(store / "casme2"), mode="r")["sample_id"][0])]
    group = zarr.open_group(str(store), path="casme2/variants/320-rgb-eyes-kept", mode="r")
    residual = group["residual"]
    assert residual.shape == (6, 6, 320, 320)
    assert list(residual.metadata.dimension_names) == ["sample", "residual_channel", "y", "x"]
    assert list(residual.attrs["channels"]) == ["ars_r", "ars_g", "ars_b", "rrs_r", "rrs_g", "rrs_b"]


def _ars_by_hand(clip: np.ndarray, onset: int, apex: int, offset: int) -> np.ndarray:
    """Equation (5) of Zhao et al. 2021 written out: (sum over the key frames F of
    |Q_f - Q_start|) % 256, per pixel and channel, on integers."""
    from mepipe.features.residual import select_residual_frames

    frames = select_residual_frames(onset, apex, offset)
    start = clip[frames.start].astype(np.int64)
    total = np.zeros_like(start)
    for f in frames.key_frames:
        total += np.abs(clip[f].astype(np.int64) - start)
    return (total % 256).astype(np.float32)


def test_cropnet_ars_is_equation_5_on_its_320_px_colour_crops(variant_build):
    """CropNet's ARS, read from its variant, is eq. 5 computed by hand on its 320 px colour crops
    (exactly), and is not the 224 px gray image upsampled to 320 that it read before."""
    import mepipe
    from mepipe.models.recipes.base import resize

    import torch

    store, _ = variant_build
    data = mepipe.load(store, "casme2", ["residual", "frames"], variant="320-rgb-eyes-kept")
    meta = data.meta
    differing, total = 0, 0
    old = mepipe.load(store, "casme2", ["residual"]).arrays["residual"][:, :1]  # the default: 224 gray, eyes zero
    upsampled = resize(torch.from_numpy(old), 320).numpy()[:, 0]
    for i, clip in enumerate(data.arrays["frames"]):
        assert clip.shape[1:] == (320, 320, 3)
        expected = _ars_by_hand(clip, int(meta["onset"][i]), int(meta["apex_used"][i]), int(meta["offset"][i]))
        stored = data.arrays["residual"][i, :3].transpose(1, 2, 0)  # ars_r, ars_g, ars_b -> (S, S, 3)
        assert np.array_equal(stored, expected), meta["sample_id"][i]
        differing += int((np.abs(stored - upsampled[i][..., None]) > 8).sum())
        total += stored.size
    share = differing / total
    print(f"\nCropNet ARS at 320 px colour vs the 224 px gray ARS upsampled: {differing} of {total} values "
          f"({100 * share:.1f} %) differ by more than 8 levels")
    assert share > 0.01


def test_show_draws_colour_variants(variant_build, tmp_path):
    from click.testing import CliRunner

    from mepipe.cli import main
    from mepipe.pipeline.pictures import PictureError, artifact_picture

    store, _ = variant_build
    sample = "casme2/sub01/" + str(zarr.open_group(str(store / "casme2"), mode="r")["clip"][0])
    for artifact, variant in (("residual", "320-rgb-eyes-kept"), ("dynamic", "224-rgb-eyes-kept"), ("face", "224-rgb-eyes-kept"),
                              ("frames", "224-rgb-eyes-kept"), ("face", "256-gray-eyes-zero")):
        picture = artifact_picture(store, sample, artifact, variant)
        assert picture.ndim == 3 and picture.shape[2] == 3 and picture.std() > 5, (artifact, variant)
    with pytest.raises(PictureError, match="has no variant 320-gray-eyes-kept"):
        artifact_picture(store, sample, "face", "320-gray-eyes-kept")
    out = tmp_path / "residual.png"
    result = CliRunner().invoke(main, ["show", sample, "--artifact", "residual", "--variant", "320-rgb-eyes-kept",
                                       "--store", str(store), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1000


def test_cropnet_trains_one_fold_on_its_own_variant(variant_build, tmp_path):
    """With its variant built, one CropNet fold at CPU settings runs on the 320 px colour ARS."""
    import json

    from mepipe.models.loso import RunOptions, train_run

    store, _ = variant_build
    lines = []
    result = train_run(RunOptions("cropnet", "casme2", None, store=store, seeds=(0,), folds=(0,), out=tmp_path, name="cropnet",
                                  settings=("size=32", "epochs=1", "batch_size=4", "micro_batch=4", "augment=false")),
                       log=lines.append)
    config = json.loads((result.directory / "config.json").read_text())
    assert config["variant"] == "320-rgb-eyes-kept" and config["own_variant"] is True
    assert not any("deviation" in line for line in lines)
    assert result.per_seed[0]["overall"].n == 3  # fold 0 tests sub01: its 3 clips


def test_another_variant_is_a_recorded_deviation(variant_build, tmp_path):
    import json

    from mepipe.models.loso import RunOptions, train_run

    store, _ = variant_build
    lines = []
    result = train_run(RunOptions("ststnet", "casme2", None, store=store, seeds=(0,), folds=(0,), out=tmp_path, name="ststnet",
                                  settings=("epochs=1",), variant="default"), log=lines.append)
    config = json.loads((result.directory / "config.json").read_text())
    assert config["variant"] == "224-gray-eyes-zero" and config["own_variant"] is False
    assert any("not ststnet's own 224-gray-eyes-kept" in line and "deviation" in line for line in lines)


def test_info_check_reads_back_every_variant(variant_build, tmp_path):
    """A damaged chunk of a colour variant's clip is found, its flag cleared, the other variants untouched."""
    from mepipe.pipeline.check import check_store

    store, _ = variant_build
    copy = tmp_path / "store.zarr"
    shutil.copytree(store, copy)
    clip_folder = next((copy / "casme2" / "variants" / "320-rgb-eyes-kept" / "clips" / "frames").glob("sub*/*"))
    chunk = next(path for path in clip_folder.rglob("*") if path.is_file() and path.name != "zarr.json")
    chunk.unlink()
    reports = {report.group: report for report in check_store(copy)}
    assert set(reports) == {"casme2", *(f"casme2/variants/{name}" for name in
                                        ("224-gray-eyes-kept", "224-rgb-eyes-kept", "256-gray-eyes-zero", "320-rgb-eyes-kept"))}
    damaged = reports["casme2/variants/320-rgb-eyes-kept"].damaged
    assert [d.artifact for d in damaged] == ["face"] and "missing" in damaged[0].reason
    assert all(not report.damaged for name, report in reports.items() if name != "casme2/variants/320-rgb-eyes-kept")


def test_the_torch_dataset_reads_a_variant(variant_build):
    from mepipe.models.data import StoreDataset

    store, _ = variant_build
    dataset = StoreDataset(store, "casme2", ["residual", "frames"], "5class", variant="320-rgb-eyes-kept")
    item = dataset[0]
    assert tuple(item["residual"].shape) == (6, 320, 320) and tuple(item["frames"].shape[1:]) == (320, 320, 3)
    small = StoreDataset(store, "casme2", ["frames"], "5class", variant="320-rgb-eyes-kept", size=64)[0]["frames"]
    assert tuple(small.shape[1:]) == (64, 64, 3)


def test_a_gray_dataset_gives_a_colour_model_its_gray_channel_three_times(tmp_path):
    """SAMM's frames are gray: CropNet's colour variant holds the gray clip in each of R, G, B, so
    its per-channel ARS is the gray ARS three times."""
    import mepipe
    from mepipe.models.recipes import build_targets
    from mepipe.pipeline.build import BuildOptions, build
    from mepipe.synth.generate import SynthOptions, synthesize

    root = synthesize(SynthOptions(layout="samm", out=tmp_path / "samm", subjects=1, clips_per_subject=1, workers=1)).root
    store = tmp_path / "store.zarr"
    summary = build(BuildOptions("samm", root=root, store=store, scheduler="threads", workers=2,
                                 targets=build_targets(["cropnet"], "samm")))
    assert not summary.failures, summary.failures
    data = mepipe.load(store, "samm", ["residual", "frames"], variant="320-rgb-eyes-kept")
    for clip, residual in zip(data.arrays["frames"], data.arrays["residual"]):
        assert clip.shape[-1] == 3 and np.array_equal(clip[..., 0], clip[..., 1]) and np.array_equal(clip[..., 0], clip[..., 2])
        assert np.array_equal(residual[0], residual[1]) and np.array_equal(residual[0], residual[2])
