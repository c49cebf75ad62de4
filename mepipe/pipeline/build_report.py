"""``mepipe report --store S --dataset D``: one self-contained HTML page of a build.

The page has the build (samples, subjects, emotions per subject, each artifact's parameters per
input variant, the last build's wall time, every failure with its reason) and then every sample
as one row: its aligned onset and apex, ``|apex - onset|`` x 8 and the colour-coded flow, beside
its QC record (detector score, fallback, the anchor frame moved for a blink, roll, head and
residual motion, apex source and the spotted apex). Failed samples come first, then the samples
:data:`FLAG_RULES` flag (most flags first), then the rest; every rule and its threshold is
written on the page. The rows filter by subject, emotion and flag and sort on any column in the
browser (:mod:`mepipe.pipeline.webpage`).

The store is opened read-only; the page is the only file written.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import zarr

from mepipe import __version__
from mepipe.pipeline.params import PARAM_TYPES
from mepipe.pipeline.pictures import thumbnails
from mepipe.pipeline.report import size_text
from mepipe.pipeline.store import StoreError, datasets_in, group_variant, in_dataset, open_store, size_on_disk, variant_groups
from mepipe.pipeline.variants import Variant
from mepipe.pipeline.webpage import (
    Column, Row, cell, escape, filters_html, image_uri, page_html, section, stacked_bars_svg, table_html,
)

#: Side of each thumbnail, pixels (onset, apex, difference, flow side by side in one JPEG).
THUMBNAIL_SIDE = 80
#: JPEG quality of the thumbnail strips: 80 keeps the faces' texture and the flow's hues at
#: about 4 kB a sample (docs/report.md).
THUMBNAIL_QUALITY = 80
PICTURES = ("onset", "apex", "difference", "flow")


class ReportError(Exception):
    """A report cannot be made; one line naming the store, group or sample."""


@dataclass
class SampleQC:
    """One sample's row: its metadata and the face stage's quality record (NaN: not measured)."""

    index: int
    sample_id: str
    subject: str
    emotion: str
    onset: int
    apex: int  # annotated (or the adapter's rule, see apex_source)
    apex_used: int  # the apex the artifacts were computed with (-1 until face is done)
    offset: int
    n_frames: int
    apex_source: str
    status: str
    failures: dict
    detector_score: float
    fallback: str
    detection_frame: float
    landmark_frame: float
    eye_aspect_ratio: float
    roll_degrees: float
    head_motion_px: float
    residual_motion_px: float
    apex_spotted: float
    flags: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.failures)

    @property
    def apex_distance(self) -> float:
        """Spotted apex minus the apex used, frames (NaN where the build did not spot it)."""
        used = self.apex_used if self.apex_used >= 0 else self.apex
        return float(self.apex_spotted - used) if np.isfinite(self.apex_spotted) else float("nan")

    @property
    def anchor_moved(self) -> float:
        """Landmark frame minus detection frame: nonzero when a blink moved the alignment's anchor."""
        if np.isfinite(self.landmark_frame) and np.isfinite(self.detection_frame):
            return float(self.landmark_frame - self.detection_frame)
        return float("nan")

    def causes(self) -> dict[str, list[str]]:
        """Each distinct failure reason and the artifacts it stopped, leaving out the echoes
        (``not computed: face failed``) of a cause already listed."""
        by_reason: dict[str, list[str]] = {}
        for name, record in self.failures.items():
            by_reason.setdefault(str(record.get("reason", "")), []).append(name)
        roots = {reason: names for reason, names in by_reason.items() if not reason.startswith("not computed:")}
        return roots or by_reason


@dataclass(frozen=True)
class FlagRule:
    """A rule that flags a sample for a look: ``name`` is its badge, ``text`` the rule as the page
    writes it (``{threshold}`` is replaced), ``test`` says whether a sample breaks it."""

    name: str
    text: str
    threshold: float | None
    test: Callable[[SampleQC, float | None], bool]

    def describe(self) -> str:
        return self.text.format(threshold=self.threshold)


def _finite(value: float) -> bool:
    return bool(np.isfinite(value))


