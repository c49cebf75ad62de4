"""One entry point to every dataset adapter: ``read_dataset(name, root)``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from mepipe.datasets.errors import DatasetError
from mepipe.datasets.macro import MACRO_READERS
from mepipe.datasets.manifest import read_manifest
from mepipe.datasets.micro import read_casme2, read_samm, read_smic
from mepipe.datasets.samples import DatasetReading

READERS: dict[str, Callable[..., DatasetReading]] = {
    "casme2": read_casme2,
    "samm": read_samm,
    "smic": read_smic,
    **MACRO_READERS,
    "manifest": read_manifest,
}


def read_dataset(name: str, root: str | Path, **options) -> DatasetReading:
    """Read a raw dataset in its published layout; see each adapter for its options."""
    try:
        reader = READERS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(READERS)}") from None
    accepted = inspect.signature(reader).parameters
    for option in options:
        if option not in accepted:
            raise DatasetError(f"option '{option}' does not apply to {name}; it takes: {', '.join(list(accepted)[1:]) or 'no options'}")
    return reader(Path(root), **options)
