"""Rendering a synthetic clip, frame by frame, and its exact ground truth.

Image formation of frame ``n``: a neutral-face point ``p`` first moves with the expression,
``p + A * a(n) * U(p)`` (``U`` the AU field of peak 1, ``A`` the amplitude in pixels, ``a`` the
temporal profile), and the head then carries it rigidly, ``y = M_n(p + A a(n) U(p))``. The frame is
the neutral image pulled back along this map, with the eyelids of a blink painted on the neutral
face first, then a global illumination flicker and sensor noise.

The pull-back needs the inverse map, solved per pixel by fixed-point iteration
``p <- M_n^-1(y) - A a(n) U(p)``, which converges because the fields are smooth (their gradient
times the amplitude stays well below 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from mepipe.synth.appearance import Subject
from mepipe.synth.motion import (
    FaceFrame,
    HeadMotion,
    blink_closure,
    compose_affine,
    expression_profile,
    expression_unit_field,
    invert_affine,
)
from mepipe.features.face import LEFT_EYE, RIGHT_EYE

# Fixed-point iterations stop once no pixel moves more than this (pixels): rendering needs far less
# than the JPEG and sensor noise it is followed by; the ground truth is solved ten times tighter.
_RENDER_TOLERANCE = 1e-2
_TRUTH_TOLERANCE = 1e-3
_INVERSE_MAX_ITERATIONS = 60
# Head motion moves a pixel this far at most from its neutral place (drift, sway and a 1-degree turn
# at the frame's corners), so the expression's support box grown by it holds every moving pixel.
_HEAD_MARGIN = 12


@dataclass(frozen=True)
class ClipPlan:
    """Everything that decides one synthetic clip, drawn before any pixel is made.

    Frame numbers are the dataset's own (``img46.jpg`` is frame 46). ``onset``/``apex``/``offset``
    are what the sheet says (``apex`` may be -1 or None, as real sheets have); ``true_*`` are the
    values the clip is rendered with, which the ground truth records.
    """

    dataset: str
    subject: str
    subject_index: int
    clip: str
    emotion: str
    action_units: str
    rendered_aus: tuple[tuple[int, str | None], ...]
    first_frame: int
    last_frame: int
    onset: int | None
    apex: int | None
    offset: int | None
    true_onset: int
    true_apex: int
    true_offset: int
    amplitude: float
    head: HeadMotion
    blink: tuple[int, int] | None
    flicker: tuple[float, float, float]  # relative amplitude, period in frames, phase
    noise_sigma: float
    seed: int
    sheet: dict = field(default_factory=dict)

    @property
    def frame_numbers(self) -> range:
        return range(self.first_frame, self.last_frame + 1)

    @property
    def key(self) -> str:
        return f"{self.subject}/{self.clip}"


class ClipRenderer:
    """Renders the frames of one clip and computes its ground truth."""

    def __init__(self, plan: ClipPlan, subject: Subject):
        self.plan = plan
        self.subject = subject
        height, width = subject.neutral.shape[:2]
        self.shape = (height, width)
        unit = expression_unit_field(subject.landmarks, list(plan.rendered_aus), self.shape)
        self.unit = np.ascontiguousarray(unit.transpose(1, 2, 0))  # (H, W, 2) for cv2.remap
        self.support = _support_box(unit, int(np.ceil(plan.amplitude)) + _HEAD_MARGIN)
        self._xs = np.arange(width, dtype=np.float32)[None, :]
        self._ys = np.arange(height, dtype=np.float32)[:, None]
        self._blink_cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def expression_scale(self, frame: float) -> float:
        p = self.plan
        return float(p.amplitude * expression_profile(frame, p.true_onset, p.true_apex, p.true_offset))

    def source_map(self, frame: float, tolerance: float = _RENDER_TOLERANCE) -> np.ndarray:
        """(H, W, 2) float32 neutral-face position of every pixel of frame ``frame``."""
        position = affine_map(invert_affine(self.plan.head.matrix(frame)), self._xs, self._ys)
        scale = self.expression_scale(frame)
        if scale == 0.0 or self.support is None:
            return position
        # outside the support box the expression is zero and the rigid map is already exact
        y0, y1, x0, x1 = self.support
        start = position[y0:y1, x0:x1].copy()
        inner = start.copy()
        for _ in range(_INVERSE_MAX_ITERATIONS):
            displacement = cv2.remap(self.unit, inner[..., 0], inner[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            updated = start - scale * displacement
            change = float(np.abs(updated - inner).max())
            inner = updated
            if change < tolerance:
                break
        position[y0:y1, x0:x1] = inner
        return position

    def frame(self, frame_number: int) -> np.ndarray:
        """The rendered frame as uint8, (H, W, 3) RGB or (H, W) grayscale."""
        plan = self.plan
        closure = self.blink_closure(frame_number)
        image = self.neutral_with_blink(closure)[0] if closure > 0 else self.subject.neutral
        position = self.source_map(frame_number)
        warped = cv2.remap(image, position[..., 0], position[..., 1], cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        amplitude, period, phase = plan.flicker
        gain = 1.0 + amplitude * np.sin(2 * np.pi * frame_number / period + phase)
        rng = np.random.default_rng([plan.seed, frame_number])
        noisy = rng.standard_normal(warped.shape, dtype=np.float32)
        noisy *= plan.noise_sigma
        noisy += warped * np.float32(gain)
        noisy += 0.5  # round half up: the cast below truncates
        np.clip(noisy, 0, 255, out=noisy)
        return noisy.astype(np.uint8)

    def blink_closure(self, frame_number: int) -> float:
        if self.plan.blink is None:
            return 0.0
        start, length = self.plan.blink
        return float(blink_closure(frame_number, start, length))

    def neutral_with_blink(self, closure: float) -> tuple[np.ndarray, np.ndarray]:
        """The neutral image with both eyelids closed by ``closure``, and the mask of changed pixels."""
        key = round(closure, 4)
        if key not in self._blink_cache:
            self._blink_cache[key] = paint_eyelids(self.subject.neutral, self.subject.landmarks, closure)
        return self._blink_cache[key]

    def ground_truth(self) -> dict:
        """Ground truth of the clip: onset-to-apex motion, per-frame head matrices, blink pixels.

        Returns a dict of arrays:
        ``expression_flow`` (2, H, W) float32: displacement onset -> apex caused by the expression,
        in onset-frame pixel coordinates (x then y); ``head_onset_to_apex`` (2, 3): the rigid head
        motion between the two frames, whose dense field is ``head_flow``; ``head_matrices``
        (n_frames, 2, 3): neutral face -> frame for every frame; ``blink_mask`` (H, W) bool: every
        pixel that a blink changes in any frame, in that frame's coordinates (all False without a
        blink); ``blink_frames`` (k,) int: frames in which the eyelids are closing, closed or opening.
        """
        plan = self.plan
        onset_matrix = plan.head.matrix(plan.true_onset)
        apex_matrix = plan.head.matrix(plan.true_apex)
        onset_position = self.source_map(plan.true_onset, _TRUTH_TOLERANCE)
        displacement = cv2.remap(self.unit, onset_position[..., 0], onset_position[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        moved = onset_position + self.expression_scale(plan.true_apex) * displacement
        apex_position = moved @ apex_matrix[:, :2].T.astype(np.float32) + apex_matrix[:, 2].astype(np.float32)
        total = apex_position - affine_map(np.eye(2, 3), self._xs, self._ys)
        onset_to_apex = compose_affine(apex_matrix, invert_affine(onset_matrix))
        head = head_flow(onset_to_apex, self.shape).transpose(1, 2, 0)
        expression = (total - head).transpose(2, 0, 1)

        blink_frames = [n for n in plan.frame_numbers if self.blink_closure(n) > 0]
        blink_mask = np.zeros(self.shape, bool)
        # the bicubic warp spreads a painted pixel over its 4x4 neighbourhood: grow by 2 px
        reach = cv2.getStructuringElement(cv2.MORPH_RECT, (5, 5))
        for n in blink_frames:
            changed = cv2.dilate(self.neutral_with_blink(self.blink_closure(n))[1].astype(np.uint8), reach).astype(np.float32)
            position = self.source_map(n)
            in_frame = cv2.remap(changed, position[..., 0], position[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
            blink_mask |= in_frame > 0
        return {
            "expression_flow": np.ascontiguousarray(expression, dtype=np.float32),
            "head_onset_to_apex": onset_to_apex,
            "head_matrices": np.stack([plan.head.matrix(n) for n in plan.frame_numbers]),
            "blink_mask": blink_mask,
            "blink_frames": np.array(blink_frames, dtype=np.int64),
        }


def affine_map(matrix: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """(H, W, 2) float32 image of the pixel grid under a (2, 3) affine map, xs (1, W) and ys (H, 1)."""
    m = matrix.astype(np.float32)
    return np.stack([m[0, 0] * xs + m[0, 1] * ys + m[0, 2], m[1, 0] * xs + m[1, 1] * ys + m[1, 2]], axis=-1)


def _support_box(field: np.ndarray, margin: int) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) box around a field's non-zero vectors grown by ``margin``; None if all zero."""
    moving = np.any(field != 0, axis=0)
    if not moving.any():
        return None
    rows, cols = np.flatnonzero(moving.any(axis=1)), np.flatnonzero(moving.any(axis=0))
    height, width = moving.shape
    return (
        max(0, rows[0] - margin),
        min(height, rows[-1] + margin + 1),
        max(0, cols[0] - margin),
        min(width, cols[-1] + margin + 1),
    )


