"""Adapters of the micro-expression datasets: CASME II, SAMM, SMIC.

Each reads a dataset root in its published layout (``datasets/layouts.py``) and returns a
:class:`~mepipe.datasets.samples.DatasetReading`: the usable samples, and every problem met, each
naming the file, row or clip folder. One broken clip never stops the others.

Rules every adapter follows:

- Frame files are ordered by the number in their name, numerically (``img9`` before ``img10``).
- onset/apex/offset are kept as the sheet wrote them and mapped to indices into the frames. An
  onset after its offset makes the row unusable (a fatal problem naming the row). An onset or
  offset outside the clip's folder is clamped to the folder's first or last frame, and when the
  whole onset..offset window misses the folder the whole folder is used; both are recorded as
  non-fatal problems that say so.
- A clip on two rows: a row that repeats an earlier one exactly is ignored (not fatal); rows that
  differ leave the clip unusable (fatal), since only a person can tell which is right.
- Problems are fatal when the clip cannot be used, and not fatal when a rule resolved them; the
  message of a non-fatal one says how (``mepipe verify`` lists them as errors and warnings).
- **Apex policy.** An apex the sheet does not give (empty, -1, outside onset..offset, or not a
  frame of the folder) is resolved by the apex policy and recorded as resolved (``apex_source``),
  never passed off as given. The policy ``middle`` takes the middle frame of onset..offset, as the
  papers do for SMIC. ``spot`` (the frame of largest facial motion) needs pixels, so the build
  resolves it when the apex-spotting feature exists; until then it is refused.
- SMIC has no sheet and no apex. Labels come from the folder names, onset and offset are the
  clip's first and last frames, and the apex comes from the policy.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from mepipe.datasets.action_units import parse_action_units
from mepipe.datasets.annotation_sheets import SheetRow, frame_number_cell, read_annotation_sheet
from mepipe.datasets.errors import DatasetError
from mepipe.datasets.layouts import SMIC_EMOTIONS, get_layout
from mepipe.datasets.samples import (
    APEX_FROM_SHEET,
    APEX_POLICIES,
    DatasetReading,
    Problem,
    Sample,
    middle_index,
)

_SHEET_COLUMNS = {
    "subject": ("Subject",),
    "clip": ("Filename", "clip"),
    "onset": ("OnsetFrame", "Onset Frame", "onset"),
    "apex": ("ApexFrame", "Apex Frame", "apex"),
    "offset": ("OffsetFrame", "Offset Frame", "offset"),
    "action_units": ("Action Units", "action_units", "AUs"),
    "emotion": ("Estimated Emotion", "emotion"),
}
_REQUIRED = ("subject", "clip", "onset", "apex", "offset", "emotion")

CASME2_RAW_FRAME = re.compile(r"img(?P<number>\d+)\.jpg", re.IGNORECASE)
CASME2_CROPPED_FRAME = re.compile(r"reg_img(?P<number>\d+)\.jpg", re.IGNORECASE)
SAMM_FRAME = re.compile(r"\d+_(?P<number>\d+)\.(?:jpg|bmp|png)", re.IGNORECASE)
SMIC_FRAME = re.compile(r"(?:reg_)?image(?P<number>\d+)\.(?:bmp|jpg|png)", re.IGNORECASE)


def read_casme2(root: str | Path, sheet: str | Path | None = None, variant: str | None = None, apex_policy: str = "middle") -> DatasetReading:
    """CASME II: ``sub01/EP02_01f/img46.jpg`` (raw) or ``Cropped/sub01/EP02_01f/reg_img46.jpg``.

    Parameters
    ----------
    root : the dataset folder: the one holding ``sub01``..., or holding ``CASME2_RAW_selected``,
        ``CASME2_RAW`` or ``Cropped`` folders, and the coding sheet.
    sheet : the coding sheet; default: the ``CASME2-coding-*.xlsx`` (or ``.csv`` export) in ``root``.
    variant : ``raw`` or ``cropped``; default: raw frames when present, else the cropped ones.
    apex_policy : how an apex the sheet does not give is resolved (``middle``).
    """
    root = _existing_root(root, "CASME II")
    _check_policy(apex_policy)
    candidates = {
        "raw": [root, root / "CASME2_RAW_selected", root / "CASME2_RAW"],
        "cropped": [root / "Cropped", root / "CASME2_Cropped", root],
    }
    if variant not in (None, "raw", "cropped"):
        raise DatasetError(f"CASME II variant must be 'raw' or 'cropped', got {variant!r}")
    order = [variant] if variant else ["raw", "cropped"]
    regexes = {"raw": CASME2_RAW_FRAME, "cropped": CASME2_CROPPED_FRAME}
    found = next(((folder, regexes[name]) for name in order for folder in candidates[name] if _has_subject_folders(folder, r"sub\d+", regexes[name])), None)
    if found is None:
        raise DatasetError(
            f"{root}: no CASME II clip folders found; expected sub01/EP02_01f/img46.jpg (raw) or "
            f"Cropped/sub01/EP02_01f/reg_img46.jpg under it"
        )
    frames_root, frame_regex = found
    sheet_path = Path(sheet) if sheet else _find_sheet(root, ["CASME2-coding-*.xlsx", "CASME2-coding-*.csv", "CASME2*coding*.xlsx", "CASME2*coding*.csv"], "CASME2-coding-*.xlsx")
    return _read_sheet_dataset("casme2", root, frames_root, sheet_path, frame_regex, apex_policy)


def read_samm(root: str | Path, sheet: str | Path | None = None, apex_policy: str = "middle") -> DatasetReading:
    """SAMM: ``006/006_1_2/006_05562.jpg`` with ``SAMM_Micro_FACS_Codes_v2.xlsx`` (or a CSV export)."""
    root = _existing_root(root, "SAMM")
    _check_policy(apex_policy)
    frames_root = next((f for f in (root, root / "SAMM") if _has_subject_folders(f, r"\d{3}", SAMM_FRAME)), None)
    if frames_root is None:
        raise DatasetError(f"{root}: no SAMM clip folders found; expected 006/006_1_2/006_05562.jpg under it")
    sheet_path = Path(sheet) if sheet else _find_sheet(root, ["SAMM_Micro_FACS_Codes*.xlsx", "SAMM*Codes*.xlsx", "SAMM*Codes*.csv", "SAMM*.csv"], "SAMM_Micro_FACS_Codes_v2.xlsx")
    return _read_sheet_dataset("samm", root, frames_root, sheet_path, SAMM_FRAME, apex_policy)


def read_smic(root: str | Path, subset: str = "HS", apex_policy: str = "middle") -> DatasetReading:
    """SMIC: ``HS/s1/micro/negative/s1_ne_01/reg_image046433.bmp``; VIS and NIR alike.

    ``root`` holds the ``HS`` (``VIS``, ``NIR``) folder, or is it. Labels are the folder names
    (negative, positive, surprise); SMIC codes no apex, so it comes from the policy.
    """
    root = _existing_root(root, "SMIC")
    _check_policy(apex_policy)
    if subset not in ("HS", "VIS", "NIR"):
        raise DatasetError(f"SMIC subset must be HS, VIS or NIR, got {subset!r}")
    subset_root = root / subset if (root / subset).is_dir() else root
    subjects = sorted((p for p in subset_root.iterdir() if p.is_dir() and re.fullmatch(r"s\d+", p.name)), key=lambda p: int(p.name[1:])) if subset_root.is_dir() else []
    if not subjects:
        raise DatasetError(f"{root}: no SMIC subject folders; expected {subset}/s1/micro/negative/s1_ne_01/reg_image046433.bmp under it")
    samples, problems = [], []
    for subject_folder in subjects:
        micro = subject_folder / "micro"
        if not micro.is_dir():
            problems.append(Problem("layout", str(subject_folder), "no 'micro' folder; expected micro/<negative|positive|surprise>/<clip>"))
            continue
        for emotion_folder in sorted(p for p in micro.iterdir() if p.is_dir()):
            emotion = emotion_folder.name
            if emotion not in SMIC_EMOTIONS:
                problems.append(Problem("emotion", str(emotion_folder), f"unknown emotion folder {emotion!r}; expected one of {', '.join(SMIC_EMOTIONS)}"))
                continue
            for clip_folder in sorted(p for p in emotion_folder.iterdir() if p.is_dir()):
                sample_id = f"smic/{subject_folder.name}/{clip_folder.name}"
                frames, numbers = _list_frames(clip_folder, SMIC_FRAME)
                if not frames:
                    problems.append(Problem("empty clip", str(clip_folder), "no frames (reg_imageNNNNNN.bmp) in the clip folder", sample_id))
                    continue
                _check_numbering(clip_folder, numbers, problems, sample_id)
                offset = len(frames) - 1
                apex = middle_index(0, offset)
                samples.append(
                    Sample(
                        dataset="smic", subject=subject_folder.name, clip=clip_folder.name, frames=tuple(frames),
                        frame_numbers=tuple(numbers), onset=0, apex=apex, offset=offset, emotion=emotion,
                        action_units=parse_action_units(None), apex_source=apex_policy,
                        sources={
                            "frames": _relative(clip_folder, root),
                            "emotion": f"folder name {_relative(emotion_folder, root)}",
                            "onset": "first frame of the clip (SMIC clips run onset to offset)",
                            "offset": "last frame of the clip",
                            "apex": f"policy '{apex_policy}': SMIC codes no apex",
                        },
                    )
                )
    return DatasetReading("smic", root, samples, problems)


# --- shared by the sheet-based adapters ------------------------------------------------------------


def _read_sheet_dataset(dataset: str, root: Path, frames_root: Path, sheet_path: Path, frame_regex: re.Pattern, apex_policy: str) -> DatasetReading:
    layout = get_layout(dataset)
    rows = read_annotation_sheet(sheet_path, _SHEET_COLUMNS, _REQUIRED)
    samples: list[Sample] = []
    problems: list[Problem] = []
    first_row_of: dict[tuple[str, str], SheetRow] = {}
    for row in rows:
        try:
            subject, clip = _row_identity(row, layout)
        except DatasetError as error:
            problems.append(_problem_from_error("sheet", error, row.where(), None))
            continue
        sample_id = f"{dataset}/{subject}/{clip}"
        first = first_row_of.get((subject, clip))
        if first is not None:
            # subject and clip match already, however spelled (1 and sub01)
            differing = [first.headers[name] for name in first.values if name not in ("subject", "clip") and first.values[name] != row.values.get(name)]
            if not differing:
                problems.append(Problem("duplicate clip", row.where(), f"clip {subject}/{clip} repeats row {first.row_number} exactly; this row is ignored", sample_id, fatal=False))
            else:
                # which row is right is for a person to decide: neither is used
                problems.append(Problem("duplicate clip", row.where(), f"clip {subject}/{clip} is also on row {first.row_number}, with a different {', '.join(differing)}; neither row is used", sample_id))
                samples[:] = [s for s in samples if s.sample_id != sample_id]
            continue
        first_row_of[(subject, clip)] = row
        try:
            sample = _sample_from_row(dataset, root, frames_root, row, subject, clip, frame_regex, apex_policy, problems)
        except DatasetError as error:
            problems.append(_problem_from_error("sheet", error, row.where(), sample_id))
            continue
        if sample is not None:
            samples.append(sample)
    listed = {(s, c) for s, c in first_row_of}
    for subject_folder in sorted(p for p in frames_root.iterdir() if p.is_dir()):
        for clip_folder in sorted(p for p in subject_folder.iterdir() if p.is_dir()):
            if (subject_folder.name, clip_folder.name) not in listed and _list_frames(clip_folder, frame_regex)[0]:
                problems.append(Problem("not in sheet", _relative(clip_folder, root), f"clip folder has no row in {sheet_path.name}", f"{dataset}/{subject_folder.name}/{clip_folder.name}"))
    return DatasetReading(dataset, root, samples, problems)


def _problem_from_error(check: str, error: DatasetError, where: str, sample_id: str | None) -> Problem:
    """A reading error as a problem; its message starts with the cell it names ('<where>: ...')."""
    text = str(error)
    if text.startswith(where) and ": " in text:
        place, message = text.split(": ", 1)
        return Problem(check, place, message, sample_id)
    return Problem(check, where, text, sample_id)


def _row_identity(row: SheetRow, layout) -> tuple[str, str]:
    subject_cell, clip_cell = row.values.get("subject"), row.values.get("clip")
    if subject_cell is None:
        raise DatasetError(f"{row.where('subject')}: empty; expected a subject")
    if clip_cell is None:
        raise DatasetError(f"{row.where('clip')}: empty; expected a clip name")
    try:
        subject = layout.subject_folder(subject_cell)
    except DatasetError as error:
        raise DatasetError(f"{row.where('subject')}: {error}") from None
    return subject, str(clip_cell).strip()


def _sample_from_row(dataset, root, frames_root, row: SheetRow, subject, clip, frame_regex, apex_policy, problems) -> Sample | None:
    sample_id = f"{dataset}/{subject}/{clip}"
    onset_frame = frame_number_cell(row, "onset")
    apex_frame = frame_number_cell(row, "apex")
    offset_frame = frame_number_cell(row, "offset")
    emotion = row.values.get("emotion")
    if emotion is None:
        raise DatasetError(f"{row.where('emotion')}: empty; expected an emotion")
    action_units = parse_action_units(row.values.get("action_units"), where=row.where("action_units") if "action_units" in row.headers else None)
    folder = frames_root / subject / clip
    if not folder.is_dir():
        problems.append(Problem("no folder", row.where(), f"clip {subject}/{clip} has no folder {_relative(folder, root)}", sample_id))
        return None
    frames, numbers = _list_frames(folder, frame_regex)
    if not frames:
        problems.append(Problem("empty clip", _relative(folder, root), "no frames in the clip folder", sample_id))
        return None
    _check_numbering(_relative(folder, root), numbers, problems, sample_id)
    sources = {"frames": _relative(folder, root), "emotion": row.where("emotion")}
    if action_units.units or action_units.alternatives or action_units.uncertain:
        sources["action_units"] = row.where("action_units")

    if onset_frame is not None and offset_frame is not None and onset_frame > offset_frame:
        # checked before anything is clamped into the folder: clamping would hide the inversion,
        # or call it a window outside the frames
        problems.append(Problem("onset after offset", row.where(), f"onset {onset_frame} comes after offset {offset_frame}; expected onset <= offset", sample_id))
        return None
    # an empty onset or offset stands for the folder's first or last frame (see _bound_index)
    window_start = numbers[0] if onset_frame is None else onset_frame
    window_end = numbers[-1] if offset_frame is None else offset_frame
    if window_end < numbers[0] or window_start > numbers[-1]:
        # the sheet's window misses the folder entirely (real CASME II has such rows): the folder
        # is the clip as cut, so it stands for onset..offset
        written = f"{'empty' if onset_frame is None else onset_frame}..{'empty' if offset_frame is None else offset_frame}"
        problems.append(Problem(
            "missing frames", row.where(),
            f"onset..offset {written} lies outside the frames of {_relative(folder, root)} "
            f"({numbers[0]}..{numbers[-1]}); the whole folder is used", sample_id, fatal=False,
        ))
        onset, offset = 0, len(numbers) - 1
        sources["onset"] = sources["offset"] = f"the whole folder: {row.where()} gives onset..offset outside it"
    else:
        onset, sources["onset"] = _bound_index(numbers, onset_frame, "onset", row, folder, root, problems, sample_id, first=True)
        offset, sources["offset"] = _bound_index(numbers, offset_frame, "offset", row, folder, root, problems, sample_id, first=False)
    if onset > offset:
        # onset..offset falls in a gap of the numbering: the clip has no frame at all
        problems.append(Problem(
            "missing frames", row.where(),
            f"no frame of {_relative(folder, root)} lies in onset..offset {window_start}..{window_end}", sample_id,
        ))
        return None
    wanted = set(range(numbers[onset], numbers[offset] + 1))
    missing = sorted(wanted - set(numbers))
    if missing:
        problems.append(Problem("missing frames", _relative(folder, root), f"frame{'s' if len(missing) > 1 else ''} {_ranges(missing)} of onset..offset {numbers[onset]}..{numbers[offset]} are missing; the clip runs on the frames present", sample_id, fatal=False))

    if apex_frame is not None and onset_frame is not None and offset_frame is not None and onset_frame <= apex_frame <= offset_frame and apex_frame in numbers:
        apex, apex_source = numbers.index(apex_frame), APEX_FROM_SHEET
        sources["apex"] = row.where("apex")
    else:
        apex, apex_source = middle_index(onset, offset), apex_policy
        if apex_frame is None:
            reason = "is empty"
        elif apex_frame == -1:
            reason = "is -1 (not coded)"
        elif onset_frame is not None and offset_frame is not None and not onset_frame <= apex_frame <= offset_frame:
            reason = f"{apex_frame} lies outside onset..offset {onset_frame}..{offset_frame}"
        else:
            reason = f"{apex_frame} is not a frame of the clip folder"
        sources["apex"] = f"policy '{apex_policy}': the sheet's apex {reason}"
        problems.append(Problem("apex", row.where("apex"), f"apex {reason}; resolved by policy '{apex_policy}' to frame {numbers[apex]}", sample_id, fatal=False))
    return Sample(
        dataset=dataset, subject=subject, clip=clip, frames=tuple(frames), frame_numbers=tuple(numbers),
        onset=onset, apex=apex, offset=offset, emotion=str(emotion).strip(), action_units=action_units,
        apex_source=apex_source, onset_frame=onset_frame, apex_frame=apex_frame, offset_frame=offset_frame,
        sources=sources,
    )


def _bound_index(numbers, frame, name, row, folder, root, problems, sample_id, first: bool) -> tuple[int, str]:
    """Index of an onset (first=True) or offset frame, clamped into the folder; where it came from."""
    end = 0 if first else len(numbers) - 1
    if frame is None:
        problems.append(Problem(name, row.where(name), f"no {name}; the folder's {'first' if first else 'last'} frame {numbers[end]} is used", sample_id, fatal=False))
        return end, f"{'first' if first else 'last'} frame of the folder (the sheet has no {name})"
    if frame in numbers:
        return numbers.index(frame), row.where(name)
    if (first and frame < numbers[0]) or (not first and frame > numbers[-1]):
        side = "before the first" if first else "after the last"
        problems.append(Problem("missing frames", row.where(name), f"{name} {frame} is {side} frame of {_relative(folder, root)} ({numbers[0]}..{numbers[-1]}); clamped to {numbers[end]}", sample_id, fatal=False))
        return end, f"{row.where(name)}, clamped to the folder's frame {numbers[end]}"
    # inside the folder's range but not a file: the nearest frame on the clip's side
    candidates = [i for i, n in enumerate(numbers) if (n > frame if first else n < frame)]
    index = candidates[0] if first else candidates[-1]
    return index, f"{row.where(name)}, frame {frame} missing: nearest frame {numbers[index]}"


def _list_frames(folder: Path, frame_regex: re.Pattern) -> tuple[list[Path], list[int]]:
    numbered = []
    for path in folder.iterdir():
        match = frame_regex.fullmatch(path.name)
        if match and path.is_file():
            numbered.append((int(match.group("number")), path))
    numbered.sort()
    return [p for _, p in numbered], [n for n, _ in numbered]


def _check_numbering(where: str | Path, numbers: list[int], problems: list[Problem], sample_id: str) -> None:
    gaps = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
    if gaps:
        problems.append(Problem("numbering", str(where), f"frame numbers are not contiguous: {_ranges(gaps)} missing in {numbers[0]}..{numbers[-1]}; the frames present are used in order", sample_id, fatal=False))
    duplicates = sorted(n for n, count in Counter(numbers).items() if count > 1)
    if duplicates:
        problems.append(Problem("numbering", str(where), f"frame numbers {_ranges(duplicates)} occur in more than one file; every such file is used, in file-name order", sample_id, fatal=False))


def _ranges(numbers: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``'3-5, 9'`` (at most 8 runs shown)."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:8])
    return text + (f" and {len(runs) - 8} more runs" if len(runs) > 8 else "")


def _has_subject_folders(folder: Path, subject_pattern: str, frame_regex: re.Pattern) -> bool:
    """True when ``folder`` holds subject folders whose clip folders hold frames of this naming."""
    if not folder.is_dir():
        return False
    for subject in folder.iterdir():
        if subject.is_dir() and re.fullmatch(subject_pattern, subject.name):
            for clip in subject.iterdir():
                if clip.is_dir() and any(frame_regex.fullmatch(f.name) for f in clip.iterdir()):
                    return True
    return False


def _find_sheet(root: Path, patterns: list[str], expected: str) -> Path:
    for pattern in patterns:
        found = sorted(root.glob(pattern))
        if found:
            return found[-1]  # dated versions: the newest name sorts last
    raise DatasetError(f"{root}: no annotation sheet; expected {expected} (or a CSV export of it) in this folder, or pass --sheet")


def _existing_root(root: str | Path, name: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder; expected the {name} dataset root")
    return root


def _check_policy(policy: str) -> None:
    if policy == "spot":
        raise DatasetError("apex policy 'spot' needs the apex-spotting feature, which the build will provide; use 'middle' for now")
    if policy not in APEX_POLICIES:
        raise DatasetError(f"unknown apex policy {policy!r}; choose one of: {', '.join(APEX_POLICIES)}")


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
