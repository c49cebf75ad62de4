"""The ``manifest`` adapter: any dataset, one clip per row of ``manifest.csv``.

How CAS(ME)^3, MMEW, 4DME or a lab's own recordings get into mepipe without an adapter of their
own: a CSV (or xlsx) sheet in the dataset's root lists every clip, and each clip is a folder of
frame images or a video file. The columns, found by name (case, spaces and punctuation ignored,
as in every sheet mepipe reads; extra columns are ignored):

================  ========  =========================================================================
column            required  what it holds
================  ========  =========================================================================
``subject``       yes       the subject (the LOSO group): ``sub01``, ``spNO.1``, ``7``
``clip``          yes       the clip's name, unique within its subject
``path``          yes       the clip's frame folder or video file, relative to the root (or absolute)
``onset``         yes       frame folder: the onset's frame number as its file is named (``img46.jpg``
                            is frame 46); video: the onset's 0-based frame index
``apex``          no        same counting; empty (or -1, or the column left out): the apex policy
``offset``        yes       same counting as onset
``emotion``       yes       the emotion as coded, free text (``happiness``, ``Positive``, ...)
``action_units``  no        FACS action units as the datasets code them (``4+7``, ``R12``, ``L12 or L14``)
``fps``           no        the clip's frame rate; empty: a video's declared rate, else :data:`DEFAULT_FPS`
================  ========  =========================================================================

**Frames.** A frame folder's frames are its image files (:data:`IMAGE_SUFFIXES`, any mix), each
numbered by the last run of digits in its name (``img46.jpg``, ``006_05562.jpg``,
``frame-0046.png`` are frames 46, 5562 and 46), in numeric order. Hidden files and files of other
kinds are not frames; an image file without a number is left out with a warning. A video's frames
are the frames a decoder returns, numbered 0, 1, ... in decoding order. The adapter decodes no
pixel itself: the length of a video comes from the ``video_length`` function its caller passes
(``mepipe verify`` and ``mepipe build`` pass :func:`mepipe.pipeline.video.video_length`, which
counts the frames by decoding them all; the container's frame count is only an estimate).

**Checks.** Every problem is a :class:`~mepipe.datasets.samples.Problem` naming the file, row and
column, as in the built-in adapters (:mod:`mepipe.datasets.micro`). Errors (the clip is left out):
a required column missing (one problem for the whole sheet, naming the column and the columns the
header has), an empty or non-numeric cell, a subject or clip name that cannot name a store node
(a ``/``), a path that does not exist or is neither a folder nor a video, a folder with no frame,
a video that cannot be decoded, an onset after its offset, an onset or offset that is not a frame
of the clip, two rows of one clip that differ. Warnings (a documented rule resolves them): an
apex that is empty, -1, outside onset..offset or not a frame, resolved by the apex policy (as
every adapter does); gaps and repeats in a folder's numbering and frames missing inside
onset..offset (the clip runs on the frames present); a row that repeats an earlier one exactly
(ignored); an image file without a number (left out). Emotions are free text: none is unknown.

Labels: the ``native`` protocol (every distinct emotion a class, compared without case, classes in
sorted order) and ``3class`` (:mod:`mepipe.datasets.protocols`).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from mepipe.datasets.action_units import parse_action_units
from mepipe.datasets.annotation_sheets import MissingColumnError, SheetRow, frame_number_cell, read_annotation_sheet
from mepipe.datasets.errors import DatasetError
# the rules every adapter shares: policy check, numbering warnings, ranges, relative names
from mepipe.datasets.micro import _check_numbering, _check_policy, _existing_root, _problem_from_error, _ranges, _relative
from mepipe.datasets.samples import (
    APEX_FROM_SHEET,
    VIDEO_SUFFIXES,
    DatasetReading,
    Problem,
    Sample,
    is_video_file,
    middle_index,
)

DATASET = "manifest"
#: The sheet ``read_manifest`` looks for in the dataset root.
MANIFEST_NAME = "manifest.csv"
#: The columns, in the order :func:`write_manifest` writes them.
MANIFEST_COLUMNS = ("subject", "clip", "path", "onset", "apex", "offset", "emotion", "action_units", "fps")
REQUIRED_COLUMNS = ("subject", "clip", "path", "onset", "offset", "emotion")
#: The frame rate of a clip whose row gives none and that is not a video declaring one: CASME II's
#: and SAMM's 200 fps (the rate most micro-expression recordings have). Give ``fps`` for others.
DEFAULT_FPS = 200.0
#: File name endings of frame images (case-insensitive): what ``pipeline.frames`` decodes.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".pgm", ".ppm", ".pbm", ".pnm", ".jp2")

#: ``video_length(path) -> (frames, declared fps or None)``, by decoding the video; raises
#: DatasetError, one line naming the file, for a file it cannot decode.
VideoLength = Callable[[Path], tuple[int, float | None]]

# accepted spellings, compared normalized (annotation_sheets.normalize_header)
_COLUMN_NAMES = {
    "subject": ("subject",),
    "clip": ("clip", "Filename"),
    "path": ("path",),
    "onset": ("onset", "OnsetFrame"),
    "apex": ("apex", "ApexFrame"),
    "offset": ("offset", "OffsetFrame"),
    "emotion": ("emotion", "Estimated Emotion"),
    "action_units": ("action_units", "Action Units", "AUs"),
    "fps": ("fps", "frame_rate"),
}
_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


class VideoLengthNeeded(DatasetError):
    """The manifest lists a video and the reader was given no ``video_length``: the call is
    wrong, not the row, so it stops the reading instead of becoming the row's problem."""


