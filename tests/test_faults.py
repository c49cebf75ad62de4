"""Fault injection: kills, concurrent builds and a full disk, each ending in a store equal to a clean build.

Every case starts from a fresh store, injects its fault, then runs the same build to the end and
compares the group with an uninterrupted build array for array (``stores.assert_same_store``).
CI runs a short version (two kill points, one try of two and of three builds together, one
disk-full point); ``make test-all`` runs the long one (the ``slow`` marker): 24 driver kill points, 10 tries
of two and of three builds started at the same moment, seven disk-full points. The kill times are
drawn from a seeded generator, so a failing point can be rerun.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from mepipe.pipeline.artifacts import ARTIFACTS
from mepipe.pipeline.build import BuildError, BuildOptions, build
from mepipe.pipeline.load import load

from stores import SMALL, assert_same_store

#: An uninterrupted `processes` build of the tiny tree takes about 10 s here (start-up included);
#: kills land anywhere in it, from before the store exists to the last sample's writes.
KILL_WINDOW_S = (0.3, 11.0)
SHORT_KILLS, LONG_KILLS = 2, 24


def _command(tiny: Path, store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mepipe.cli", "build", "--dataset", "casme2", "--root", str(tiny), "--store", str(store),
            *[arg for p in SMALL for arg in ("-p", p)], *extra]


def _done_count(store: Path) -> int:
    try:
        flags = zarr.open_group(str(store / "casme2" / "done"), mode="r")
        return sum(int(flags[name][:].sum()) for name in ARTIFACTS if name in flags)
    except Exception:  # not created yet
        return 0


def _resume(tiny: Path, store: Path):
    return build(BuildOptions("casme2", root=tiny, store=store, scheduler="threads", workers=2, params=SMALL))


def _children(pid: int) -> list[int]:
    import psutil

    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _kill_driver_at(tiny: Path, store: Path, delay: float) -> int:
    """Start a build, SIGKILL its driver process alone after ``delay`` s; returns the done flags
    set at that moment. The driver's workers are left to die or finish on their own, as they are
    when a driver is killed for real; they are cleaned up only after the resume."""
    process = subprocess.Popen(_command(tiny, store, "--scheduler", "processes", "--workers", "2"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(delay)
    done = _done_count(store)
    orphans = _children(process.pid)
    process.kill()
    process.wait()
    return done, process.pid, orphans


def _kill_points(count: int) -> list[float]:
    rng = np.random.default_rng(20261201)
    return sorted(float(t) for t in rng.uniform(*KILL_WINDOW_S, size=count))


def _run_kills(tiny, reference_store, tmp_path, delays):
    hit = []
    for number, delay in enumerate(delays):
        store = tmp_path / f"killed-{number}.zarr"
        done, pid, orphans = _kill_driver_at(tiny, store, delay)
        try:
            _resume(tiny, store)
            assert_same_store(store, reference_store)
        except Exception as error:
            raise AssertionError(f"kill point {number} at {delay:.2f} s ({done} done flags set): {error}") from error
        finally:
            for orphan in orphans:
                try:
                    os.kill(orphan, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        hit.append(done)
        shutil.rmtree(store)
    total = 6 * len(ARTIFACTS)
    print(f"kill points (s): {', '.join(f'{d:.2f}' for d in delays)}; done flags at the kill: {hit} of {total}")
    return hit


def test_driver_killed_at_a_few_points_resumes_to_a_clean_store(tiny, reference_store, tmp_path):
    _run_kills(tiny, reference_store, tmp_path, _kill_points(SHORT_KILLS))


@pytest.mark.slow
def test_driver_killed_at_24_points_resumes_to_a_clean_store(tiny, reference_store, tmp_path):
    hit = _run_kills(tiny, reference_store, tmp_path, _kill_points(LONG_KILLS))
    total = 6 * len(ARTIFACTS)
    assert min(hit) == 0 and any(0 < done < total for done in hit), hit  # before the store, and mid-build


def test_a_killed_worker_is_replaced_and_the_build_completes(tiny, reference_store, tmp_path):
    store = tmp_path / "store.zarr"
    process = subprocess.Popen(_command(tiny, store, "--scheduler", "processes", "--workers", "2"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    import psutil

    killed = None
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if _done_count(store) >= 2:
                workers = [child for child in psutil.Process(process.pid).children(recursive=True)
                           if "spawn_main" in " ".join(child.cmdline()) and "resource_tracker" not in " ".join(child.cmdline())]
                if workers:
                    killed = workers[0].pid
                    os.kill(killed, signal.SIGKILL)
                    break
            time.sleep(0.05)
        out, err = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert killed is not None, "no worker to kill"
    assert process.returncode == 0, err
    assert_same_store(store, reference_store)


def _start_together(tiny: Path, store: Path, params: list[tuple[str, ...]], wait: bool = True) -> list[subprocess.CompletedProcess]:
    """Start one build per entry of ``params`` at the same moment on one store; wait for all."""
    processes = [subprocess.Popen(_command(tiny, store, "--scheduler", "threads", "--workers", "1", *(["--wait"] if wait else []),
                                           *[a for p in extra for a in ("-p", p)]),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for extra in params]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def _concurrent_tries(tiny, reference_store, tmp_path, builds: int, tries: int) -> None:
    for attempt in range(tries):
        store = tmp_path / f"together-{builds}-{attempt}.zarr"
        results = _start_together(tiny, store, [()] * builds)
        for result in results:
            assert result.returncode == 0, f"try {attempt}: {result.stderr}"
            assert "Traceback" not in result.stderr
        waited = sum("waiting for the other build of casme2" in result.stderr for result in results)
        computed = sum("everything was up to date" not in result.stdout for result in results)
        assert_same_store(store, reference_store)
        assert not zarr.open_group(str(store / "casme2"), mode="r")["qc"]["failures"][:].any()
        assert waited >= 1 and computed >= 1, (waited, computed)
        shutil.rmtree(store)


@pytest.mark.parametrize("builds", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_builds_started_together_end_in_a_clean_store(tiny, reference_store, tmp_path, builds):
    _concurrent_tries(tiny, reference_store, tmp_path, builds, 1)


@pytest.mark.slow
def test_ten_tries_of_two_and_of_three_builds_started_together(tiny, reference_store, tmp_path):
    _concurrent_tries(tiny, reference_store, tmp_path, 2, 10)
    _concurrent_tries(tiny, reference_store, tmp_path, 3, 10)


@pytest.mark.slow
def test_builds_without_wait_started_together_one_builds_the_others_are_refused(tiny, reference_store, tmp_path):
    store = tmp_path / "store.zarr"
    results = _start_together(tiny, store, [(), (), ()], wait=False)
    succeeded = [r for r in results if r.returncode == 0]
    refused = [r for r in results if r.returncode != 0]
    assert succeeded, [r.stderr for r in results]
    for result in refused:
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and "is being written by another mepipe build (pid" in errors[0], result.stderr
    _resume(tiny, store)  # a refused build left nothing to repair: this computes what the first skipped, if anything
    assert_same_store(store, reference_store)


@pytest.mark.slow
def test_two_builds_with_other_parameters_at_once_never_mix(tiny, reference_store, tmp_path):
    """Two builds with different -p at once: one waits for the other, so the store holds one
    consistent set of parameters, never a mix, and every artifact of it loads."""
    store = tmp_path / "store.zarr"
    results = _start_together(tiny, store, [(), ("flow.lambda_=0.1",)])
    assert all(result.returncode == 0 for result in results), [r.stderr for r in results]
    last = next(i for i, result in enumerate(results) if "waiting for the other build" in result.stderr)
    group = zarr.open_group(str(store / "casme2"), mode="r")
    assert group.attrs["artifacts"]["flow"]["params"]["lambda_"] == (0.15 if last == 0 else 0.1)
    data = load(store, "casme2", ["flow", "strain", "magnified_flow"])
    assert len(data) == 6 and not data.missing
    if last == 0:
        assert_same_store(store, reference_store)


# ---------------------------------------------------------------- a full disk

def _full_disk_at(monkeypatch, writes_before_full: int):
    """From the ``writes_before_full``-th chunk write on, every chunk write fails with ENOSPC."""
    import zarr.storage._local as local

    real_put = local._put
    count = {"chunks": 0}

    def put(path, value, exclusive=False):
        if "/c/" in str(path) or str(path).endswith("/c"):
            count["chunks"] += 1
            if count["chunks"] > writes_before_full:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_put(path, value, exclusive)

    monkeypatch.setattr(local, "_put", put)
    return lambda: monkeypatch.setattr(local, "_put", real_put)


def _disk_full_case(tiny, reference_store, tmp_path, monkeypatch, writes: int) -> None:
    store = tmp_path / f"full-{writes}.zarr"
    restore = _full_disk_at(monkeypatch, writes)
    with pytest.raises(BuildError) as raised:
        _resume(tiny, store)
    restore()
    message = str(raised.value)
    assert "No space left on device" in message and "run the same build again to resume" in message, message
    assert "\n" not in message
    # nothing is marked done whose data is not the uninterrupted build's
    group = zarr.open_group(str(store / "casme2"), mode="r")
    reference = zarr.open_group(str(reference_store / "casme2"), mode="r")
    for name, artifact in ARTIFACTS.items():
        if f"done/{name}" not in group:
            continue
        for index in np.flatnonzero(group["done"][name][:]):
            for spec in artifact.arrays:
                assert np.array_equal(group[spec.name][index], reference[spec.name][index], equal_nan=True), (name, index)
            if artifact.ragged:
                key = f"clips/{artifact.ragged}/{group['subject'][index]}/{group['clip'][index]}"
                assert np.array_equal(group[key][...], reference[key][...]), (name, index)
    failures = [json.loads(text) for text in group["qc"]["failures"][:] if text] if "qc" in group else []
    assert not failures, failures  # a full disk is the build's error, never recorded as the sample's
    _resume(tiny, store)
    assert_same_store(store, reference_store)
    shutil.rmtree(store)


@pytest.mark.parametrize("writes", [40])
def test_a_full_disk_stops_the_build_with_nothing_wrongly_done_and_resume_completes(tiny, reference_store, tmp_path, monkeypatch, writes):
    _disk_full_case(tiny, reference_store, tmp_path, monkeypatch, writes)


@pytest.mark.slow
@pytest.mark.parametrize("writes", [0, 5, 12, 25, 60, 80, 95])
def test_a_full_disk_at_more_points(tiny, reference_store, tmp_path, monkeypatch, writes):
    _disk_full_case(tiny, reference_store, tmp_path, monkeypatch, writes)
