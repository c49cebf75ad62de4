"""The alignment transform and the warp to an S x S crop."""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from mepipe.features.face._checks import _check_frame, _check_landmarks, _frame_count, to_gray
from mepipe.features.face.landmarks import eye_centres

#: Defaults of the crop geometry. The papers crop "the face" without numbers; these place the
#: eye centres 0.36 S apart on a horizontal line at 0.32 S, which keeps the brows, the forehead's
#: lower half and the chin inside the square (measured on dlib landmarks: the jaw spans
#: +-1.1 inter-ocular distances around the eye midpoint and the chin lies 1.75 below the eye line,
#: so the crop holds +-1.39 across and 0.89 above to 1.89 below).
EYE_LINE = 0.32
INTER_OCULAR = 0.36
#: Crop sizes used by the papers: 224 (CVA/FPF, MSMMT), 256 (MobileViT), 320 (CropNet).
DEFAULT_SIZE = 224

_INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


def alignment_matrix(
    landmarks: np.ndarray,
    size: int = DEFAULT_SIZE,
    *,
    eye_line: float = EYE_LINE,
    inter_ocular: float = INTER_OCULAR,
) -> np.ndarray:
    """(2, 3) similarity taking frame pixels to crop pixels, from the two eye centres.

    The rotation is the eye line's angle, gamma = atan2(y_L - y_R, x_L - x_R) (the MobileViT
    paper's equation, arctan of the eye-centre slope), so the eyes end up on a horizontal line at
    ``eye_line * size``, ``inter_ocular * size`` apart and centred left-right.

    Parameters
    ----------
    landmarks : (68, 2) landmarks in frame pixels (only the eyes, 36-47, are used).
    size : side S of the square crop in pixels.
    eye_line, inter_ocular : target eye height and eye distance as fractions of S.
    """
    landmarks = _check_landmarks(landmarks)
    right, left = eye_centres(landmarks)
    return similarity_from_eyes(right, left, size, eye_line=eye_line, inter_ocular=inter_ocular)

def similarity_from_eyes(
    right: np.ndarray, left: np.ndarray, size: int, *, eye_line: float = EYE_LINE, inter_ocular: float = INTER_OCULAR
) -> np.ndarray:
    """(2, 3) similarity putting eye centres ``right`` (image-left) and ``left`` on their targets."""
    delta = np.asarray(left, np.float64) - np.asarray(right, np.float64)
    distance = float(np.hypot(*delta))
    if distance < 1e-6:
        raise ValueError("the two eye centres coincide; the landmarks do not describe a face")
    angle = math.atan2(delta[1], delta[0])
    scale = inter_ocular * size / distance
    cos, sin = scale * math.cos(-angle), scale * math.sin(-angle)
    linear = np.array([[cos, -sin], [sin, cos]])
    midpoint = (np.asarray(right, np.float64) + np.asarray(left, np.float64)) / 2
    target = np.array([(size - 1) / 2, eye_line * size])
    return np.hstack([linear, (target - linear @ midpoint)[:, None]])

def eye_targets(size: int = DEFAULT_SIZE, *, eye_line: float = EYE_LINE, inter_ocular: float = INTER_OCULAR) -> np.ndarray:
    """(2, 2) crop positions (x, y) where :func:`alignment_matrix` puts the image-left and image-right eye."""
    centre_x, half = (size - 1) / 2, inter_ocular * size / 2
    return np.array([[centre_x - half, eye_line * size], [centre_x + half, eye_line * size]])

def crop_rescale_matrix(from_size: int, to_size: int) -> np.ndarray:
    """(2, 3) map from crop pixels at ``from_size`` to crop pixels at ``to_size`` of the same face.

    With ``k = to_size / from_size`` it is ``p -> k p + ((k - 1) / 2, 0)``: for any eye centres,
    ``crop_rescale_matrix(S1, S2) @ similarity_from_eyes(..., S1) = similarity_from_eyes(..., S2)``
    in exact arithmetic, whatever ``eye_line`` and ``inter_ocular`` are. Why not plain ``k p``: of
    the targets, the eye distance (``inter_ocular * S``) and the eye line's height
    (``eye_line * S``) are fractions of S, but the eye midpoint's x is the crop's centre
    ``(S - 1) / 2`` (the origin is the centre of the top-left pixel), which is ``S / 2`` shifted by
    half a pixel, and that half pixel does not scale. Composing on the left (``compose(A, M)``)
    also carries any correction applied in crop pixels, ``C o M``, to ``(A C A^-1) o (A M)``: the
    same correction in the new crop's pixels, applied to the new crop's transform.

    Parameters
    ----------
    from_size, to_size : crop sides S1 and S2 in pixels (positive).

    Returns
    -------
    (2, 3) float64 affine matrix (a uniform scaling by k and a shift; the identity when the sizes
    are equal).
    """
    if from_size <= 0 or to_size <= 0:
        raise ValueError(f"crop sizes must be positive, got {from_size} and {to_size}")
    k = to_size / from_size
    return np.array([[k, 0.0, (k - 1) / 2], [0.0, k, 0.0]])