def read_manifest(root: str | Path, sheet: str | Path | None = None, apex_policy: str = "middle",
                  video_length: VideoLength | None = None) -> DatasetReading:
    """Every clip a manifest lists, checked as the module's docstring says.

    Parameters
    ----------
    root : the dataset folder; ``path`` cells are relative to it.
    sheet : the manifest (``.csv``, or ``.xlsx``: its first worksheet); default ``root/manifest.csv``.
    apex_policy : how an apex the manifest does not give is resolved (``middle``).
    video_length : how a video's frames are counted (:data:`VideoLength`); needed only when the
        manifest lists a video: ``mepipe.pipeline.video.video_length``.

    Raises DatasetError when the root or the sheet cannot be read at all, or when the manifest
    lists a video and no ``video_length`` is given; every other problem is in the reading.
    """
    root = _existing_root(root, "manifest")
    _check_policy(apex_policy)
    sheet_path = Path(sheet) if sheet is not None else root / MANIFEST_NAME
    if sheet is None and not sheet_path.is_file():
        raise DatasetError(f"{root}: no {MANIFEST_NAME} in this folder; expected one row per clip with the columns "
                           f"{', '.join(MANIFEST_COLUMNS)} (docs/datasets.md, the manifest), or pass --sheet")
    try:
        rows = read_annotation_sheet(sheet_path, _COLUMN_NAMES, REQUIRED_COLUMNS)
    except MissingColumnError as error:
        # the whole sheet is unusable, and that is one problem, not one per row
        return DatasetReading(DATASET, root, [], [Problem("column", error.where, error.detail)])
    reader = _ManifestReader(root, sheet_path, apex_policy, video_length)
    if rows and "apex" not in rows[0].headers:
        reader.problems.append(Problem("apex", sheet_path.name, f"no apex column; every apex is resolved by policy '{apex_policy}'", fatal=False))
    for row in rows:
        reader.add(row)
    return DatasetReading(DATASET, root, reader.samples, reader.problems)