#: The rules; each threshold is on the page beside the number of samples it flags. Chosen on the
#: synthetic sets and the face stage's own scales (docs/report.md says how).
FLAG_RULES: tuple[FlagRule, ...] = (
    FlagRule("low-score", "dlib's detection score below {threshold} (above about 0.5 is a clear frontal face)", 0.3,
             lambda s, t: _finite(s.detector_score) and s.detector_score < t),
    FlagRule("fallback", "the face was found only by a fallback: on the frame upsampled, or on a later frame", None,
             lambda s, t: s.fallback not in ("", "none")),
    FlagRule("blink-anchor", "a blink closed the eyes on the detection frame: the alignment's landmarks come from another frame",
             None, lambda s, t: _finite(s.anchor_moved) and s.anchor_moved != 0),
    FlagRule("closed-eyes", "the anchor landmarks' eye aspect ratio below {threshold} (about 0.3 open, under 0.2 closing)", 0.2,
             lambda s, t: _finite(s.eye_aspect_ratio) and s.eye_aspect_ratio < t),
    FlagRule("roll", "the head rolled more than {threshold} degrees (removed by the alignment, but the face is not frontal)", 15.0,
             lambda s, t: _finite(s.roll_degrees) and abs(s.roll_degrees) > t),
    FlagRule("residual-motion", "rigid motion left after stabilisation above {threshold} crop pixels (the head moved more "
             "than the alignment removed)", 0.5, lambda s, t: _finite(s.residual_motion_px) and s.residual_motion_px > t),
    FlagRule("apex-far", "the apex used is more than {threshold} of the onset-to-offset span (and at least 3 frames) from "
             "the spotted apex, the frame of largest facial motion", 0.25,
             lambda s, t: _finite(s.apex_distance) and abs(s.apex_distance) >= 3
             and abs(s.apex_distance) > t * max(s.offset - s.onset, 1)),
)


@dataclass
class BuildReport:
    """The page's text and what it holds: ``samples`` rows (suspects first), the group shown."""

    html: str
    samples: list[SampleQC]
    group: str
    seconds: float


def build_report(store: str | Path, dataset: str, variant: str | None = None, *,
                 progress: Callable[[int, int], None] | None = None) -> BuildReport:
    """The HTML report of dataset group ``dataset`` of the store at ``store`` (read-only).

    variant : the input variant whose pictures and QC rows are shown (``224-gray-eyes-kept``);
        None: the dataset group's own when it has faces, else its first variant that has.
    progress : called with (samples done, samples) while the thumbnails are made.

    Raises
    ------
    ReportError
        No store there, no such dataset (the message lists those present), or no such variant.
    """
    started = time.perf_counter()
    store = Path(store)
    try:
        root = open_store(store, "r")
    except StoreError as error:
        raise ReportError(str(error)) from None
    present = datasets_in(root)
    if dataset not in present:
        raise ReportError(f"the store at {store} has no dataset {dataset!r}; it holds: {', '.join(present) or 'nothing yet'} "
                          f"(build one with `mepipe build --dataset {dataset}`)")
    dataset_group = root[dataset]
    variants = variant_groups(dataset_group)
    group = _shown_group(dataset_group, variants, variant, store)
    current = in_dataset(group)
    samples = [s for s in _sample_rows(group) if current[s.index]]
    for sample in samples:
        sample.flags = _flags(sample)
    samples.sort(key=_suspicion)
    pictures, strips = Thumbnails(group), []
    for position, sample in enumerate(samples):
        strips.append(pictures.strip(sample.index))
        if progress is not None:
            progress(position + 1, len(samples))
    shown = group_variant(group)
    title = f"mepipe report: {dataset}" + (f", variant {shown.name}" if shown else "")
    subtitle = (f"store {escape(store.resolve())}, group <code>{escape(group.path)}</code>; made "
                f"{time.strftime('%Y-%m-%d %H:%M')} by mepipe {escape(__version__)}")
    body = [
        _build_section(dataset_group, group, variants, samples, current, store),
        _failures_section(samples),
        _rules_section(samples),
        _samples_section(samples, strips),
    ]
    nav = [("build", "the build"), ("failures", "failures"), ("flags", "flags"), ("samples", f"the {len(samples)} samples")]
    text = page_html(title, body, subtitle=subtitle, nav=nav)
    return BuildReport(text, samples, group.path, time.perf_counter() - started)


# ---------------------------------------------------------------- reading the group

