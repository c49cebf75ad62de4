"""On-disk layouts of the datasets: folder names, frame file names, frame rates.

One definition per dataset, read by the synthetic-data writer (`mepipe.synth`) and by the
adapters, so that the writer and the reader cannot drift apart. Nothing here touches pixels.

Layouts as the real datasets ship them (see ``shared/reference/README.md``):

========  =======================================================================  ========
dataset   frame path under the dataset root                                          fps
========  =======================================================================  ========
casme2    ``sub01/EP02_01f/img46.jpg``                                              200
samm      ``006/006_1_2/006_05562.jpg`` (grayscale)                                  200
smic      ``HS/s1/micro/negative/s1_ne_01/reg_image046433.bmp``                      100
ckplus    ``cohn-kanade-images/S005/001/S005_001_00000001.png``                      30
========  =======================================================================  ========
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from mepipe.datasets.errors import DatasetError


@dataclass(frozen=True)
class Layout:
    """How one dataset lays out its clips and frames.

    Attributes
    ----------
    name : short dataset name used everywhere in mepipe (``casme2``, ``samm``, ...).
    fps : recording frame rate in frames per second.
    frame_size : (width, height) in pixels of the frames mepipe synthesizes for this layout.
    color : True when frames are stored in colour (3 channels), False for grayscale.
    extension : frame file extension including the dot.
    """

    name: str
    fps: float
    frame_size: tuple[int, int]
    color: bool
    extension: str
    frame_regex: re.Pattern

    def subject_folder(self, subject: str | int) -> str:
        """The folder name of a subject, from any of the spellings the sheets use."""
        return SUBJECT_FOLDERS[self.name](subject)

    def clip_folder(self, subject: str | int, clip: str, emotion: str | None = None) -> PurePosixPath:
        """Path of a clip's frame folder, relative to the dataset root."""
        folder = self.subject_folder(subject)
        if self.name == "casme2":
            return PurePosixPath(folder, clip)
        if self.name == "samm":
            return PurePosixPath(folder, clip)
        if self.name == "smic":
            if emotion not in SMIC_EMOTIONS:
                raise DatasetError(
                    f"SMIC clip {clip!r}: emotion must be one of {', '.join(SMIC_EMOTIONS)}, got {emotion!r}"
                )
            return PurePosixPath("HS", folder, "micro", emotion, smic_clip_folder(clip))
        if self.name == "ckplus":
            return PurePosixPath("cohn-kanade-images", folder, clip)
        raise DatasetError(f"no clip folder rule for layout {self.name!r}")

    def frame_name(self, subject: str | int, clip: str, frame_number: int) -> str:
        """File name of one frame, given its frame number as the dataset numbers it."""
        if frame_number < 0:
            raise DatasetError(f"clip {clip!r}: frame numbers are non-negative, got {frame_number}")
        if self.name == "casme2":
            return f"img{frame_number}{self.extension}"
        if self.name == "samm":
            return f"{self.subject_folder(subject)}_{frame_number:05d}{self.extension}"
        if self.name == "smic":
            return f"reg_image{frame_number:06d}{self.extension}"
        if self.name == "ckplus":
            return f"{self.subject_folder(subject)}_{clip}_{frame_number:08d}{self.extension}"
        raise DatasetError(f"no frame name rule for layout {self.name!r}")

    def frame_number(self, file_name: str) -> int | None:
        """The frame number encoded in a frame file name, or None for a file that is not a frame."""
        match = self.frame_regex.fullmatch(file_name)
        return int(match.group("number")) if match else None


def casme2_subject_folder(subject: str | int) -> str:
    """``1``, ``'1'``, ``'sub1'``, ``'sub01'`` -> ``'sub01'``."""
    number = _subject_number(subject, prefixes=("sub",), dataset="CASME II")
    return f"sub{number:02d}"


def samm_subject_folder(subject: str | int) -> str:
    """``6``, ``'6'``, ``'006'`` -> ``'006'``."""
    number = _subject_number(subject, prefixes=(), dataset="SAMM")
    return f"{number:03d}"


def smic_subject_folder(subject: str | int) -> str:
    """``'s01'``, ``'s1'``, ``1`` -> ``'s1'`` (the composite list writes ``s01``, SMIC-HS folders ``s1``)."""
    number = _subject_number(subject, prefixes=("s",), dataset="SMIC")
    return f"s{number}"