def write_manifest(path: str | Path, rows: Sequence[Mapping[str, object]]) -> None:
    """Write a manifest: a header of :data:`MANIFEST_COLUMNS` and one line per row (a dict with
    those keys; a missing key or None is an empty cell). The same rows give the same bytes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for row in rows:
        writer.writerow(["" if row.get(column) is None else row[column] for column in MANIFEST_COLUMNS])
    Path(path).write_text(buffer.getvalue(), encoding="utf-8")


def frame_number_of(file_name: str) -> int | None:
    """The frame number of an image file's name: its last run of digits (``img46.jpg`` -> 46,
    ``006_05562.jpg`` -> 5562); None when the name has no digit."""
    match = _LAST_NUMBER.search(Path(file_name).stem)
    return int(match.group(1)) if match else None


class _ManifestReader:
    """The rows of one manifest, read into samples and problems one at a time."""

    def __init__(self, root: Path, sheet_path: Path, apex_policy: str, video_length: VideoLength | None):
        self.root, self.sheet_path, self.apex_policy, self.video_length = root, sheet_path, apex_policy, video_length
        self.samples: list[Sample] = []
        self.problems: list[Problem] = []
        self.first_row_of: dict[tuple[str, str], SheetRow] = {}

    def add(self, row: SheetRow) -> None:
        try:
            subject, clip = _name_cell(row, "subject", "a subject"), _name_cell(row, "clip", "a clip name")
        except DatasetError as error:
            self.problems.append(_problem_from_error("sheet", error, row.where(), None))
            return
        sample_id = f"{DATASET}/{subject}/{clip}"
        first = self.first_row_of.get((subject, clip))
        if first is not None:
            differing = [first.headers[name] for name in first.values if name not in ("subject", "clip") and first.values[name] != row.values.get(name)]
            if not differing:
                self.problems.append(Problem("duplicate clip", row.where(), f"clip {subject}/{clip} repeats row {first.row_number} exactly; this row is ignored", sample_id, fatal=False))
            else:
                # which row is right is for a person to decide: neither is used
                self.problems.append(Problem("duplicate clip", row.where(), f"clip {subject}/{clip} is also on row {first.row_number}, with a different {', '.join(differing)}; neither row is used", sample_id))
                self.samples[:] = [s for s in self.samples if s.sample_id != sample_id]
            return
        self.first_row_of[(subject, clip)] = row
        try:
            sample = self._sample(row, subject, clip, sample_id)
        except VideoLengthNeeded:
            raise
        except DatasetError as error:
            self.problems.append(_problem_from_error("sheet", error, row.where(), sample_id))
            return
        if sample is not None:
            self.samples.append(sample)

    def _sample(self, row: SheetRow, subject: str, clip: str, sample_id: str) -> Sample | None:
        """The row's sample; None after recording why it cannot be used. DatasetError: a bad cell."""
        onset_frame = _required_frame(row, "onset")
        apex_frame = frame_number_cell(row, "apex") if "apex" in row.headers else None
        offset_frame = _required_frame(row, "offset")
        emotion = row.values.get("emotion")
        if emotion is None:
            raise DatasetError(f"{row.where('emotion')}: empty; expected an emotion (free text)")
        action_units = parse_action_units(row.values.get("action_units"), where=row.where("action_units") if "action_units" in row.headers else None)
        row_fps = _fps_cell(row)
        path_text = row.values.get("path")
        if path_text is None:
            raise DatasetError(f"{row.where('path')}: empty; expected the clip's frame folder or video file, relative to {self.root}")
        path = self.root / str(path_text)
        shown = _relative(path, self.root)
        sources = {"frames": shown, "emotion": row.where("emotion")}
        if action_units.units or action_units.alternatives or action_units.uncertain:
            sources["action_units"] = row.where("action_units")

        if path.is_dir():
            frames, numbers = self._folder_frames(path, shown, sample_id)
            if not frames:
                self.problems.append(Problem("empty clip", row.where("path"), f"no frames in {shown}; expected image files numbered in their names "
                                                                             f"(img46.jpg), of the kinds {', '.join(IMAGE_SUFFIXES)}", sample_id))
                return None
            _check_numbering(shown, numbers, self.problems, sample_id)
            declared_fps = None
        elif path.is_file() and is_video_file(path):
            if self.video_length is None:
                raise VideoLengthNeeded(
                    f"{row.where('path')}: {shown} is a video, and its length takes decoding it, which the manifest "
                    "adapter leaves to its caller: pass video_length=mepipe.pipeline.video.video_length "
                    "(mepipe verify and mepipe build do)")
            try:
                count, declared_fps = self.video_length(path)
            except DatasetError as error:
                self.problems.append(Problem("bad video", row.where("path"), str(error), sample_id))
                return None
            frames, numbers = [path], list(range(count))
        elif path.exists():
            self.problems.append(Problem("path", row.where("path"), f"{shown} is a file but not a video ({', '.join(VIDEO_SUFFIXES)}); "
                                                                    "expected a frame folder or a video file", sample_id))
            return None
        else:
            self.problems.append(Problem("path", row.where("path"), f"{shown} does not exist under {self.root}; expected the clip's "
                                                                    "frame folder or video file", sample_id))
            return None
        video = len(frames) == 1 and is_video_file(frames[0])

        if onset_frame > offset_frame:
            self.problems.append(Problem("onset after offset", row.where(), f"onset {onset_frame} comes after offset {offset_frame}; expected onset <= offset", sample_id))
            return None
        bounds = []
        for name, frame in (("onset", onset_frame), ("offset", offset_frame)):
            if frame not in numbers:
                self.problems.append(Problem("not a frame", row.where(name), _not_a_frame(name, frame, shown, numbers, video), sample_id))
                return None
            bounds.append(numbers.index(frame))
        onset, offset = bounds
        sources["onset"], sources["offset"] = row.where("onset"), row.where("offset")
        missing = sorted(set(range(onset_frame, offset_frame + 1)) - set(numbers))
        if missing:
            self.problems.append(Problem("missing frames", shown, f"frame{'s' if len(missing) > 1 else ''} {_ranges(missing)} of onset..offset "
                                                                  f"{onset_frame}..{offset_frame} are missing; the clip runs on the frames present",
                                         sample_id, fatal=False))

        if apex_frame is not None and onset_frame <= apex_frame <= offset_frame and apex_frame in numbers:
            apex, apex_source = numbers.index(apex_frame), APEX_FROM_SHEET
            sources["apex"] = row.where("apex")
        else:
            apex, apex_source = middle_index(onset, offset), self.apex_policy
            if "apex" not in row.headers:
                sources["apex"] = f"policy '{self.apex_policy}': {self.sheet_path.name} has no apex column"
            else:
                if apex_frame is None:
                    reason = "is empty"
                elif apex_frame == -1:
                    reason = "is -1 (not coded)"
                elif not onset_frame <= apex_frame <= offset_frame:
                    reason = f"{apex_frame} lies outside onset..offset {onset_frame}..{offset_frame}"
                else:
                    reason = f"{apex_frame} is not a frame of {shown}"
                sources["apex"] = f"policy '{self.apex_policy}': the manifest's apex {reason}"
                self.problems.append(Problem("apex", row.where("apex"), f"apex {reason}; resolved by policy '{self.apex_policy}' to frame {numbers[apex]}",
                                             sample_id, fatal=False))

        if row_fps is not None:
            fps, sources["fps"] = row_fps, row.where("fps")
        elif declared_fps is not None:
            fps, sources["fps"] = declared_fps, f"the frame rate {shown} declares"
        else:
            fps, sources["fps"] = DEFAULT_FPS, f"the manifest's default ({DEFAULT_FPS:g} fps): the row gives none"
        return Sample(
            dataset=DATASET, subject=subject, clip=clip, frames=tuple(frames), frame_numbers=tuple(numbers),
            onset=onset, apex=apex, offset=offset, emotion=str(emotion).strip(), action_units=action_units,
            apex_source=apex_source, onset_frame=onset_frame, apex_frame=apex_frame, offset_frame=offset_frame,
            sources=sources, fps=fps,
        )

    def _folder_frames(self, folder: Path, shown: str, sample_id: str) -> tuple[list[Path], list[int]]:
        """A frame folder's image files in frame-number order (the file name breaks a tie), and
        their numbers; an image file without a number is left out with a warning."""
        numbered, unnumbered = [], []
        for path in folder.iterdir():
            if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
                continue  # hidden files (macOS's ._img1.jpg) and other kinds are not frames
            number = frame_number_of(path.name)
            if number is None:
                unnumbered.append(path.name)
            else:
                numbered.append((number, path.name, path))
        if unnumbered and numbered:
            names = sorted(unnumbered)
            self.problems.append(Problem("numbering", shown, f"image file{'s' if len(names) > 1 else ''} {', '.join(names[:5])}"
                                                             f"{' and more' if len(names) > 5 else ''} carr{'y' if len(names) > 1 else 'ies'} no frame "
                                                             "number in the name; left out of the clip", sample_id, fatal=False))
        numbered.sort()
        return [path for _, _, path in numbered], [number for number, _, _ in numbered]


