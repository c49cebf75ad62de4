"""Motion of a synthetic face: action-unit displacement fields, temporal profiles, head motion, blinks.

Every facial action unit (AU) is a smooth displacement field: a sum of truncated Gaussian bumps,
each anchored on a landmark (or the mean of a few) of dlib's 68-point model and pushing in a
direction given in the face's own frame (x along the eye line towards the image's right, y down the
face). Bumps marked with a side act only on that side of the face, so ``L12`` (subject's left lip
corner) moves only the image-right corner.

Sizes are in units of the inter-ocular distance (IOD, between the eye centres), so a field looks the
same on any face size; the clip's amplitude then scales the whole expression so that its largest
displacement is the amplitude in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mepipe.features.face import eye_centres


@dataclass(frozen=True)
class Bump:
    """One Gaussian displacement bump of an AU.

    points : landmark indices whose mean is the bump's centre.
    direction : (lateral, down) push; ``lateral`` > 0 means away from the face's midline (it is
        mirrored on the image-left side), ``down`` > 0 means towards the chin.
    sigma : Gaussian width in IOD units.
    weight : relative strength within the AU.
    side : 'R' (subject's right, image-left), 'L' (subject's left, image-right) or None (midline).
    offset : shift of the centre from the landmark mean, (along eye line, down) in IOD units.
    """

    points: tuple[int, ...]
    direction: tuple[float, float]
    sigma: float
    weight: float = 1.0
    side: str | None = None
    offset: tuple[float, float] = (0.0, 0.0)


def _pair(right_points, left_points, direction, sigma, weight=1.0, offset=(0.0, 0.0)) -> tuple[Bump, Bump]:
    """The same bump on both sides of the face."""
    return (
        Bump(tuple(right_points), direction, sigma, weight, "R", offset),
        Bump(tuple(left_points), direction, sigma, weight, "L", offset),
    )


#: The facial action units mepipe can render, after the FACS descriptions of each movement.
AU_BUMPS: dict[int, tuple[Bump, ...]] = {
    1: (  # inner brow raiser
        *_pair([21], [22], (0.0, -1.0), 0.22),
        Bump((21, 22), (0.0, -1.0), 0.25, 0.5, None, (0.0, -0.25)),
    ),
    2: _pair([17, 18], [25, 26], (0.1, -1.0), 0.22),  # outer brow raiser
    4: (  # brow lowerer: brows down and drawn together
        *_pair([19, 20, 21], [22, 23, 24], (-0.5, 0.85), 0.22),
        Bump((21, 22), (0.0, 0.6), 0.18, 0.6, None),
    ),
    5: _pair([37, 38], [43, 44], (0.0, -1.0), 0.10, 0.6),  # upper lid raiser
    6: (  # cheek raiser: cheeks up, lower lids pushed up
        *_pair([1, 2, 31, 41], [14, 15, 35, 46], (0.2, -1.0), 0.30),
        *_pair([40, 41], [46, 47], (0.0, -1.0), 0.12, 0.5),
    ),
    7: (  # lid tightener
        *_pair([40, 41], [46, 47], (0.0, -1.0), 0.12),
        *_pair([37, 38], [43, 44], (0.0, 1.0), 0.10, 0.4),
    ),
    9: (  # nose wrinkler
        *_pair([31, 32], [34, 35], (-0.2, -1.0), 0.18),
        Bump((27, 28), (0.0, 0.6), 0.15, 0.4, None),
    ),
    10: (  # upper lip raiser
        *_pair([49, 50], [52, 53], (0.0, -1.0), 0.20),
        Bump((51,), (0.0, -1.0), 0.18, 0.8, None),
    ),
    12: _pair([48], [54], (0.7, -0.7), 0.25),  # lip corner puller
    14: _pair([48], [54], (1.0, 0.1), 0.18),  # dimpler: corners tightened back
    15: _pair([48], [54], (0.2, 1.0), 0.22),  # lip corner depressor
    17: (  # chin raiser
        Bump((7, 8, 9), (0.0, -1.0), 0.30, 1.0, None),
        Bump((56, 57, 58), (0.0, -1.0), 0.20, 0.7, None),
    ),
    20: _pair([48], [54], (1.0, 0.25), 0.25),  # lip stretcher
    25: (  # lips part
        Bump((56, 57, 58), (0.0, 1.0), 0.15, 0.6, None),
        Bump((50, 51, 52), (0.0, -1.0), 0.15, 0.4, None),
    ),
    26: (  # jaw drop
        Bump((6, 7, 8, 9, 10), (0.0, 1.0), 0.40, 1.0, None),
        Bump((55, 56, 57, 58, 59), (0.0, 1.0), 0.25, 0.8, None),
    ),
}

RENDERABLE_AUS = frozenset(AU_BUMPS)

# Gaussians are cut at this many sigmas (and lowered to reach zero there) so a field has exact zeros
# outside the face and the ground-truth file compresses.
_TRUNCATE = 3.0


@dataclass(frozen=True)
class FaceFrame:
    """The face's own coordinate frame, from its landmarks."""

    origin: np.ndarray  # (2,) midpoint of the eye centres, pixels
    axis_x: np.ndarray  # (2,) unit vector along the eye line, towards the image's right
    axis_y: np.ndarray  # (2,) unit vector down the face
    iod: float  # inter-ocular distance in pixels

    @classmethod
    def from_landmarks(cls, landmarks: np.ndarray) -> "FaceFrame":
        right_eye, left_eye = eye_centres(landmarks)
        eye_line = left_eye - right_eye
        iod = float(np.hypot(*eye_line))
        axis_x = eye_line / iod
        axis_y = np.array([-axis_x[1], axis_x[0]])
        return cls((right_eye + left_eye) / 2, axis_x, axis_y, iod)