def _shown_group(dataset_group: zarr.Group, variants: dict[str, zarr.Group], variant: str | None, store: Path) -> zarr.Group:
    if variant is not None:
        try:
            wanted = Variant.parse(variant).name
        except ValueError as error:
            raise ReportError(str(error)) from None
        if wanted not in variants:
            raise ReportError(f"{dataset_group.path} has no variant {wanted} in {store}; its variants: "
                              f"{', '.join(variants) or 'none (nothing built yet)'}")
        return variants[wanted]
    for group in [dataset_group, *variants.values()]:
        if "done" in group and "face" in group["done"] and group["done"]["face"][:].any():
            return group
    return dataset_group


def _column(group: zarr.Group, name: str, default, n: int) -> np.ndarray:
    if name in group:
        return group[name][:]
    return np.full(n, default)


def _sample_rows(group: zarr.Group) -> list[SampleQC]:
    ids = [str(value) for value in group["sample_id"][:]]
    n = len(ids)
    qc = group["qc"] if "qc" in group else {}

    def quality(name: str) -> np.ndarray:
        return qc[name][:].astype(np.float64) if name in qc else np.full(n, np.nan)

    def text(name: str) -> list[str]:
        return [str(value) for value in qc[name][:]] if name in qc else [""] * n

    columns = {name: quality(name) for name in ("detector_score", "detection_frame", "landmark_frame", "eye_aspect_ratio",
                                                "roll_degrees", "head_motion_px", "residual_motion_px", "apex_spotted")}
    status, fallback = text("status"), text("fallback")
    recorded = text("failures")
    subject, emotion = _column(group, "subject", "", n), _column(group, "emotion", "", n)
    onset, apex, offset = (_column(group, name, -1, n) for name in ("onset", "apex", "offset"))
    n_frames, apex_used = _column(group, "n_frames", -1, n), _column(group, "apex_used", -1, n)
    source = _column(group, "apex_source", "", n)
    rows = []
    for i, sample_id in enumerate(ids):
        try:
            failed = json.loads(recorded[i]) if recorded[i] else {}
        except ValueError:
            failed = {"qc": {"reason": f"unreadable failure record {recorded[i][:60]!r}"}}
        rows.append(SampleQC(
            i, sample_id, str(subject[i]), str(emotion[i]), int(onset[i]), int(apex[i]), int(apex_used[i]), int(offset[i]),
            int(n_frames[i]), str(source[i]), status[i], failed, columns["detector_score"][i], fallback[i],
            columns["detection_frame"][i], columns["landmark_frame"][i], columns["eye_aspect_ratio"][i],
            columns["roll_degrees"][i], columns["head_motion_px"][i], columns["residual_motion_px"][i],
            columns["apex_spotted"][i]))
    return rows


def _flags(sample: SampleQC) -> list[str]:
    flags = []
    if sample.failed:
        flags.append("failed")
    elif sample.status == "":
        flags.append("not-built")
    flags += [rule.name for rule in FLAG_RULES if rule.test(sample, rule.threshold)]
    return flags


def _suspicion(sample: SampleQC) -> tuple:
    """Failures first, then unbuilt samples, then the most flags, then by sample id."""
    return (0 if sample.failed else 1 if "not-built" in sample.flags else 2 if sample.flags else 3,
            -len(sample.flags), sample.sample_id)


class Thumbnails:
    """The thumbnail strips of one group's samples: its arrays and done flags opened once.

    ``strip(index)`` is a ``data:`` URI of one JPEG of :data:`PICTURES` side by side, each
    :data:`THUMBNAIL_SIDE` px (a blank tile where one is missing), or None when the sample has none.
    """

    def __init__(self, group: zarr.Group) -> None:
        done = group["done"] if "done" in group else None
        self.arrays, self.done = {}, {}
        for name in ("face", "flow", "eye_mask"):
            flag = "face" if name == "eye_mask" else name
            if name in group and done is not None and flag in done:
                self.arrays[name] = group[name]
                self.done[name] = done[flag][:].astype(bool)
        channels = list(self.arrays["face"].attrs.get("channels", [])) if "face" in self.arrays else []
        self.per_colour = bool(channels) and str(channels[-1]).endswith("_b")

    def _read(self, name: str, index: int):
        return self.arrays[name][index] if name in self.arrays and self.done[name][index] else None

    def strip(self, index: int) -> str | None:
        mask = self._read("eye_mask", index)
        pictures = thumbnails(self._read("face", index), self._read("flow", index), None if mask is None else mask[0],
                              THUMBNAIL_SIDE, self.per_colour)
        if not pictures:
            return None
        gap = 2
        strip = np.full((THUMBNAIL_SIDE, len(PICTURES) * (THUMBNAIL_SIDE + gap) - gap, 3), 255, np.uint8)
        for position, name in enumerate(PICTURES):
            x = position * (THUMBNAIL_SIDE + gap)
            strip[:, x:x + THUMBNAIL_SIDE] = pictures[name] if name in pictures else _missing_tile()
        return image_uri(strip, quality=THUMBNAIL_QUALITY)