def _name_cell(row: SheetRow, column: str, expected: str) -> str:
    """A subject or clip cell as the name it gives the sample (and its arrays in the store)."""
    value = row.values.get(column)
    if value is None:
        raise DatasetError(f"{row.where(column)}: empty; expected {expected}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # an xlsx number cell: subject 7, not 7.0
    text = str(value).strip()
    if "/" in text or "\\" in text or text in (".", "..") or text.startswith("__"):
        raise DatasetError(f"{row.where(column)}: {text!r} cannot name a sample; expected {expected} without '/' or '\\', "
                           "not '.', '..' or starting with '__' (it names the sample's arrays in the store)")
    return text


def _required_frame(row: SheetRow, column: str) -> int:
    frame = frame_number_cell(row, column)
    if frame is None:
        raise DatasetError(f"{row.where(column)}: empty; expected the {column}'s frame number (a video's: its 0-based frame index)")
    return frame


def _fps_cell(row: SheetRow) -> float | None:
    value = row.values.get("fps")
    if value is None:
        return None
    try:
        fps = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        fps = math.nan
    if not math.isfinite(fps) or fps <= 0:
        raise DatasetError(f"{row.where('fps')}: {value!r} is not a frame rate; expected frames per second, a number > 0")
    return fps


def _not_a_frame(name: str, frame: int, shown: str, numbers: list[int], video: bool) -> str:
    if video:
        return f"{name} {frame} is not a frame of {shown}, whose {len(numbers)} frames are 0..{len(numbers) - 1} (0-based indices)"
    return f"{name} {frame} is not a frame of {shown}, whose frames are numbered {_ranges(numbers)}"
