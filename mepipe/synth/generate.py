"""Writing a synthetic dataset tree: frames, annotation sheet, ground truth, preview.

Clips are rendered in worker processes, one clip per task; each worker writes its clip's frames
straight to disk and sends back only the clip's ground truth, which the parent writes in plan order
(so the output does not depend on which worker finished first).

The ``manifest`` layout is a tree for the manifest adapter (:mod:`mepipe.datasets.manifest`): the
clips of a default CASME II set (its subjects, clips, emotions, 640x480 colour frames at 200 fps),
every other one in plan order written as an mp4 video (``sub01/EP19_05f.mp4``, with
:func:`mepipe.pipeline.video.write_video`) and the rest as frame folders (``sub01/EP02_01f/img46.jpg``),
listed in ``manifest.csv``: a folder's onset/apex/offset as frame numbers, a video's as 0-based
frame indices (frame ``first_frame + i`` of the clip is the video's frame ``i``). The ground truth is
the same as a CASME II tree's; each clip's entry says ``video`` and its ``path`` is the folder or
the video.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from mepipe.datasets.coding_tables import read_coding_table
from mepipe.datasets.errors import DatasetError
from mepipe.datasets.layouts import (
    CASME2_SHEET_NAME,
    LAYOUTS,
    SAMM_SHEET_NAME,
    Layout,
    ckplus_emotion_file,
    get_layout,
)
from mepipe.datasets.manifest import MANIFEST_NAME, write_manifest
from mepipe.synth.appearance import Photo, SynthError, default_photo, load_photos, make_subject
from mepipe.synth.ground_truth import FILE_NAME, FORMAT_VERSION, GroundTruthWriter
from mepipe.synth.motion import FaceFrame
from mepipe.synth.plan import default_plans, plans_from_coding
from mepipe.synth.render import ClipPlan, ClipRenderer

JPEG_QUALITY = 92  # the datasets' JPEGs are high quality; blocking artefacts would fake motion

#: The layout of a manifest tree (the module's docstring), and the dataset layout its clips are
#: rendered in.
MANIFEST_LAYOUT = "manifest"
MANIFEST_FRAMES = "casme2"
#: Every layout ``mepipe synth`` writes.
SYNTH_LAYOUTS = (*LAYOUTS, MANIFEST_LAYOUT)


@dataclass(frozen=True)
class SynthOptions:
    """Options of ``mepipe synth`` (see the command's help for their meaning)."""

    layout: str
    out: Path
    subjects: int = 6
    clips_per_subject: int = 6
    seed: int = 0
    faces: Path | None = None
    coding: Path | None = None
    preview: Path | None = None
    workers: int | None = None


@dataclass
class SynthSummary:
    """What a synthesis run made."""

    layout: str
    root: Path
    subjects: int
    clips: int
    frames: int
    bytes_written: int
    seconds: float
    emotions: dict[str, int]
    blinks: int
    sheet: Path | None
    ground_truth: Path
    preview: Path | None


Progress = Callable[[int, int, int, int], None]


def synthesize(options: SynthOptions, progress: Progress | None = None) -> SynthSummary:
    """Make a synthetic dataset tree; returns what was made. Raises SynthError on bad options."""
    started = time.perf_counter()
    layout = _layout(options.layout)
    manifest = options.layout == MANIFEST_LAYOUT
    if manifest and options.coding is not None:
        raise SynthError("--coding makes casme2, samm or smic sets; a manifest tree is a default set (--subjects, --clips-per-subject)")
    if options.preview is not None:
        _check_preview_path(Path(options.preview))
    photos = load_photos(options.faces) if options.faces is not None else [default_photo()]
    plans = _plans(layout, options)
    # a manifest tree: every other clip, in plan order, is a video
    videos = frozenset(plan.key for plan in plans[1::2]) if manifest else frozenset()
    root = Path(options.out)
    _prepare_output(root)

    workers = options.workers or min(os.cpu_count() or 1, 8)
    state = {"layout": layout, "root": root, "photos": photos, "seed": options.seed, "manifest": manifest, "videos": videos}
    writer = GroundTruthWriter(root / FILE_NAME)
    subjects: dict[str, dict] = {}
    clips_manifest = []
    total_frames = sum(len(p.frame_numbers) for p in plans)
    frames_done = bytes_written = 0
    try:
        for index, (plan, truth, subject_record, written) in enumerate(_render_all(plans, state, workers)):
            if plan.subject not in subjects:
                subjects[plan.subject] = subject_record
                writer.add_array(f"subjects/{plan.subject}/landmarks", np.array(subject_record.pop("landmarks")))
            writer.add_clip(plan.subject, plan.clip, truth)
            clips_manifest.append(_clip_manifest(plan, layout, truth, manifest, plan.key in videos))
            frames_done += len(plan.frame_numbers)
            bytes_written += written
            if progress:
                progress(index + 1, len(plans), frames_done, total_frames)
        writer.close(
            {
                "format": FORMAT_VERSION,
                "dataset": MANIFEST_LAYOUT if manifest else layout.name,
                **({"frame_layout": layout.name} if manifest else {}),
                "fps": layout.fps,
                "frame_size": list(layout.frame_size),
                "seed": options.seed,
                "faces": [photo.name for photo in photos],
                "subjects": subjects,
                "clips": clips_manifest,
            }
        )
    except BaseException:
        writer.abort()
        raise
    sheet = write_manifest_sheet(root, plans, videos, layout.fps) if manifest else write_coding_sheet(layout, root, plans)
    if sheet is not None:
        bytes_written += sheet.stat().st_size
    preview = None
    if options.preview is not None:
        from mepipe.synth.preview import write_preview

        preview = write_preview(root, Path(options.preview))
    return SynthSummary(
        layout=options.layout if manifest else layout.name,
        root=root,
        subjects=len(subjects),
        clips=len(plans),
        frames=frames_done,
        bytes_written=bytes_written + (root / FILE_NAME).stat().st_size,
        seconds=time.perf_counter() - started,
        emotions=dict(sorted(Counter(p.emotion for p in plans).items())),
        blinks=sum(1 for c in clips_manifest if c["blink_frames"]),
        sheet=sheet,
        ground_truth=root / FILE_NAME,
        preview=preview,
    )


def check_layout(name: str) -> None:
    """SynthError, one line, unless ``mepipe synth`` writes the layout ``name``."""
    if name not in SYNTH_LAYOUTS:
        raise SynthError(f"unknown layout {name!r}; choose one of: {', '.join(SYNTH_LAYOUTS)}")


def _layout(name: str) -> Layout:
    """The dataset layout clips are rendered in (a manifest tree's: CASME II's)."""
    check_layout(name)
    try:
        return get_layout(MANIFEST_FRAMES if name == MANIFEST_LAYOUT else name)
    except DatasetError as error:
        raise SynthError(str(error)) from None


def _plans(layout: Layout, options: SynthOptions) -> list[ClipPlan]:
    if options.coding is None:
        return default_plans(layout, options.subjects, options.clips_per_subject, options.seed)
    if layout.name == "ckplus":
        raise SynthError("--coding makes casme2, samm or smic sets; CK+ has no coding table")
    try:
        _, rows = read_coding_table(options.coding, dataset=layout.name)
    except DatasetError as error:
        raise SynthError(f"--coding: {error}") from None
    return plans_from_coding(layout, rows, options.seed, str(options.coding))


def _check_preview_path(path: Path) -> None:
    """Fail before minutes of rendering, not after, when the preview cannot be written."""
    if path.suffix.lower() != ".png":
        raise SynthError(f"--preview {path}: the preview is a PNG; give a file name ending in .png")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SynthError(f"--preview {path}: cannot create its folder ({error.strerror})") from None
    if not os.access(path.parent, os.W_OK):
        raise SynthError(f"--preview {path}: its folder is not writable")


def _prepare_output(root: Path) -> None:
    """An empty folder to write into; a tree that mepipe synth made before is replaced."""
    if root.exists() and not root.is_dir():
        raise SynthError(f"--out {root}: exists and is not a folder")
    if root.is_dir() and any(root.iterdir()):
        if not (root / FILE_NAME).is_file():
            raise SynthError(f"--out {root}: folder is not empty and was not made by mepipe synth; choose another")
        for child in root.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SynthError(f"--out {root}: cannot create the folder ({error.strerror})") from None


# --- rendering, in worker processes -------------------------------------------------------------

_WORKER_STATE: dict = {}


def _init_worker(state: dict) -> None:
    cv2.setNumThreads(1)  # one process per core already; threads inside would only contend
    _WORKER_STATE.clear()
    _WORKER_STATE.update(state)


def _render_all(plans: list[ClipPlan], state: dict, workers: int):
    if workers <= 1 or len(plans) == 1:
        _init_worker(state)
        yield from map(_render_clip, plans)
        return
    # spawn, not fork: the parent has already run OpenCV and dlib, whose thread pools do not
    # survive a fork (the children hang on their first parallel call)
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(plans)), initializer=_init_worker, initargs=(state,)) as pool:
        yield from pool.imap(_render_clip, plans, chunksize=1)


