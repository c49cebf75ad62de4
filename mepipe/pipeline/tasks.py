"""One sample's task: decode its frames, align them once, compute the artifacts asked, write them.

A sample is built in one or more input variants (``pipeline.variants``) in the same task: the
frames are decoded, the face found and the alignment estimated once (at ``GEOMETRY_SIZE``), each
variant's crops are warped from that one transform, and artifacts that do not depend on colour or
the eye mask (the flow, the magnified clip and its flow) are computed once per crop size.

This function is the body of every task of the build graph. It runs on a worker, opens the store
itself and writes only that sample's chunks, then sets each artifact's completion flag after its
data is written. Raw frames never leave it; what it returns is a small record of what happened.

A sample that cannot be computed (no face, unreadable frames, onset = apex for a flow) is not an
error of the build: the reason is written to ``qc/failures`` with the artifact's cache key and a
fingerprint of the clip's files, and returned. A write to the store that fails (disk full) is the
build's error, not the sample's: it is raised, so the build stops with nothing wrongly marked.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import zarr
from scipy.ndimage import binary_dilation
from threadpoolctl import threadpool_limits

from mepipe.features.face import to_gray
from mepipe.pipeline.artifacts import DEPENDS
from mepipe.pipeline.frames import FrameError, decode_frames
from mepipe.pipeline.lock import holds
from mepipe.pipeline.store import SampleWriter, StoreWriteError, Superseded, _clip_path, read_clip
from mepipe.pipeline.variants import GEOMETRY_SIZE, Variant

#: How the reason of a failure that is the build's fault, not the sample's, begins.
INTERNAL_ERROR = "internal error"


@dataclass(frozen=True)
class VariantJob:
    """One input variant of the sample: where it is stored and what it lacks there."""

    group: str  # the variant's group in the store, e.g. ``casme2`` or ``casme2/variants/320-rgb-eyes-kept``
    index: int  # the sample's row in that group
    variant: Variant
    todo: tuple[str, ...]  # artifacts to compute, in dependency order
    keys: dict  # artifact -> cache key (in this variant)
    inputs: str = ""  # input_fingerprint of the frames, kept with a failure


@dataclass(frozen=True)
class SampleJob:
    """Everything a task needs, small enough to ship to a remote worker.

    One job per clip, whatever the number of variants it is built in: the frames are decoded,
    the face found and the alignment estimated once, then each variant gets its own crops.
    """

    store: str
    key: str  # subject/clip, the sample's name within its group
    frames: tuple[str, ...]
    onset: int
    apex: int
    offset: int
    fps: float
    params: dict  # artifact -> its parameter dataclass (``face``: the build's; each variant sets size, colour, eye_fill)
    variants: tuple[VariantJob, ...]
    lock: str = ""  # the group's lock file and this build's token in it: see SampleWriter
    token: str = ""

    @property
    def group(self) -> str:
        return self.variants[0].group

    @property
    def index(self) -> int:
        return self.variants[0].index


@dataclass
class VariantOutcome:
    computed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


@dataclass
class SampleResult:
    index: int  # the row of the job's first variant (the order of the build's report)
    key: str
    variants: dict[str, VariantOutcome] = field(default_factory=dict)  # group -> what happened there
    seconds: dict[str, float] = field(default_factory=dict)  # decode, face, <artifact>, write
    frames_decoded: int = 0
    #: how many times the face detector (and the alignment estimate) ran: at most once per clip,
    #: whatever the number of variants
    face_runs: int = 0
    peak_rss_mb: float = 0.0
    worker: str = ""
    superseded: bool = False  # another build took the group over; nothing more was written

    @property
    def computed(self) -> list[str]:
        return [name for outcome in self.variants.values() for name in outcome.computed]

    @property
    def failed(self) -> dict[str, str]:
        return {name: reason for outcome in self.variants.values() for name, reason in outcome.failed.items()}


class SampleFailure(Exception):
    """This sample cannot be computed; the message says why (it goes to QC)."""


def run_sample(job: SampleJob) -> SampleResult:
    """Compute each variant's ``todo`` for one sample and write it; never raises for a bad sample."""
    result = SampleResult(job.index, job.key, {v.group: VariantOutcome() for v in job.variants},
                          worker=f"{os.uname().nodename}:{os.getpid()}")
    # One thread per kernel: parallelism is across samples (a thread team per task on a 2-core
    # machine only contends, see docs/benchmarks.md).
    cv2.setNumThreads(1)
    if job.params["flow"].backend == "torch":
        import torch

        torch.set_num_threads(1)
    owner = (lambda: holds(job.lock, job.token)) if job.lock else None
    with threadpool_limits(1):
        try:
            writers = {v.group: SampleWriter(job.store, v.group, v.index, job.key, owner=owner) for v in job.variants}
            next(iter(writers.values())).check_owner()
        except Superseded:
            result.superseded = True
            return result
        try:
            _compute(job, writers, result)
        except Superseded:
            result.superseded = True
            return result
        except StoreWriteError:
            raise
        except SampleFailure as failure:
            _fail_rest(job, result, str(failure))
        except Exception as error:  # a bug or an unforeseen input: keep the build going, say where
            _fail_rest(job, result, f"{INTERNAL_ERROR}: {type(error).__name__}: {error}")
        for variant in job.variants:
            writer, outcome = writers[variant.group], result.variants[variant.group]
            failures = {name: {"reason": reason, "key": variant.keys[name], "inputs": variant.inputs}
                        for name, reason in outcome.failed.items()}
            previous = writer.group["qc"]["failures"][variant.index]
            merged = json.loads(str(previous)) if str(previous) else {}
            for name in variant.todo:
                merged.pop(name, None)
            merged.update(failures)
            try:
                writer.check_owner()
            except Superseded:
                result.superseded = True
                return result
            writer.qc(failures=json.dumps(merged, sort_keys=True) if merged else "", status="failed" if merged else "ok")
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _fail_rest(job: SampleJob, result: SampleResult, reason: str) -> None:
    """Record ``reason`` for every artifact of every variant not computed or failed yet."""
    for variant in job.variants:
        outcome = result.variants[variant.group]
        for name in variant.todo:
            if name not in outcome.computed and name not in outcome.failed:
                outcome.failed[name] = reason


