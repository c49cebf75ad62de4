"""Reading the store back: mepipe.load, the torch StoreDataset, and xarray on a group.

Tiny synthetic stores are built once per module (scheduler ``threads``, one worker, 64 px faces).
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from mepipe.datasets.adapters import read_dataset
from mepipe.datasets.protocols import select
from mepipe.pipeline.build import BuildOptions, build
from mepipe.pipeline.load import LoadError, load
from mepipe.pipeline.store import StoreError, read_clip
from mepipe.synth.generate import SynthOptions, synthesize
from trees import COMPOSITE_CODING, composite_store

FIXED = ("face", "eye_mask", "flow", "strain")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """A casme2 group (2 subjects x 2 clips) with face, flow and strain."""
    tmp = tmp_path_factory.mktemp("load")
    root, store = tmp / "tiny", tmp / "store.zarr"
    synthesize(SynthOptions(layout="casme2", out=root, subjects=2, clips_per_subject=2, workers=1))
    summary = build(BuildOptions("casme2", root=root, store=store, scheduler="threads", workers=1,
                                 artifacts=("flow", "strain"), params=("face.size=64",)))
    assert not summary.failures, summary.failures
    return {"root": root, "store": store}


# ---------------------------------------------------------------- load

def test_load_returns_what_zarr_holds(tiny):
    data = load(tiny["store"], "casme2", [*FIXED, "frames"])
    group = zarr.open_group(str(tiny["store"]), path="casme2", mode="r")
    assert len(data) == group["sample_id"].shape[0] == 4
    assert list(data.meta["sample_id"]) == [str(s) for s in group["sample_id"][:]]
    assert set(data.meta["dataset"]) == {"casme2"}
    assert data.classes == () and data.folds == [] and data.missing == []
    for name in FIXED:
        assert data.arrays[name].dtype == group[name].dtype
        np.testing.assert_array_equal(data.arrays[name], group[name][:])
    assert data.arrays["face"].shape == (4, 2, 64, 64) and data.arrays["flow"].shape == (4, 2, 64, 64)
    for row, clip in enumerate(data.arrays["frames"]):
        key = f"{data.meta['subject'][row]}/{data.meta['clip'][row]}"
        np.testing.assert_array_equal(clip, read_clip(group, "frames", key))
        assert clip.shape == (int(data.meta["n_frames"][row]), 64, 64)
    np.testing.assert_array_equal(data.meta["apex_used"], group["apex_used"][:])


def test_labels_and_folds_come_from_select(tiny):
    data = load(tiny["store"], "casme2", ["flow"], protocol="5class")
    # the adapter reading the raw set, independently of what the store holds
    selection = select("casme2", "5class", {"casme2": read_dataset("casme2", tiny["root"])})
    assert list(data.meta["sample_id"]) == [s.sample_id for s in selection.samples]  # group == adapter name here
    np.testing.assert_array_equal(data.meta["label"], selection.labels)
    assert list(data.meta["label_name"]) == selection.label_names
    assert list(data.meta["group"]) == selection.groups
    assert data.classes == selection.classes
    assert len(data.folds) == len(selection.folds) == 2
    for fold, expected in zip(data.folds, selection.folds):
        np.testing.assert_array_equal(fold.test, expected.test)
        train_subjects = set(data.meta["subject"][fold.train])
        test_subjects = set(data.meta["subject"][fold.test])
        assert len(test_subjects) == 1 and not train_subjects & test_subjects
        assert len(fold.train) + len(fold.test) == len(data)
        assert {f"casme2/{s}" for s in test_subjects} == {fold.test_subject}
    frame = data.to_pandas()
    assert list(frame["sample_id"]) == list(data.meta["sample_id"]) and "label" in frame


def test_samples_not_done_are_listed_with_their_reason(tiny, tmp_path):
    store = tmp_path / "copy.zarr"
    shutil.copytree(tiny["store"], store)
    group = zarr.open_group(str(store), path="casme2", mode="r+")
    group["done"]["strain"][1] = False
    group["done"]["flow"][2] = False
    key = group.attrs["artifacts"]["flow"]["key"]
    group["qc"]["failures"][2] = json.dumps({"flow": {"reason": "flow: onset equals apex", "key": key}})
    ids = [str(s) for s in group["sample_id"][:]]
    data = load(store, "casme2", ["strain"])
    assert list(data.meta["sample_id"]) == [ids[0], ids[3]]
    np.testing.assert_array_equal(data.arrays["strain"], group["strain"].get_orthogonal_selection(([0, 3], slice(None))))
    assert data.missing == [(ids[1], "not built"), (ids[2], "flow: flow: onset equals apex")]
    assert len(load(store, "casme2", ["face"]).missing) == 0


def test_a_group_takes_the_protocols_of_its_adapter(tiny, tmp_path):
    store = tmp_path / "renamed.zarr"
    shutil.copytree(tiny["store"], store)
    (store / "casme2").rename(store / "demo")  # a group named demo, built by the casme2 adapter
    data = load(store, "demo", ["flow"], "5class")
    reference = load(tiny["store"], "casme2", ["flow"], "5class")
    np.testing.assert_array_equal(data.meta["label"], reference.meta["label"])
    np.testing.assert_array_equal(data.arrays["flow"], reference.arrays["flow"])
    assert set(data.meta["dataset"]) == {"demo"} and list(data.meta["group"]) == list(reference.meta["group"])
    with pytest.raises(LoadError, match=r"no protocol 'native' for demo \(adapter casme2\); choose one of: 5class, 3class"):
        load(store, "demo", ["flow"], "native")


def test_load_is_exposed_lazily():
    code = ("import sys, mepipe; assert 'zarr' not in sys.modules and 'mepipe.pipeline' not in sys.modules; "
            "import inspect; assert 'model' in inspect.signature(mepipe.load).parameters; "
            "assert 'zarr' not in sys.modules; print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert result.stdout.strip() == "ok", result.stderr


@pytest.mark.parametrize(("dataset", "artifacts", "protocol", "expected"), [
    ("casme2", ["flow"], None, "no mepipe store"),
    ("samm", ["flow"], None, "no dataset group 'samm'; groups present: casme2"),
    ("casme2", ["optical"], None, "unknown artifact 'optical'"),
    ("casme2", ["residual"], None, "artifact 'residual' is not built in group casme2"),
    ("casme2", ["magnified"], None, "artifact 'magnified' is not built"),
    ("casme2", ["flow"], "native", "no protocol 'native' for casme2; choose one of: 5class, 3class"),
    ("composite", ["face"], "3class", "composite needs the groups smic, casme2, samm; missing smic, samm"),
])
def test_bad_input_gives_one_line(tiny, tmp_path, dataset, artifacts, protocol, expected):
    store = tmp_path / "nothing.zarr" if expected == "no mepipe store" else tiny["store"]
    with pytest.raises(LoadError) as caught:
        load(store, dataset, artifacts, protocol)
    message = str(caught.value)
    assert expected in message and "\n" not in message
    assert isinstance(caught.value, StoreError)
    if "unknown artifact" in message:
        assert "face, eye_mask, flow, strain, frames" in message  # what the group has


# ---------------------------------------------------------------- xarray, without mepipe

def test_xarray_opens_a_group(tiny):
    xarray = pytest.importorskip("xarray")
    data = load(tiny["store"], "casme2", ["flow", "face"])
    with xarray.open_zarr(str(tiny["store"]), group="casme2", consolidated=False) as dataset:
        assert dataset["flow"].dims[0] == "sample"
        np.testing.assert_array_equal(dataset["flow"].values, data.arrays["flow"])
        assert dataset["face"].dtype == np.uint8
        np.testing.assert_array_equal(dataset["face"].values, data.arrays["face"])
        assert [str(s) for s in dataset["sample_id"].values] == list(data.meta["sample_id"])


# ---------------------------------------------------------------- torch

def test_store_dataset_items(tiny):
    torch = pytest.importorskip("torch")
    from torch.utils.data import DataLoader

    from mepipe.models.data import StoreDataset

    data = load(tiny["store"], "casme2", ["flow", "face", "frames"], "5class")
    ds = StoreDataset(tiny["store"], "casme2", ["flow", "face", "frames"], "5class")
    assert len(ds) == len(data) and ds.classes == data.classes
    np.testing.assert_array_equal(ds.labels, data.meta["label"])
    assert list(ds.groups) == list(data.meta["group"])
    assert [(f.test_subject, list(f.test)) for f in ds.folds] == [(f.test_subject, list(f.test)) for f in data.folds]
    item = ds[1]
    assert item["flow"].dtype == torch.float32 and tuple(item["flow"].shape) == (2, 64, 64)
    np.testing.assert_array_equal(item["flow"].numpy(), data.arrays["flow"][1])
    assert item["face"].dtype == torch.float32 and 0.0 <= float(item["face"].min()) <= float(item["face"].max()) <= 1.0
    np.testing.assert_allclose(item["face"].numpy(), data.arrays["face"][1] / 255.0, atol=1e-6)
    assert tuple(item["frames"].shape) == data.arrays["frames"][1].shape
    assert item["label"].dtype == torch.int64 and int(item["label"]) == int(data.meta["label"][1]) and item["index"] == 1

    # a LOSO fold: indices into the selection, and subset() of the full dataset
    fold = ds.folds[0]
    test = StoreDataset(tiny["store"], "casme2", ["flow"], "5class", indices=fold.test, size=32)
    train = ds.subset(fold.train)
    np.testing.assert_array_equal(test.labels, ds.labels[fold.test])
    assert not set(test.groups) & set(train.groups) and len(test) + len(train) == len(ds)
    small = test[0]["flow"]
    assert tuple(small.shape) == (2, 32, 32)
    full = torch.from_numpy(data.arrays["flow"][fold.test[0]])
    assert float(small.abs().mean()) == pytest.approx(float(full.abs().mean()) / 2, rel=0.25)  # pixels of the 32 px grid

    # a DataLoader, and a pickled copy (what a worker process receives) after the store was opened
    loader = DataLoader(pickle.loads(pickle.dumps(test)), batch_size=2, num_workers=0)
    batches = list(loader)
    assert sum(len(b["label"]) for b in batches) == len(test)
    assert batches[0]["flow"].shape[1:] == (2, 32, 32) and batches[0]["label"].dtype == torch.int64
    np.testing.assert_array_equal(torch.cat([b["label"] for b in batches]).numpy(), test.labels)


# ---------------------------------------------------------------- composite

def test_composite_is_a_view_over_three_groups(tmp_path):
    store = composite_store(tmp_path, ("face",))
    data = load(store, "composite", ["face"], "3class")
    readings = {name: read_dataset(name, tmp_path / name) for name in COMPOSITE_CODING}
    selection = select("composite", "3class", readings)
    assert len(data) == len(selection.samples) == 7
    np.testing.assert_array_equal(data.meta["label"], selection.labels)
    assert list(data.meta["group"]) == selection.groups
    assert [f"{d}/{s}/{c}" for d, s, c in zip(data.meta["dataset"], data.meta["subject"], data.meta["clip"])] == \
        [s.sample_id for s in selection.samples]
    assert data.excluded == [("casme2/sub02/EP99_01", "not in the MEGC2019 composite list")]
    assert set(data.meta["dataset"]) == {"casme2", "samm", "smic"} and data.arrays["face"].shape == (7, 2, 48, 48)
    for row in range(len(data)):
        group = zarr.open_group(str(store), path=str(data.meta["dataset"][row]), mode="r")
        np.testing.assert_array_equal(data.arrays["face"][row], group["face"][int(data.meta["row"][row])])
    assert len(data.folds) == 6
    for fold in data.folds:
        assert not set(data.meta["group"][fold.train]) & set(data.meta["group"][fold.test])
    # a single group of the composite keeps its own protocols
    casme2 = load(store, "casme2", [], "5class")
    assert len(casme2) == 4 and set(casme2.meta["label_name"]) == {"happiness", "disgust", "surprise", "others"}