def _render_clip(plan: ClipPlan) -> tuple[ClipPlan, dict, dict, int]:
    layout: Layout = _WORKER_STATE["layout"]
    root: Path = _WORKER_STATE["root"]
    photos: list[Photo] = _WORKER_STATE["photos"]
    photo = photos[plan.subject_index % len(photos)]
    subject = make_subject(photo, layout.frame_size, layout.color, _WORKER_STATE["seed"], plan.subject_index)
    face = FaceFrame.from_landmarks(subject.landmarks)
    # the head turns about the neck, half an eye distance under the chin
    pivot = (float(subject.landmarks[8, 0]), float(subject.landmarks[8, 1] + 0.5 * face.iod))
    plan = dataclasses.replace(plan, head=dataclasses.replace(plan.head, pivot=pivot))
    renderer = ClipRenderer(plan, subject)

    video = plan.key in _WORKER_STATE["videos"]
    clip_path = root / _clip_path(plan, layout, _WORKER_STATE["manifest"], video)
    written = 0
    if video:
        from mepipe.pipeline.video import write_video

        clip_path.parent.mkdir(parents=True, exist_ok=True)
        write_video(clip_path, np.stack([renderer.frame(number) for number in plan.frame_numbers]), layout.fps)
        written = clip_path.stat().st_size
    else:
        clip_path.mkdir(parents=True, exist_ok=True)
        for number in plan.frame_numbers:
            image = renderer.frame(number)
            path = clip_path / layout.frame_name(plan.subject, plan.clip, number)
            written += _write_frame(path, image, layout)
    if layout.name == "ckplus" and "ckplus_code" in plan.sheet:
        label = root / ckplus_emotion_file(plan.subject, plan.clip, plan.last_frame)
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(f"   {float(plan.sheet['ckplus_code']):.7e}\n")
    subject_record = {
        "landmarks": subject.landmarks.tolist(),
        "detector_score": subject.detector_score,
        "look": subject.look,
    }
    return plan, renderer.ground_truth(), subject_record, written


