"""Planning synthetic clips: names, frame numbers, emotions, AUs and nuisances, before any pixel.

Two sources of plans: a default set (``--subjects`` x ``--clips-per-subject``, emotions taken in
turn so every class is present) and a coding table in the format of ``shared/reference/*.csv``
(``--coding``), whose clips are reproduced exactly: same subjects, clip names, frame numbers,
onset/apex/offset, AUs and emotions.

Every random choice of a clip comes from ``default_rng([seed, 2, ordinal])``, ``ordinal`` being the
clip's position in the plan, so a plan and the pixels made from it do not depend on which process
renders them.
"""

from __future__ import annotations

import math

import numpy as np

from mepipe.datasets.action_units import ActionUnitSet, parse_action_units
from mepipe.datasets.coding_tables import CodingRow
from mepipe.datasets.layouts import CKPLUS_EMOTIONS, SMIC_EMOTION_CODES, Layout
from mepipe.synth.appearance import SynthError
from mepipe.synth.motion import RENDERABLE_AUS, HeadMotion
from mepipe.synth.render import ClipPlan

#: AU combinations per emotion, as the datasets code them (one is drawn per clip). Sides: L/R.
EMOTION_ACTION_UNITS: dict[str, tuple[str, ...]] = {
    "happiness": ("6+12", "12", "6+12+25"),
    "happy": ("6+12", "6+12+25"),
    "positive": ("6+12", "12"),
    "disgust": ("4+9", "4+10", "4+9+10"),
    "surprise": ("1+2+5", "1+2+26", "1+2+5+26"),
    "repression": ("14", "15", "17", "15+17", "14+17"),
    "anger": ("4+7", "4+7+17"),
    "contempt": ("L12", "R12", "L14", "R14"),
    "sadness": ("1+4+15", "1+15"),
    "fear": ("1+2+4+5", "4+20"),
    "negative": ("4+9", "4+10", "4+7", "14", "15+17"),
    "others": ("4", "1+2", "7", "10", "12+15", "25", "17", "L2"),
    "other": ("4", "1+2", "7", "10", "12+15", "25", "17", "L2"),
}

#: Emotions of the default sets, in the datasets' own spelling, taken in turn.
DEFAULT_EMOTIONS: dict[str, tuple[str, ...]] = {
    "casme2": ("happiness", "disgust", "repression", "surprise", "others"),
    "samm": ("Anger", "Contempt", "Happiness", "Surprise", "Other"),
    "smic": ("negative", "positive", "surprise"),
    "ckplus": tuple(CKPLUS_EMOTIONS.values()),
}

# Frames per default clip (inclusive range), chosen to fit each frame rate: a micro-expression lasts
# under 500 ms, the clips of CASME II and SAMM about 200-450 ms, SMIC's 100 fps clips 20-50 frames.
DEFAULT_CLIP_FRAMES = {"casme2": (36, 64), "samm": (50, 90), "smic": (20, 40), "ckplus": (10, 20)}

# Peak expression displacement (pixels at 640 px frame width; scaled with the frame width).
MICRO_AMPLITUDE = (0.5, 4.0)
MACRO_AMPLITUDE = (8.0, 14.0)
BLINK_PROBABILITY = 0.35
BLINK_SECONDS = (0.10, 0.16)


def default_plans(layout: Layout, subjects: int, clips_per_subject: int, seed: int) -> list[ClipPlan]:
    """Plans of a default synthetic set: ``subjects`` x ``clips_per_subject`` clips."""
    if subjects < 1 or clips_per_subject < 1:
        raise SynthError(f"--subjects and --clips-per-subject must be at least 1, got {subjects} and {clips_per_subject}")
    emotions = DEFAULT_EMOTIONS[layout.name]
    plans = []
    for subject_index in range(subjects):
        subject = _default_subject(layout.name, subject_index)
        names_used: set[str] = set()
        for take in range(clips_per_subject):
            ordinal = len(plans)
            rng = np.random.default_rng([seed, 2, ordinal])
            emotion = emotions[(subject_index + take) % len(emotions)]
            clip = _default_clip_name(layout.name, subject, emotion, take, rng, names_used)
            low, high = DEFAULT_CLIP_FRAMES[layout.name]
            n_frames = int(rng.integers(low, high + 1))
            first = _default_first_frame(layout.name, rng)
            last = first + n_frames - 1
            if layout.name == "ckplus":
                onset, apex, offset = first, last, last
                sheet_apex: int | None = last
            else:
                onset, offset = first, last
                apex = onset + int(round(rng.uniform(0.3, 0.6) * (offset - onset)))
                sheet_apex = None if layout.name == "smic" else apex
            au_text = str(rng.choice(EMOTION_ACTION_UNITS[emotion.lower()]))
            sheet = _default_sheet_fields(layout.name, emotion, rng, n_frames)
            plans.append(
                _finish_plan(
                    layout, rng, seed, ordinal, subject, subject_index, clip, emotion, au_text,
                    first, last, (onset if layout.name != "smic" else None, sheet_apex, offset if layout.name != "smic" else None),
                    (onset, apex, offset), sheet,
                )
            )
    return plans


