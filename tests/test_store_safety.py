"""The build never loses or mislabels data: each fault found by trying mepipe as a new user, as a test.

Each test here failed on mepipe before the store guarded itself (commit a56468f); the module
docstring of each says what it did there.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from mepipe.cli import main
from mepipe.pipeline.build import BuildError, BuildOptions, build
from mepipe.pipeline.load import LoadError, load

from stores import SMALL, assert_same_store, build_counts


def _build(root, store, **options):
    options.setdefault("params", SMALL)
    return build(BuildOptions("casme2", root=root, store=store, scheduler="threads", workers=2, **options))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _clip_folders(root: Path) -> list[Path]:
    return sorted(clip for subject in sorted(root.glob("sub*")) for clip in sorted(subject.iterdir()) if clip.is_dir())


# ---------------------------------------------------------------- 1. data loss

def test_a_folder_that_is_not_a_store_is_refused_and_the_raw_data_survives(tiny, tmp_path):
    """a56468f: `--store /data/x --root /data/x/casme2` wrote the group into the raw data and, once a
    clip folder moved out, deleted every remaining raw frame and the coding sheet, exit 0."""
    folder = tmp_path / "x"
    root = folder / "casme2"
    shutil.copytree(tiny, root)
    before = _files(root)
    with pytest.raises(BuildError, match="lies inside the store|is not a mepipe store and is not empty"):
        _build(root, folder)
    moved = _clip_folders(root)[0]
    shutil.move(moved, tmp_path / moved.name)
    with pytest.raises(BuildError):
        _build(root, folder)
    after = _files(root)
    assert after == {name: data for name, data in before.items() if not name.startswith(f"{moved.parent.name}/{moved.name}/")}
    assert not (folder / "zarr.json").exists() and not (root / "zarr.json").exists()


def test_a_non_empty_folder_is_refused_as_a_store_with_one_line(tiny, tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["build", "--dataset", "casme2", "--root", str(tiny), "--store", str(folder),
                                       "--scheduler", "threads", "-p", SMALL[0]])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "is not a mepipe store and is not empty (1 entries: notes.txt)" in errors[0], result.output
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"] and (folder / "notes.txt").read_text() == "mine"


def test_a_folder_in_a_store_that_mepipe_did_not_make_is_never_written_or_deleted(tiny, reference_store, tmp_path):
    store = tmp_path / "store.zarr"
    shutil.copytree(reference_store, store)
    shutil.rmtree(store / "casme2")
    shutil.copytree(tiny, store / "casme2")  # a user's folder named like the group
    before = _files(store / "casme2")
    with pytest.raises(BuildError, match="exists but is not a Zarr group mepipe made"):
        _build(tiny, store)
    assert _files(store / "casme2") == before
    shutil.rmtree(store)
    shutil.copytree(reference_store, store)

    # a user's file inside a node mepipe would replace: the node is not deleted
    stray = store / "casme2" / "clips" / "frames" / "sub01" / "my-notes.txt"
    stray.write_text("mine")
    with pytest.raises(BuildError, match="which mepipe did not write; mepipe will not delete it"):
        _build(tiny, store, params=(*SMALL, "face.stabilize=false"))
    assert stray.read_text() == "mine"


def test_a_changed_sample_list_updates_the_group_per_sample(tiny, reference_store, tmp_path):
    """a56468f: a sample list that changed deleted the whole group and rebuilt it from nothing."""
    root = tmp_path / "casme2"
    shutil.copytree(tiny, root)
    store = tmp_path / "store.zarr"
    shutil.copytree(reference_store, store)
    moved = _clip_folders(root)[2]
    sample_id = f"casme2/{moved.parent.name}/{moved.name}"
    shutil.move(moved, tmp_path / "aside")
    sheet_rows = _drop_sheet_row(root, moved.parent.name, moved.name)

    fewer = _build(root, store)
    assert all(counts == (0, 5, 0) for counts in build_counts(fewer).values()), build_counts(fewer)
    assert any("no longer in the dataset" in note for note in fewer.notes)
    group = zarr.open_group(str(store / "casme2"), mode="r")
    ids = [str(s) for s in group["sample_id"][:]]
    row = ids.index(sample_id)
    assert not group["in_dataset"][row] and group["in_dataset"][:].sum() == 5
    assert not any(group["done"][name][row] for name in group["done"].array_keys())
    assert "clips/frames/" + sample_id.split("/", 1)[1] not in group
    data = load(store, "casme2", ["flow"], protocol="5class")
    assert sample_id not in set(data.meta["sample_id"]) and len(data) + len(data.missing) + len(data.excluded) == 5
    info = CliRunner().invoke(main, ["info", "--store", str(store)])
    assert "[casme2] 5 samples" in info.output and "1 earlier samples are no longer in the dataset" in info.output

    # back again: only that sample is computed, and the store equals an uninterrupted build
    shutil.move(tmp_path / "aside", moved)
    _restore_sheet(root, sheet_rows)
    again = _build(root, store)
    assert all(counts == (1, 5, 0) for counts in build_counts(again).values()), build_counts(again)
    assert_same_store(store, reference_store)


def _drop_sheet_row(root: Path, subject: str, clip: str) -> bytes:
    import openpyxl

    path = root / "CASME2-coding-20140508.xlsx"
    original = path.read_bytes()
    workbook = openpyxl.load_workbook(path)
    sheet = workbook.active
    for row in range(2, sheet.max_row + 1):
        if f"sub{int(sheet.cell(row, 1).value):02d}" == subject and sheet.cell(row, 2).value == clip:
            sheet.delete_rows(row)
            break
    else:
        raise AssertionError(f"{subject}/{clip} not in the sheet")
    workbook.save(path)
    return original


def _restore_sheet(root: Path, original: bytes) -> None:
    (root / "CASME2-coding-20140508.xlsx").write_bytes(original)


# ---------------------------------------------------------------- 3. two builds at once

def test_a_second_build_of_a_group_being_built_is_refused_naming_the_first(tiny, reference_store, tmp_path):
    """a56468f: nothing stopped a second build; it deleted the first's half-made group (and two
    builds with other -p values at once: the last writer silently won)."""
    import os
    import socket

    from mepipe.pipeline.lock import GroupLock

    store = tmp_path / "store.zarr"
    shutil.copytree(reference_store, store)
    with GroupLock(store, "casme2"):
        with pytest.raises(BuildError) as raised:
            _build(tiny, store, params=SMALL + ("flow.lambda_=0.1",))
    message = str(raised.value)
    assert "is being written by another mepipe build" in message and f"pid {os.getpid()} on host {socket.gethostname()}" in message
    assert "--wait" in message
    assert_same_store(store, reference_store)  # the refused build wrote nothing


def test_wait_starts_when_the_other_build_ends(tiny, reference_store, tmp_path):
    from mepipe.pipeline.lock import GroupLock

    store = tmp_path / "store.zarr"
    shutil.copytree(reference_store, store)
    lock = GroupLock(store, "casme2").acquire()
    threading.Timer(1.0, lock.release).start()
    notices = []
    started = time.monotonic()
    summary = build(BuildOptions("casme2", root=tiny, store=store, scheduler="threads", params=SMALL, wait=True), notice=notices.append)
    assert time.monotonic() - started >= 0.9
    assert any("waiting for the other build of casme2" in text for text in notices)
    assert all(computed == 0 for computed, _, _ in build_counts(summary).values())


def test_a_lock_left_by_a_killed_build_is_taken_over_and_named(tiny, reference_store, tmp_path):
    from mepipe.pipeline.lock import lock_path

    store = tmp_path / "store.zarr"
    shutil.copytree(reference_store, store)
    # what a killed build leaves: its record in the lock file, no lock held (the kernel dropped it)
    lock_path(store, "casme2").write_text(json.dumps({"host": "node07", "pid": 4242, "token": "dead", "since": "2026-12-01T08:00:00+00:00"}))
    notices = []
    build(BuildOptions("casme2", root=tiny, store=store, scheduler="threads", params=SMALL), notice=notices.append)
    assert any("took over the lock of casme2 left by a build that stopped" in text and "pid 4242 on host node07" in text for text in notices)
    assert lock_path(store, "casme2").read_text() == ""  # released cleanly


def test_a_task_of_a_build_that_lost_its_lock_marks_nothing_done(tiny, reference_store, tmp_path):
    """A task a killed driver left running must not mark results done under its successor."""
    from mepipe.pipeline.lock import GroupLock
    from mepipe.pipeline.params import cache_keys, resolve_params
    from mepipe.pipeline.artifacts import DEPENDS
    from mepipe.pipeline.tasks import SampleJob, VariantJob, run_sample
    from mepipe.pipeline.variants import Variant
    from mepipe.datasets.adapters import read_dataset

    store = tmp_path / "store.zarr"
    shutil.copytree(reference_store, store)
    group = zarr.open_group(str(store / "casme2"), mode="r+")
    group["done"]["strain"][0] = False
    params = resolve_params(None, SMALL)
    sample = read_dataset("casme2", tiny).samples[0]
    with GroupLock(store, "casme2") as successor:
        variant = VariantJob("casme2", 0, Variant.of_face(params["face"]), ("strain",), cache_keys(params, DEPENDS))
        job = SampleJob(str(store), f"{sample.subject}/{sample.clip}", tuple(map(str, sample.frames)), sample.onset,
                        sample.apex, sample.offset, 200.0, params, (variant,),
                        lock=str(successor.path), token="the-killed-build")
        result = run_sample(job)
    assert result.superseded and result.computed == []
    assert not zarr.open_group(str(store / "casme2"), mode="r")["done"]["strain"][0]


def test_an_internal_error_is_retried_by_the_next_build(tiny, reference_store, tmp_path):
    """a56468f: samples failed with `internal error: KeyError: 'apex_used'` (a group deleted under
    a running build) stayed failed for good: the next build said everything was up to date."""
    store = tmp_path / "store.zarr"
    shutil.copytree(reference_store, store)
    group = zarr.open_group(str(store / "casme2"), mode="r+")
    key = group.attrs["artifacts"]["face"]["key"]
    for name in group["done"].array_keys():
        group["done"][name][1] = False
    record = {name: {"reason": "internal error: KeyError: 'apex_used'", "key": group.attrs["artifacts"][name]["key"]}
              for name in group["done"].array_keys()}
    assert record["face"]["key"] == key
    group["qc"]["failures"][1] = json.dumps(record)
    group["qc"]["status"][1] = "failed"
    again = _build(tiny, store)
    assert all(counts == (1, 5, 0) for counts in build_counts(again).values()), build_counts(again)
    assert_same_store(store, reference_store)


# ---------------------------------------------------------------- 4. stale results

def test_new_flow_parameters_make_what_is_computed_from_flow_stale_even_when_not_built(tiny, reference_store, tmp_path):
    """a56468f: `-p flow.lambda_=0.1 --artifacts flow` left strain and magnified_flow marked done
    from the old flow; load returned the mix, and info showed magnified_flow as "defaults"."""
    store = tmp_path / "store.zarr"
    shutil.copytree(reference_store, store)
    summary = _build(tiny, store, params=SMALL + ("flow.lambda_=0.1",), artifacts=("flow",))
    assert build_counts(summary)["flow"] == (6, 0, 0)
    assert any("strain is now stale" in note for note in summary.notes)
    group = zarr.open_group(str(store / "casme2"), mode="r")
    for name in ("strain", "magnified_flow"):
        assert not group["done"][name][:].any(), name
        assert group.attrs["artifacts"][name]["stale"]
    for name in ("face", "flow", "residual", "dynamic", "magnified"):
        assert group["done"][name][:].all(), name
    with pytest.raises(LoadError, match=r"artifact 'strain' of group casme2 .* is stale: strain was computed from flow before it was rebuilt"):
        load(store, "casme2", ["flow", "strain"])
    with pytest.raises(LoadError, match="--artifacts magnified_flow"):
        load(store, "casme2", ["magnified_flow"])
    assert len(load(store, "casme2", ["flow"])) == 6
    info = CliRunner().invoke(main, ["info", "--store", str(store)]).output
    assert "flow's: lambda_=0.1" in info and "STALE: strain was computed" not in info and "STALE: computed from flow" in info

    # building them brings the store to a clean build with the new parameter
    _build(tiny, store, params=SMALL + ("flow.lambda_=0.1",))
    assert len(load(store, "casme2", ["strain", "magnified_flow"])) == 6


def test_new_face_parameters_make_flow_from_the_old_crops_stale(tiny, reference_store, tmp_path):
    store = tmp_path / "store.zarr"
    shutil.copytree(reference_store, store)
    _build(tiny, store, params=(*SMALL, "face.stabilize=false"), artifacts=("face",))
    with pytest.raises(LoadError, match="stale"):
        load(store, "casme2", ["flow"])
    assert load(store, "casme2", ["face"]).arrays["face"].shape == (6, 2, 64, 64)


def test_another_face_size_is_another_variant_beside_the_first(tiny, reference_store, tmp_path):
    """A build without --for at another crop size makes that variant in a group of its own: the
    dataset group's own arrays (64 px) stay as they were, and nothing of theirs turns stale."""
    from stores import store_arrays

    store = tmp_path / "store.zarr"
    shutil.copytree(reference_store, store)
    before = store_arrays(zarr.open_group(str(store / "casme2"), mode="r"))
    before = {name: value for name, value in before.items() if not name.startswith("variants/")}
    _build(tiny, store, params=("face.size=48",), artifacts=("face",))
    after = store_arrays(zarr.open_group(str(store / "casme2"), mode="r"))
    for name, value in before.items():
        assert np.array_equal(value, after[name], equal_nan=value.dtype.kind == "f"), name
    assert load(store, "casme2", ["flow"]).arrays["flow"].shape == (6, 2, 64, 64)
    assert load(store, "casme2", ["face"], variant="48-gray-eyes-zero").arrays["face"].shape == (6, 2, 48, 48)


