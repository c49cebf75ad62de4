"""The eye mask and its filling; the face region."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage
from skimage.draw import polygon as draw_polygon

from mepipe.features.face._checks import _check_landmarks
from mepipe.features.face.geometry import DEFAULT_SIZE
from mepipe.features.face.landmarks import BROWS, JAW, LEFT_EYE, RIGHT_EYE, eye_centres, inter_ocular_distance

#: Eye-mask margin in inter-ocular distances (0.15 IOD is 12 px at S=224): wide enough to cover
#: the lids of a blink and the eyes' drift under head motion, under 10 % of the crop.
EYE_MARGIN = 0.15

_FILLS = ("zero", "mean")


def eye_mask(landmarks: np.ndarray, size: int = DEFAULT_SIZE, margin: float = EYE_MARGIN) -> np.ndarray:
    """(S, S) bool mask of both eyes: the polygons of landmarks 36-41 and 42-47 grown by a margin.

    Parameters
    ----------
    landmarks : (68, 2) landmarks in crop pixels (e.g. :func:`transform_points` of the frame's).
    size : side S of the crop.
    margin : growth of each polygon in inter-ocular distances (of these landmarks); every pixel
        within ``margin * IOD`` of a polygon is masked. 0 masks the polygons alone.
    """
    landmarks = _check_landmarks(landmarks)
    if margin < 0:
        raise ValueError(f"the eye-mask margin must be >= 0, got {margin}")
    # Pixel centres inside each polygon (scikit-image's rule), then every pixel whose centre lies
    # within the margin of one of them (scipy's exact Euclidean distance transform).
    polygons = np.zeros((size, size), bool)
    for eye in (RIGHT_EYE, LEFT_EYE):
        rows, cols = draw_polygon(landmarks[eye, 1], landmarks[eye, 0], (size, size))
        polygons[rows, cols] = True
    radius = margin * inter_ocular_distance(landmarks)
    if radius <= 0 or not polygons.any():
        return polygons
    return ndimage.distance_transform_edt(~polygons) <= radius


def fill_eyes(frames: np.ndarray, mask: np.ndarray, fill: str = "zero") -> np.ndarray:
    """Copy of the crops with the masked eye pixels replaced.

    Parameters
    ----------
    frames : (T, S, S) or (T, S, S, C) crops.
    mask : (S, S) bool, from :func:`eye_mask`.
    fill : ``"zero"`` (black, as the papers show their masked faces) or ``"mean"``: each eye's
        region takes, per frame and channel, the mean of the 3-pixel ring around it, so no
        artificial edge appears there (flows and gradients see a flat patch of skin tone).
    """
    if fill not in _FILLS:
        raise ValueError(f"eye fill must be one of {_FILLS}, got {fill!r}")
    frames = np.asarray(frames)
    if frames.ndim not in (3, 4) or frames.shape[1:3] != mask.shape:
        raise ValueError(f"expected (T, S, S[, C]) crops matching the {mask.shape} mask, got {frames.shape}")
    out = frames.copy()
    if fill == "zero":
        out[:, mask] = 0
        return out
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    ring_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    for component in range(1, count):
        region = labels == component
        ring = cv2.dilate(region.astype(np.uint8), ring_kernel).astype(bool) & ~mask
        if not ring.any():  # the mask fills the crop: nothing to take a mean of
            out[:, region] = 0
            continue
        means = frames[:, ring].mean(axis=1)  # (T,) or (T, C)
        out[:, region] = np.round(means[:, None]).astype(out.dtype) if out.dtype == np.uint8 else means[:, None]
    return out

def face_region(landmarks: np.ndarray, size: int, eyes: np.ndarray | None = None) -> np.ndarray:
    """(S, S) bool: the face (hull of jaw and brows, raised by 0.3 IOD into the forehead) without ``eyes``."""
    landmarks = _check_landmarks(landmarks)
    iod = inter_ocular_distance(landmarks)
    right, left = eye_centres(landmarks)
    up = np.array([left[1] - right[1], right[0] - left[0]]) / max(iod, 1e-9)  # unit normal, pointing up
    forehead = landmarks[BROWS] + 0.3 * iod * up
    hull = cv2.convexHull(np.vstack([landmarks[JAW], forehead]).astype(np.float32))
    region = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(region, np.rint(hull).astype(np.int32), 1)
    region = region.astype(bool)
    if eyes is not None:
        region &= ~eyes
    return region