def plans_from_coding(layout: Layout, rows: list[CodingRow], seed: int, source: str) -> list[ClipPlan]:
    """Plans reproducing exactly the clips of a coding table (see ``read_coding_table``).

    Rows of the CASME II and SAMM formats give frame numbers and onset/apex/offset; rows of the
    composite format (SMIC) give only the clip and its label, so frame numbers are drawn. An apex
    the sheet does not give (empty, -1, outside onset..offset) is drawn for rendering and kept as
    the sheet wrote it in the sheet; the ground truth says which.
    """
    if layout.name == "ckplus":
        raise SynthError("--coding makes casme2, samm or smic sets; CK+ has no coding table")
    if not rows:
        raise SynthError(f"--coding {source}: no {layout.name} rows in the table")
    subject_order: dict[str, int] = {}
    plans = []
    for ordinal, row in enumerate(rows):
        where = f"--coding {source}, row {row.row_number}"
        rng = np.random.default_rng([seed, 2, ordinal])
        subject = layout.subject_folder(row.subject)
        subject_index = subject_order.setdefault(subject, len(subject_order))
        if row.first_frame is None or row.last_frame is None:
            if layout.name != "smic":
                raise SynthError(
                    f"{where}: no frame numbers for {row.clip!r}; a {layout.name} set needs a table in the "
                    f"format of {layout.name}_coding.csv"
                )
            low, high = DEFAULT_CLIP_FRAMES["smic"]
            first = _default_first_frame("smic", rng)
            last = first + int(rng.integers(low, high + 1)) - 1
            onset, offset = first, last
        else:
            first, last = row.first_frame, row.last_frame
            onset = row.onset if row.onset is not None else first
            offset = row.offset if row.offset is not None else last
        if onset > offset:
            raise SynthError(f"{where}: onset {onset} is after offset {offset} for clip {row.clip!r}")
        apex = row.apex
        true_apex = apex if apex is not None and onset <= apex <= offset else onset + int(round(rng.uniform(0.3, 0.7) * (offset - onset)))
        emotion = row.emotion
        sheet = {
            "inducement_code": row.inducement_code,
            "objective_class": row.objective_class,
            "type": "Micro - 1/2",
        }
        if layout.name == "smic":
            sheet_onset = sheet_apex = sheet_offset = None
        else:
            sheet_onset, sheet_apex, sheet_offset = row.onset, row.apex, row.offset
        plans.append(
            _finish_plan(
                layout, rng, seed, ordinal, subject, subject_index, row.clip, emotion, row.action_units,
                first, last, (sheet_onset, sheet_apex, sheet_offset), (onset, true_apex, offset), sheet, where=where,
            )
        )
    return plans


def renderable_action_units(
    parsed: ActionUnitSet, emotion: str, rng: np.random.Generator
) -> tuple[tuple[tuple[int, str | None], ...], str]:
    """The (AU, side) pairs to render for a coded AU string, and where they came from.

    The certain units mepipe can render are used; of an 'X or Y' group, the first alternative (the
    synthesizer is free to pick, the ground truth records it). When nothing renderable is left
    (``?``, or only AUs such as 38 or 43 that have no motion model here), the emotion's usual AUs
    are drawn instead.
    """
    units = list(parsed.units) + [group[0] for group in parsed.alternatives if group]
    chosen = sorted(
        {(u.number, u.side if u.side in ("L", "R") else None) for u in units if u.number in RENDERABLE_AUS and not _is_reference(u, parsed)},
        key=lambda pair: (pair[0], pair[1] or ""),
    )
    if chosen:
        return tuple(chosen), "sheet"
    candidates = EMOTION_ACTION_UNITS.get(emotion.lower(), EMOTION_ACTION_UNITS["others"])
    fallback = parse_action_units(str(rng.choice(candidates)))
    pairs = sorted({(u.number, u.side) for u in fallback.units}, key=lambda pair: (pair[0], pair[1] or ""))
    return tuple(pairs), "emotion"


def _is_reference(unit, parsed: ActionUnitSet) -> bool:
    # ref(...) units are coded as present elsewhere, not part of this movement; they are uncertain
    # units that are not 'or' alternatives
    return unit.uncertain and not any(unit in group for group in parsed.alternatives)