def expression_unit_field(
    landmarks: np.ndarray, action_units: list[tuple[int, str | None]], shape: tuple[int, int]
) -> np.ndarray:
    """Displacement field of a set of AUs at full intensity, scaled to a peak magnitude of 1.

    Parameters
    ----------
    landmarks : (68, 2) landmarks (x, y) of the neutral face, pixels.
    action_units : (AU number, side) pairs; side 'L' or 'R' restricts the AU to that side, None
        means both. AUs mepipe cannot render are ignored by the caller, not here (KeyError).
    shape : (H, W) of the frame.

    Returns
    -------
    (2, H, W) float32 field (x then y displacement) whose largest vector has length 1, or all
    zeros when the set is empty.
    """
    height, width = shape
    face = FaceFrame.from_landmarks(landmarks)
    field = np.zeros((2, height, width), np.float32)
    for number, side in action_units:
        for bump in AU_BUMPS[number]:
            if side is not None and bump.side is not None and bump.side != side:
                continue
            _add_bump(field, bump, landmarks, face, weight=1.0 if side is None or bump.side else 0.5)
    peak = float(np.sqrt((field**2).sum(axis=0)).max())
    if peak > 0:
        field /= peak
    return field


def _add_bump(field: np.ndarray, bump: Bump, landmarks: np.ndarray, face: FaceFrame, weight: float) -> None:
    centre = landmarks[list(bump.points)].mean(axis=0)
    centre = centre + bump.offset[0] * face.iod * face.axis_x + bump.offset[1] * face.iod * face.axis_y
    lateral, down = bump.direction
    # "lateral" points away from the midline: towards -x on the image-left (subject's right) side
    if bump.side == "R":
        lateral = -lateral
    direction = lateral * face.axis_x + down * face.axis_y
    sigma = bump.sigma * face.iod
    radius = _TRUNCATE * sigma
    height, width = field.shape[1:]
    x0, x1 = max(0, int(centre[0] - radius)), min(width, int(centre[0] + radius) + 2)
    y0, y1 = max(0, int(centre[1] - radius)), min(height, int(centre[1] + radius) + 2)
    if x0 >= x1 or y0 >= y1:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    squared = ((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2)
    floor = math.exp(-(_TRUNCATE**2) / 2)
    gaussian = np.clip((np.exp(-squared) - floor) / (1 - floor), 0, None)
    strength = (bump.weight * weight) * gaussian
    field[0, y0:y1, x0:x1] += strength * direction[0]
    field[1, y0:y1, x0:x1] += strength * direction[1]


def expression_profile(frame: np.ndarray | int, onset: int, apex: int, offset: int) -> np.ndarray:
    """Expression intensity in [0, 1] at frame numbers: 0 at onset, 1 at apex, 0 again at offset.

    A raised-cosine rise and fall (smooth, with zero slope at onset, apex and offset), as the
    intensity of a real micro-expression. Frames outside onset..offset are at 0. ``onset <= apex <=
    offset`` is required; apex may equal either end.
    """
    if not onset <= apex <= offset:
        raise ValueError(f"expected onset <= apex <= offset, got {onset}, {apex}, {offset}")
    n = np.asarray(frame, dtype=np.float64)
    rise = np.where(apex > onset, (n - onset) / max(apex - onset, 1), 1.0)
    fall = np.where(offset > apex, (n - apex) / max(offset - apex, 1), 0.0)
    value = np.where(
        n <= apex,
        np.sin(np.pi / 2 * np.clip(rise, 0, 1)) ** 2,
        np.cos(np.pi / 2 * np.clip(fall, 0, 1)) ** 2,
    )
    # exact zeros outside the movement (cos^2 at the offset is only 1e-33)
    ended = (n > offset) | ((n == offset) & (offset > apex))
    return np.where((n < onset) | ended, 0.0, value)


@dataclass(frozen=True)
class HeadMotion:
    """Slow rigid head motion over a clip: a similarity about ``pivot``.

    Drift grows smoothly from 0 at the clip's first frame to ``drift`` (pixels, x and y) and
    ``rotation`` (degrees) at its last, with a small sway of ``sway`` pixels on top.
    """

    pivot: tuple[float, float]
    drift: tuple[float, float]
    rotation: float
    sway: float
    sway_period: float  # frames
    sway_phase: float
    first_frame: int
    last_frame: int

    def progress(self, frame: float) -> float:
        span = max(self.last_frame - self.first_frame, 1)
        t = min(max((frame - self.first_frame) / span, 0.0), 1.0)
        return t * t * (3 - 2 * t)  # smoothstep: a drift that starts and ends gently

    def matrix(self, frame: float) -> np.ndarray:
        """(2, 3) affine matrix taking neutral-face pixels to this frame's pixels."""
        t = self.progress(frame)
        angle = math.radians(self.rotation * t)
        sway = self.sway * math.sin(2 * math.pi * frame / self.sway_period + self.sway_phase)
        shift = np.array(self.drift) * t + np.array([sway, 0.5 * sway])
        cos, sin = math.cos(angle), math.sin(angle)
        rotation = np.array([[cos, -sin], [sin, cos]])
        pivot = np.array(self.pivot)
        translation = pivot - rotation @ pivot + shift
        return np.hstack([rotation, translation[:, None]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine matrix."""
    linear_inverse = np.linalg.inv(matrix[:, :2])
    return np.hstack([linear_inverse, -(linear_inverse @ matrix[:, 2:])])


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(2, 3) matrix of ``outer(inner(p))``."""
    return np.hstack([outer[:, :2] @ inner[:, :2], outer[:, :2] @ inner[:, 2:] + outer[:, 2:]])


def blink_closure(frame: np.ndarray | int, start: int, length: int) -> np.ndarray:
    """Eyelid closure in [0, 1] of a blink starting at ``start`` and lasting ``length`` frames.

    A real blink closes fast and opens slower: a third of the time closing, a sixth fully closed,
    the rest opening.
    """
    n = np.asarray(frame, dtype=np.float64) - start
    closing = length / 3
    closed = length / 6
    opening = length - closing - closed
    value = np.where(
        n < closing,
        np.sin(np.pi / 2 * np.clip(n / closing, 0, 1)) ** 2,
        np.where(n < closing + closed, 1.0, np.cos(np.pi / 2 * np.clip((n - closing - closed) / opening, 0, 1)) ** 2),
    )
    return np.where((n < 0) | (n >= length), 0.0, value)
