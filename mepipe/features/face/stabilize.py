"""The rigid (head) motion of the face between two aligned crops."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mepipe.features.face._checks import _as_gray_uint8
from mepipe.features.face.geometry import transform_points

#: RANSAC threshold in pixels. A tight threshold makes the fit seek the largest set of points
#: that move together rigidly (the head) rather than a compromise with the expression: measured
#: on the synthetic demo set, 0.1 px left 0.045 px of head motion on average (0.13 px worst),
#: 0.35 px left 0.08 (0.34 worst), a least-median fit 0.20 (1.05 worst).
MOTION_THRESHOLD = 0.1
#: Below this fraction of inliers the fit is not trusted.
MIN_INLIERS = 0.15


@dataclass(frozen=True)
class GlobalMotion:
    """A similarity (2, 3) taking reference-crop pixels to where they are in the moving crop.

    ``inliers`` is the fraction of the sampled points that agree with it within the threshold;
    ``ok`` says whether enough did (otherwise ``matrix`` is the identity).
    """

    matrix: np.ndarray
    inliers: float
    ok: bool

def dense_flow(reference: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """(H, W, 2) Farneback flow (x, y) from ``reference`` to ``moving``, both (H, W) uint8.

    Parameters are OpenCV's documented example (pyramid scale 0.5, 3 levels, 15 px window, 3
    iterations, 5-pixel polynomial with sigma 1.2): cheap (~8 ms at 224 x 224) and accurate to
    a few hundredths of a pixel on face texture, enough for rigid fits and motion curves.
    """
    return cv2.calcOpticalFlowFarneback(reference, moving, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def fit_rigid_motion(
    flow: np.ndarray, region: np.ndarray, *, threshold: float = MOTION_THRESHOLD, step: int = 4, seed: int = 0
) -> GlobalMotion:
    """The similarity that most of ``region`` moves by in a dense (H, W, 2) ``flow``.

    The flow is sampled every ``step`` pixels inside ``region``, and a similarity is fitted by
    RANSAC with a tight ``threshold`` (pixels). Expression motion is local and varies smoothly, so
    only few of its points fit one similarity that tightly; the rigidly moving rest of the face
    wins the consensus. OpenCV's RANSAC draws from OpenCV's random generator, which is seeded with
    ``seed`` first so that results are reproducible.
    """
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    ys, xs = np.nonzero(region[::step, ::step])
    if len(xs) < 10:
        return GlobalMotion(identity, 0.0, False)
    points = np.stack([xs * step, ys * step], axis=1).astype(np.float32)
    moved = points + flow[ys * step, xs * step]
    cv2.setRNGSeed(seed)
    matrix, inlier_flags = cv2.estimateAffinePartial2D(
        points, moved, method=cv2.RANSAC, ransacReprojThreshold=threshold, maxIters=3000, confidence=0.999
    )
    if matrix is None:
        return GlobalMotion(identity, 0.0, False)
    inliers = float(inlier_flags.mean())
    if inliers < MIN_INLIERS:
        return GlobalMotion(identity, inliers, False)
    return GlobalMotion(matrix, inliers, True)


def estimate_global_motion(
    reference: np.ndarray,
    moving: np.ndarray,
    region: np.ndarray,
    *,
    threshold: float = MOTION_THRESHOLD,
    step: int = 4,
    seed: int = 0,
) -> GlobalMotion:
    """The rigid motion (rotation, uniform scale, translation) of the face from one crop to another.

    :func:`dense_flow` from ``reference`` to ``moving``, then :func:`fit_rigid_motion` over
    ``region``.

    Parameters
    ----------
    reference, moving : (S, S) grayscale crops, uint8.
    region : (S, S) bool pixels to use (the face without the eyes).
    threshold : RANSAC inlier distance in pixels.
    step : sampling step of the flow, pixels.
    seed : seed of OpenCV's random generator for RANSAC.
    """
    reference = _as_gray_uint8(reference)
    moving = _as_gray_uint8(moving)
    if reference.shape != moving.shape or region.shape != reference.shape:
        raise ValueError(f"crops and region must share a shape, got {reference.shape}, {moving.shape}, {region.shape}")
    return fit_rigid_motion(dense_flow(reference, moving), region, threshold=threshold, step=step, seed=seed)


def motion_magnitude(matrix: np.ndarray, region: np.ndarray) -> float:
    """Mean displacement in pixels of the (2, 3) map ``matrix`` over the ``region`` pixels."""
    ys, xs = np.nonzero(region)
    if len(xs) == 0:
        return 0.0
    points = np.stack([xs, ys], axis=1).astype(np.float64)
    return float(np.hypot(*(transform_points(matrix, points) - points).T).mean())