# ---------------------------------------------------------------- 5. failures retried

def test_a_failed_sample_is_retried_once_its_frame_is_fixed_and_retry_failed_retries_all(tiny, reference_store, tmp_path):
    """a56468f: a failed sample was never retried after its input was fixed; there was no option."""
    root = tmp_path / "casme2"
    shutil.copytree(tiny, root)
    clip = _clip_folders(root)[1]
    frame = sorted(clip.iterdir())[4]
    original = frame.read_bytes()
    frame.write_bytes(b"")
    store = tmp_path / "store.zarr"
    first = _build(root, store)
    assert {sample for sample, _, _ in first.failures} == {f"casme2/{clip.parent.name}/{clip.name}"}
    assert str(frame) in first.failures[0][2]
    unchanged = _build(root, store)
    assert all(computed == 0 for computed, _, _ in build_counts(unchanged).values())

    frame.write_bytes(original)
    fixed = _build(root, store)
    assert not fixed.failures and all(counts == (1, 5, 0) for counts in build_counts(fixed).values()), build_counts(fixed)
    assert_same_store(store, reference_store)

    # --retry-failed: a failure whose files did not change (here onset = apex for flow) is tried again
    group = zarr.open_group(str(store / "casme2"), mode="r+")
    group["done"]["residual"][0] = False
    group["qc"]["failures"][0] = json.dumps({"residual": {"reason": "residual: made up", "key": group.attrs["artifacts"]["residual"]["key"],
                                                          "inputs": "0000000000000000"}})
    kept = _build(root, store, artifacts=("residual",), retry_failed=False)
    assert build_counts(kept)["residual"] == (1, 5, 0)  # its fingerprint differs from the files'
    group["done"]["residual"][0] = False
    from mepipe.pipeline.tasks import input_fingerprint
    from mepipe.datasets.adapters import read_dataset

    fingerprint = input_fingerprint(read_dataset("casme2", root).samples[0].frames)
    group["qc"]["failures"][0] = json.dumps({"residual": {"reason": "residual: made up", "key": group.attrs["artifacts"]["residual"]["key"],
                                                          "inputs": fingerprint}})
    assert build_counts(_build(root, store, artifacts=("residual",)))["residual"] == (0, 5, 1)
    assert build_counts(_build(root, store, artifacts=("residual",), retry_failed=True))["residual"] == (1, 5, 0)