def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (N, 2) mapped by a (2, 3) affine matrix."""
    points = np.asarray(points, np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]

def invert_similarity(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine matrix."""
    linear = np.linalg.inv(matrix[:, :2])
    return np.hstack([linear, -(linear @ matrix[:, 2:])])

def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(2, 3) matrix of ``outer(inner(p))``."""
    return np.hstack([outer[:, :2] @ inner[:, :2], outer[:, :2] @ inner[:, 2:] + outer[:, 2:]])

def crop_frames(
    frames: Sequence[np.ndarray] | np.ndarray,
    matrices: np.ndarray,
    size: int = DEFAULT_SIZE,
    *,
    grayscale: bool = True,
    interpolation: str = "cubic",
) -> np.ndarray:
    """Warp every frame by its matrix into an S x S crop.

    Parameters
    ----------
    frames : (T, H, W) grayscale or (T, H, W, 3) RGB frames, or a sequence of such frames.
    matrices : (2, 3) one transform for all frames, or (T, 2, 3) one per frame, frame -> crop.
    size : side S of the crop in pixels.
    grayscale : convert colour frames to gray (ITU-R BT.601 luma, as OpenCV does).
    interpolation : ``"cubic"`` (default: keeps the fine texture sub-pixel motion is measured on)
        or ``"linear"``.

    Returns
    -------
    (T, S, S) or (T, S, S, 3) array of the frames' dtype (uint8 stays uint8, float becomes
    float32). Pixels outside the frame are replicated from its border. When the crop shrinks
    the face, each frame is low-passed first (Gaussian, sigma = (1/scale - 1) / 2, scikit-image's
    anti-aliasing rule) so fine texture does not alias into false motion.
    """
    count = _frame_count(frames)
    matrices = np.asarray(matrices, np.float64)
    if matrices.shape == (2, 3):
        matrices = np.broadcast_to(matrices, (count, 2, 3))
    if matrices.shape != (count, 2, 3):
        raise ValueError(f"expected a (2, 3) matrix or ({count}, 2, 3) matrices for {count} frames, got {matrices.shape}")
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {sorted(_INTERPOLATIONS)}, got {interpolation!r}")
    flags = _INTERPOLATIONS[interpolation]
    out = None
    for index in range(count):
        frame = _check_frame(frames[index], index)
        if grayscale:
            frame = to_gray(frame)
        crop = _warp(frame, matrices[index], size, flags)
        if out is None:
            out = np.empty((count, *crop.shape), crop.dtype)
        out[index] = crop
    return out

def _warp(frame: np.ndarray, matrix: np.ndarray, size: int, flags: int) -> np.ndarray:
    if frame.dtype != np.uint8:
        frame = frame.astype(np.float32)
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    # Work on the part of the frame the crop covers (plus room for the filter): the warp and the
    # anti-aliasing filter then cost the same for a 640x480 and a 2048x1088 frame.
    corners = transform_points(invert_similarity(matrix), np.array([[0, 0], [size, 0], [0, size], [size, size]], float))
    sigma = (1 / scale - 1) / 2 if scale < 1 else 0.0
    pad = int(math.ceil(3 * sigma)) + 3
    height, width = frame.shape[:2]
    x0 = max(0, int(math.floor(corners[:, 0].min())) - pad)
    y0 = max(0, int(math.floor(corners[:, 1].min())) - pad)
    x1 = min(width, int(math.ceil(corners[:, 0].max())) + pad + 1)
    y1 = min(height, int(math.ceil(corners[:, 1].max())) + pad + 1)
    if x1 - x0 < 2 or y1 - y0 < 2:  # the crop lies outside the frame: warp the whole frame
        x0, y0, x1, y1 = 0, 0, width, height
    region = frame[y0:y1, x0:x1]
    if sigma >= 0.3:
        region = cv2.GaussianBlur(region, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    shifted = matrix.copy()
    shifted[:, 2] += matrix[:, :2] @ np.array([x0, y0], float)
    return cv2.warpAffine(region, shifted, (size, size), flags=flags, borderMode=cv2.BORDER_REPLICATE)
