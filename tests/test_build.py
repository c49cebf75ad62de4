"""The build: store contents, incremental cache, kill and resume, failures, bad input, distributed runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from mepipe.cli import main
from mepipe.pipeline.artifacts import ARTIFACTS
from mepipe.pipeline.build import BuildError, BuildOptions, build
from mepipe.synth.generate import SynthOptions, synthesize

from stores import SMALL, assert_same_store, build_counts as _counts  # the tiny tree and reference store: conftest.py


def _build(tiny, store, **options):
    options.setdefault("params", SMALL)
    return build(BuildOptions("casme2", root=tiny, store=store, scheduler="threads", workers=2, **options))


def test_build_writes_every_artifact_of_every_sample(tiny, reference_store):
    group = zarr.open_group(str(reference_store / "casme2"), mode="r")
    n = group["sample_id"].shape[0]
    assert n == 6
    for name, artifact in ARTIFACTS.items():
        assert group["done"][name][:].all(), name
        for spec in artifact.arrays:
            array = group[spec.name]
            assert array.shape == (n, len(spec.channels), 64, 64) and array.chunks == (1, len(spec.channels), 64, 64)
            assert list(array.metadata.dimension_names) == ["sample", f"{spec.name}_channel", "y", "x"]
            assert list(group[f"{spec.name}_channel"][:]) == list(spec.channels)
            assert np.isfinite(array[...].astype(np.float64)).all()
    assert list(group["qc"]["status"][:]) == ["ok"] * n
    for index in range(n):
        key = f"{group['subject'][index]}/{group['clip'][index]}"
        frames = group[f"clips/frames/{key}"]
        assert frames.shape == (int(group["n_frames"][index]), 64, 64) and frames.dtype == np.uint8
        assert group[f"clips/magnified/{key}"].shape == frames.shape
        # the key frames are the clip's onset and apex with the eyes filled black
        onset, apex = int(group["onset"][index]), int(group["apex_used"][index])
        mask = group["eye_mask"][index, 0].astype(bool)
        clip = frames[...]
        assert np.array_equal(group["face"][index, 0][~mask], clip[onset][~mask])
        assert np.array_equal(group["face"][index, 1][~mask], clip[apex][~mask])
        assert (group["face"][index][:, mask] == 0).all()
        flow = group["flow"][index]
        assert (flow[:, mask] == 0).all() and np.abs(flow).max() > 0.05  # the expression moves
    assert str(group["sample_id"][0]).startswith("casme2/sub01/")


def test_flow_equals_tvl1_of_the_stored_crops(reference_store):
    from mepipe.features.flow import tvl1

    group = zarr.open_group(str(reference_store / "casme2"), mode="r")
    index = 1
    key = f"{group['subject'][index]}/{group['clip'][index]}"
    clip = group[f"clips/frames/{key}"][...]
    expected = tvl1(clip[int(group["onset"][index])], clip[int(group["apex_used"][index])])
    mask = group["eye_mask"][index, 0].astype(bool)
    expected[:, mask] = 0
    np.testing.assert_array_equal(group["flow"][index], expected)


def test_second_build_computes_nothing_and_a_flow_parameter_recomputes_only_flow_and_its_dependents(tiny, reference_store, tmp_path):
    store = tmp_path / "store.zarr"
    shutil.copytree(reference_store, store)
    again = _build(tiny, store)
    assert all(computed == 0 and reused == 6 for computed, reused, _ in _counts(again).values())
    assert again.results == [] and again.scheduler == "none"

    changed = _build(tiny, store, params=SMALL + ("flow.lambda_=0.1",))
    counts = _counts(changed)
    assert {name for name, (computed, _, _) in counts.items() if computed} == {"flow", "strain", "magnified_flow"}
    assert all(counts[name] == (6, 0, 0) for name in ("flow", "strain", "magnified_flow"))
    assert all(counts[name] == (0, 6, 0) for name in ("face", "residual", "dynamic", "magnified"))
    group = zarr.open_group(str(store / "casme2"), mode="r")
    assert group.attrs["artifacts"]["flow"]["params"]["lambda_"] == 0.1
    reference = zarr.open_group(str(reference_store / "casme2"), mode="r")
    assert not np.array_equal(group["flow"][...], reference["flow"][...])
    assert np.array_equal(group["residual"][...], reference["residual"][...])

    # back to the defaults: the store equals the reference again, recomputing only those three
    back = _build(tiny, store)
    assert {name for name, (computed, _, _) in _counts(back).items() if computed} == {"flow", "strain", "magnified_flow"}
    assert_same_store(store, reference_store)


def test_a_build_killed_part_way_resumes_to_the_same_store(tiny, reference_store, tmp_path):
    store = tmp_path / "killed.zarr"
    command = [sys.executable, "-m", "mepipe.cli", "build", "--dataset", "casme2", "--root", str(tiny), "--store", str(store),
               "--scheduler", "processes", "--workers", "2", *[arg for p in SMALL for arg in ("-p", p)]]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    done = 0
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                flags = zarr.open_group(str(store / "casme2" / "done"), mode="r")
                done = sum(int(flags[name][:].sum()) for name in ARTIFACTS if name in flags)
            except Exception:  # the store is still being created
                done = 0
            if done >= 3:
                break
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the whole job: driver, scheduler and workers
        process.wait()
    total = 6 * len(ARTIFACTS)
    assert 3 <= done < total, f"the kill came too late or too early: {done} of {total} artifacts done"

    resumed = _build(tiny, store)
    reused = sum(count.reused for count in resumed.counts.values())
    assert reused >= 3 and sum(count.computed for count in resumed.counts.values()) == total - reused
    assert not resumed.failures
    assert_same_store(store, reference_store)


def test_a_sample_without_a_face_or_with_a_broken_frame_is_recorded_and_the_build_goes_on(tiny, tmp_path):
    import cv2

    root = tmp_path / "casme2"
    shutil.copytree(tiny, root)
    clips = sorted(p for p in (root / "sub01").iterdir() if p.is_dir())
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    for frame in clips[0].iterdir():
        cv2.imwrite(str(frame), noise)  # no face anywhere
    broken = sorted(clips[1].iterdir())[3]
    broken.write_bytes(b"not a jpeg")
    store = tmp_path / "store.zarr"
    summary = _build(root, store, artifacts=("flow",))
    failed = {(sample, artifact) for sample, artifact, _ in summary.failures}
    assert failed == {(f"casme2/sub01/{clips[0].name}", "face"), (f"casme2/sub01/{clips[0].name}", "flow"),
                      (f"casme2/sub01/{clips[1].name}", "face"), (f"casme2/sub01/{clips[1].name}", "flow")}
    reasons = {sample: reason for sample, artifact, reason in summary.failures if artifact == "face"}
    assert "no face found" in reasons[f"casme2/sub01/{clips[0].name}"]
    assert str(broken) in reasons[f"casme2/sub01/{clips[1].name}"] and "not a readable image" in reasons[f"casme2/sub01/{clips[1].name}"]
    assert summary.counts["face"].computed == 4 and summary.counts["flow"].computed == 4
    group = zarr.open_group(str(store / "casme2"), mode="r")
    status = list(group["qc"]["status"][:])
    assert status.count("failed") == 2 and status.count("ok") == 4
    no_face = [str(s) for s in group["sample_id"][:]].index(f"casme2/sub01/{clips[0].name}")
    assert "no face found" in json.loads(str(group["qc"]["failures"][no_face]))["face"]["reason"]

    # a recorded failure is not retried while the parameters stay the same; --strict fails the run
    result = CliRunner().invoke(main, ["build", "--dataset", "casme2", "--root", str(root), "--store", str(store),
                                       "--artifacts", "flow", "--scheduler", "threads", "--strict", "-p", SMALL[0]])
    assert result.exit_code == 1, result.output
    assert "everything was up to date" in result.output and "2 failed" not in result.output
    assert "4 failed" in result.output and "no face found" in result.output


def test_cli_build_info_and_show_on_the_built_store(reference_store, tmp_path):
    runner = CliRunner()
    info = runner.invoke(main, ["info", "--store", str(reference_store)])
    assert info.exit_code == 0, info.output
    assert "[casme2] 6 samples, 2 subjects" in info.output and "magnified_flow" in info.output and "S=64" in info.output
    assert "QC: no failures" in info.output


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--dataset", "casme2", "--root", "/nonexistent/CASME2"], "dataset root /nonexistent/CASME2 does not exist"),
        (["--dataset", "casme2"], "--root is needed for casme2"),
        (["--dataset", "casme3", "--root", "."], "unknown dataset 'casme3'"),
        (["--dataset", "casme2", "--root", "{tiny}", "--artifacts", "flow,optical_flux"], "unknown artifact 'optical_flux'"),
        (["--dataset", "casme2", "--root", "{tiny}", "-p", "flow.lamda=0.1"], "flow has no parameter 'lamda'"),
        (["--dataset", "casme2", "--root", "{tiny}", "-p", "flow.lambda_=big"], "flow.lambda_ must be float"),
        (["--dataset", "casme2", "--root", "{tiny}", "--store", "{file}/store.zarr"], "is a file, not a folder"),
        (["--dataset", "casme2", "--root", "{tiny}", "--scheduler", "tcp://127.0.0.1:{port}"], "no Dask scheduler answers at tcp://127.0.0.1:"),
        (["--dataset", "casme2", "--root", "{tiny}", "--scheduler", "kubernetes"], "--scheduler must be threads, processes or a scheduler address"),
    ],
)
def test_bad_input_is_a_one_line_error(arguments, message, tiny, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    arguments = [a.format(tiny=tiny, file=blocker, port=_free_port()) for a in arguments]
    if "--store" not in arguments:
        arguments += ["--store", str(tmp_path / "store.zarr")]
    result = CliRunner().invoke(main, ["build", *arguments])
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and message in error_lines[0], result.output
    assert "Traceback" not in result.output


def test_a_store_that_cannot_be_written_is_a_one_line_error(tiny, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes to read-only folders")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(BuildError, match="is not writable"):
            _build(tiny, locked / "store.zarr")
    finally:
        locked.chmod(0o700)


def test_info_and_show_of_a_missing_store(tmp_path):
    result = CliRunner().invoke(main, ["info", "--store", str(tmp_path / "nothing.zarr")])
    assert result.exit_code == 1 and "no mepipe store at" in result.output


def test_distributed_build_on_a_scheduler_and_two_worker_processes_equals_the_local_build(tiny, reference_store, tmp_path):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    processes = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port),
                                   "--dashboard-address", ":0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                  start_new_session=True)]
    try:
        _wait_for_port(port)
        for _ in range(2):
            processes.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                                               "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                                              start_new_session=True))
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(2, timeout=120)
        store = tmp_path / "distributed.zarr"
        result = CliRunner().invoke(main, ["build", "--dataset", "casme2", "--root", str(tiny), "--store", str(store),
                                           "--scheduler", address, "-p", SMALL[0]])
        assert result.exit_code == 0, result.output
        assert "on 2 workers" in result.output
        assert_same_store(store, reference_store)
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"no scheduler on port {port} after {timeout} s")