def _write_frame(path: Path, image: np.ndarray, layout: Layout) -> int:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if layout.extension == ".jpg" else []
    ok, encoded = cv2.imencode(layout.extension, bgr, params)
    if not ok:
        raise SynthError(f"could not encode {path}")
    data = encoded.tobytes()
    path.write_bytes(data)
    return len(data)


# --- sheet and manifest ---------------------------------------------------------------------------


def write_coding_sheet(layout: Layout, root: Path, plans: list[ClipPlan]) -> Path | None:
    """The dataset's coding sheet for these clips (CASME II, SAMM); None for folder-labelled sets."""
    from mepipe.synth.sheets import write_casme2_sheet, write_samm_sheet

    if layout.name == "casme2":
        path = root / CASME2_SHEET_NAME
        write_casme2_sheet(
            path,
            [
                {
                    "subject": p.subject, "clip": p.clip, "onset": p.onset, "apex": p.apex, "offset": p.offset,
                    "action_units": p.action_units, "emotion": p.emotion,
                }
                for p in plans
            ],
        )
        return path
    if layout.name == "samm":
        path = root / SAMM_SHEET_NAME
        write_samm_sheet(
            path,
            [
                {
                    "subject": p.subject, "clip": p.clip, "inducement_code": p.sheet.get("inducement_code"),
                    "onset": p.onset, "apex": p.apex, "offset": p.offset,
                    "duration": p.last_frame - p.first_frame + 1, "type": p.sheet.get("type", "Micro - 1/2"),
                    "action_units": p.action_units, "emotion": p.emotion,
                    "objective_class": p.sheet.get("objective_class"),
                }
                for p in plans
            ],
        )
        return path
    return None