def ckplus_subject_folder(subject: str | int) -> str:
    """``5``, ``'S5'``, ``'S005'`` -> ``'S005'``."""
    number = _subject_number(subject, prefixes=("S", "s"), dataset="CK+")
    return f"S{number:03d}"


def smic_clip_folder(clip: str) -> str:
    """``'s01_ne_01'`` -> ``'s1_ne_01'``: the composite list pads the subject, the folders do not."""
    match = re.fullmatch(r"s0*(\d+)_(ne|po|sur)_(\d+)", clip)
    if not match:
        raise DatasetError(f"SMIC clip name {clip!r} is not of the form s1_ne_01 / s1_po_01 / s1_sur_01")
    return f"s{int(match.group(1))}_{match.group(2)}_{match.group(3)}"


def _subject_number(subject: str | int, prefixes: tuple[str, ...], dataset: str) -> int:
    if isinstance(subject, bool):
        raise DatasetError(f"{dataset} subject must be a number or a folder name, got {subject!r}")
    if isinstance(subject, int):
        number = subject
    elif isinstance(subject, float) and subject.is_integer():
        number = int(subject)
    elif isinstance(subject, str):
        text = subject.strip()
        for prefix in prefixes:
            if text.startswith(prefix):
                text = text[len(prefix):]
                break
        if not text.isdigit():
            expected = " or ".join(f"'{p}NN'" for p in prefixes) or "a number"
            raise DatasetError(f"{dataset} subject {subject!r} is not {expected}")
        number = int(text)
    else:
        raise DatasetError(f"{dataset} subject must be a number or a folder name, got {subject!r}")
    if number < 0:
        raise DatasetError(f"{dataset} subject number must be non-negative, got {subject!r}")
    return number


SMIC_EMOTIONS = ("negative", "positive", "surprise")
SMIC_EMOTION_CODES = {"negative": "ne", "positive": "po", "surprise": "sur"}

SUBJECT_FOLDERS = {
    "casme2": casme2_subject_folder,
    "samm": samm_subject_folder,
    "smic": smic_subject_folder,
    "ckplus": ckplus_subject_folder,
}

LAYOUTS: dict[str, Layout] = {
    "casme2": Layout("casme2", 200.0, (640, 480), True, ".jpg", re.compile(r"img(?P<number>\d+)\.jpg")),
    # SAMM's camera is 2040x1088; the papers work from 960x650 face-region frames, which keeps
    # synthetic sets small while keeping SAMM's larger-than-CASME face.
    "samm": Layout("samm", 200.0, (960, 650), False, ".jpg", re.compile(r"\d{3}_(?P<number>\d+)\.jpg")),
    "smic": Layout("smic", 100.0, (640, 480), True, ".bmp", re.compile(r"reg_image(?P<number>\d+)\.bmp")),
    "ckplus": Layout("ckplus", 30.0, (640, 490), False, ".png", re.compile(r"S\d{3}_\d{3}_(?P<number>\d{8})\.png")),
}

#: CK+ emotion codes as in its ``Emotion/*_emotion.txt`` files.
CKPLUS_EMOTIONS = {1: "anger", 2: "contempt", 3: "disgust", 4: "fear", 5: "happy", 6: "sadness", 7: "surprise"}

#: File name of the CASME II coding sheet that mepipe writes (several dated versions circulate;
#: adapters accept any ``CASME2-coding-*.xlsx``).
CASME2_SHEET_NAME = "CASME2-coding-20140508.xlsx"
SAMM_SHEET_NAME = "SAMM_Micro_FACS_Codes_v2.xlsx"


def ckplus_emotion_file(subject: str | int, sequence: str, last_frame: int) -> PurePosixPath:
    """Path of a CK+ sequence's label file, relative to the dataset root."""
    folder = ckplus_subject_folder(subject)
    return PurePosixPath("Emotion", folder, sequence, f"{folder}_{sequence}_{last_frame:08d}_emotion.txt")


def get_layout(name: str) -> Layout:
    """The layout of a dataset by name, with a clear error for an unknown one."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise DatasetError(f"unknown layout {name!r}; choose one of: {', '.join(LAYOUTS)}") from None
