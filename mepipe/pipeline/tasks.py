"""One sample's task: decode its frames, align them once, compute the artifacts asked, write them.

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
from scipy.ndimage import binary_dilation
from threadpoolctl import threadpool_limits

from mepipe.pipeline.artifacts import DEPENDS
from mepipe.pipeline.frames import FrameError, decode_frames
from mepipe.pipeline.lock import holds
from mepipe.pipeline.store import SampleWriter, StoreWriteError, Superseded, read_clip

#: How the reason of a failure that is the build's fault, not the sample's, begins.
INTERNAL_ERROR = "internal error"


@dataclass(frozen=True)
class SampleJob:
    """Everything a task needs, small enough to ship to a remote worker."""

    store: str
    group: str
    index: int
    key: str  # subject/clip, the sample's name within its group
    frames: tuple[str, ...]
    onset: int
    apex: int
    offset: int
    fps: float
    todo: tuple[str, ...]  # artifacts to compute, in dependency order
    params: dict  # artifact -> its parameter dataclass
    keys: dict  # artifact -> cache key
    inputs: str = ""  # input_fingerprint of the frames, kept with a failure
    lock: str = ""  # the group's lock file and this build's token in it: see SampleWriter
    token: str = ""


@dataclass
class SampleResult:
    index: int
    key: str
    computed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # decode, face, <artifact>, write
    frames_decoded: int = 0
    peak_rss_mb: float = 0.0
    worker: str = ""
    superseded: bool = False  # another build took the group over; nothing more was written


class SampleFailure(Exception):
    """This sample cannot be computed; the message says why (it goes to QC)."""


def run_sample(job: SampleJob) -> SampleResult:
    """Compute ``job.todo`` for one sample and write it; never raises for a bad sample."""
    result = SampleResult(job.index, job.key, worker=f"{os.uname().nodename}:{os.getpid()}")
    # One thread per kernel: parallelism is across samples (a thread team per task on a 2-core
    # machine only contends, see docs/benchmarks.md).
    cv2.setNumThreads(1)
    if job.params["flow"].backend == "torch":
        import torch

        torch.set_num_threads(1)
    owner = (lambda: holds(job.lock, job.token)) if job.lock else None
    with threadpool_limits(1):
        try:
            writer = SampleWriter(job.store, job.group, job.index, job.key, owner=owner)
            writer.check_owner()
        except Superseded:
            result.superseded = True
            return result
        failures: dict[str, dict] = {}
        try:
            _compute(job, writer, result)
        except Superseded:
            result.superseded = True
            return result
        except StoreWriteError:
            raise
        except SampleFailure as failure:
            reason = str(failure)
            for name in job.todo:
                if name not in result.computed and name not in result.failed:
                    result.failed[name] = reason
        except Exception as error:  # a bug or an unforeseen input: keep the build going, say where
            reason = f"{INTERNAL_ERROR}: {type(error).__name__}: {error}"
            for name in job.todo:
                if name not in result.computed and name not in result.failed:
                    result.failed[name] = reason
        for name, reason in result.failed.items():
            failures[name] = {"reason": reason, "key": job.keys[name], "inputs": job.inputs}
        previous = writer.group["qc"]["failures"][job.index]
        merged = json.loads(str(previous)) if str(previous) else {}
        for name in job.todo:
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


def _compute(job: SampleJob, writer: SampleWriter, result: SampleResult) -> None:
    from mepipe.features.face import FaceNotFoundError, align_clip, face_region, fill_eyes

    face_params = job.params["face"]
    apex = job.apex
    if "face" in job.todo:
        with _timed(result, "decode"):
            try:
                frames = decode_frames(job.frames)
            except FrameError as error:
                raise SampleFailure(str(error)) from None  # "frames: <file> <what is wrong>"
        result.frames_decoded = len(frames)
        with _timed(result, "face"):
            try:
                aligned = align_clip(
                    frames, job.onset, size=face_params.size, mode=face_params.mode, stabilize=face_params.stabilize,
                    eye_margin=face_params.eye_margin, eye_fill=None,
                    check_frames=[apex] if apex != job.onset else None,
                )
            except FaceNotFoundError as error:
                raise SampleFailure(f"face: {error}") from None
            except ValueError as error:
                raise SampleFailure(f"face: {error}") from None
            crops, mask = aligned.frames, aligned.eye_mask
            if face_params.apex == "spot" and job.offset > job.onset:
                from mepipe.features.apex import spot_apex

                region = face_region(aligned.landmarks, face_params.size, eyes=mask)
                apex = spot_apex(crops, job.onset, region, offset=job.offset).apex
        del frames
        with _timed(result, "write"):
            quality = aligned.quality
            writer.ragged("frames", crops)
            writer.array("eye_mask", mask[None])
            writer.array("face", _filled(crops[[job.onset, apex]], mask, face_params.eye_fill, fill_eyes))
            writer.scalar("apex_used", apex)
            writer.qc(
                detector_score=quality.detector_score, inter_ocular_px=quality.inter_ocular_px, roll_degrees=quality.roll_degrees,
                head_motion_px=quality.head_motion_px, residual_motion_px=quality.residual_motion_px,
                eye_aspect_ratio=quality.eye_aspect_ratio, fallback=quality.fallback,
            )
            writer.done("face")
        result.computed.append("face")
    else:
        with _timed(result, "read"):
            crops = read_clip(writer.group, "frames", job.key)
            mask = writer.group["eye_mask"][job.index, 0].astype(bool)
            apex = int(writer.group["apex_used"][job.index])
    filled = _filled(crops, mask, face_params.eye_fill, fill_eyes)
    mask_flow = face_params.eye_fill != "none"
    flow = magnified = None
    for name in job.todo:
        if name == "face":
            continue
        failed_inputs = [dep for dep in DEPENDS[name] if dep in result.failed]
        if failed_inputs:
            result.failed[name] = f"not computed: {', '.join(failed_inputs)} failed"
            continue
        try:
            with _timed(result, name):
                if name == "flow":
                    value = flow = _flow(crops, job.onset, apex, job.params["flow"], mask if mask_flow else None)
                elif name == "strain":
                    if flow is None:
                        flow = writer.group["flow"][job.index]
                    value = _strain(flow, job.params["strain"].normalize, mask if mask_flow else None)
                elif name == "residual":
                    value = _residual(filled, job.onset, apex, job.offset, job.params["residual"].n_key)
                elif name == "dynamic":
                    value = _dynamic(filled, job.onset, apex, job.params["dynamic"])
                elif name == "magnified":
                    value = _magnify(filled, job.fps, job.params["magnified"])
                elif name == "magnified_flow":
                    if magnified is None:
                        magnified = read_clip(writer.group, "magnified", job.key)
                    motion = _flow(magnified, job.onset, apex, job.params["flow"], mask if mask_flow else None)
                    strain = _strain(motion, "none", mask if mask_flow else None)
                    value = np.concatenate([motion, strain], axis=0)
                else:
                    raise ValueError(f"unknown artifact {name!r}")
        except SampleFailure as failure:
            result.failed[name] = str(failure)
            continue
        with _timed(result, "write"):
            if name == "magnified":
                magnified = value
                writer.ragged("magnified", value)
            else:
                writer.array(name, value)
            writer.done(name)
        result.computed.append(name)


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


def _residual(frames, onset, apex, offset, n_key):
    from mepipe.features.residual import absolute_residual_sum, relative_residual_sum

    try:
        return np.stack([absolute_residual_sum(frames, onset, apex, offset, n_key), relative_residual_sum(frames, onset, apex, offset, n_key)])
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