def input_fingerprint(paths) -> str:
    """16 hex digits over the name, size and modification time of each of a clip's files.

    A failure is recorded with it, so that a build retries the sample once its files change (a
    truncated frame replaced, a frame added), without reading a byte of them. A missing file
    counts as size -1.
    """
    digest = hashlib.sha256()
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0-1\n".encode())
    return digest.hexdigest()[:16]


def _timed(result: SampleResult, name: str):
    class _Timer:
        def __enter__(self):
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            result.seconds[name] = result.seconds.get(name, 0.0) + time.perf_counter() - self.start

    return _Timer()


#: Frame step of the apex a build spots as QC of an annotated apex (``qc/apex_spotted``).
QC_SPOT_STEP = 3


class _Clip:
    """What the variants of one clip share, computed once and on demand: the decoded frames, the
    alignment, the crops of each size (colour, and their gray), the eye mask of each size, the apex,
    and the unmasked flow and magnified clip of each size."""

    def __init__(self, job: SampleJob, result: SampleResult, writers: dict, decoded: np.ndarray | None = None,
                 check_apex: bool = True) -> None:
        self.job, self.result, self.writers = job, result, writers
        self.decoded = decoded  # frames decoded by the caller (a video, ``mepipe predict``), else read from job.frames
        self.face = job.params["face"]
        self.geometry = None
        self.apex: int | None = None
        # A build also spots the apex of an annotated clip, as QC only (``qc/apex_spotted``): an
        # annotation far from the largest motion is worth a look (``mepipe report``). predict skips it.
        self.check_apex = check_apex
        self.spotted_apex: int | None = None
        self.crops: dict[tuple[int, bool], np.ndarray] = {}
        self.masks: dict[int, np.ndarray] = {}
        self.flows: dict[tuple[str, int], np.ndarray] = {}
        self.magnified: dict[int, np.ndarray] = {}

    def align(self) -> None:
        """Decode the frames, find the face and estimate the alignment; make every variant's crops."""
        from mepipe.features.face import FaceNotFoundError, estimate_clip_geometry, face_region, warp_clip

        job = self.job
        with _timed(self.result, "decode"):
            try:
                frames = self.decoded if self.decoded is not None else decode_frames(job.frames, colour=True)
            except FrameError as error:
                raise SampleFailure(str(error)) from None  # "frames: <file> <what is wrong>"
        self.result.frames_decoded = len(frames)
        apex = job.apex
        with _timed(self.result, "face"):
            self.result.face_runs += 1
            try:
                geometry = estimate_clip_geometry(
                    frames, job.onset, size=GEOMETRY_SIZE, mode=self.face.mode, stabilize=self.face.stabilize,
                    eye_margin=self.face.eye_margin, check_frames=[apex] if apex != job.onset else None,
                )
            except (FaceNotFoundError, ValueError) as error:
                raise SampleFailure(f"face: {error}") from None
            self.geometry = geometry
            sizes = sorted({v.variant.size for v in job.variants})
            spotting = (self.face.apex == "spot" or self.check_apex) and job.offset > job.onset
            # The apex itself is spotted at 224 px. As QC, on the largest crops the build makes
            # anyway, up to 224 px: no extra warp (a build's default variant is 224 px).
            spot_size = GEOMETRY_SIZE if self.face.apex == "spot" else max(
                (size for size in sizes if size <= GEOMETRY_SIZE), default=GEOMETRY_SIZE)
            if spotting and spot_size not in sizes:
                sizes.append(spot_size)
            for size in sizes:
                scaled = geometry.scaled(size)
                colour = warp_clip(frames, scaled, colour=True) if frames.ndim == 4 else None
                self.crops[size, False] = (np.stack([to_gray(frame) for frame in colour]) if colour is not None
                                           else warp_clip(frames, scaled, colour=False))
                if any(v.variant.colour and v.variant.size == size for v in job.variants):
                    self.crops[size, True] = colour if colour is not None else np.repeat(self.crops[size, False][..., None], 3, axis=-1)
                self.masks[size] = scaled.eye_mask(self.face.eye_margin)
        if spotting:
            from mepipe.features.apex import spot_apex

            with _timed(self.result, "apex"):
                # spotted once, on the alignment's own crops, so that every variant has the same apex
                region = face_region(geometry.scaled(spot_size).landmarks, spot_size, eyes=self.masks[spot_size])
                # as QC only, every 3rd frame: 5 times cheaper, and on the demo set as close to the
                # annotation as every frame is, within a third of a frame on average (docs/report.md)
                step = 1 if self.face.apex == "spot" else QC_SPOT_STEP
                try:
                    self.spotted_apex = spot_apex(self.crops[spot_size, False], job.onset, region, offset=job.offset,
                                                  step=step).apex
                except ValueError:
                    if self.face.apex == "spot":
                        raise
                    # as QC only, a clip whose motion cannot be measured keeps its annotated apex unchecked
            if self.face.apex == "spot":
                apex = self.spotted_apex
        self.apex = apex

    def read(self, variant: VariantJob) -> None:
        """Take a variant's stored crops, mask and apex (its face is done and nothing is realigned)."""
        group, size = self.writers[variant.group].group, variant.variant.size
        with _timed(self.result, "read"):
            stored = read_clip(group, "frames", self.job.key)
            if variant.variant.colour:
                self.crops.setdefault((size, True), stored)
                self.crops.setdefault((size, False), np.stack([to_gray(frame) for frame in stored]))
            else:
                self.crops.setdefault((size, False), stored)
            self.masks.setdefault(size, group["eye_mask"][variant.index, 0].astype(bool))
            if self.apex is None:
                self.apex = int(group["apex_used"][variant.index])

    def flow(self, size: int) -> np.ndarray:
        """(2, S, S) TV-L1 flow onset -> apex of the gray crops, eyes kept (not masked)."""
        if ("flow", size) not in self.flows:
            self.flows["flow", size] = _flow(self.crops[size, False], self.job.onset, self.apex, self.job.params["flow"], None)
        return self.flows["flow", size]

    def magnified_clip(self, size: int, group: zarr.Group | None = None) -> np.ndarray:
        if size not in self.magnified:
            if group is not None and "magnified" in group["clips"] and _has_clip(group, "magnified", self.job.key):
                self.magnified[size] = read_clip(group, "magnified", self.job.key)
            else:
                self.magnified[size] = _magnify(self.crops[size, False], self.job.fps, self.job.params["magnified"])
        return self.magnified[size]

    def magnified_flow(self, size: int, group: zarr.Group) -> np.ndarray:
        if ("magnified", size) not in self.flows:
            clip = self.magnified_clip(size, group)
            self.flows["magnified", size] = _flow(clip, self.job.onset, self.apex, self.job.params["flow"], None)
        return self.flows["magnified", size]


