"""Pictures of a built store (mepipe.pipeline.pictures): every artifact renders, PNGs are written,
and the errors name what is wrong. One tiny store (2 synthetic CASME II clips, 96-px crops) is
built once for the module."""

import json
import shutil

import cv2
import numpy as np
import pytest
import zarr

from mepipe.pipeline.pictures import PICTURES, PictureError, artifact_picture, montage_indices, write_picture


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory):
    """(store path, its sample ids): a casme2 group of 2 subjects x 1 clip, every artifact built."""
    from mepipe.pipeline.build import BuildOptions, build
    from mepipe.synth.generate import SynthOptions, synthesize

    base = tmp_path_factory.mktemp("pictures")
    synthesize(SynthOptions(layout="casme2", out=base / "tiny", subjects=2, clips_per_subject=1, workers=1))
    store = base / "store.zarr"
    summary = build(BuildOptions("casme2", root=base / "tiny", store=store, scheduler="threads", workers=1, params=("face.size=96",)))
    assert not summary.failures, summary.failures
    ids = [str(value) for value in zarr.open_group(str(store), mode="r")["casme2"]["sample_id"][:]]
    return store, ids


@pytest.fixture()
def spoilt_store(tiny_store, tmp_path):
    """A copy of the tiny store, to break."""
    store, ids = tiny_store
    copy = tmp_path / "copy.zarr"
    shutil.copytree(store, copy)
    return copy, ids


@pytest.mark.parametrize("artifact", [*PICTURES, "aligned"])
def test_every_artifact_renders(tiny_store, artifact):
    store, ids = tiny_store
    picture = artifact_picture(store, ids[0], artifact)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    assert 150 <= picture.shape[0] <= 1200 and 300 <= picture.shape[1] <= 1600, picture.shape
    body = picture[48:]  # below the caption lines
    assert body.std() > 10, "picture is (nearly) constant"
    assert len(np.unique(body.reshape(-1, 3), axis=0)) > 50
    # the caption names the sample
    assert (picture[:20] < 128).any()


def test_sample_without_group_and_colours(tiny_store):
    store, ids = tiny_store
    short = ids[1].split("/", 1)[1]
    picture = artifact_picture(store, short, "flow")
    assert np.array_equal(picture, artifact_picture(store, ids[1], "flow"))
    saturated = picture.max(axis=2).astype(int) - picture.min(axis=2)
    assert (saturated > 100).sum() > 200  # colour-coded flow and heat maps, not grey


def test_montage_marks_onset_apex_offset():
    chosen = montage_indices(53, [0, 29, 52], 12)
    assert len(chosen) == 12 and chosen == sorted(chosen) and {0, 29, 52} <= set(chosen)
    assert montage_indices(5, [0, 2], 12) == [0, 1, 2, 3, 4]
    chosen = montage_indices(200, [17, 18, 150], 12)
    assert len(chosen) <= 12 and {17, 18, 150} <= set(chosen)


def test_write_picture(tiny_store, tmp_path):
    store, ids = tiny_store
    picture = artifact_picture(store, ids[0], "face")
    path = write_picture(picture, tmp_path / "new" / "folder" / "face.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, picture)


def test_write_picture_errors(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(PictureError, match="a_file") as error:
        write_picture(np.zeros((4, 4, 3), np.uint8), blocker / "sub" / "x.png")
    assert "\n" not in str(error.value)
    with pytest.raises(PictureError, match="uint8"):
        write_picture(np.zeros((4, 4), np.float32), tmp_path / "x.png")


def test_unknown_sample(tiny_store):
    store, ids = tiny_store
    wrong = ids[0][:-1] + "Z"
    with pytest.raises(PictureError) as error:
        artifact_picture(store, wrong, "face")
    message = str(error.value)
    assert wrong in message and ids[0] in message and "\n" not in message  # the nearest id is offered
    with pytest.raises(PictureError, match="nosuch/clip"):
        artifact_picture(store, "nosuch/clip", "face")


def test_unknown_artifact(tiny_store):
    store, ids = tiny_store
    with pytest.raises(PictureError, match="'optical'.*flow.*magnified_flow"):
        artifact_picture(store, ids[0], "optical")


def test_missing_store(tmp_path):
    with pytest.raises(PictureError, match="no mepipe store"):
        artifact_picture(tmp_path / "none.zarr", "a/b", "face")


def test_artifact_not_computed(spoilt_store):
    store, ids = spoilt_store
    group = zarr.open_group(str(store), path="casme2", mode="r+")
    group["done"]["flow"][0] = False
    reason = "flow: onset and apex are the same frame (0)"
    group["qc"]["failures"][0] = json.dumps({"flow": {"reason": reason, "key": "k"}})
    group["done"]["dynamic"][0] = False
    del group["done"]["residual"]
    with pytest.raises(PictureError) as error:
        artifact_picture(store, ids[0], "flow")
    message = str(error.value)
    assert ids[0] in message and reason in message and "computed for this sample: face" in message
    with pytest.raises(PictureError, match="dynamic not computed yet"):
        artifact_picture(store, ids[0], "dynamic")
    with pytest.raises(PictureError, match="no residual artifact.*its artifacts: face"):
        artifact_picture(store, ids[0], "residual")
    assert artifact_picture(store, ids[1], "flow").shape[2] == 3  # the other sample is untouched
