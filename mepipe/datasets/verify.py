"""``mepipe verify``: every problem of a raw dataset, found before a long build.

Runs the dataset's adapter, which already checks, clip by clip:

- that every onset..offset frame exists and the numbering is contiguous;
- that onset comes before offset, and the apex lies inside onset..offset;
- that no clip appears twice in the sheet;
- that the sheet and the folders agree (clips in one but not the other).

It then adds one check of its own: that every emotion is known to the dataset's default protocol
(a manifest's emotions are free text, each one a class of its ``native`` protocol: none is
unknown).
Every problem is listed, not just the first.

**Errors and warnings.** Each problem is one or the other, by its ``fatal`` flag:

- an *error* (``fatal``) leaves a clip unusable (no frames, no folder, no sheet row, an onset
  after its offset, a sheet row that cannot be read, two rows that code one clip differently), or
  is a dataset-level problem (a folder that cannot be listed). The clip is left out of the build.
- a *warning* (not ``fatal``) is a quirk a documented policy resolves, and its message says how:
  an apex of -1 resolved by the apex policy, an onset clamped to the folder's first frame, a
  missing frame that the clip runs on without, a CK+ sequence without a label left out as CK+
  intends. The clip is built as the message says.

An **unknown emotion** is a warning: the sample is still read and built, and :func:`select`
leaves it out of the protocol's classes with the reason recorded, exactly as it leaves out the
emotions a protocol excludes on purpose (CASME II's fear and sadness). Nothing is lost that a
corrected sheet would not restore on the next build, so the dataset stays usable; ``--strict``
is for those who want no sample silently unlabelled.

``verify`` exits 1 when there is an error, 0 otherwise; ``strict`` makes warnings fail too.
"""

from __future__ import annotations

from collections import Counter
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
    def errors(self) -> list[Problem]:
        """Problems that leave a clip (or the dataset) unusable."""
        return [p for p in self.problems if p.fatal]

    @property
    def warnings(self) -> list[Problem]:
        """Problems a documented policy resolved; the sample is kept."""
        return [p for p in self.problems if not p.fatal]

    @property
    def clean(self) -> bool:
        return not self.problems

    @property
    def usable(self) -> bool:
        return not self.errors

    def passes(self, strict: bool = False) -> bool:
        """True when ``verify`` exits 0: no errors, and under ``strict`` no warnings either."""
        return self.clean if strict else self.usable


def verify_dataset(dataset: str, root: str | Path, **options) -> Verification:
    """Read a dataset and collect every problem; DatasetError only when nothing can be read."""
    reading = read_dataset(dataset, root, **options)
    protocol = default_protocol(dataset)
    labels = label_map(dataset, protocol, reading.samples)
    problems = list(reading.problems)
    for sample in reading.samples:
        if not labels.known(sample.emotion):
            problems.append(Problem(
                "emotion", sample.sources.get("emotion", sample.sample_id),
                f"unknown emotion {sample.emotion!r} for {dataset} {protocol}; expected one of "
                f"{', '.join(sorted(set(labels.mapping) | labels.excluded))}; the sample is kept, "
                f"and {dataset} {protocol} leaves it out of its classes",
                sample.sample_id, fatal=False,
            ))
    return Verification(reading, protocol, problems)


def verification_report(result: Verification, root: str | Path, strict: bool = False) -> str:
    """What ``mepipe verify`` prints: the errors table, the warnings table, one summary line."""
    sections = [
        f"{heading}\n{problem_table(problems)}"
        for heading, problems in (("errors", result.errors), ("warnings", result.warnings))
        if problems
    ]
    return "\n\n".join([*sections, summary_line(result, root, strict)])


def summary_line(result: Verification, root: str | Path, strict: bool = False) -> str:
    """``casme2 at ROOT: 255 samples, 26 subjects; 0 errors, 3 warnings (3 apex). Usable.``"""
    reading = result.reading
    errors, warnings = result.errors, result.warnings
    unusable = len({p.sample_id for p in errors if p.sample_id})
    counts = f"{_count(errors, 'error')}, {_count(warnings, 'warning')}"
    if unusable:
        counts += f"; {unusable} clip{'' if unusable == 1 else 's'} unusable"
    if errors:
        verdict = "NOT CLEAN"
    elif warnings and strict:
        verdict = "NOT CLEAN (--strict: warnings count)"
    else:
        verdict = "Usable." if warnings else "Clean."
    subjects = len({s.subject for s in reading.samples})
    return f"{reading.dataset} at {root}: {len(reading.samples)} samples, {subjects} subjects; {counts}. {verdict}"


def _count(problems: list[Problem], noun: str) -> str:
    text = f"{len(problems)} {noun}{'' if len(problems) == 1 else 's'}"
    if problems:
        text += " (" + ", ".join(f"{count} {check}" for check, count in Counter(p.check for p in problems).most_common()) + ")"
    return text


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