def _compute(job: SampleJob, writers: dict, result: SampleResult, decoded: np.ndarray | None = None,
             check_apex: bool = True) -> _Clip:
    from mepipe.features.face import fill_eyes

    clip = _Clip(job, result, writers, decoded, check_apex)
    # one alignment for every variant when any lacks its face; else each reads its stored crops
    if any("face" in v.todo for v in job.variants):
        clip.align()
    else:
        for variant in job.variants:
            clip.read(variant)
    for variant in job.variants:
        writer, outcome = writers[variant.group], result.variants[variant.group]
        size, colour, fill = variant.variant.size, variant.variant.colour, variant.variant.eye_fill
        crops, mask = clip.crops[size, colour], clip.masks[size]
        masked = mask if variant.variant.masked else None
        filled = _filled(crops, mask, fill, fill_eyes)
        apex = clip.apex
        for name in variant.todo:
            failed_inputs = [dep for dep in DEPENDS[name] if dep in outcome.failed]
            if failed_inputs:
                outcome.failed[name] = f"not computed: {', '.join(failed_inputs)} failed"
                continue
            try:
                with _timed(result, name):
                    if name == "face":
                        value = _channels_first(filled[[job.onset, apex]])
                    elif name == "flow":
                        value = _masked(clip.flow(size), masked)
                    elif name == "strain":
                        # the flow this task computed, else the variant's stored one (masked or not,
                        # the strain is the same: see _strain)
                        flow = clip.flows.get(("flow", size))
                        if flow is None:
                            flow = writer.group["flow"][variant.index]
                        value = _strain(flow, job.params["strain"].normalize, masked)
                    elif name == "residual":
                        value = _channels_first(_residual(filled, job.onset, apex, job.offset, job.params["residual"]))
                    elif name == "dynamic":
                        value = _channels_first(_dynamic(filled, job.onset, apex, job.params["dynamic"]))
                    elif name == "magnified":
                        value = clip.magnified_clip(size)
                    elif name == "magnified_flow":
                        motion = _masked(clip.magnified_flow(size, writer.group), masked)
                        value = np.concatenate([motion, _strain(motion, "none", masked)], axis=0)
                    else:
                        raise ValueError(f"unknown artifact {name!r}")
            except SampleFailure as failure:
                outcome.failed[name] = str(failure)
                continue
            with _timed(result, "write"):
                if name == "face":
                    quality = clip.geometry.scaled(size).quality
                    writer.ragged("frames", crops)
                    writer.array("eye_mask", mask[None])
                    writer.array("face", value)
                    writer.scalar("apex_used", apex)
                    writer.qc(
                        detector_score=quality.detector_score, inter_ocular_px=quality.inter_ocular_px,
                        roll_degrees=quality.roll_degrees, head_motion_px=quality.head_motion_px,
                        residual_motion_px=quality.residual_motion_px, eye_aspect_ratio=quality.eye_aspect_ratio,
                        fallback=quality.fallback, detection_frame=quality.detection_frame,
                        landmark_frame=quality.landmark_frame,
                        apex_spotted=np.nan if clip.spotted_apex is None else clip.spotted_apex,
                    )
                elif name == "magnified":
                    writer.ragged("magnified", value)
                else:
                    writer.array(name, value)
                writer.done(name)
            outcome.computed.append(name)
    return clip


