"""Absolute and relative residual-sum images (ARS, RRS) of a micro-expression clip.

Zhao Y., Chen Z., Luo S. (2021). Micro-Expression Recognition Based on Pixel Residual Sum and
Cropped Gaussian Pyramid. *Front. Neurobot.* 15:746985, section 3.1, equations (1)-(7).

Both images sum, over a few key frames of the clip, the absolute difference of each pixel to the
clip's start frame: ARS keeps the sum modulo 256 (equation (5)), RRS stretches it to
[gmin, gmax] (equations (6)-(7)). Frames come in as an array ``(T, H, W)`` (gray) or
``(T, H, W, 3)`` (RGB; any channel count C works the same way) with onset, apex and offset given
as indices into its first axis; every function is pure (no I/O).

Colour. The paper defines both images on "the three-channel image (x, y, z)": ``Q_f(x, y, z)``,
``ares(x, y, z)``, ``diff(x, y, z)`` and ``rres(x, y, z)`` carry the channel z, so the residuals,
their sum ``diff`` and the modulo are taken channel by channel: the ARS (and ``diff``) of an RGB
clip is, channel for channel, the gray ARS of that channel alone. RRS is not separable that way:
equation (7) stretches with ``min(diff)`` and ``max(diff)`` of the whole array (below), one range
for the three channels, so an RRS channel equals the gray RRS of that channel only up to an affine
map (the channel's own range inside the joint one). The paper writes no per-channel
normalisation: nothing in section 3.1 scales a channel on its own.

Readings chosen where the paper is ambiguous
--------------------------------------------
Equation (4), the key frames: ``F = {min(start + gap, end), min(start + gap*2, end), ..., end}``
with ``gap = ceil((end - start) / (N_key + 1))`` (equation (3)). We read the pattern
``min(start + k*gap, end)`` as continued for ``k = 1, 2, ...`` until it reaches ``end``; since
``(N_key + 1) * gap >= end - start`` that happens at ``k <= N_key + 1``. ``F`` is a set, so a
clamped term repeated at ``end`` counts once. ``F`` therefore holds at most ``N_key`` frames
strictly inside the clip, plus ``end``: exactly five frames for the common ``end - start = 10``
(gap 2: start+2, ..., start+10), six for e.g. ``end - start = 30`` (gap 5), fewer for short clips.
The start frame is never in ``F`` (its residual is zero anyway).

Equation (5), the modulo: each residual ``|Q_f - Q_start|`` is the exact absolute difference
(what ``cv2.absdiff`` gives for uint8, not ``np.abs(a - b)`` on uint8, which wraps before the
absolute value), the sum over ``F`` is exact (int64 for integer frames, float64 for float frames),
and ``% 256`` is taken once, on that sum. This equals accumulating the exact residuals in uint8
with wrap-around. Float frames are taken to be on the 0..255 scale; their modulo is the float
remainder.

Equation (7), the range: ``min(diff)`` and ``max(diff)`` run over the whole ``diff`` array, all
pixels and all channels ``(x, y, z)``: the paper writes them without coordinates, next to
``diff(x, y, z)`` with all three, and a per-channel range would be a min over (x, y) at each z,
which it does not write. One range keeps the ratios between channels (a channel that barely moved
stays dark instead of being stretched to full scale like the others). A constant ``diff``
(``max == min``, e.g. a static clip) has no range to stretch; it maps to ``gmin``.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np

#: Number of key frames N_key of equation (3); "N_key is set to five in the paper" (Zhao et al. 2021).
N_KEY_FRAMES = 5
#: Clip length rule of equation (2): the clip ends 10 frames after onset when the apex is closer.
SHORT_APEX_FRAMES = 10
#: Output range [gmin, gmax] of equation (7): "In this experiment, gmin = 0 and gmax = 255".
RRS_RANGE = (0.0, 255.0)


@dataclass(frozen=True)
class ResidualFrames:
    """Frames an ARS/RRS image is made of, as indices into the clip's frame array.

    ``start`` is the reference frame ``Q_start`` (equation (1)), ``end`` the last frame of the
    selected clip (equation (2)) and ``key_frames`` the set F of equation (4), ascending.
    """

    start: int
    end: int
    key_frames: tuple[int, ...]


def select_residual_frames(onset: int, apex: int, offset: int, n_key: int = N_KEY_FRAMES) -> ResidualFrames:
    """The start frame, end frame and key frames F of equations (1)-(4) of Zhao et al. (2021).

    Parameters
    ----------
    onset, apex, offset : frame indices of the micro-expression, ``onset <= apex`` and
        ``onset < offset``. An apex after the offset is accepted: equation (2) then ends the clip
        at the offset.
    n_key : N_key of equation (3), default 5 as in the paper.

    Returns
    -------
    ResidualFrames with ``start = onset`` (equation (1)),
    ``end = min(onset + 10, offset)`` if ``apex - onset < 10`` else ``min(apex, offset)``
    (equation (2)), and ``key_frames`` = F, read as described in the module docstring
    (at most ``n_key`` frames strictly between ``start`` and ``end``, then ``end``).
    """
    onset, apex, offset = (_index(v, name) for v, name in ((onset, "onset"), (apex, "apex"), (offset, "offset")))
    n_key = _index(n_key, "n_key")
    if n_key < 1:
        raise ValueError(f"n_key must be at least 1, got {n_key}")
    if not onset < offset:
        raise ValueError(f"expected onset < offset (frame indices), got onset {onset}, offset {offset}")
    if apex < onset:
        raise ValueError(f"expected onset <= apex (frame indices), got onset {onset}, apex {apex}")
    start = onset
    if apex - onset < SHORT_APEX_FRAMES:
        end = min(onset + SHORT_APEX_FRAMES, offset)
    else:
        end = min(apex, offset)
    gap = math.ceil((end - start) / (n_key + 1))  # end > start here, so gap >= 1
    key_frames = sorted({min(start + k * gap, end) for k in range(1, n_key + 2)})
    return ResidualFrames(start=start, end=end, key_frames=tuple(key_frames))


def residual_sum(frames: np.ndarray, onset: int, apex: int, offset: int, n_key: int = N_KEY_FRAMES) -> np.ndarray:
    """``diff`` of equation (6): the sum over the key frames of ``|Q_f - Q_start|``, per pixel and channel.

    Parameters
    ----------
    frames : (T, H, W) gray or (T, H, W, 3) RGB array of a clip (any channel count C), integer
        or float pixel values (0..255 for 8-bit video, e.g. uint8). The residual is taken per
        channel for colour frames, as equation (6) writes ``diff(x, y, z)``.
    onset, apex, offset : indices into ``frames``' first axis (see :func:`select_residual_frames`).
    n_key : N_key of equation (3), default 5.

    Returns
    -------
    (H, W) or (H, W, 3) array of exact sums, in pixel-value units: int64 for integer frames,
    float64 for float frames. Channel z is the gray result of ``frames[..., z]`` alone.
    """
    clip = _check_frames(frames)
    selection = _select_in_clip(clip.shape[0], onset, apex, offset, n_key)
    work_dtype = np.int64 if np.issubdtype(clip.dtype, np.integer) else np.float64
    reference = clip[selection.start].astype(work_dtype)
    total = np.zeros(reference.shape, work_dtype)
    for index in selection.key_frames:
        total += np.abs(clip[index].astype(work_dtype) - reference)
    return total


def absolute_residual_sum(
    frames: np.ndarray, onset: int, apex: int, offset: int, n_key: int = N_KEY_FRAMES
) -> np.ndarray:
    """ARS image, equation (5) of Zhao et al. (2021): ``(sum_f |Q_f - Q_start|) % 256``.

    Parameters
    ----------
    frames : (T, H, W) gray or (T, H, W, 3) RGB array of a clip (any channel count C), integer
        or float pixel values on the 0..255 scale (8-bit video, e.g. uint8).
    onset, apex, offset : indices into ``frames``' first axis (see :func:`select_residual_frames`).
    n_key : N_key of equation (3), default 5.

    Returns
    -------
    (H, W) or (H, W, 3) float32 in [0, 256): whole numbers 0..255 for integer frames. The sum is
    exact and reduced modulo 256 once (see the module docstring for this reading). Computed per
    channel, ``ares(x, y, z)`` of equation (5): channel z is the gray ARS of ``frames[..., z]``.
    """
    total = residual_sum(frames, onset, apex, offset, n_key)
    return np.mod(total, 256).astype(np.float32)


def relative_residual_sum(
    frames: np.ndarray,
    onset: int,
    apex: int,
    offset: int,
    n_key: int = N_KEY_FRAMES,
    value_range: tuple[float, float] = RRS_RANGE,
    per_channel: bool = False,
) -> np.ndarray:
    """RRS image, equations (6)-(7) of Zhao et al. (2021): ``diff`` min-max stretched to [gmin, gmax].

    Parameters
    ----------
    frames : (T, H, W) gray or (T, H, W, 3) RGB array of a clip (any channel count C), integer
        or float pixel values (e.g. uint8).
    onset, apex, offset : indices into ``frames``' first axis (see :func:`select_residual_frames`).
    n_key : N_key of equation (3), default 5.
    value_range : (gmin, gmax) of equation (7), default (0, 255) as in the paper.
    per_channel : stretch each channel of an RGB clip by its own min and max (three gray RRS
        images side by side) instead of one range over all channels as equation (7) writes it.

    Returns
    -------
    (H, W) or (H, W, 3) float32 in [gmin, gmax]: ``(diff - min(diff)) / (max(diff) - min(diff))
    * (gmax - gmin) + gmin``, evaluated in float64 and rounded to float32 once, with ``diff``
    per channel (equation (6)) and one min and one max over all pixels and channels (equation (7)
    as written; see the module docstring), so an RGB result is not three gray RRS images side by
    side; ``gmin`` everywhere when ``diff`` is constant.
    """
    gmin, gmax = (float(v) for v in value_range)
    if not gmin < gmax:
        raise ValueError(f"value_range must be (gmin, gmax) with gmin < gmax, got {value_range}")
    diff = residual_sum(frames, onset, apex, offset, n_key).astype(np.float64)
    if per_channel and diff.ndim == 3:
        return np.stack([_stretch(diff[..., c], gmin, gmax) for c in range(diff.shape[2])], axis=-1)
    return _stretch(diff, gmin, gmax)


def _stretch(diff: np.ndarray, gmin: float, gmax: float) -> np.ndarray:
    low, high = diff.min(), diff.max()
    if high == low:
        return np.full(diff.shape, gmin, np.float32)
    return ((diff - low) / (high - low) * (gmax - gmin) + gmin).astype(np.float32)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    clip = np.asarray(frames)
    if clip.ndim not in (3, 4):
        raise ValueError(f"expected frames of shape (T, H, W) or (T, H, W, C), got shape {clip.shape}")
    if clip.dtype == bool or not (np.issubdtype(clip.dtype, np.integer) or np.issubdtype(clip.dtype, np.floating)):
        raise ValueError(f"expected integer or float pixel values, got dtype {clip.dtype}")
    if 0 in clip.shape:
        raise ValueError(f"expected a non-empty clip, got shape {clip.shape}")
    return clip


def _select_in_clip(n_frames: int, onset, apex, offset, n_key: int) -> ResidualFrames:
    for value, name in ((onset, "onset"), (apex, "apex"), (offset, "offset")):
        index = _index(value, name)
        if not 0 <= index < n_frames:
            raise ValueError(f"{name} must index the clip's {n_frames} frames (0..{n_frames - 1}), got {index}")
    return select_residual_frames(onset, apex, offset, n_key)


def _index(value, name: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer frame index, got {value!r}") from None
