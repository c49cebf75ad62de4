"""Eulerian video magnification (linear EVM) of a clip, as the MSMMT paper applies it.

Wu H.-Y., Rubinstein M., Shih E., Guttag J., Durand F., Freeman W. T. (2012). Eulerian Video
Magnification for Revealing Subtle Changes in the World. *ACM Trans. Graph.* 31(4), 65. The MSMMT
paper (Wang F. et al., "Multi-scale multi-modal micro-expression recognition algorithm based on
transformer", section 4.3.1) magnifies its clips with it and finds an amplification factor of 10
best; that is the default here.

Linear EVM: decompose every frame into a spatial Laplacian pyramid, band-pass every level in time,
multiply the band-passed signal of level l by alpha_l, add it back and collapse the pyramid. For a
translation delta(t) inside the band the output translates by about (1 + alpha) delta(t), as long
as ``(1 + alpha) delta(t) < lambda / 8`` for the spatial wavelength lambda (Wu et al., section 3).
Wu et al. keep that bound with a cutoff wavelength lambda_c: a level whose representative
wavelength lambda_l is below lambda_c gets a smaller alpha_l (:func:`level_amplification`).

Implementation notes. The temporal filter is linear and acts on time only, and collapsing a
pyramid is linear and acts on space only, so the two commute: instead of filtering every level
and collapsing, we collapse the alpha_l-weighted levels of each frame to the resolution of level 1,
filter that one (T, H/2, W/2) array in time (one matrix product for the whole clip), and add it
back, expanded, to the frames. Levels that are not amplified (level 0, the low-pass residual) are
never formed: the unamplified part of the output is the input itself (the pyramid reconstructs
exactly). The pyramid is OpenCV's (``cv2.pyrDown`` / ``cv2.pyrUp``), applied to the whole clip at
every level in one call (:func:`pyramid_down`, :func:`pyramid_up`): no Python loop over frames or
pixels.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

#: Amplification factor alpha; the MSMMT paper (section 4.3.1) found 10 best.
AMPLIFICATION = 10.0
#: Cutoff wavelength lambda_c in pixels, Wu et al.'s value with alpha = 10 (their "baby" video,
#: reproduceResultsSiggraph12.m: alpha 10, lambda_c 16). Below it alpha is attenuated; at full
#: alpha the bound (1 + alpha) delta < lambda_c / 8 assumes displacements under 16 / 88 = 0.18 px.
#: Larger motions need a larger lambda_c (8 (1 + alpha) delta) or they break the bound.
CUTOFF_WAVELENGTH = 16.0
#: Temporal pass band in Hz. Micro-expressions last from 1/25 s (the ARS/RRS paper, after Yan et
#: al. 2013, "How fast are the leaked facial expressions: the duration of micro-expressions",
#: J. Nonverbal Behav. 37) to at most 1/2 s (Yan et al.'s upper limit; the MSMMT paper: "no more
#: than 1/2 s"), and one rise-and-fall of duration D has its fundamental at 1/D Hz: 2 Hz for
#: 1/2 s up to 25 Hz for 1/25 s. Faster changes are sensor noise
#: and illumination flicker; slower ones are head drift. Below the Nyquist frequency of SMIC
#: (100 fps, 50 Hz) as well as CASME II and SAMM (200 fps).
PASS_BAND_HZ = (2.0, 25.0)
#: Smallest side in pixels of a pyramid level: the length of the 5-tap binomial filter, as in the
#: matlabPyrTools ``maxPyrHt`` that Wu et al.'s code uses for the number of levels.
MIN_LEVEL_SIDE = 5

TemporalFilter = Literal["ideal", "butterworth"]
Attenuation = Literal["linear", "zero"]


def pyramid_levels(height: int, width: int) -> int:
    """Number of Laplacian pyramid levels (band-pass levels plus the low-pass residual) for a frame.

    As many as fit while every level keeps both sides at least 5 px (the binomial filter's length),
    like matlabPyrTools' ``maxPyrHt``: 6 for 224 x 224 (224, 112, 56, 28, 14 and a 7 x 7 residual).
    """
    levels, h, w = 1, int(height), int(width)
    while (h + 1) // 2 >= MIN_LEVEL_SIDE and (w + 1) // 2 >= MIN_LEVEL_SIDE:
        h, w = (h + 1) // 2, (w + 1) // 2
        levels += 1
    return levels


def level_wavelengths(levels: int) -> np.ndarray:
    """Representative spatial wavelength lambda_l of each Laplacian level, in input pixels.

    Level l (0 = full resolution) of OpenCV's binomial pyramid passes mostly the octave of
    wavelengths [2^(l+2), 2^(l+3)] px; we take its geometric centre ``lambda_l = 2^(l + 2.5)``
    (5.7, 11.3, 22.6, 45.3, ... px). Measured responses peak at 10-12 px for level 1, 20-24 px for
    level 2 and 40-46 px for level 3 (a test checks that a grating of wavelength lambda_l lands
    mostly in level l). Wu et al.'s code instead assigns diagonal / 3 to the coarsest level and
    halves it per level, which ties the wavelengths to the frame size.

    Returns
    -------
    (levels,) float64 wavelengths; the last entry belongs to the low-pass residual.
    """
    return 2.0 ** (np.arange(int(levels)) + 2.5)


def level_amplification(
    levels: int,
    alpha: float = AMPLIFICATION,
    cutoff_wavelength: float = CUTOFF_WAVELENGTH,
    attenuation: Attenuation = "linear",
) -> np.ndarray:
    """Amplification alpha_l of every pyramid level, after Wu et al. (2012), section 3 and Figure 6.

    The bound ``(1 + alpha) delta < lambda / 8`` is met at the cutoff: it fixes
    ``delta = lambda_c / (8 (1 + alpha))``. A level of wavelength ``lambda_l >= lambda_c`` gets the
    full ``alpha``. Below, ``attenuation="linear"`` gives the largest alpha_l that keeps the bound
    at that delta, ``alpha_l = (1 + alpha) lambda_l / lambda_c - 1`` (a linear ramp down to 0 at
    ``lambda_c / (1 + alpha)``, clamped at 0 below), and ``"zero"`` gives 0. As in Wu et al.'s
    code, the finest level (mostly noise) and the low-pass residual (overall brightness) are never
    amplified. Wu et al.'s code also doubles the ramp (an "exaggeration factor" for display that
    breaks the bound); we do not.

    Parameters
    ----------
    levels : number of pyramid levels, residual included (see :func:`pyramid_levels`).
    alpha : amplification factor (>= 0), default 10 (MSMMT paper).
    cutoff_wavelength : lambda_c in pixels (> 0), default 16 (Wu et al.).
    attenuation : "linear" or "zero" below the cutoff.

    Returns
    -------
    (levels,) float64 alpha_l, level 0 (full resolution) first.
    """
    if not (np.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a number >= 0, got {alpha}")
    if not (np.isfinite(cutoff_wavelength) and cutoff_wavelength > 0):
        raise ValueError(f"cutoff_wavelength must be a positive number of pixels, got {cutoff_wavelength}")
    if attenuation not in ("linear", "zero"):
        raise ValueError(f'attenuation must be "linear" or "zero", got {attenuation!r}')
    wavelengths = level_wavelengths(levels)
    if attenuation == "linear":
        amplification = np.clip((1 + alpha) * wavelengths / cutoff_wavelength - 1, 0, alpha)
    else:
        amplification = np.where(wavelengths >= cutoff_wavelength, alpha, 0.0)
    amplification[0] = 0.0
    amplification[-1] = 0.0
    return amplification


def temporal_bandpass(
    signal: np.ndarray,
    fps: float,
    band: tuple[float, float] = PASS_BAND_HZ,
    temporal_filter: TemporalFilter = "ideal",
    order: int = 1,
) -> np.ndarray:
    """Band-pass ``signal`` along its first axis (time), for all other entries at once.

    ``"ideal"``: Wu et al.'s ``ideal_bandpassing``: the DFT along time, frequencies strictly
    between ``band[0]`` and ``band[1]`` kept, all others (the mean included) zeroed. Exact for
    periodic signals; a clip is treated as one period, which suits micro-expression clips that
    start and end near neutral. Its frequency resolution is ``fps / T``: a clip with no DFT
    frequency inside the band (e.g. fewer than ``fps / high`` frames) has nothing to pass.
    ``"butterworth"``: a Butterworth band-pass of ``order`` (Wu et al.'s code uses first-order
    Butterworth sections), run forwards and backwards (``scipy.signal.sosfiltfilt``) so that the
    amplified motion is not delayed; the squared response is 1 at the band's centre and falls off
    gently (-6 dB per octave per ``order``, twice that after the two passes).

    Parameters
    ----------
    signal : (T, ...) array, T >= 2; float32 stays float32.
    fps : frame rate in frames per second (> 0).
    band : (low, high) in Hz, ``0 < low < high < fps / 2``.
    temporal_filter : "ideal" or "butterworth".
    order : Butterworth order (>= 1); ignored by the ideal filter.

    Returns
    -------
    Band-passed array of ``signal``'s shape; float32 for float32 input, float64 otherwise.
    """
    data = np.asarray(signal)
    dtype = np.float32 if data.dtype == np.float32 else np.float64
    data = data.astype(dtype, copy=False)
    low, high = _check_band(fps, band)
    count = data.shape[0]
    # Both filters are linear maps of the T samples of a pixel, i.e. T x T matrices: built once,
    # they filter every pixel of the clip with one matrix product (faster than an FFT or a
    # recursive filter per pixel for clips up to a few hundred frames; the cost grows as T^2).
    if temporal_filter == "ideal":
        if count < 2:
            raise ValueError(f"the ideal filter needs at least 2 frames, got {count}")
        frequencies = np.fft.rfftfreq(count, d=1.0 / fps)
        keep = (frequencies > low) & (frequencies < high)
        spectrum = np.fft.rfft(np.eye(count), axis=0) * keep[:, None]
        operator = np.fft.irfft(spectrum, n=count, axis=0)
    elif temporal_filter == "butterworth":
        from scipy.signal import butter, sosfiltfilt

        if int(order) != order or order < 1:
            raise ValueError(f"order must be an integer >= 1, got {order}")
        sections = butter(int(order), [low, high], btype="bandpass", fs=fps, output="sos")
        padding = 3 * (2 * len(sections) + 1)  # scipy's default, named to check the clip length
        if count <= padding:
            raise ValueError(f"a Butterworth filter of order {order} needs more than {padding} frames, got {count}")
        operator = sosfiltfilt(sections, np.eye(count), axis=0)  # column j: the response to a unit impulse at j
    else:
        raise ValueError(f'temporal_filter must be "ideal" or "butterworth", got {temporal_filter!r}')
    return (operator.astype(dtype) @ data.reshape(count, -1)).reshape(data.shape)


def magnify_motion(
    frames: np.ndarray,
    *,
    fps: float,
    alpha: float = AMPLIFICATION,
    band: tuple[float, float] = PASS_BAND_HZ,
    temporal_filter: TemporalFilter = "ideal",
    order: int = 1,
    cutoff_wavelength: float = CUTOFF_WAVELENGTH,
    attenuation: Attenuation = "linear",
    levels: int | None = None,
    clip: tuple[float, float] | None = None,
) -> np.ndarray:
    """Linear Eulerian video magnification of a clip (Wu et al. 2012).

    Parameters
    ----------
    frames : (T, H, W) or (T, H, W, C) clip with C <= 4, any real dtype, e.g. uint8 grey levels;
        colour channels are magnified independently with the same alpha.
    fps : the dataset's frame rate in frames per second (required): 200 for CASME II and SAMM, 100
        for SMIC.
    alpha : amplification factor, default 10 (MSMMT paper, section 4.3.1).
    band : temporal pass band (low, high) in Hz, default (2, 25) for micro-expressions (see
        ``PASS_BAND_HZ``).
    temporal_filter, order : see :func:`temporal_bandpass`; default the ideal filter, whose sharp
        edges leave motion outside the band alone (a first-order Butterworth still amplifies a
        50 Hz motion about twice at 200 fps).
    cutoff_wavelength, attenuation : see :func:`level_amplification`; default 16 px, linear. The
        default keeps Wu et al.'s bound only for displacements up to 0.18 px at alpha 10; for a clip
        whose expression moves up to delta px, ``cutoff_wavelength = 8 * (1 + alpha) * delta`` keeps
        it (what ``docs/figures/clip_features.py`` shows beside the default).
    levels : pyramid levels including the residual; default :func:`pyramid_levels` (6 for 224 px).
        At least 3 (only levels 1..levels-2 are amplified).
    clip : optional (low, high) to clip the output to, e.g. (0, 255).

    Returns
    -------
    (T, H, W) or (T, H, W, C) float32 in the input's units (grey levels for uint8 input). Not
    clipped unless ``clip`` is given: amplified motion can overshoot the input's range. A static
    clip comes back unchanged (up to float32 rounding).
    """
    video = np.asarray(frames)
    if video.ndim not in (3, 4) or (video.ndim == 4 and not 1 <= video.shape[3] <= 4):
        raise ValueError(f"expected frames of shape (T, H, W) or (T, H, W, C) with C <= 4, got shape {video.shape}")
    if video.dtype == bool or not (np.issubdtype(video.dtype, np.integer) or np.issubdtype(video.dtype, np.floating)):
        raise ValueError(f"expected integer or float pixel values, got dtype {video.dtype}")
    count, height, width = video.shape[:3]
    if count < 2:
        raise ValueError(f"magnification needs at least 2 frames, got shape {video.shape}")
    available = pyramid_levels(height, width)
    if available < 3:
        raise ValueError(
            f"frames of {height} x {width} px are too small: magnification needs 3 pyramid levels of at least "
            f"{MIN_LEVEL_SIDE} px, i.e. frames of at least 17 x 17 px"
        )
    if levels is None:
        levels = available
    if int(levels) != levels or not 3 <= levels <= available:
        raise ValueError(
            f"levels must be an integer in 3..{available} for {height} x {width} frames (levels of at least "
            f"{MIN_LEVEL_SIDE} px), got {levels}"
        )
    levels = int(levels)
    amplification = level_amplification(levels, alpha, cutoff_wavelength, attenuation)
    _check_band(fps, band)
    if clip is not None and not clip[0] < clip[1]:
        raise ValueError(f"clip must be (low, high) with low < high, got {clip}")

    video = video.astype(np.float32, copy=False)
    shapes = [(height, width)]
    for _ in range(levels - 1):
        shapes.append(((shapes[-1][0] + 1) // 2, (shapes[-1][1] + 1) // 2))
    weighted = _weighted_band_sum(video, amplification, shapes)
    weighted = temporal_bandpass(weighted, fps, band, temporal_filter, order)
    output = video + pyramid_up(weighted, shapes[0])  # a new contiguous array
    if clip is not None:
        np.clip(output, clip[0], clip[1], out=output)
    return output


def pyramid_down(clip: np.ndarray) -> np.ndarray:
    """One level down OpenCV's Gaussian pyramid (``cv2.pyrDown``) for every frame of a clip at once.

    Every frame is blurred with the 5 x 5 binomial kernel (``[1 4 6 4 1] / 16`` along each axis,
    borders reflected without repeating the edge, OpenCV's ``BORDER_REFLECT_101``) and every other
    row and column is kept, giving ``((H + 1) // 2, (W + 1) // 2)`` frames.

    How: the frames are stacked into one tall image, each with its own reflected border rows
    (2 above, 2 below, 3 for an odd height so that every frame starts on an even row), and that
    image goes through one ``cv2.pyrDown`` call. A frame's output rows then depend only on its own
    rows and border rows, so the result equals ``cv2.pyrDown`` frame by frame, bit for bit (a test
    checks it), without a Python loop over frames.

    Parameters
    ----------
    clip : (T, H, W) or (T, H, W, C) float32 array, H >= 4, W >= 2, C <= 4.

    Returns
    -------
    (T, (H + 1) // 2, (W + 1) // 2[, C]) float32 array (a view into a larger one).
    """
    if clip.ndim == 4 and clip.shape[3] == 1:  # OpenCV drops a single channel axis
        return pyramid_down(clip[..., 0])[..., None]
    count, height = clip.shape[:2]
    bottom = 2 + height % 2
    padded = np.pad(clip, ((0, 0), (2, bottom)) + ((0, 0),) * (clip.ndim - 2), mode="reflect")
    block = height + 2 + bottom  # rows per frame in the tall image, even
    smaller = cv2.pyrDown(padded.reshape(count * block, *clip.shape[2:]))
    # block / 2 output rows per frame; the first comes from a border row
    return smaller.reshape(count, block // 2, *smaller.shape[1:])[:, 1 : 1 + (height + 1) // 2]


def pyramid_up(clip: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """One level up OpenCV's Gaussian pyramid (``cv2.pyrUp``) for every frame of a clip at once.

    Every frame is upsampled to ``shape`` by inserting zeros and blurring with 4 times the 5 x 5
    binomial kernel, with OpenCV's borders (the source reflected at the top and left, repeated at
    the bottom and right). Same stacking as :func:`pyramid_down`: one reflected row above and one
    repeated row below each frame, one ``cv2.pyrUp`` call; equal to ``cv2.pyrUp`` frame by frame.

    Parameters
    ----------
    clip : (T, h, w) or (T, h, w, C) float32 array, h >= 2, C <= 4.
    shape : (H, W) of the output, with ``(H + 1) // 2 == h`` and ``(W + 1) // 2 == w``.

    Returns
    -------
    (T, H, W[, C]) float32 array (a view into a larger one).
    """
    if clip.ndim == 4 and clip.shape[3] == 1:
        return pyramid_up(clip[..., 0], shape)[..., None]
    count, rows = clip.shape[:2]
    height, width = shape
    padded = np.empty((count, rows + 2) + clip.shape[2:], clip.dtype)
    padded[:, 1:-1] = clip
    padded[:, 0] = clip[:, 1]
    padded[:, -1] = clip[:, -1]
    block = rows + 2
    larger = cv2.pyrUp(padded.reshape(count * block, *clip.shape[2:]), dstsize=(width, 2 * count * block))
    # 2 * block output rows per frame; its row 0 lands on row 2
    return larger.reshape(count, 2 * block, *larger.shape[1:])[:, 2 : 2 + height]


def _weighted_band_sum(video: np.ndarray, amplification: np.ndarray, shapes: list[tuple[int, int]]) -> np.ndarray:
    """sum_l alpha_l * (Laplacian level l) of every frame, collapsed to the resolution of level 1.

    Whole-clip arrays (T, h_l, w_l[, C]) throughout: one pyramid call per level, no loop over frames.
    """
    gaussian = [video]
    for _ in range(len(shapes) - 1):
        gaussian.append(pyramid_down(gaussian[-1]))
    total = None
    for level in range(len(shapes) - 2, 0, -1):  # coarsest band-pass level first, as a collapse goes
        if total is not None:
            total = pyramid_up(total, shapes[level])
        if amplification[level] > 0:
            band = gaussian[level] - pyramid_up(gaussian[level + 1], shapes[level])
            band *= np.float32(amplification[level])
            total = band if total is None else total + band
    if total is None:
        return np.zeros_like(gaussian[1])
    return total


def _check_band(fps: float, band: tuple[float, float]) -> tuple[float, float]:
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive frame rate, got {fps}")
    try:
        low, high = (float(v) for v in band)
    except (TypeError, ValueError):
        raise ValueError(f"band must be (low, high) in Hz, got {band!r}") from None
    if not 0 < low < high < fps / 2:
        raise ValueError(f"band must satisfy 0 < low < high < fps / 2 = {fps / 2:g} Hz, got ({low:g}, {high:g}) Hz")
    return low, high
