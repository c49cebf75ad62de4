"""``mepipe verify``: every problem of a raw dataset, found before a long build.

Runs the dataset's adapter, which already checks, clip by clip:

- that every onset..offset frame exists and the numbering is contiguous;
- that the apex lies inside onset..offset;
- that no clip appears twice in the sheet;
- that the sheet and the folders agree (clips in one but not the other).

It then adds one check of its own: that every emotion is known to the dataset's protocol. Every
problem is listed, not just the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mepipe.datasets.adapters import read_dataset
from mepipe.datasets.protocols import default_protocol, label_map
from mepipe.datasets.samples import DatasetReading, Problem


@dataclass
class Verification:
    reading: DatasetReading
    protocol: str
    problems: list[Problem]

    @property
    def clean(self) -> bool:
        return not self.problems


def verify_dataset(dataset: str, root: str | Path, **options) -> Verification:
    """Read a dataset and collect every problem; DatasetError only when nothing can be read."""
    reading = read_dataset(dataset, root, **options)
    protocol = default_protocol(dataset)
    labels = label_map(dataset, protocol)
    problems = list(reading.problems)
    for sample in reading.samples:
        if not labels.known(sample.emotion):
            problems.append(Problem(
                "emotion", sample.sources.get("emotion", sample.sample_id),
                f"unknown emotion {sample.emotion!r} for {dataset} {protocol}; expected one of "
                f"{', '.join(sorted(set(labels.mapping) | labels.excluded))}",
                sample.sample_id,
            ))
    return Verification(reading, protocol, problems)


def problem_table(problems: list[Problem], width: int = 110) -> str:
    """The problems as a plain-text table: check, where, what."""
    if not problems:
        return ""
    check_width = max(len("check"), *(len(p.check) for p in problems))
    where_width = min(60, max(len("where"), *(len(p.where) for p in problems)))
    lines = [f"{'check':<{check_width}}  {'where':<{where_width}}  problem", f"{'-' * check_width}  {'-' * where_width}  {'-' * 7}"]
    for p in problems:
        where = p.where if len(p.where) <= where_width else "..." + p.where[-(where_width - 3):]
        lines.append(f"{p.check:<{check_width}}  {where:<{where_width}}  {p.message}")
    return "\n".join(lines)