# ---------------------------------------------------------------- one clip in memory

@dataclass
class ClipArtifacts:
    """One clip's artifacts computed in memory exactly as a build computes and stores them.

    arrays : array name -> (C, S, S) in the store's dtype (``face``, ``eye_mask``, ``flow``, ...).
    clips : ``frames`` (T, S, S) or (T, S, S, 3) uint8 aligned clip, ``magnified`` where computed.
    apex : the apex the artifacts were computed with (the given one, or the spotted one).
    quality : the face stage's :class:`~mepipe.features.face.FaceQuality` at the crop size.
    seconds : wall seconds per stage: ``decode`` (0 here: the caller decoded), ``face``, each artifact.
    """

    arrays: dict[str, np.ndarray]
    clips: dict[str, np.ndarray]
    apex: int
    quality: object
    seconds: dict[str, float]


class _MemoryWriter:
    """What a task writes, kept in memory, cast to the store's dtypes (``SampleWriter``'s methods)."""

    group = None  # nothing stored to read back: every input of an artifact is computed in the same call

    def __init__(self, variant: Variant) -> None:
        from mepipe.pipeline.artifacts import ARTIFACTS, array_specs

        self.dtypes = {spec.name: spec.dtype for artifact in ARTIFACTS for spec in array_specs(artifact, variant.colour)}
        self.arrays: dict[str, np.ndarray] = {}
        self.clips: dict[str, np.ndarray] = {}

    def array(self, name: str, value) -> None:
        self.arrays[name] = np.asarray(value, dtype=self.dtypes[name])

    def ragged(self, kind: str, clip: np.ndarray) -> None:
        self.clips[kind] = np.asarray(clip)

    def scalar(self, name: str, value) -> None:
        pass

    def qc(self, **values) -> None:
        pass

    def done(self, artifact: str) -> None:
        pass


