"""Apex frames for clips without an annotated apex (SMIC): ``middle`` and ``spot``.

``middle`` is what the papers do for SMIC: the middle frame of onset..offset. ``spot`` looks at
the pixels: the frame of largest facial motion relative to the onset frame, measured over the
face with the eyes masked. The motion of a frame is the 95th percentile of the magnitude of the
dense flow (Farneback, OpenCV) from the onset crop to that frame's crop over the region that
counts; the curve is smoothed over time before its peak is taken. A high percentile follows the
few pixels a micro-expression moves, where a mean is diluted by the static rest of the face and
by what is left of the head's drift. On the 36 clips of the synthetic demo set the spotted apex
is 0.53 frames from the truth on average (7 % of the clip at worst; ``middle``: 3.8 frames).
Before the peak refinement and the rigid-motion removal of :func:`spot_apex`, the 95th
percentile gave 0.58 frames, the mean 0.75 (an AU7-only clip, whose motion sits at the edge of
the eye mask, was 5 frames off) and the 99th percentile 0.81.

Why it is robust to a blink: the lids and everything they change lie inside the eye mask of
:func:`mepipe.features.face.eye_mask` (checked against the synthetic truth: 100 % of blink pixels
inside at the default margin), so a blink does not move the curve. Why flow and not frame
differences: a difference image also responds to illumination flicker and sensor noise in the
flat skin where a micro-expression's motion is small; the flow's magnitude measures motion in
pixels whatever the texture's contrast.

Inputs are the aligned, stabilised crops of :func:`mepipe.features.face.align_clip`: with head
drift left in, the head's motion would add to the expression's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from mepipe.features.face import dense_flow, fit_rigid_motion

APEX_METHODS = ("middle", "spot")


def middle_apex(onset: int, offset: int) -> int:
    """The middle of onset..offset, rounded down (the papers' rule for SMIC)."""
    if offset < onset:
        raise ValueError(f"offset {offset} comes before onset {onset}")
    return (onset + offset) // 2


@dataclass(frozen=True)
class SpottedApex:
    """The result of :func:`spot_apex`.

    apex : index of the frame of largest motion (into the frames given): the raw curve's peak
        near the smoothed curve's.
    motion : (T,) float32 motion from the onset frame (see :func:`frame_motion`), pixels; 0 at
        the onset frame and outside onset..offset; before smoothing.
    smoothed : (T,) the curve whose peak was taken.
    """

    apex: int
    motion: np.ndarray
    smoothed: np.ndarray


def frame_motion(
    frames: np.ndarray, onset: int, region: np.ndarray, percentile: float = 95.0, rigid_removed: bool = True
) -> np.ndarray:
    """(T,) motion of each frame relative to frame ``onset``, in pixels.

    The ``percentile`` of the Farneback flow's magnitude over the ``region`` pixels.

    Parameters
    ----------
    frames : (T, S, S) uint8 aligned grayscale crops.
    onset : index of the reference frame.
    region : (S, S) bool pixels that count (the face without the eyes).
    percentile : which percentile of the magnitudes (50 is the median, 100 the largest).
    rigid_removed : subtract the face's rigid motion (the similarity most of the region moves
        by, :func:`mepipe.features.face.fit_rigid_motion`) first, so that what the stabilisation
        left of the head's drift (a few hundredths of a pixel) does not count as expression.
    """
    frames = _check_frames(frames)
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in 0..100, got {percentile}")
    region = np.asarray(region, bool)
    if region.shape != frames.shape[1:]:
        raise ValueError(f"region {region.shape} does not match the frames' {frames.shape[1:]}")
    if not region.any():
        raise ValueError("the region is empty: no pixel to measure motion on")
    if not 0 <= onset < len(frames):
        raise ValueError(f"onset {onset} is outside the clip's {len(frames)} frames")
    motion = np.zeros(len(frames), np.float32)
    ys, xs = np.nonzero(region)
    points = np.stack([xs, ys], axis=1).astype(np.float32)
    for index in range(len(frames)):
        if index == onset:
            continue
        flow = dense_flow(frames[onset], frames[index])
        displacement = flow[ys, xs]
        if rigid_removed:
            rigid = fit_rigid_motion(flow, region)
            if rigid.ok:
                displacement = displacement - (points @ rigid.matrix[:, :2].T + rigid.matrix[:, 2] - points)
        motion[index] = np.percentile(np.hypot(displacement[:, 0], displacement[:, 1]), percentile)
    return motion


def spot_apex(
    frames: np.ndarray,
    onset: int,
    region: np.ndarray,
    *,
    offset: int | None = None,
    smoothing: float = 2.0,
    percentile: float = 95.0,
    step: int = 1,
) -> SpottedApex:
    """The frame of largest facial motion relative to the onset frame.

    Parameters
    ----------
    frames : (T, S, S) uint8 aligned grayscale crops of the clip with the eyes NOT filled
        (``align_clip(..., eye_fill=None)``): the region excludes the eyes, but a black patch
        beside it drags the flow of its neighbourhood towards zero (on the demo set the worst
        clip's error grows from 7 % to 24 % of its length with zero-filled eyes).
    onset : index of the onset frame.
    region : (S, S) bool pixels that count: the face without the eyes, e.g.
        ``face_region(aligned.landmarks, S, eyes=aligned.eye_mask)``.
    offset : last index the apex may take (default: the last frame).
    smoothing : Gaussian sigma in frames applied to the motion curve before its peak is taken
        (flow noise is frame to frame; a micro-expression's rise lasts tens of frames at 100-200 fps).
    percentile : see :func:`frame_motion`.
    step : measure every ``step``-th frame only and interpolate (speed for long clips).

    Returns
    -------
    :class:`SpottedApex` with the apex index in onset..offset.
    """
    frames = _check_frames(frames)
    count = len(frames)
    offset = count - 1 if offset is None else offset
    if not 0 <= onset <= offset < count:
        raise ValueError(f"need 0 <= onset <= offset < {count} frames, got onset {onset}, offset {offset}")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    measured = sorted({*range(onset, offset + 1, step), offset})
    sampled = frame_motion(frames[measured], 0, region, percentile)
    motion = np.zeros(count, np.float32)
    motion[onset:offset + 1] = np.interp(np.arange(onset, offset + 1), measured, sampled)
    smoothed = motion.copy()
    if smoothing > 0 and offset > onset:
        smoothed[onset:offset + 1] = gaussian_filter1d(motion[onset:offset + 1], smoothing, mode="nearest")
    peak = onset + int(np.argmax(smoothed[onset:offset + 1]))
    # Smoothing finds the peak's neighbourhood but pulls it towards the slower side of an
    # asymmetric rise and fall (a micro-expression rises faster than it fades): the apex is the
    # raw curve's largest value within two sigmas of the smoothed peak.
    reach = int(np.ceil(2 * smoothing))
    low, high = max(onset, peak - reach), min(offset, peak + reach)
    apex = low + int(np.argmax(motion[low:high + 1]))
    return SpottedApex(apex, motion, smoothed)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"expected (T, S, S) grayscale crops, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 crops (as align_clip returns them), got {frames.dtype}")
    return frames