# ---------------------------------------------------------------- 6. the smaller items

def test_empty_artifacts_is_an_error_not_everything(tiny, tmp_path):
    """a56468f: `--artifacts ""` built everything."""
    result = CliRunner().invoke(main, ["build", "--dataset", "casme2", "--root", str(tiny), "--store", str(tmp_path / "s.zarr"),
                                       "--artifacts", ""])
    assert result.exit_code == 1 and "Error: --artifacts is empty" in result.output
    assert not (tmp_path / "s.zarr").exists()


def test_the_local_dashboard_listens_on_loopback_only():
    """a56468f: a local build's Dask dashboard listened on 0.0.0.0."""
    from mepipe.pipeline.build import _client

    client, cluster = _client("processes", 1)
    try:
        hosts = {sock.getsockname()[0] for sock in cluster.scheduler.http_server._sockets.values()}
        assert hosts and hosts <= {"127.0.0.1"}, hosts
        assert cluster.scheduler.address.startswith("tcp://127.0.0.1:")
    finally:
        client.close()
        cluster.close()


def test_the_build_hint_for_a_missing_artifact_names_root_and_store(tiny, tmp_path):
    """a56468f: the hint omitted --root and --store, so it built elsewhere when pasted."""
    store = tmp_path / "store.zarr"
    _build(tiny, store, artifacts=("face",))
    with pytest.raises(LoadError) as raised:
        load(store, "casme2", ["flow"])
    assert f"mepipe build --dataset casme2 --root {tiny.resolve()} --store {store} --artifacts flow" in str(raised.value)