def _missing_tile() -> np.ndarray:
    """A grey tile crossed out: a picture whose artifact is not computed (a white one would read as
    a flow where nothing moves)."""
    tile = np.full((THUMBNAIL_SIDE, THUMBNAIL_SIDE, 3), 215, np.uint8)
    end = THUMBNAIL_SIDE - 1
    cv2.line(tile, (0, 0), (end, end), (150, 150, 150), 1, cv2.LINE_AA)
    cv2.line(tile, (0, end), (end, 0), (150, 150, 150), 1, cv2.LINE_AA)
    return tile



# ---------------------------------------------------------------- the page's sections

def _build_section(dataset_group: zarr.Group, group: zarr.Group, variants: dict[str, zarr.Group], samples: list[SampleQC],
                   current: np.ndarray, store: Path) -> str:
    attrs = dataset_group.attrs
    subjects = sorted({s.subject for s in samples})
    emotions = [e for e, _ in Counter(s.emotion for s in samples).most_common()]
    gone = int((~current).sum())
    failed = sum(1 for s in samples if s.failed)
    flagged = sum(1 for s in samples if s.flags and not s.failed)
    lines = [
        f"<p><b>{len(samples)}</b> samples of <b>{len(subjects)}</b> subjects, {len(emotions)} emotions "
        f"({', '.join(f'{escape(e)} {sum(1 for s in samples if s.emotion == e)}' for e in emotions)}); "
        f"<b>{failed}</b> failed, <b>{flagged}</b> flagged. Adapter <code>{escape(attrs.get('adapter', ''))}</code>, "
        f"frames from <code>{escape(attrs.get('source_root', ''))}</code>, {escape(attrs.get('fps', ''))} fps; "
        f"{size_text(size_on_disk(store / dataset_group.path))} on disk with its variants.</p>"
    ]
    if gone:
        lines.append(f"<p>{gone} samples an earlier build held are no longer in the dataset: their rows are kept in the "
                     f"store without results, and are not shown.</p>")
    counts = {e: [sum(1 for s in samples if s.subject == subject and s.emotion == e) for subject in subjects] for e in emotions}
    lines.append(stacked_bars_svg(subjects, counts, title="emotions per subject"))
    for name, variant_group in (variants.items() if variants else [("(none)", dataset_group)]):
        table = _artifact_table(name, variant_group, variant_group.path == group.path)
        if variant_group.path != group.path:  # the other variants' tables folded, to keep the samples near
            table = f"<details><summary>variant {escape(name)}</summary>{table}</details>"
        lines.append(table)
    last = attrs.get("last_build")
    for name, variant_group in variants.items():
        record = variant_group.attrs.get("last_build")
        if record and variant_group.path != dataset_group.path:
            last = last or record
    if last:
        computed = ", ".join(f"{escape(a)} {c}" for a, c in last.get("computed", {}).items()) or "nothing"
        failures = ", ".join(f"{escape(a)} {c}" for a, c in last.get("failed", {}).items() if c) or "none"
        lines.append(f"<p>Last build: {last.get('wall_s', 0):.1f} s wall, scheduler {escape(last.get('scheduler', ''))}, "
                     f"{escape(last.get('workers', ''))} workers; computed {computed}; failed {failures}.</p>")
    return section("The build", *lines, anchor="build")


