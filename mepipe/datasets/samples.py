"""The records every adapter returns: one :class:`Sample` per clip, and the problems it met.

A sample is what later stages need to find and interpret a clip: its ordered frame files (or its
one video file), the onset/apex/offset both as indices into its frames and as the frame numbers
the sheet wrote, the emotion as coded, the action units, and where each value came from
(``sources``). No pixels.

**A video clip** (a ``manifest`` row whose path is a video file) is a sample whose ``frames`` is
that one file, and whose ``frame_numbers`` are ``0..T-1``, the positions of the T frames a decoder
returns: ``n_frames``, onset, apex and offset mean the same for it as for a frame folder, and
:attr:`Sample.video` tells the two apart. The pipeline decodes such a sample's file whole
(``pipeline.frames.decode_frames``); T is known from decoding it when the manifest is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mepipe.datasets.action_units import ActionUnitSet

#: File name endings read as video files (case-insensitive): a clip that is one such file is a
#: video clip. ``pipeline.video`` reads them with OpenCV's FFmpeg.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm")

#: How a sample's apex was obtained.
APEX_FROM_SHEET = "sheet"
#: ``spot`` (largest facial motion) joins when the apex-spotting feature exists: it needs pixels.
APEX_POLICIES = ("middle",)


@dataclass(frozen=True)
class Sample:
    """One clip of one dataset.

    Attributes
    ----------
    dataset : ``casme2``, ``samm``, ``smic``, ``ckplus``, ``oulu``, ``jaffe``, ``mug`` or ``manifest``.
    subject : the subject's folder name (``sub01``, ``006``, ``s1``, ``S005``, ...).
    clip : the clip's name as the dataset writes it (``EP02_01f``, ``006_1_2``, ``s1_ne_01``).
    frames : the clip's frame files in temporal order (frame numbers sorted numerically); for a
        video clip, the one video file (:attr:`video`).
    frame_numbers : the frame number of each frame (``img46.jpg`` -> 46), same order; for datasets
        whose files carry no number, their position; for a video clip ``0..T-1``, the decoded
        frames' positions.
    onset, apex, offset : indices into the clip's frames (``frame_numbers``).
    onset_frame, apex_frame, offset_frame : the values the annotation gives, as written (``None``
        where it gives none; an apex of -1 stays -1 here). Folder-labelled datasets have none.
    emotion : the emotion as the dataset codes it (``happiness``, ``Anger``, ``negative``, ...).
    action_units : the parsed FACS action units (empty where the dataset codes none).
    apex_source : ``sheet`` when the annotation's apex was used, else the policy that resolved it
        (``middle``, ``spot``, or a dataset's documented rule such as ``last frame``).
    sources : for each value, where it came from: file, row and column, or the rule that made it.
    fps : the clip's own frame rate (a manifest's ``fps`` column, a video's declared rate); None:
        the dataset's rate.
    """

    dataset: str
    subject: str
    clip: str
    frames: tuple[Path, ...]
    frame_numbers: tuple[int, ...]
    onset: int
    apex: int
    offset: int
    emotion: str
    action_units: ActionUnitSet
    apex_source: str
    onset_frame: int | None = None
    apex_frame: int | None = None
    offset_frame: int | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    fps: float | None = None

    @property
    def sample_id(self) -> str:
        """Unique within mepipe: ``dataset/subject/clip``."""
        return f"{self.dataset}/{self.subject}/{self.clip}"

    @property
    def apex_resolved(self) -> bool:
        """True when the apex was not given by the annotation but resolved by a policy."""
        return self.apex_source != APEX_FROM_SHEET

    @property
    def n_frames(self) -> int:
        """The clip's number of frames: its frame files, or the frames decoded from its video."""
        return len(self.frame_numbers)

    @property
    def video(self) -> Path | None:
        """The clip's video file when the clip is one (``frames`` is then that file alone), else None."""
        if len(self.frames) == 1 and is_video_file(self.frames[0]):
            return Path(self.frames[0])
        return None


@dataclass(frozen=True)
class Problem:
    """Something wrong with a dataset: one line a person can act on.

    ``where`` names the file (and row, column) or clip folder; ``message`` says what was found and
    what was expected. ``fatal`` problems drop the sample (or the whole dataset when no sample is
    named); the others are recorded and the sample is kept, with the value resolved as its
    ``sources`` say and as the message itself says. ``mepipe verify`` lists the fatal ones as
    errors and the others as warnings.
    """

    check: str
    where: str
    message: str
    sample_id: str | None = None
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class DatasetReading:
    """What an adapter read: the usable samples and every problem met on the way."""

    dataset: str
    root: Path
    samples: list[Sample]
    problems: list[Problem]

    @property
    def clean(self) -> bool:
        return not self.problems


def is_video_file(path) -> bool:
    """True when ``path``'s name ends in one of :data:`VIDEO_SUFFIXES` (it is not opened)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def middle_index(first: int, last: int) -> int:
    """The middle of the index range first..last, rounded down (the papers' SMIC apex)."""
    return first + (last - first) // 2