def write_manifest_sheet(root: Path, plans: list[ClipPlan], videos: frozenset[str], fps: float) -> Path:
    """``manifest.csv`` of a manifest tree: a folder's onset/apex/offset as its frame numbers, a
    video's as 0-based indices into its frames (the clip's first frame is the video's frame 0)."""
    rows = []
    for plan in plans:
        video = plan.key in videos
        base = plan.first_frame if video else 0

        def position(frame: int | None) -> int | None:
            # -1 is "not coded" in either counting; None an empty cell
            return frame if frame is None or frame == -1 else frame - base

        rows.append({
            "subject": plan.subject, "clip": plan.clip, "path": str(_clip_path(plan, None, True, video)),
            "onset": position(plan.onset), "apex": position(plan.apex), "offset": position(plan.offset),
            "emotion": plan.emotion, "action_units": plan.action_units, "fps": f"{fps:g}",
        })
    path = root / MANIFEST_NAME
    write_manifest(path, rows)
    return path


def _clip_path(plan: ClipPlan, layout: Layout | None, manifest: bool, video: bool) -> PurePosixPath:
    """A clip's folder (or a manifest tree's video file) relative to the tree's root."""
    if manifest:
        return PurePosixPath(plan.subject, f"{plan.clip}.mp4") if video else PurePosixPath(plan.subject, plan.clip)
    return layout.clip_folder(plan.subject, plan.clip, plan.emotion)


def _clip_manifest(plan: ClipPlan, layout: Layout, truth: dict, manifest: bool = False, video: bool = False) -> dict:
    return {
        "subject": plan.subject,
        "clip": plan.clip,
        "path": str(_clip_path(plan, layout, manifest, video)),
        **({"video": video} if manifest else {}),
        "emotion": plan.emotion,
        "ckplus_code": plan.sheet.get("ckplus_code"),
        "action_units": plan.action_units,
        "rendered_action_units": [f"{side or ''}{number}" for number, side in plan.rendered_aus],
        "action_units_source": plan.sheet.get("au_source"),
        "first_frame": plan.first_frame,
        "last_frame": plan.last_frame,
        "onset": plan.onset,
        "apex": plan.apex,
        "offset": plan.offset,
        "true_onset": plan.true_onset,
        "true_apex": plan.true_apex,
        "true_offset": plan.true_offset,
        "apex_source": "sheet" if plan.apex == plan.true_apex else "drawn",
        "amplitude_px": round(plan.amplitude, 6),
        "blink_frames": truth["blink_frames"].tolist(),
        "head": {
            "drift_px": [round(v, 6) for v in plan.head.drift],
            "rotation_degrees": round(plan.head.rotation, 6),
            "pivot": [round(v, 3) for v in plan.head.pivot],
        },
    }
