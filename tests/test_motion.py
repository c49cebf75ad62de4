"""The motion model against closed forms."""

import math

import numpy as np
import pytest

from mepipe.synth.motion import (
    AU_BUMPS,
    HeadMotion,
    blink_closure,
    compose_affine,
    expression_profile,
    expression_unit_field,
    invert_affine,
)


def _landmarks():
    """A frontal 68-point face with eyes at x 280 and 360 (IOD 80), centred at x 320."""
    rng = np.random.default_rng(0)
    points = np.zeros((68, 2))
    points[:, 0] = 320 + rng.uniform(-60, 60, 68)
    points[:, 1] = 260 + rng.uniform(-40, 80, 68)
    points[36:42] = [(262, 200), (272, 195), (288, 195), (298, 200), (288, 205), (272, 205)]
    points[42:48] = [(342, 200), (352, 195), (368, 195), (378, 200), (368, 205), (352, 205)]
    points[48], points[54] = (290, 330), (350, 330)
    # mirror-symmetric pairs so that sides can be compared
    points[17:22] = [(250, 175), (262, 170), (275, 168), (288, 170), (300, 175)]
    points[22:27] = [(640 - x, y) for x, y in points[17:22][::-1]]
    return points


def test_expression_profile_is_zero_at_onset_one_at_apex_and_smooth():
    frames = np.arange(0, 41)
    profile = expression_profile(frames, onset=10, apex=20, offset=30)
    assert profile[10] == 0 and profile[20] == 1 and profile[30] == 0
    assert np.all(profile[:10] == 0) and np.all(profile[31:] == 0)
    assert np.all(np.diff(profile[10:21]) > 0) and np.all(np.diff(profile[20:31]) < 0)
    # raised cosine: halfway up is exactly one half
    assert expression_profile(15, 10, 20, 30) == pytest.approx(0.5, abs=1e-12)
    # apex on an end of the clip is allowed (CK+ sequences end at their apex)
    assert expression_profile(30, 10, 30, 30) == 1.0
    with pytest.raises(ValueError, match="onset <= apex <= offset"):
        expression_profile(5, 10, 5, 30)


def test_unit_field_peaks_at_one_and_vanishes_away_from_the_face():
    field = expression_unit_field(_landmarks(), [(12, None)], (480, 640))
    magnitude = np.hypot(*field)
    assert magnitude.max() == pytest.approx(1.0, abs=1e-6)
    # truncated at 3 sigma (sigma 0.25 IOD = 20 px) around the lip corners
    assert magnitude[:150].max() == 0 and magnitude[:, :200].max() == 0


def test_one_sided_action_unit_moves_only_its_side():
    landmarks = _landmarks()
    left = np.hypot(*expression_unit_field(landmarks, [(12, "L")], (480, 640)))
    both = np.hypot(*expression_unit_field(landmarks, [(12, None)], (480, 640)))
    # L = subject's left = image right (x > 320)
    assert left[:, 320:].max() == pytest.approx(1.0, abs=1e-6)
    right_corner = landmarks[48].astype(int)
    assert left[right_corner[1], right_corner[0]] == 0  # the other lip corner stays still
    assert left[:, : right_corner[0]].max() == 0
    assert both[right_corner[1], right_corner[0]] > 0.9


def test_lip_corner_puller_pulls_outwards_and_up():
    landmarks = _landmarks()
    field = expression_unit_field(landmarks, [(12, None)], (480, 640))
    right_corner, left_corner = landmarks[48].astype(int), landmarks[54].astype(int)
    u_r, v_r = field[:, right_corner[1], right_corner[0]]
    u_l, v_l = field[:, left_corner[1], left_corner[0]]
    assert u_r < 0 < u_l  # away from the midline on both sides
    assert v_r < 0 and v_l < 0  # upwards
    assert math.atan2(-v_l, u_l) == pytest.approx(math.pi / 4, abs=0.05)


def test_every_action_unit_renders():
    landmarks = _landmarks()
    for number in AU_BUMPS:
        field = expression_unit_field(landmarks, [(number, None)], (480, 640))
        assert np.hypot(*field).max() == pytest.approx(1.0, abs=1e-6), number


def test_head_motion_is_a_rigid_rotation_about_the_pivot():
    head = HeadMotion(pivot=(320.0, 400.0), drift=(1.2, -0.5), rotation=1.0, sway=0.0, sway_period=50.0,
                      sway_phase=0.0, first_frame=10, last_frame=60)
    start, end = head.matrix(10), head.matrix(60)
    np.testing.assert_allclose(start, np.eye(2, 3), atol=1e-12)
    angle = math.radians(1.0)
    np.testing.assert_allclose(end[:, :2], [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    # the pivot moves only by the drift
    np.testing.assert_allclose(end[:, :2] @ [320, 400] + end[:, 2], [321.2, 399.5], atol=1e-9)
    np.testing.assert_allclose(compose_affine(end, invert_affine(end)), np.eye(2, 3), atol=1e-12)


def test_blink_closes_fast_and_opens_slowly():
    closure = blink_closure(np.arange(-2, 32), start=0, length=30)
    assert closure[0] == 0 and closure[-1] == 0
    fully_closed = np.flatnonzero(closure == 1.0) - 2
    assert fully_closed.min() == 10 and fully_closed.max() == 15  # closed 10..15, opening cos^2 starts at 1
    assert np.argmax(closure > 0.5) < 30 - np.argmax(closure[::-1] > 0.5)