def _artifact_table(name: str, group: zarr.Group, shown: bool) -> str:
    records = group.attrs.get("artifacts", {})
    readers = group.attrs.get("variant", {}).get("readers", [])
    current = in_dataset(group)
    failures = [json.loads(str(text)) if str(text) else {} for text in group["qc"]["failures"][:]] if "qc" in group else []
    rows = []
    for artifact, record in records.items():
        flags = group["done"][artifact][:].astype(bool) if "done" in group and artifact in group["done"] else np.zeros(len(current), bool)
        done = int((flags & current).sum())
        failed = sum(1 for f, keep in zip(failures, current) if keep and artifact in f)
        defaults = asdict(PARAM_TYPES[artifact]()) if artifact in PARAM_TYPES else {}
        params = ", ".join((f"<b>{escape(k)}={escape(v)}</b>" if defaults.get(k, v) != v else f"{escape(k)}={escape(v)}")
                           for k, v in record.get("params", {}).items()) or "(flow's)"
        rows.append(f"<tr><td>{escape(artifact)}</td><td class=\"num\">{done}</td><td class=\"num\">{failed}</td>"
                    f"<td><code>{escape(record.get('key', ''))}</code></td><td>{params}</td></tr>")
    heading = (f"<p>Variant <b>{escape(name)}</b> in <code>{escape(group.path)}</code>"
               + (f", read by {escape(', '.join(readers))}" if readers else "")
               + (" &mdash; the samples below show this one" if shown else "") + ":</p>")
    if not rows:
        return heading + "<p>nothing built</p>"
    return (heading + '<table><thead><tr><th>artifact</th><th>done</th><th>failed</th><th>cache key</th>'
            '<th>parameters (bold: not the default)</th></tr></thead><tbody>' + "".join(rows) + "</tbody></table>")


def _failures_section(samples: list[SampleQC]) -> str:
    failed = [s for s in samples if s.failed]
    if not failed:
        return section("Failures", "<p>No sample failed.</p>", anchor="failures")
    rows = "".join(
        f"<tr><td>{escape(s.sample_id)}</td><td>{escape(', '.join(artifacts))}</td><td class=\"reason\">{escape(reason)}</td></tr>"
        for s in failed for reason, artifacts in s.causes().items())
    return section(f"Failures ({len(failed)} sample{'s' if len(failed) > 1 else ''})",
                   "<p>Each failed sample's causes; artifacts that were not computed because of them are left out. "
                   "A failure is retried by the next build once the clip's files change.</p>",
                   f"<table><thead><tr><th>sample</th><th>artifacts</th><th>reason</th></tr></thead><tbody>{rows}</tbody></table>",
                   anchor="failures")


def _rules_section(samples: list[SampleQC]) -> str:
    rows = [("failed", "an artifact failed for the sample (its reason is in its row and under Failures)", "")] + \
           [("not-built", "the sample has not been built yet (run mepipe build again)", "")] + \
           [(rule.name, rule.describe(), "" if rule.threshold is None else f"{rule.threshold:g}") for rule in FLAG_RULES]
    counts = Counter(flag for s in samples for flag in s.flags)
    body = "".join(f'<tr><td><span class="flag{" failed" if name == "failed" else ""}">{escape(name)}</span></td>'
                   f"<td>{escape(text)}</td><td class=\"num\">{escape(threshold)}</td><td class=\"num\">{counts.get(name, 0)}</td></tr>"
                   for name, text, threshold in rows)
    not_measured = sum(1 for s in samples if not s.failed and s.status and not np.isfinite(s.apex_spotted))
    note = (f"<p>{not_measured} samples have no spotted apex: clips whose onset is their offset, or faces built before "
            f"mepipe recorded it (a build into a new store measures it).</p>" if not_measured else "")
    return section("Flags", "<p>The samples below are ordered: failed first, then not built, then flagged (most flags "
                   "first), then the rest. A flag is a reason to look, not a verdict.</p>",
                   f"<table><thead><tr><th>flag</th><th>rule</th><th>threshold</th><th>samples</th></tr></thead><tbody>{body}"
                   f"</tbody></table>", note, anchor="flags")


