"""A trained run applied to a new clip: ``mepipe predict RUN (--video FILE | --frames FOLDER)``.

The clip goes through exactly what the run's training samples went through: the build's face
stage and artifact code (``pipeline.tasks.compute_clip``) with the parameters the run's store
recorded (kept in the checkpoint), the recipe's own input transform, then the checkpoint's
network (and SVM head). A fold's model given a clip of that fold's test subject therefore gives
the class and scores ``predictions.csv`` holds for it.

Positions (``onset``, ``apex``, ``offset``) are 0-based indices into the decoded clip: the frames
of a folder sorted by the number in their names, the frames of a video in decoding order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mepipe.datasets.manifest import IMAGE_SUFFIXES, frame_number_of
from mepipe.models.checkpoint import CheckpointError, load_checkpoint, run_checkpoints


class PredictError(ValueError):
    """A clip or run that cannot be predicted; the message is one line saying why and what to do."""


@dataclass
class Prediction:
    """One clip's prediction and how it was made.

    scores : class -> the model's score (a logit, or an SVM decision value), as ``predictions.csv``.
    probabilities : class -> softmax of the logits; None for an SVM head (decision values only).
    seconds : wall seconds per stage: ``decode``, ``face``, each artifact, ``inputs``, ``model``.
    notes : what was assumed (the whole clip used, the apex spotted, the frame rate's source).
    """

    model: str
    checkpoint: str
    test_subject: str | None
    source: str
    frames: int
    onset: int
    apex: int
    offset: int
    apex_source: str
    fps: float
    predicted: str
    scores: dict[str, float]
    probabilities: dict[str, float] | None
    seconds: dict[str, float]
    notes: list[str] = field(default_factory=list)
    #: for the picture: aligned onset and apex crops, and the model's input (C, H, W) with channel names
    onset_image: np.ndarray | None = field(default=None, repr=False)
    apex_image: np.ndarray | None = field(default=None, repr=False)
    model_input: np.ndarray | None = field(default=None, repr=False)
    input_channels: tuple[str, ...] = ()

    def picture(self, path: str | Path) -> Path:
        """A PNG of the aligned onset and apex, the model's input and the scores."""
        from mepipe.models.plots import prediction_figure

        probabilities = self.probabilities is not None
        return prediction_figure(
            self.onset_image, self.apex_image, self.model_input, self.probabilities if probabilities else self.scores,
            self.predicted, path, kind="probability" if probabilities else "SVM decision value",
            channel_names=self.input_channels or None,
            title=f"{self.model} ({'fold ' + self.test_subject if self.test_subject else 'final model'}) on "
                  f"{Path(self.source).name}: onset {self.onset}, apex {self.apex} ({self.apex_source}), offset {self.offset}")

    def to_dict(self) -> dict:
        return {"model": self.model, "checkpoint": self.checkpoint, "test_subject": self.test_subject,
                "source": self.source, "frames": self.frames, "onset": self.onset, "apex": self.apex,
                "offset": self.offset, "apex_source": self.apex_source, "fps": self.fps,
                "predicted": self.predicted, "scores": self.scores, "probabilities": self.probabilities,
                "seconds": {name: round(value, 4) for name, value in self.seconds.items()}, "notes": self.notes}

    def text(self) -> str:
        kind = "probability" if self.probabilities is not None else "SVM decision value"
        values = self.probabilities if self.probabilities is not None else self.scores
        width = max(len(name) for name in values)
        lines = [f"{self.model} ({'fold ' + self.test_subject if self.test_subject else 'final model'}): "
                 f"{self.predicted}",
                 f"  clip {self.source}: {self.frames} frames, onset {self.onset}, apex {self.apex} "
                 f"({self.apex_source}), offset {self.offset}, {self.fps:g} fps"]
        lines += [f"  note: {note}" for note in self.notes]
        lines.append(f"  {kind} per class:")
        for name, value in sorted(values.items(), key=lambda item: -item[1]):
            lines.append(f"    {name:<{width}}  {value:8.4f}" + ("  <-" if name == self.predicted else ""))
        lines.append("  seconds: " + ", ".join(f"{name} {value:.2f}" for name, value in self.seconds.items()))
        return "\n".join(lines)


def choose_checkpoint(run: str | Path, fold: str | None = None, seed: int | None = None) -> dict:
    """The record of run ``run``'s final model, or of the model of the fold whose test subject is
    ``fold`` (``sub01`` or ``casme2/sub01``; of ``seed``, default the first seed kept)."""
    run = Path(run)
    if not (run / "config.json").is_file():
        raise PredictError(f"{run} is not a run directory (no config.json): give the directory mepipe train wrote")
    records = run_checkpoints(run)
    if not records:
        raise PredictError(f"{run} has no checkpoints: it was trained before mepipe kept trained models, or with "
                           "--checkpoints none; train it again (mepipe train ... --final)")
    if fold is None:
        finals = [record for record in records if record.get("fold") is None]
        if not finals:
            subjects = sorted({_short(record["test_subject"]) for record in records})
            raise PredictError(f"{run} has no final model (it was trained without --final): train with --final, or "
                               f"apply one fold's model with --fold SUBJECT ({', '.join(subjects)})")
        return finals[0]
    matching = [record for record in records if record.get("test_subject") is not None
                and fold in (record["test_subject"], _short(record["test_subject"]))]
    if not matching:
        subjects = sorted({_short(record["test_subject"]) for record in records if record.get("test_subject")})
        raise PredictError(f"{run} has no model of a fold testing {fold!r}; folds kept: "
                           + (", ".join(subjects) or "none"))
    seeds = sorted({record["seed"] for record in matching})
    chosen = seeds[0] if seed is None else seed
    if chosen not in seeds:
        raise PredictError(f"{run}: the fold of {fold} is kept for seeds {', '.join(map(str, seeds))}, not {seed}")
    return next(record for record in matching if record["seed"] == chosen)


def decode_clip(video: str | Path | None = None, frames: str | Path | None = None) -> tuple[np.ndarray, float | None, str]:
    """(T, H, W, 3) RGB (or (T, H, W) gray) uint8 frames, the frame rate the file declares (None
    for a folder) and a description of the source. Exactly one of ``video``, ``frames``."""
    from mepipe.pipeline.frames import FrameError, decode_frames
    from mepipe.pipeline.video import read_video

    if (video is None) == (frames is None):
        raise PredictError("give the clip as --video FILE or --frames FOLDER (one of them)")
    try:
        if video is not None:
            decoded = read_video(video, colour=True)
            return decoded.frames, decoded.fps, str(video)
        return decode_frames(frame_files(frames), colour=True), None, str(frames)
    except FrameError as error:
        raise PredictError(str(error)) from None


def frame_files(folder: str | Path) -> list[Path]:
    """The image files of ``folder`` in time order, numbered as a manifest's frame folders are
    (``datasets.manifest``): by the last run of digits in each name (``img46.jpg`` is 46); by name
    when no file has a number. Hidden files are not frames."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PredictError(f"--frames {folder}: " + ("is a file, not a folder of frames (a video? use --video)"
                                                     if folder.exists() else "does not exist"))
    files = [path for path in folder.iterdir()
             if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise PredictError(f"--frames {folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    numbers = {path: frame_number_of(path.name) for path in files}
    if any(number is None for number in numbers.values()):
        return sorted(files)
    if len(set(numbers.values())) < len(numbers):
        repeated = min(number for number in numbers.values() if list(numbers.values()).count(number) > 1)
        raise PredictError(f"--frames {folder}: frame number {repeated} is in more than one file name")
    return sorted(files, key=numbers.__getitem__)


def resolve_positions(count: int, onset: int | None, apex: int | None, offset: int | None) -> tuple[int, int | None, int, list[str]]:
    """Onset, apex (None: to be spotted) and offset checked against a clip of ``count`` frames."""
    notes = []
    last = count - 1
    if onset is None and offset is None:
        notes.append(f"no --onset/--offset: the whole clip is used (onset 0, offset {last})")
    onset = 0 if onset is None else onset
    offset = last if offset is None else offset
    for name, value in (("--onset", onset), ("--apex", apex), ("--offset", offset)):
        if value is not None and not 0 <= value <= last:
            raise PredictError(f"{name} {value} is outside the clip: it has {count} frames, positions 0..{last}")
    if onset >= offset:
        raise PredictError(f"--onset {onset} must come before --offset {offset}")
    if apex is not None and not onset < apex <= offset:
        raise PredictError(f"--apex {apex} must lie after --onset {onset} and not after --offset {offset}")
    if apex is None:
        notes.append("no --apex: spotted as the frame of largest facial motion (features.apex)")
    return onset, apex, offset, notes


def predict_clip(run: str | Path, *, video=None, frames=None, onset: int | None = None, apex: int | None = None,
                 offset: int | None = None, fold: str | None = None, seed: int | None = None, fps: float | None = None,
                 action_units: str | None = None, device: str = "cpu") -> Prediction:
    """Apply run ``run``'s final model (or the model of ``fold``) to one clip; see the module."""
    from mepipe.models.training import resolve_device
    from mepipe.pipeline.tasks import SampleFailure, compute_clip

    record = choose_checkpoint(run, fold, seed)
    device = resolve_device(device)
    try:
        checkpoint = load_checkpoint(record["path"], device)
    except CheckpointError as error:
        raise PredictError(str(error)) from None
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    clip, file_fps, source = decode_clip(video, frames)
    seconds["decode"] = time.perf_counter() - start
    onset, apex, offset, notes = resolve_positions(len(clip), onset, apex, offset)
    group_name, group = _group_of(record)
    params, variant = _build_params(group, record)
    if fps is not None:
        rate = float(fps)
    elif file_fps is not None:
        rate = file_fps
    elif group.get("fps"):
        rate = float(group["fps"])
        notes.append(f"frame rate {rate:g} fps: the training group {group_name}'s (give --fps for another)")
    else:
        raise PredictError(f"{record['path']}: no frame rate recorded for {group_name}; give --fps")
    artifacts = _artifacts_of(checkpoint.recipe)
    try:
        computed = compute_clip(clip, onset, apex, offset, rate, params, variant, artifacts)
    except SampleFailure as failure:
        raise PredictError(f"{source}: {failure}") from None
    seconds.update({name: value for name, value in computed.seconds.items() if name not in ("decode", "write")})
    begin = time.perf_counter()
    data = _loaded(checkpoint, computed, variant, source, action_units)
    try:
        x = checkpoint.recipe.inputs(data, checkpoint.options)
    except ValueError as error:
        raise PredictError(f"{source}: {error}") from None
    seconds["inputs"] = time.perf_counter() - begin
    begin = time.perf_counter()
    predicted, scores = checkpoint.trained.predict(x, device)
    seconds["model"] = time.perf_counter() - begin
    classes = checkpoint.classes
    score_row = scores[0]
    probabilities = None
    if checkpoint.trained.head is None:
        probabilities = dict(zip(classes, torch.softmax(torch.from_numpy(np.asarray(score_row, np.float64)), 0).tolist()))
    images = x.images if hasattr(x, "images") else x
    frames_clip = computed.clips["frames"]
    return Prediction(
        model=checkpoint.recipe.name, checkpoint=str(checkpoint.path), test_subject=record.get("test_subject"),
        source=source, frames=len(clip), onset=onset, apex=computed.apex,
        offset=offset, apex_source="given" if apex is not None else "spotted", fps=rate,
        predicted=classes[int(predicted[0])], scores=dict(zip(classes, map(float, score_row))),
        probabilities=probabilities, seconds=seconds, notes=notes,
        onset_image=frames_clip[onset], apex_image=frames_clip[computed.apex],
        model_input=np.asarray(images[0], np.float32), input_channels=tuple(checkpoint.recipe.input_channels),
    )


def _short(subject: str | None) -> str:
    return "" if subject is None else subject.split("/")[-1]


def _group_of(record: dict) -> tuple[str, dict]:
    """The training group whose build parameters the clip is computed with: the fold's test
    subject's group, else the first group the run read."""
    groups = record["inputs"]["groups"]
    subject = record.get("test_subject")
    name = subject.split("/")[0] if subject and subject.split("/")[0] in groups else next(iter(groups))
    return name, groups[name]


def _build_params(group: dict, record: dict):
    from mepipe.pipeline.params import PARAM_TYPES, ParamError
    from mepipe.pipeline.variants import Variant

    params = {}
    for name, kind in PARAM_TYPES.items():
        stored = group["params"].get(name, {})
        try:
            params[name] = kind(**stored)
        except TypeError as error:
            raise PredictError(f"{record['path']}: the recorded {name} parameters do not fit this mepipe ({error})") from None
    try:
        for value in params.values():
            value.validate()
    except ParamError as error:
        raise PredictError(f"{record['path']}: {error}") from None
    recorded = record["inputs"].get("variant")
    variant = Variant(recorded["size"], recorded["colour"], recorded["eye_fill"]) if recorded else Variant.of_face(group["params"].get("face", {}))
    return params, variant


def _artifacts_of(recipe) -> tuple[str, ...]:
    from mepipe.pipeline.load import ARRAY_ARTIFACT, RAGGED_ARTIFACT

    return tuple(dict.fromkeys(ARRAY_ARTIFACT.get(name) or RAGGED_ARTIFACT[name] for name in recipe.artifacts))


def _loaded(checkpoint, computed, variant, source: str, action_units: str | None):
    """The computed clip as a one-sample :class:`~mepipe.pipeline.load.LoadedData`, as ``load``
    returns a stored sample: what the recipe's ``inputs`` reads."""
    from mepipe.pipeline.artifacts import ARTIFACTS, array_specs
    from mepipe.pipeline.load import LoadedData

    arrays: dict = {}
    channels: dict = {}
    for name in checkpoint.recipe.artifacts:
        if name in computed.arrays:
            arrays[name] = computed.arrays[name][None]
        elif name in computed.clips:
            arrays[name] = [computed.clips[name]]
    for artifact in ARTIFACTS:
        for spec in array_specs(artifact, variant.colour):
            if spec.name in arrays:
                channels[spec.name] = spec.channels
    if checkpoint.recipe.name == "cva" and getattr(checkpoint.options, "use_au", False) and not action_units:
        raise PredictError("CVA reads the clip's FACS action units beside its frames: give --action-units "
                           "(e.g. 4+12), or use a run trained with -s use_au=false")
    meta = {"sample_id": np.array([f"predict/{Path(source).name}"], dtype=object),
            "action_units": np.array([action_units or ""], dtype=object)}
    return LoadedData("predict", None, arrays, meta, (), [], [], variant=variant, channels=channels)