def _finish_plan(
    layout: Layout, rng: np.random.Generator, seed: int, ordinal: int, subject: str, subject_index: int,
    clip: str, emotion: str, au_text: str, first: int, last: int,
    sheet_frames: tuple[int | None, int | None, int | None], true_frames: tuple[int, int, int],
    sheet: dict, where: str = "",
) -> ClipPlan:
    width, _ = layout.frame_size
    scale = width / 640
    try:
        parsed = parse_action_units(au_text, where=where or None)
    except ValueError as error:
        raise SynthError(str(error)) from None
    rendered, au_source = renderable_action_units(parsed, emotion, rng)
    macro = layout.name == "ckplus"
    amplitude = float(rng.uniform(*(MACRO_AMPLITUDE if macro else MICRO_AMPLITUDE))) * scale
    direction = rng.uniform(0, 2 * math.pi)
    drift = float(rng.uniform(0.3, 1.8)) * scale
    head = HeadMotion(
        pivot=(0.0, 0.0),  # placed under the chin once the subject's landmarks are known
        drift=(drift * math.cos(direction), drift * math.sin(direction)),
        rotation=float(rng.uniform(-1.0, 1.0)),
        sway=float(rng.uniform(0.0, 0.2)) * scale,
        sway_period=float(rng.uniform(0.3, 0.8) * layout.fps),
        sway_phase=float(rng.uniform(0, 2 * math.pi)),
        first_frame=first,
        last_frame=last,
    )
    blink = None
    if not macro and rng.random() < BLINK_PROBABILITY:
        length = max(4, int(round(rng.uniform(*BLINK_SECONDS) * layout.fps)))
        start = int(rng.integers(first - length // 2, max(first - length // 2 + 1, last - length // 2 + 1)))
        blink = (start, length)
    flicker = (float(rng.uniform(0.002, 0.008)), float(rng.uniform(layout.fps / 10, layout.fps / 3)), float(rng.uniform(0, 2 * math.pi)))
    clip_seed = int(np.random.SeedSequence([seed, 3, ordinal]).generate_state(1)[0])
    onset, apex, offset = true_frames
    return ClipPlan(
        dataset=layout.name, subject=subject, subject_index=subject_index, clip=clip, emotion=emotion,
        action_units=au_text, rendered_aus=rendered, first_frame=first, last_frame=last,
        onset=sheet_frames[0], apex=sheet_frames[1], offset=sheet_frames[2],
        true_onset=onset, true_apex=apex, true_offset=offset, amplitude=amplitude, head=head, blink=blink,
        flicker=flicker, noise_sigma=float(rng.uniform(0.8, 1.5)), seed=clip_seed,
        sheet={**sheet, "au_source": au_source},
    )


def _default_subject(dataset: str, index: int) -> str:
    if dataset == "casme2":
        return f"sub{index + 1:02d}"
    if dataset == "samm":
        return f"{index + 6:03d}"  # SAMM's subjects start at 006
    if dataset == "smic":
        return f"s{index + 1}"
    return f"S{5 * (index + 1):03d}"  # CK+ subjects start at S005


def _default_clip_name(dataset: str, subject: str, emotion: str, take: int, rng: np.random.Generator, used: set[str]) -> str:
    while True:
        if dataset == "casme2":
            name = f"EP{int(rng.integers(1, 20)):02d}_{int(rng.integers(1, 12)):02d}{'f' if rng.random() < 0.4 else ''}"
        elif dataset == "samm":
            name = f"{subject}_{int(rng.integers(1, 8))}_{int(rng.integers(1, 10))}"
        elif dataset == "smic":
            code = SMIC_EMOTION_CODES[emotion]
            name = f"{subject}_{code}_{sum(1 for u in used if f'_{code}_' in u) + 1:02d}"
        else:
            name = f"{take + 1:03d}"
        if name not in used:
            used.add(name)
            return name


def _default_first_frame(dataset: str, rng: np.random.Generator) -> int:
    if dataset == "casme2":
        return int(rng.integers(1, 200))
    if dataset == "samm":
        return int(rng.integers(1000, 6000))
    if dataset == "smic":
        return int(rng.integers(10_000, 900_000))
    return 1


def _default_sheet_fields(dataset: str, emotion: str, rng: np.random.Generator, n_frames: int) -> dict:
    if dataset == "samm":
        # SAMM's objective classes (Davison et al. 2018): I happiness, II surprise, III anger,
        # VII other; contempt is mostly coded VII in the real sheet
        objective = {"Anger": "3", "Contempt": "7", "Happiness": "1", "Surprise": "2", "Other": "7"}[emotion]
        return {"inducement_code": int(rng.integers(1, 8)), "objective_class": objective, "type": "Micro - 1/2"}
    if dataset == "ckplus":
        code = next(code for code, name in CKPLUS_EMOTIONS.items() if name == emotion)
        return {"ckplus_code": code}
    return {}