def test_the_build_names_an_unknown_emotion(tiny, tmp_path):
    """a56468f: the build said nothing of an emotion no protocol knows."""
    import openpyxl

    root = tmp_path / "casme2"
    shutil.copytree(tiny, root)
    path = root / "CASME2-coding-20140508.xlsx"
    workbook = openpyxl.load_workbook(path)
    header = [cell.value for cell in workbook.active[1]]
    workbook.active.cell(2, header.index("Estimated Emotion") + 1, "boredom")
    workbook.save(path)
    summary = _build(root, tmp_path / "store.zarr", artifacts=("face",))
    assert any("1 sample with emotion 'boredom', which casme2 5class does not know" in note for note in summary.notes), summary.notes


def test_ctrl_c_is_one_line_and_exit_130(tiny, tmp_path):
    """a56468f: Ctrl-C printed two worker KeyboardInterrupt tracebacks and exited 1."""
    import os
    import signal
    import subprocess
    import sys

    store = tmp_path / "store.zarr"
    process = subprocess.Popen([sys.executable, "-m", "mepipe.cli", "build", "--dataset", "casme2", "--root", str(tiny),
                                "--store", str(store), "--workers", "2", "-p", SMALL[0]],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (store / "casme2" / "done" / "face" / "zarr.json").exists():
        time.sleep(0.05)
    while time.monotonic() < deadline and not any(zarr.open_group(str(store / "casme2"), mode="r")["done"]["face"][:]):
        time.sleep(0.05)  # the workers run (a Ctrl-C while they start is ignored: see build._sigint_ignored)
    os.killpg(process.pid, signal.SIGINT)  # as a terminal does: the whole foreground process group
    try:
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, (process.returncode, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.count("interrupted: what was written is kept") == 1


# ---------------------------------------------------------------- info --check

def test_info_check_clears_missing_and_corrupt_chunks_and_the_next_build_recomputes_just_those(tiny, reference_store, tmp_path):
    store = tmp_path / "store.zarr"
    shutil.copytree(reference_store, store)
    group = zarr.open_group(str(store / "casme2"), mode="r")
    ids = [str(s) for s in group["sample_id"][:]]
    (store / "casme2" / "flow" / "c" / "2" / "0" / "0" / "0").unlink()  # a lost file
    face_chunk = store / "casme2" / "face" / "c" / "4" / "0" / "0" / "0"
    face_chunk.write_bytes(face_chunk.read_bytes()[:20])  # a copy cut short
    clip = store / "casme2" / "clips" / "magnified" / ids[0].split("/")[1] / ids[0].split("/")[2] / "c" / "0" / "0" / "0"
    clip.unlink()
    (store / "casme2" / "strain" / "c" / "1" / "0" / "0" / "0.3f2a.partial").write_bytes(b"half")  # a killed write
    result = CliRunner().invoke(main, ["info", "--store", str(store), "--check"])
    assert result.exit_code == 1, result.output
    assert "3 damaged; removed 1 leftover partial writes" in result.output
    assert f"{ids[2]}  flow: casme2/flow: chunk missing; flag cleared" in result.output
    assert f"{ids[4]}  face: casme2/face: chunk does not decode" in result.output
    assert f"{ids[0]}  magnified: clips/magnified/" in result.output and "frames 0.. missing" in result.output
    again = CliRunner().invoke(main, ["info", "--store", str(store), "--check"])
    assert again.exit_code == 0 and "0 damaged" in again.output
    summary = _build(tiny, store)
    assert {name: count[0] for name, count in build_counts(summary).items() if count[0]} == {"face": 1, "flow": 1, "magnified": 1}
    assert_same_store(store, reference_store)


def test_a_store_created_by_another_build_at_the_same_moment_is_opened(tmp_path, monkeypatch):
    """Two builds creating one new store: the second's Zarr found no group, then met the first's
    (ContainsGroupError in a fresh clone's run of the concurrency test). It must open that store."""
    from mepipe.pipeline import store as store_module

    original = store_module.zarr.open_group
    calls = []

    def racing(path, mode="r", attributes=None, **kwargs):
        calls.append(attributes)
        if attributes is not None and len(calls) == 1:  # the other build wins the race
            original(path, mode="a", attributes=attributes)
            raise zarr.errors.ContainsGroupError("A group exists in store at path ''.")
        return original(path, mode=mode, **({"attributes": attributes} if attributes else {}), **kwargs)

    monkeypatch.setattr(store_module.zarr, "open_group", racing)
    root = store_module.open_store(tmp_path / "new.zarr", mode="a")
    assert root.attrs["mepipe_schema"] == store_module.SCHEMA and len(calls) >= 2
