"""Helpers of the build tests: the build options they share and a store comparison, array for array."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

SMALL = ("face.size=64",)  # small crops keep every kernel fast; the code path is the same
#: A lighter TV-L1 (fewer scales and iterations), for tests that check where the arrays go and what
#: shapes and masks they have, not the flow's accuracy (tests/test_flow.py does).
FAST_FLOW = ("flow.n_scales=3", "flow.n_warps=2", "flow.outer_iterations=4")


def build_counts(summary) -> dict[str, tuple[int, int, int]]:
    """artifact -> (computed, reused, failed) of a build summary."""
    return {name: (count.computed, count.reused, count.failed) for name, count in summary.counts.items()}


def store_arrays(group: zarr.Group, prefix: str = "") -> dict[str, np.ndarray]:
    """Every array under ``group`` by its path, read whole."""
    found = {}
    for name, array in group.arrays():
        found[prefix + name] = array[...]
    for name, child in group.groups():
        found.update(store_arrays(child, f"{prefix}{name}/"))
    return found


def assert_same_store(first: Path, second: Path, group: str = "casme2") -> None:
    """The group holds the same arrays, dtypes, values (NaN equal to NaN) and attributes in both stores
    (the build record and the source root aside)."""
    a, b = store_arrays(zarr.open_group(str(first / group), mode="r")), store_arrays(zarr.open_group(str(second / group), mode="r"))
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        same = np.array_equal(a[name], b[name], equal_nan=a[name].dtype.kind == "f")
        if not same and a[name].ndim >= 2:
            rows = [i for i in range(len(a[name])) if not np.array_equal(a[name][i], b[name][i], equal_nan=a[name].dtype.kind == "f")]
            worst = float(np.nanmax(np.abs(a[name].astype(np.float64) - b[name].astype(np.float64))))
            raise AssertionError(f"{name} differs in rows {rows}, by up to {worst}")
        assert same, name
    attrs_a = dict(zarr.open_group(str(first / group), mode="r").attrs)
    attrs_b = dict(zarr.open_group(str(second / group), mode="r").attrs)
    for attrs in (attrs_a, attrs_b):
        attrs.pop("last_build")
        attrs.pop("source_root")
    assert attrs_a == attrs_b