def compute_clip(frames: np.ndarray, onset: int, apex: int | None, offset: int, fps: float, params: dict,
                 variant: Variant, artifacts) -> ClipArtifacts:
    """``artifacts`` (and what they need) of one decoded clip, with a build's code and ``params``.

    frames : (T, H, W, 3) RGB or (T, H, W) gray uint8, in time order (a video, a frame folder).
    onset, apex, offset : 0-based positions in ``frames``; ``apex`` None spots it (``features.apex``)
        between onset and offset, as a build with ``-p face.apex=spot`` does.
    params : artifact -> parameter dataclass (``pipeline.params``), a build's (those a store
        records); ``face``'s size, colour and eye fill come from ``variant``.
    Raises :class:`SampleFailure` with the build's reason (``face: no face found ...``) when the
    clip cannot give one of ``artifacts``. With the same frames and parameters the arrays equal
    the ones a build stores, bit for bit (one thread per kernel, as a build's task runs).
    """
    from dataclasses import replace

    from mepipe.pipeline.artifacts import with_dependencies

    if apex is None:
        params = {**params, "face": replace(params["face"], apex="spot")}
        apex = onset
    elif params["face"].apex == "spot":
        params = {**params, "face": replace(params["face"], apex="annotation")}
    todo = with_dependencies(artifacts)
    job = SampleJob("", "clip/clip", (), int(onset), int(apex), int(offset), float(fps), params,
                    (VariantJob("memory", 0, variant, todo, {name: "" for name in todo}),))
    result = SampleResult(0, job.key, {"memory": VariantOutcome()})
    writer = _MemoryWriter(variant)
    cv2_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with threadpool_limits(1):
            clip = _compute(job, {"memory": writer}, result, decoded=np.asarray(frames, np.uint8), check_apex=False)
    finally:
        cv2.setNumThreads(cv2_threads)
    failed = result.variants["memory"].failed
    if failed:
        name = next(name for name in todo if name in failed)
        raise SampleFailure(failed[name])
    return ClipArtifacts(writer.arrays, writer.clips, int(clip.apex), clip.geometry.scaled(variant.size).quality,
                         {"decode": 0.0, **result.seconds})