def head_flow(matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(2, H, W) float32 dense displacement of a (2, 3) affine map: ``matrix @ [x, y, 1] - [x, y]``."""
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    moved_x = matrix[0, 0] * xs + matrix[0, 1] * ys + matrix[0, 2]
    moved_y = matrix[1, 0] * xs + matrix[1, 1] * ys + matrix[1, 2]
    return np.stack([moved_x - xs, moved_y - ys]).astype(np.float32)


def paint_eyelids(neutral: np.ndarray, landmarks: np.ndarray, closure: float) -> tuple[np.ndarray, np.ndarray]:
    """Both upper eyelids lowered over the eyes by ``closure`` (0 open, 1 shut).

    A closing lid is the skin above the eye sliding down: the band of skin just above each column
    of the eye opening (0.15 IOD high) is stretched over the covered part, keeping the subject's
    own skin tone and texture, with a soft dark lash line at the lid's edge. The eye opening is the
    polygon of the six eye landmarks grown by 4% of the inter-ocular distance (lids cover a little
    more than the landmark outline).

    Returns the painted image (same shape and dtype as ``neutral``) and the (H, W) bool mask of the
    pixels it changed, which lie inside the grown openings.
    """
    image = neutral.copy()
    changed = np.zeros(neutral.shape[:2], bool)
    if closure <= 0:
        return image, changed
    iod = FaceFrame.from_landmarks(landmarks).iod
    for eye in (RIGHT_EYE, LEFT_EYE):
        _paint_eyelid(neutral, image, changed, landmarks[eye], closure, iod)
    return image, changed


def _paint_eyelid(
    source: np.ndarray, image: np.ndarray, changed: np.ndarray, eye: np.ndarray, closure: float, iod: float
) -> None:
    height, width = image.shape[:2]
    grow = max(1, int(round(0.04 * iod)))
    x0 = max(0, int(np.floor(eye[:, 0].min())) - grow - 1)
    x1 = min(width, int(np.ceil(eye[:, 0].max())) + grow + 2)
    y0 = max(0, int(np.floor(eye[:, 1].min())) - grow - 1)
    y1 = min(height, int(np.ceil(eye[:, 1].max())) + grow + 2)
    opening = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(opening, [np.round((eye - [x0, y0]) * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    opening = cv2.dilate(opening, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))).astype(bool)
    if not opening.any():
        return
    rows = np.arange(opening.shape[0], dtype=np.float32)[:, None]
    has_opening = opening.any(axis=0)
    top = np.where(has_opening, opening.argmax(axis=0), 0).astype(np.float32)
    bottom = np.where(has_opening, opening.shape[0] - 1 - opening[::-1].argmax(axis=0), 0).astype(np.float32)
    span = np.maximum(bottom - top + 1, 1)
    lid_edge = top + closure * span  # rows above the edge are covered by the lid
    coverage = (np.clip(lid_edge - rows, 0, 1) * opening).astype(np.float32)
    lash = (np.clip(1.5 - np.abs(rows + 0.5 - lid_edge), 0, 1) * opening * min(1.0, 4 * closure)).astype(np.float32)

    # the covered rows [top, edge] show the skin band [top - band, top] stretched down
    band = 0.15 * iod
    fraction = np.clip((rows - top) / np.maximum(lid_edge - top, 1e-3), 0, 1)
    source_y = (y0 + top - band * (1 - fraction)).astype(np.float32)
    source_x = np.broadcast_to(np.arange(x0, x1, dtype=np.float32)[None, :], source_y.shape).astype(np.float32)
    lid = cv2.remap(source, np.ascontiguousarray(source_x), np.ascontiguousarray(source_y), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    shading = 1.0 - 0.12 * fraction  # the lid darkens towards its edge, where it curves away
    if image.ndim == 3:
        coverage, lash, shading = coverage[..., None], lash[..., None], shading[..., None]
    region = source[y0:y1, x0:x1]
    painted = region * (1 - coverage) + lid * shading * coverage
    painted = painted * (1 - 0.6 * lash)
    image[y0:y1, x0:x1] = painted.astype(image.dtype)
    changed[y0:y1, x0:x1] |= (coverage.reshape(opening.shape) > 0) | (lash.reshape(opening.shape) > 0)
