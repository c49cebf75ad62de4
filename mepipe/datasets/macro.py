"""Adapters for the macro-expression datasets used for transfer learning: CK+, Oulu-CASIA, JAFFE, MUG.

Each reader walks its dataset's folders as the dataset is published (the layout, with an example
path, is in each reader's docstring) and returns a :class:`~mepipe.datasets.samples.DatasetReading`:
one :class:`~mepipe.datasets.samples.Sample` per sequence (per image for JAFFE), sorted by
(subject, clip), and every problem met on the way. No pixels are read: the readers list files and
read the CK+ label files, nothing else.

What the readers share:

- frame files are ordered by the number in their names, compared as numbers (``9`` before ``10``);
  duplicate or missing numbers are left for ``verify`` to report;
- a sequence folder without a frame file is a fatal ``empty clip`` problem and is skipped;
- hidden entries (``.DS_Store``, ``._*``), ``__MACOSX``, ``Thumbs.db`` and ``desktop.ini`` are
  ignored; other files that are not frames are ignored too, except image files with an unexpected
  name (``stray file``, not fatal);
- a folder whose name does not fit the layout is skipped with a non-fatal ``unexpected folder``;
- macro-expression sets are used for their emotion labels only: every sample's action-unit set is
  empty;
- a root that does not exist, or lacks the top-level folders of its layout, raises
  :class:`~mepipe.datasets.errors.DatasetError` naming the root and the layout expected.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mepipe.datasets.action_units import parse_action_units
from mepipe.datasets.errors import DatasetError
from mepipe.datasets.layouts import CKPLUS_EMOTIONS, get_layout
from mepipe.datasets.samples import DatasetReading, Problem, Sample, middle_index

#: How the apex of a macro-expression sample is chosen (the ``apex_source`` of its samples).
APEX_LAST_FRAME = "last frame"
APEX_MIDDLE = "middle"
APEX_SINGLE_IMAGE = "single image"

#: File extensions that mark a file as an image, so that a misnamed frame is reported, not ignored.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})

_NO_ACTION_UNITS = parse_action_units(None)
# archive and file-browser debris that sits among the frames of copies found in the wild
_IGNORED_NAMES = frozenset({"__MACOSX", "Thumbs.db", "desktop.ini"})


@dataclass(frozen=True)
class FrameNaming:
    """How a dataset names its frame files: a pattern with a ``number`` group, and an example name."""

    pattern: re.Pattern
    example: str


# --- CK+ ------------------------------------------------------------------------------------------

CKPLUS_IMAGES_FOLDER = "cohn-kanade-images"
CKPLUS_LABELS_FOLDER = "Emotion"
_CKPLUS_FRAMES = FrameNaming(get_layout("ckplus").frame_regex, "S005_001_00000001.png")
_CKPLUS_SUBJECT = re.compile(r"S\d{3}")
_CKPLUS_SEQUENCE = re.compile(r"\d{3}")
_CKPLUS_SEQUENCE_EXPECTED = "a sequence folder such as 001"
_CKPLUS_LABEL_SUFFIX = "_emotion.txt"
_CKPLUS_EXPECTED = (
    "cohn-kanade-images/<subject>/<sequence>/ frames and Emotion/<subject>/<sequence>/ labels, "
    "e.g. cohn-kanade-images/S005/001/S005_001_00000001.png and "
    "Emotion/S005/001/S005_001_00000011_emotion.txt"
)

# --- Oulu-CASIA -----------------------------------------------------------------------------------

OULU_MODALITIES = ("VL", "NI")
OULU_ILLUMINATIONS = ("Strong", "Weak", "Dark")
OULU_EXPRESSIONS = ("Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
_OULU_ARCHIVE_FOLDER = "OriginalImg"
_OULU_SUBJECT = re.compile(r"P\d{3}")
_OULU_FRAMES = FrameNaming(re.compile(r"(?P<number>\d+)\.(?i:jpeg|jpg|png|bmp)"), "000.jpeg")
_OULU_EXPECTED = (
    "<modality>/<illumination>/<subject>/<expression>/ frames (the OriginalImg folder of the "
    "Oulu-CASIA NIR&VIS archive), e.g. VL/Strong/P001/Anger/000.jpeg"
)

# --- JAFFE ----------------------------------------------------------------------------------------

#: JAFFE's two-letter expression codes, as in its file names, and the emotions they stand for.
JAFFE_EXPRESSIONS = {
    "AN": "anger",
    "DI": "disgust",
    "FE": "fear",
    "HA": "happiness",
    "NE": "neutral",
    "SA": "sadness",
    "SU": "surprise",
}
_JAFFE_FOLDER = "jaffe"
_JAFFE_IMAGE = re.compile(
    r"(?P<subject>[A-Z]{2})\.(?P<code>" + "|".join(JAFFE_EXPRESSIONS) + r")(?P<take>\d+)"
    r"\.(?P<image>\d+)\.(?i:tiff?)"
)
_JAFFE_EXTENSIONS = (".tiff", ".tif")
_JAFFE_EXPECTED = (
    "KA.AN1.39.tiff-style images (subject.expression+take.image-id.tiff) in the root or in its jaffe/ folder"
)

# --- MUG ------------------------------------------------------------------------------------------

MUG_EXPRESSIONS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
_MUG_ARCHIVE_FOLDER = "subjects3"
_MUG_SUBJECT = re.compile(r"\d{3}")
_MUG_SESSION = re.compile(r"session\d+")
_MUG_TAKE = re.compile(r"take\d+")
_MUG_FRAMES = FrameNaming(re.compile(r"(?i:img)_?(?P<number>\d+)\.(?i:jpe?g)"), "img_0000.jpg")
_MUG_EXPECTED = (
    "<subject>/<expression>/<take>/ frames (the subjects3 folder of the MUG archive), "
    "e.g. 001/anger/take000/img_0000.jpg"
)


def read_ckplus(root: str | Path) -> DatasetReading:
    """Read the extended Cohn-Kanade (CK+) sequences that carry an emotion label.

    Layout, under ``root`` (the folder the CK+ archives unpack into)::

        cohn-kanade-images/S005/001/S005_001_00000001.png   frames, numbered from 1, 8 digits
        Emotion/S005/001/S005_001_00000011_emotion.txt      label, named after the peak frame

    A label file holds one number, the CK+ code written as a float (``   3.0000000e+00``):
    1 anger, 2 contempt, 3 disgust, 4 fear, 5 happy, 6 sadness, 7 surprise
    (:data:`~mepipe.datasets.layouts.CKPLUS_EMOTIONS`); the sample's emotion is that name.

    Every sequence goes from neutral (first frame) to the peak of the expression (last frame):
    onset = first frame, apex = offset = last frame (``apex_source`` ``last frame``).
    ``apex_frame`` is the frame number the label file's name gives; where it is not the last frame
    that is reported (``apex frame``, not fatal) and the apex stays on the last frame.

    Only 327 of CK+'s 593 sequences are labelled. A sequence without a label file is left out with
    a non-fatal ``unlabelled`` problem, so the count of what was left out is visible. A label file
    that does not hold a number 1-7 is a fatal ``label`` problem naming the file and its content.
    The FACS and Landmarks folders are not read.

    Raises
    ------
    DatasetError : ``root`` does not exist, or lacks ``cohn-kanade-images/`` or ``Emotion/``.
    """
    root = _existing_root(root, "CK+", _CKPLUS_EXPECTED)
    for folder in (CKPLUS_IMAGES_FOLDER, CKPLUS_LABELS_FOLDER):
        if not (root / folder).is_dir():
            raise DatasetError(f"CK+ root {root}: no {folder}/ folder; expected {_CKPLUS_EXPECTED}")

    samples: list[Sample] = []
    problems: list[Problem] = []
    sequences_with_frames: set[tuple[str, str]] = set()
    images = root / CKPLUS_IMAGES_FOLDER
    for subject_folder in _subfolders(images, _CKPLUS_SUBJECT, "a subject folder such as S005", problems):
        for sequence_folder in _subfolders(subject_folder, _CKPLUS_SEQUENCE, _CKPLUS_SEQUENCE_EXPECTED, problems):
            sequences_with_frames.add((subject_folder.name, sequence_folder.name))
            sample = _read_ckplus_sequence(root, subject_folder.name, sequence_folder.name, problems)
            if sample is not None:
                samples.append(sample)
    _report_ckplus_labels_without_frames(root, sequences_with_frames, problems)
    return _reading("ckplus", root, samples, problems)


def read_oulu(root: str | Path, modality: str = "VL", illumination: str = "Strong") -> DatasetReading:
    """Read the Oulu-CASIA NIR&VIS sequences of one imaging condition.

    Layout, under ``root`` (the archive's ``OriginalImg`` folder; a root holding ``OriginalImg/``
    is accepted too)::

        VL/Strong/P001/Anger/000.jpeg    <modality>/<illumination>/<subject>/<expression>/<frame>

    ``modality`` is ``VL`` (visible light) or ``NI`` (near infrared); ``illumination`` is
    ``Strong``, ``Weak`` or ``Dark``. Subjects are ``P001`` .. ``P080``; each has one sequence per
    expression, the six folders ``Anger Disgust Fear Happiness Sadness Surprise``. The folder name
    is the emotion (as written) and the clip name. Frames are numbered from ``000``.

    Every sequence goes from neutral (first frame) to the apex (last frame): onset = first frame,
    apex = offset = last frame (``apex_source`` ``last frame``). A subject lacking one of the six
    expressions gets a non-fatal ``missing clip`` problem.

    Raises
    ------
    DatasetError : a modality or illumination not listed above; ``root`` does not exist, holds
        neither ``VL/`` nor ``NI/``, or lacks the ``<modality>/<illumination>/`` folder asked for.
    """
    if modality not in OULU_MODALITIES:
        raise DatasetError(f"Oulu-CASIA modality {modality!r}: choose one of {', '.join(OULU_MODALITIES)}")
    if illumination not in OULU_ILLUMINATIONS:
        choices = ", ".join(OULU_ILLUMINATIONS)
        raise DatasetError(f"Oulu-CASIA illumination {illumination!r}: choose one of {choices}")
    root = _existing_root(root, "Oulu-CASIA", _OULU_EXPECTED)
    base = _first_folder_holding((root, root / _OULU_ARCHIVE_FOLDER), OULU_MODALITIES)
    if base is None:
        raise DatasetError(f"Oulu-CASIA root {root}: neither VL/ nor NI/ found; expected {_OULU_EXPECTED}")
    condition = base / modality / illumination
    if not condition.is_dir():
        raise DatasetError(
            f"Oulu-CASIA root {root}: no {_relative(condition, root)}/ folder for modality {modality} "
            f"and illumination {illumination}; expected {_OULU_EXPECTED}"
        )

    samples: list[Sample] = []
    problems: list[Problem] = []
    expression_pattern = re.compile("|".join(OULU_EXPRESSIONS))
    expected = f"one of the expression folders {', '.join(OULU_EXPRESSIONS)}"
    for subject_folder in _subfolders(condition, _OULU_SUBJECT, "a subject folder such as P001", problems):
        subject = subject_folder.name
        found = _subfolders(subject_folder, expression_pattern, expected, problems)
        missing = [name for name in OULU_EXPRESSIONS if name not in {folder.name for folder in found}]
        if missing:
            problems.append(
                Problem(
                    check="missing clip",
                    where=str(subject_folder),
                    message=f"no {', '.join(missing)} folder; every Oulu-CASIA subject has all six "
                    f"expressions ({', '.join(OULU_EXPRESSIONS)}); the subject's other expressions are read",
                    fatal=False,
                )
            )
        for expression_folder in found:
            sample = _sequence_sample(
                "oulu", root, subject, expression_folder.name, expression_folder, _OULU_FRAMES,
                emotion=expression_folder.name, apex_rule=APEX_LAST_FRAME,
                emotion_source=f"expression folder name {expression_folder.name}",
                apex_reason="last frame of the sequence (Oulu-CASIA sequences go from neutral to the apex)",
                problems=problems,
            )
            if sample is not None:
                samples.append(sample)
    return _reading("oulu", root, samples, problems)


def read_jaffe(root: str | Path) -> DatasetReading:
    """Read the Japanese Female Facial Expression (JAFFE) images, one sample per image.

    Layout: one flat folder of 213 TIFF images, ``root`` itself or its ``jaffe/`` folder (as the
    Zenodo ``jaffe.zip`` unpacks)::

        KA.AN1.39.tiff    <subject initials>.<expression code><take>.<image id>.tiff

    Subjects are the ten models' initials (KA KL KM KR MK NA NM TM UY YM). Expression codes:
    AN anger, DI disgust, FE fear, HA happiness, NE neutral, SA sadness, SU surprise; the
    sample's emotion is the full name. The clip is the file stem (``KA.AN1.39``). A sample has
    one frame: ``frames = (path,)``, frame number 0, onset = apex = offset = 0, ``apex_source``
    ``single image``.

    A ``.tiff``/``.tif`` file whose name does not follow the pattern gets a non-fatal
    ``stray file`` problem; other files (README, hidden files) are ignored.

    Raises
    ------
    DatasetError : ``root`` does not exist, or neither it nor its ``jaffe/`` folder holds a
        ``.tiff``/``.tif`` file.
    """
    root = _existing_root(root, "JAFFE", _JAFFE_EXPECTED)
    images = _first_folder_holding_files((root, root / _JAFFE_FOLDER), _JAFFE_EXTENSIONS)
    if images is None:
        raise DatasetError(
            f"JAFFE root {root}: no .tiff images in it or in {_JAFFE_FOLDER}/; expected {_JAFFE_EXPECTED}"
        )

    samples: list[Sample] = []
    problems: list[Problem] = []
    for path in _files(images, problems):
        if path.suffix.lower() not in _JAFFE_EXTENSIONS:
            continue
        match = _JAFFE_IMAGE.fullmatch(path.name)
        if match is None:
            problems.append(
                Problem(
                    check="stray file",
                    where=str(path),
                    message="image name does not follow JAFFE's pattern; expected "
                    "<initials>.<AN|DI|FE|HA|NE|SA|SU><take>.<image id>.tiff such as KA.AN1.39.tiff; skipped",
                    fatal=False,
                )
            )
            continue
        code = match.group("code")
        relative = _relative(path, root)
        samples.append(
            Sample(
                dataset="jaffe",
                subject=match.group("subject"),
                clip=path.stem,
                frames=(path,),
                frame_numbers=(0,),
                onset=0,
                apex=0,
                offset=0,
                emotion=JAFFE_EXPRESSIONS[code],
                action_units=_NO_ACTION_UNITS,
                apex_source=APEX_SINGLE_IMAGE,
                sources={
                    "emotion": f"expression code {code} in the file name {relative}",
                    "frames": relative,
                    "apex": "single image: onset, apex and offset are the one image",
                },
            )
        )
    return _reading("jaffe", root, samples, problems)


def read_mug(root: str | Path) -> DatasetReading:
    """Read the posed sequences of the MUG Facial Expression Database.

    Layout, under ``root`` (the archive's ``subjects3`` folder; a root holding ``subjects3/`` is
    accepted too)::

        001/anger/take000/img_0000.jpg             <subject>/<expression>/<take>/<frame>
        001/session1/anger/take000/img_0000.jpg    some subjects add a session level

    Subjects are three-digit folders; expressions ``anger disgust fear happiness neutral sadness
    surprise`` (the folder name is the emotion); takes ``take000``, ``take001``, ... Frame
    numbers need not start at 0. The clip is ``<expression>_<take>`` (``<session>_<expression>_<take>``
    where there is a session level).

    MUG sequences start and end at the neutral face, with the expression's onset, apex and offset
    in between, so apex = the middle frame (``apex_source`` ``middle``), onset = first frame and
    offset = last frame.

    Raises
    ------
    DatasetError : ``root`` does not exist, or neither it nor its ``subjects3/`` folder holds a
        three-digit subject folder.
    """
    root = _existing_root(root, "MUG", _MUG_EXPECTED)
    base = _first_folder_with_subfolder((root, root / _MUG_ARCHIVE_FOLDER), _MUG_SUBJECT)
    if base is None:
        raise DatasetError(f"MUG root {root}: no subject folders such as 001/; expected {_MUG_EXPECTED}")

    samples: list[Sample] = []
    problems: list[Problem] = []
    expression_pattern = re.compile("|".join(MUG_EXPRESSIONS))
    expression_or_session = re.compile(f"{expression_pattern.pattern}|{_MUG_SESSION.pattern}")
    expected_expression = f"one of the expression folders {', '.join(MUG_EXPRESSIONS)}"
    for subject_folder in _subfolders(base, _MUG_SUBJECT, "a subject folder such as 001", problems):
        expression_folders: list[tuple[str, Path]] = []
        expected_here = f"{expected_expression} or a session folder such as session1"
        for folder in _subfolders(subject_folder, expression_or_session, expected_here, problems):
            if _MUG_SESSION.fullmatch(folder.name):
                for inner in _subfolders(folder, expression_pattern, expected_expression, problems):
                    expression_folders.append((f"{folder.name}_", inner))
            else:
                expression_folders.append(("", folder))
        for clip_prefix, expression_folder in expression_folders:
            for take_folder in _subfolders(expression_folder, _MUG_TAKE, "a take folder such as take000", problems):
                sample = _sequence_sample(
                    "mug", root, subject_folder.name, f"{clip_prefix}{expression_folder.name}_{take_folder.name}",
                    take_folder, _MUG_FRAMES,
                    emotion=expression_folder.name, apex_rule=APEX_MIDDLE,
                    emotion_source=f"expression folder name {expression_folder.name}",
                    apex_reason="middle frame of the sequence (MUG sequences start and end neutral, "
                    "with the apex between)",
                    problems=problems,
                )
                if sample is not None:
                    samples.append(sample)
    return _reading("mug", root, samples, problems)


#: The macro-expression readers by dataset name, as ``Sample.dataset`` writes it.
MACRO_READERS: dict[str, Callable[..., DatasetReading]] = {
    "ckplus": read_ckplus,
    "oulu": read_oulu,
    "jaffe": read_jaffe,
    "mug": read_mug,
}


# --- CK+ details ----------------------------------------------------------------------------------


def _read_ckplus_sequence(root: Path, subject: str, sequence: str, problems: list[Problem]) -> Sample | None:
    sample_id = f"ckplus/{subject}/{sequence}"
    folder = root / CKPLUS_IMAGES_FOLDER / subject / sequence
    naming = FrameNaming(_CKPLUS_FRAMES.pattern, f"{subject}_{sequence}_00000001.png")
    frames = _list_frames(folder, naming, sample_id, problems)
    if frames is None:
        return None
    label_folder = root / CKPLUS_LABELS_FOLDER / subject / sequence
    label_name = re.compile(rf"{subject}_{sequence}_(?P<number>\d{{8}}){re.escape(_CKPLUS_LABEL_SUFFIX)}")
    label_files = [path for path in _files(label_folder, problems) if path.name.endswith(_CKPLUS_LABEL_SUFFIX)]
    if not label_files:
        problems.append(
            Problem(
                check="unlabelled",
                where=str(folder),
                message=f"no {subject}_{sequence}_NNNNNNNN{_CKPLUS_LABEL_SUFFIX} in "
                f"{_relative(label_folder, root)}/; CK+ labels only some of its sequences, this one is left out",
                sample_id=sample_id,
                fatal=False,
            )
        )
        return None
    if len(label_files) > 1:
        names = ", ".join(path.name for path in label_files)
        problems.append(
            Problem(
                check="label",
                where=str(label_folder),
                message=f"{len(label_files)} label files ({names}); expected one per sequence",
                sample_id=sample_id,
            )
        )
        return None
    label_file = label_files[0]
    name_match = label_name.fullmatch(label_file.name)
    if name_match is None:
        problems.append(
            Problem(
                check="label",
                where=str(label_file),
                message=f"label file name does not fit its folder; expected "
                f"{subject}_{sequence}_<8-digit frame number>{_CKPLUS_LABEL_SUFFIX}",
                sample_id=sample_id,
            )
        )
        return None
    code = _ckplus_code(label_file, sample_id, problems)
    if code is None:
        return None

    paths, numbers = frames
    last = len(paths) - 1
    labelled_frame = int(name_match.group("number"))
    if labelled_frame != numbers[last]:
        problems.append(
            Problem(
                check="apex frame",
                where=str(label_file),
                message=f"the label names frame {labelled_frame} but the sequence's last frame is {numbers[last]}; "
                "apex kept on the last frame (CK+ sequences end at their peak)",
                sample_id=sample_id,
                fatal=False,
            )
        )
    return Sample(
        dataset="ckplus",
        subject=subject,
        clip=sequence,
        frames=paths,
        frame_numbers=numbers,
        onset=0,
        apex=last,
        offset=last,
        emotion=CKPLUS_EMOTIONS[code],
        action_units=_NO_ACTION_UNITS,
        apex_source=APEX_LAST_FRAME,
        apex_frame=labelled_frame,
        sources={
            "emotion": _relative(label_file, root),
            "frames": _relative(folder, root),
            "onset": "first frame of the sequence (CK+ sequences start neutral)",
            "apex": "last frame of the sequence (CK+ sequences end at their peak)",
            "offset": "last frame of the sequence (CK+ sequences stop at their peak)",
            "apex_frame": f"frame number in the label file name {label_file.name}",
        },
    )


def _ckplus_code(label_file: Path, sample_id: str, problems: list[Problem]) -> int | None:
    """The CK+ emotion code a label file holds, or None after recording why it cannot be read."""
    expected = "one CK+ emotion code 1-7 written as a number, such as '   3.0000000e+00'"
    try:
        content = label_file.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not ASCII text"
        message = f"cannot read the label file ({reason}); expected {expected}"
        problems.append(Problem(check="label", where=str(label_file), message=message, sample_id=sample_id))
        return None
    try:
        value = float(content.strip())
    except ValueError:
        value = None
    if value is None or not value.is_integer() or int(value) not in CKPLUS_EMOTIONS:
        shown = content.strip()
        shown = repr(shown[:60] + ("..." if len(shown) > 60 else "")) if shown else "nothing"
        message = f"label file holds {shown}; expected {expected}"
        problems.append(Problem(check="label", where=str(label_file), message=message, sample_id=sample_id))
        return None
    return int(value)


def _report_ckplus_labels_without_frames(
    root: Path, sequences_with_frames: set[tuple[str, str]], problems: list[Problem]
) -> None:
    labels = root / CKPLUS_LABELS_FOLDER
    for subject_folder in _subfolders(labels, _CKPLUS_SUBJECT, "a subject folder such as S005", problems):
        for label_folder in _subfolders(subject_folder, _CKPLUS_SEQUENCE, _CKPLUS_SEQUENCE_EXPECTED, problems):
            subject, sequence = subject_folder.name, label_folder.name
            if (subject, sequence) in sequences_with_frames:
                continue
            if any(path.name.endswith(_CKPLUS_LABEL_SUFFIX) for path in _files(label_folder, problems)):
                frames_folder = root / CKPLUS_IMAGES_FOLDER / subject / sequence
                problems.append(
                    Problem(
                        check="missing clip",
                        where=str(label_folder),
                        message=f"a label without frames: expected the sequence's frames in "
                        f"{_relative(frames_folder, root)}/",
                        sample_id=f"ckplus/{subject}/{sequence}",
                    )
                )


# --- shared walking -------------------------------------------------------------------------------


def _existing_root(root: str | Path, title: str, expected: str) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise DatasetError(f"{title} root {path} does not exist; expected a folder holding {expected}")
    if not path.is_dir():
        raise DatasetError(f"{title} root {path} is not a folder; expected a folder holding {expected}")
    return path


def _first_folder_holding(candidates: tuple[Path, ...], names: tuple[str, ...]) -> Path | None:
    """The first candidate folder that holds a folder with one of ``names``."""
    for candidate in candidates:
        if any((candidate / name).is_dir() for name in names):
            return candidate
    return None


def _first_folder_holding_files(candidates: tuple[Path, ...], extensions: tuple[str, ...]) -> Path | None:
    """The first candidate folder that holds a file with one of ``extensions`` (any case)."""
    for candidate in candidates:
        if not candidate.is_dir():
            continue
        try:
            if any(path.is_file() and path.suffix.lower() in extensions for path in candidate.iterdir()):
                return candidate
        except OSError:
            continue
    return None


def _first_folder_with_subfolder(candidates: tuple[Path, ...], pattern: re.Pattern) -> Path | None:
    """The first candidate folder that holds a folder whose whole name matches ``pattern``."""
    for candidate in candidates:
        if not candidate.is_dir():
            continue
        try:
            if any(path.is_dir() and pattern.fullmatch(path.name) for path in candidate.iterdir()):
                return candidate
        except OSError:
            continue
    return None


def _entries(folder: Path, problems: list[Problem]) -> list[Path]:
    """The visible entries of a folder sorted by name; an unreadable folder becomes a problem."""
    if not folder.is_dir():
        return []
    try:
        entries = list(folder.iterdir())
    except OSError as error:
        message = f"cannot list the folder ({error.strerror}); skipped"
        problems.append(Problem(check="unreadable", where=str(folder), message=message))
        return []
    visible = [path for path in entries if not path.name.startswith(".") and path.name not in _IGNORED_NAMES]
    return sorted(visible, key=lambda path: path.name)


def _files(folder: Path, problems: list[Problem]) -> list[Path]:
    return [path for path in _entries(folder, problems) if path.is_file()]


def _subfolders(folder: Path, pattern: re.Pattern, expected: str, problems: list[Problem]) -> list[Path]:
    """The subfolders whose whole name matches ``pattern``; the others are reported and skipped."""
    matching = []
    for path in _entries(folder, problems):
        if not path.is_dir():
            continue
        if pattern.fullmatch(path.name):
            matching.append(path)
        else:
            problems.append(
                Problem(
                    check="unexpected folder",
                    where=str(path),
                    message=f"folder name {path.name!r} does not fit the layout; expected {expected}; skipped",
                    fatal=False,
                )
            )
    return matching


def _list_frames(
    folder: Path, naming: FrameNaming, sample_id: str, problems: list[Problem]
) -> tuple[tuple[Path, ...], tuple[int, ...]] | None:
    """A sequence's frame files and their numbers, in numeric order; None (and a fatal problem) if none.

    Ties between equal numbers (duplicates, e.g. ``img9.jpg`` and ``img09.jpg``) are broken by
    name so that the order is the same on every file system; ``verify`` reports them.
    """
    numbered: list[tuple[int, str, Path]] = []
    for path in _files(folder, problems):
        match = naming.pattern.fullmatch(path.name)
        if match is not None:
            numbered.append((int(match.group("number")), path.name, path))
        elif path.suffix.lower() in IMAGE_EXTENSIONS:
            problems.append(
                Problem(
                    check="stray file",
                    where=str(path),
                    message=f"image name does not follow the dataset's frame naming (such as "
                    f"{naming.example}); not used as a frame",
                    sample_id=sample_id,
                    fatal=False,
                )
            )
    if not numbered:
        problems.append(
            Problem(
                check="empty clip",
                where=str(folder),
                message=f"no frame files in the sequence folder; expected frames named like {naming.example}",
                sample_id=sample_id,
            )
        )
        return None
    numbered.sort(key=lambda entry: (entry[0], entry[1]))
    return tuple(entry[2] for entry in numbered), tuple(entry[0] for entry in numbered)


def _sequence_sample(
    dataset: str,
    root: Path,
    subject: str,
    clip: str,
    folder: Path,
    naming: FrameNaming,
    *,
    emotion: str,
    apex_rule: str,
    emotion_source: str,
    apex_reason: str,
    problems: list[Problem],
) -> Sample | None:
    """A folder-labelled sequence that starts at its onset (first frame).

    ``apex_rule`` is :data:`APEX_LAST_FRAME` (sequences that stop at the apex) or
    :data:`APEX_MIDDLE` (sequences that return to neutral); it becomes the sample's ``apex_source``.
    """
    frames = _list_frames(folder, naming, f"{dataset}/{subject}/{clip}", problems)
    if frames is None:
        return None
    paths, numbers = frames
    last = len(paths) - 1
    apex = last if apex_rule == APEX_LAST_FRAME else middle_index(0, last)
    return Sample(
        dataset=dataset,
        subject=subject,
        clip=clip,
        frames=paths,
        frame_numbers=numbers,
        onset=0,
        apex=apex,
        offset=last,
        emotion=emotion,
        action_units=_NO_ACTION_UNITS,
        apex_source=apex_rule,
        sources={
            "emotion": emotion_source,
            "frames": _relative(folder, root),
            "onset": "first frame of the sequence (it starts neutral)",
            "apex": apex_reason,
            "offset": "last frame of the sequence",
        },
    )


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _reading(dataset: str, root: Path, samples: list[Sample], problems: list[Problem]) -> DatasetReading:
    samples.sort(key=lambda sample: (sample.subject, sample.clip))
    return DatasetReading(dataset=dataset, root=root, samples=samples, problems=problems)