def _channels_first(images: np.ndarray) -> np.ndarray:
    """(K, S, S) gray images as they are; (K, S, S, 3) colour images as (3K, S, S), channels
    ``image0_r, image0_g, image0_b, image1_r, ...`` (the order of ``artifacts.array_specs``)."""
    images = np.asarray(images)
    if images.ndim == 3:
        return images
    return images.transpose(0, 3, 1, 2).reshape(-1, *images.shape[1:3])


def _masked(flow: np.ndarray, mask) -> np.ndarray:
    if mask is None:
        return flow
    flow = flow.copy()
    flow[:, mask] = 0.0
    return flow


def _has_clip(group: zarr.Group, kind: str, key: str) -> bool:
    subject, clip_name = _clip_path(key)
    parent = group["clips"][kind]
    return subject in parent and clip_name in parent[subject]


def _filled(crops, mask, fill: str, fill_eyes):
    return crops if fill == "none" else fill_eyes(crops, mask, fill)


def _flow(clip, onset, apex, params, mask):
    from mepipe.features.flow import tvl1

    if onset == apex:
        raise SampleFailure(f"flow: onset and apex are the same frame ({onset})")
    flow = tvl1(clip[onset], clip[apex], **params.kwargs())
    if mask is not None:
        flow[:, mask] = 0.0
    return flow


def _strain(flow, normalize, mask):
    from mepipe.features.strain import flow_strain_image

    strain = flow_strain_image(np.asarray(flow, np.float32), "none")[2]
    if mask is not None:
        # central differences reach one pixel: zero that ring too, so strain from the stored
        # (eye-zeroed) flow equals strain from the flow before its eyes were zeroed
        strain[binary_dilation(mask, iterations=1)] = 0.0
    if normalize == "minmax":
        low, high = float(strain.min()), float(strain.max())
        strain = (strain - low) / (high - low) if high > low else np.zeros_like(strain)
    return strain[None].astype(np.float32)


def _residual(frames, onset, apex, offset, params):
    from mepipe.features.residual import absolute_residual_sum, relative_residual_sum

    n_key = params.n_key
    try:
        return np.stack([absolute_residual_sum(frames, onset, apex, offset, n_key),
                         relative_residual_sum(frames, onset, apex, offset, n_key, per_channel=params.rrs_range == "channel")])
    except ValueError as error:
        raise SampleFailure(f"residual: {error}") from None


def _dynamic(frames, onset, apex, params):
    from mepipe.features.dynamic import approximate_rank_pooling, dynamic_image_frames, rank_pooling

    if apex <= onset:
        raise SampleFailure(f"dynamic: needs apex after onset, got onset {onset}, apex {apex}")
    pooled = dynamic_image_frames(frames, onset, apex)
    image = rank_pooling(pooled, normalization=params.normalization) if params.method == "rank_svm" else approximate_rank_pooling(pooled)
    return image.image[None]


def _magnify(frames, fps, params):
    from mepipe.features.magnify import magnify_motion

    if len(frames) < 3:
        raise SampleFailure(f"magnified: needs at least 3 frames, the clip has {len(frames)}")
    try:
        magnified = magnify_motion(
            frames, fps=fps, alpha=params.alpha, band=(params.band_low_hz, params.band_high_hz), temporal_filter=params.temporal_filter,
            order=params.order, cutoff_wavelength=params.cutoff_wavelength, attenuation=params.attenuation, clip=(0.0, 255.0),
        )
    except ValueError as error:
        raise SampleFailure(f"magnified: {error}") from None
    return np.rint(magnified).astype(np.uint8)