_COLUMNS = (
    Column("rank", "#", "the page's order: failed, not built, flagged, then the rest", numeric=True),
    Column("flags", "flags", "failed and flag badges; sorts by how many"),
    Column("sample", "sample", "sample id: group/subject/clip, and a failed sample's causes"),
    Column("subject", "subject"),
    Column("emotion", "emotion"),
    Column("pictures", "onset · apex · |apex−onset|×8 · flow", "aligned key frames as stored, their difference amplified "
           "8 times, and the colour-coded flow onset to apex (hue direction, full colour at its 99.5th percentile)",
           sortable=False),
    Column("frames", "onset / apex / offset", "indices into the clip's frames; the apex the artifacts used, "
           "with the annotated one where they differ", numeric=True),
    Column("n_frames", "frames", "the clip's frame count", numeric=True),
    Column("apex_source", "apex source", "where the apex comes from: the annotation, or the adapter's rule"),
    Column("apex_distance", "spotted − apex", "the spotted apex (largest facial motion) minus the apex used, frames; "
           "sorts by its size", numeric=True),
    Column("detector_score", "detector score", "dlib's detection score", numeric=True),
    Column("fallback", "fallback", "how the face was found: none, upsample, next_frame"),
    Column("anchor", "anchor moved", "landmark frame minus detection frame (a blink moved the anchor)", numeric=True),
    Column("eye_aspect_ratio", "eye aspect", "the anchor landmarks' eye aspect ratio", numeric=True),
    Column("roll_degrees", "roll °", "the eye line's angle the alignment removed", numeric=True),
    Column("head_motion_px", "head motion px", "largest rigid head motion the stabilisation removed, crop pixels", numeric=True),
    Column("residual_motion_px", "residual px", "rigid motion left after stabilisation, crop pixels", numeric=True),
)


def _samples_section(samples: list[SampleQC], strips: list[str | None]) -> str:
    rows = []
    for rank, (sample, strip) in enumerate(zip(samples, strips), start=1):
        badges = "".join(f'<span class="flag{" failed" if flag == "failed" else ""}">{escape(flag)}</span>' for flag in sample.flags)
        apex = sample.apex_used if sample.apex_used >= 0 else sample.apex
        frames = f"{sample.onset} / {apex} / {sample.offset}" + (
            f" (annotated {sample.apex})" if sample.apex_used >= 0 and sample.apex_used != sample.apex else "")
        distance = sample.apex_distance
        reasons = "; ".join(f"{r} ({', '.join(a)})" for r, a in sample.causes().items()) if sample.failed else ""
        picture = (f'<img class="thumb" src="{strip}" alt="{escape(sample.sample_id)}: onset, apex, difference, flow" '
                   f'height="{THUMBNAIL_SIDE}">' if strip else '<span class="none">no pictures: face not computed</span>')
        rows.append(Row(
            cells={
                "rank": cell(rank), "flags": (badges, len(sample.flags) + (100 if sample.failed else 0)),
                "sample": (escape(sample.sample_id) + (f'<br><span class="reason">{escape(reasons)}</span>' if reasons else ""),
                           sample.sample_id),
                "subject": cell(sample.subject), "emotion": cell(sample.emotion),
                "pictures": (picture, ""), "frames": (escape(frames), apex), "n_frames": cell(sample.n_frames),
                "apex_source": cell(sample.apex_source),
                "apex_distance": (escape(f"{distance:+.0f}"), abs(distance)) if np.isfinite(distance) else cell(None),
                "detector_score": cell(sample.detector_score, digits=2), "fallback": cell(sample.fallback or None),
                "anchor": (escape(f"{sample.anchor_moved:+.0f}"), sample.anchor_moved) if np.isfinite(sample.anchor_moved)
                else cell(None),
                "eye_aspect_ratio": cell(sample.eye_aspect_ratio, digits=2), "roll_degrees": cell(sample.roll_degrees, digits=1),
                "head_motion_px": cell(sample.head_motion_px, digits=2),
                "residual_motion_px": cell(sample.residual_motion_px, digits=2),
            },
            attributes={"subject": [sample.subject], "emotion": [sample.emotion], "flag": sample.flags},
            css="failed" if sample.failed else ("flagged" if sample.flags else ""),
        ))
    subjects = sorted({s.subject for s in samples})
    emotions = sorted({s.emotion for s in samples})
    flags = ["failed", "not-built", *(rule.name for rule in FLAG_RULES)]
    controls = filters_html("samples", {
        "subject": ("subject", [("", "all"), *((s, s) for s in subjects)]),
        "emotion": ("emotion", [("", "all"), *((e, e) for e in emotions)]),
        "flag": ("flag", [("", "all"), ("*", "any flag"), ("-", "no flag"), *((f, f) for f in flags)]),
    })
    return section("Samples", "<p>Click a column heading to sort by it (again to reverse); click # to return to the page's "
                   "order. Hover over a row's pictures to enlarge them.</p>", controls,
                   table_html("samples", _COLUMNS, rows), anchor="samples")

