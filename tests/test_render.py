"""The renderer and its ground truth, checked against the forward model and the pixels."""

import cv2
import numpy as np
import pytest

from mepipe.synth.appearance import default_photo, make_subject
from mepipe.synth.ground_truth import face_evaluation_mask
from mepipe.synth.motion import FaceFrame, HeadMotion
from mepipe.synth.render import ClipPlan, ClipRenderer, head_flow, paint_eyelids


@pytest.fixture(scope="module")
def subject():
    return make_subject(default_photo(), (640, 480), True, 0, 0)


def _plan(subject, amplitude=4.0, blink=None, aus=((6, None), (12, None)), noise=0.0, flicker=0.0):
    chin = subject.landmarks[8]
    head = HeadMotion((float(chin[0]), float(chin[1]) + 40), (1.5, -1.0), 1.0, 0.2, 60.0, 0.4, 100, 140)
    return ClipPlan(
        dataset="casme2", subject="sub01", subject_index=0, clip="EP01_01", emotion="happiness",
        action_units="6+12", rendered_aus=aus, first_frame=100, last_frame=140, onset=100, apex=118,
        offset=140, true_onset=100, true_apex=118, true_offset=140, amplitude=amplitude, head=head,
        blink=blink, flicker=(flicker, 30.0, 0.0), noise_sigma=noise, seed=7,
    )


def test_inverse_map_inverts_the_forward_model(subject):
    """p = source_map(y) must satisfy y = M(p + A a U(p)) (the closed-form forward map).

    The forward map is evaluated with scipy's exact bilinear sampling; the solver uses OpenCV's
    remap, which rounds sample positions to 1/32 px, hence a tolerance of 0.01 px.
    """
    from scipy.ndimage import map_coordinates

    renderer = ClipRenderer(_plan(subject), subject)
    for frame in (110, 118, 130):
        position = renderer.source_map(frame, tolerance=1e-4)
        coordinates = [position[..., 1].astype(np.float64), position[..., 0].astype(np.float64)]
        unit = np.stack([map_coordinates(renderer.unit[..., c].astype(np.float64), coordinates, order=1) for c in (0, 1)], axis=-1)
        moved = position + renderer.expression_scale(frame) * unit
        matrix = renderer.plan.head.matrix(frame)
        forward = moved @ matrix[:, :2].T + matrix[:, 2]
        ys, xs = np.mgrid[0:480, 0:640]
        error = np.hypot(forward[..., 0] - xs, forward[..., 1] - ys)
        assert error.max() < 1e-2, (frame, error.max())


def test_ground_truth_flow_carries_onset_pixels_onto_the_apex_frame(subject):
    """Sampling the rendered apex frame at q + flow(q) gives back the onset frame (noise-free)."""
    renderer = ClipRenderer(_plan(subject), subject)
    onset = renderer.frame(100).astype(np.float32).mean(axis=2)
    apex = renderer.frame(118).astype(np.float32).mean(axis=2)
    truth = renderer.ground_truth()
    flow = truth["expression_flow"] + head_flow(truth["head_onset_to_apex"], (480, 640))
    ys, xs = np.mgrid[0:480, 0:640].astype(np.float32)
    warped = cv2.remap(apex, xs + flow[0], ys + flow[1], cv2.INTER_CUBIC)
    face = face_evaluation_mask(subject.landmarks, (480, 640))
    moving = np.hypot(*truth["expression_flow"]) > 1.0
    region = face & moving
    assert region.sum() > 2000
    residual_with_truth = np.abs(warped - onset)[region].mean()
    residual_without = np.abs(apex - onset)[region].mean()
    # only interpolation and 8-bit rounding are left once the true motion is undone
    assert residual_with_truth < 1.0
    assert residual_with_truth < 0.2 * residual_without


def test_expression_flow_peaks_at_the_amplitude(subject):
    renderer = ClipRenderer(_plan(subject, amplitude=2.5), subject)
    truth = renderer.ground_truth()
    assert np.hypot(*truth["expression_flow"]).max() == pytest.approx(2.5, rel=0.01)


def test_same_plan_renders_the_same_pixels(subject):
    first = ClipRenderer(_plan(subject, noise=1.2, flicker=0.005), subject).frame(120)
    second = ClipRenderer(_plan(subject, noise=1.2, flicker=0.005), subject).frame(120)
    assert np.array_equal(first, second)


def test_eyelids_cover_the_eyes_and_nothing_else(subject):
    landmarks = subject.landmarks
    unchanged, none = paint_eyelids(subject.neutral, landmarks, 0.0)
    assert not none.any() and np.array_equal(unchanged, subject.neutral)
    closed, changed = paint_eyelids(subject.neutral, landmarks, 1.0)
    iod = FaceFrame.from_landmarks(landmarks).iod
    eyes = np.zeros((480, 640), np.uint8)
    for eye in (slice(36, 42), slice(42, 48)):
        cv2.fillConvexPoly(eyes, np.round(landmarks[eye]).astype(np.int32), 1)
    inside_polygon = eyes.astype(bool)
    # the whole opening is covered when shut
    assert changed[inside_polygon].mean() > 0.99
    # nothing outside the opening grown by 4% IOD (+2 px for the lash line and rounding)
    grow = int(round(0.04 * iod)) + 2
    allowed = cv2.dilate(eyes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))).astype(bool)
    assert not (changed & ~allowed).any()
    assert np.array_equal(closed[~changed], subject.neutral[~changed])


def test_blink_mask_in_ground_truth_covers_the_painted_pixels(subject):
    renderer = ClipRenderer(_plan(subject, blink=(105, 24)), subject)
    truth = renderer.ground_truth()
    assert list(truth["blink_frames"]) == list(range(106, 129))  # closure is 0 at the blink's first frame
    shut = renderer.frame(115).astype(np.float32)
    open_ = ClipRenderer(_plan(subject), subject).frame(115).astype(np.float32)
    differs = np.abs(shut - open_).max(axis=2) > 0
    assert differs.sum() > 200
    assert not (differs & ~truth["blink_mask"]).any()
