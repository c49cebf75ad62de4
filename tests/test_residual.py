"""ARS and RRS (Zhao et al. 2021, equations (1)-(7)) against hand-worked examples.

Every expected value below is worked out by hand from the equations; all comparisons are exact
(integer arithmetic) unless a tolerance is given.
"""

import numpy as np
import pytest

from mepipe.features.residual import (
    absolute_residual_sum,
    relative_residual_sum,
    residual_sum,
    select_residual_frames,
)


# --- equations (1)-(4): which frames --------------------------------------------------------------


def test_short_apex_branch_ends_ten_frames_after_onset():
    # apex - onset = 5 < 10: end = min(onset + 10, offset) = min(20, 40) = 20
    # gap = ceil((20 - 10) / 6) = 2: F = {12, 14, 16, 18, 20}
    selection = select_residual_frames(onset=10, apex=15, offset=40)
    assert (selection.start, selection.end) == (10, 20)
    assert selection.key_frames == (12, 14, 16, 18, 20)


def test_short_apex_branch_is_cut_at_the_offset():
    # apex - onset = 5 < 10: end = min(0 + 10, 7) = 7; gap = ceil(7 / 6) = 2: 2, 4, 6, min(8, 7) = 7
    selection = select_residual_frames(onset=0, apex=5, offset=7)
    assert (selection.start, selection.end, selection.key_frames) == (0, 7, (2, 4, 6, 7))


def test_long_apex_branch_ends_at_the_apex():
    # apex - onset = 30 >= 10: end = min(apex, offset) = 40; gap = ceil(30 / 6) = 5
    # F = {15, 20, 25, 30, 35, 40}: five frames strictly inside the clip, then the end frame
    selection = select_residual_frames(onset=10, apex=40, offset=60)
    assert (selection.start, selection.end) == (10, 40)
    assert selection.key_frames == (15, 20, 25, 30, 35, 40)


def test_apex_exactly_ten_after_onset_takes_the_long_branch():
    # apex - onset = 10 is not < 10: end = min(apex, offset) = 10 (the same frame as the other branch
    # would give, so also check with an offset that separates the branches: end = min(10, 8) = 8)
    assert select_residual_frames(0, 10, 30).end == 10
    assert select_residual_frames(0, 10, 8).end == 8
    # apex after the offset (an annotation slip): equation (2) ends the clip at the offset
    assert select_residual_frames(0, 25, 18).end == 18


def test_clamped_terms_count_once_and_n_key_is_honoured():
    # end - start = 2: gap = ceil(2 / 6) = 1: min(1, 2), min(2, 2), min(3, 2), ... = {1, 2}
    assert select_residual_frames(0, 1, 2).key_frames == (1, 2)
    # N_key = 2: gap = ceil(10 / 3) = 4: 4, 8, min(12, 10) = 10
    assert select_residual_frames(0, 3, 30, n_key=2).key_frames == (4, 8, 10)


@pytest.mark.parametrize(
    "args, message",
    [
        ((5, 5, 5), "onset < offset"),
        ((5, 3, 9), "onset <= apex"),
        ((0, 2, 9, 0), "n_key must be at least 1"),
        ((0.5, 2, 9), "onset must be an integer frame index"),
    ],
)
def test_bad_frame_indices_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        select_residual_frames(*args)


# --- equation (5): ARS -----------------------------------------------------------------------------

# A 3-frame clip, onset 0, apex 1, offset 2: apex - onset = 1 < 10, end = min(10, 2) = 2,
# gap = ceil(2 / 6) = 1, F = {1, 2}. Values chosen so that residuals go both ways (3 - 5 must give
# 2, not the uint8 wrap 254) and the sum passes 256 (wraps modulo 256).
THREE_FRAMES = np.array(
    [
        [[5, 200], [0, 255]],  # Q_start
        [[3, 100], [255, 0]],  # Q_1
        [[9, 60], [255, 1]],  # Q_2
    ],
    dtype=np.uint8,
)
# |Q_1 - Q_0| + |Q_2 - Q_0| =
#   [[2 + 4, 100 + 140], [255 + 255, 255 + 254]] = [[6, 240], [510, 509]]
THREE_FRAMES_SUM = np.array([[6, 240], [510, 509]])
# modulo 256: 510 - 256 = 254, 509 - 256 = 253
THREE_FRAMES_ARS = np.array([[6, 240], [254, 253]], dtype=np.float32)


def test_ars_of_a_three_frame_clip_by_hand():
    assert np.array_equal(residual_sum(THREE_FRAMES, 0, 1, 2), THREE_FRAMES_SUM)
    ars = absolute_residual_sum(THREE_FRAMES, 0, 1, 2)
    assert ars.dtype == np.float32 and ars.shape == (2, 2)
    assert np.array_equal(ars, THREE_FRAMES_ARS)


def test_ars_does_not_depend_on_the_integer_or_float_type_of_the_frames():
    for frames in (THREE_FRAMES.astype(np.int16), THREE_FRAMES.astype(np.uint16), THREE_FRAMES.astype(np.float32)):
        assert np.array_equal(absolute_residual_sum(frames, 0, 1, 2), THREE_FRAMES_ARS)


def test_ars_long_apex_branch_by_hand():
    # 13 frames, pixel value 20 * t at frame t (a brightening ramp) and 240 - 20 * t (darkening).
    # onset 0, apex 12, offset 12: apex - onset = 12 >= 10, end = 12, gap = ceil(12 / 6) = 2,
    # F = {2, 4, 6, 8, 10, 12}: sum of |20 f - 0| = 20 * 42 = 840 and the same for the darkening
    # pixel; 840 % 256 = 840 - 3 * 256 = 72. The unused odd frames are set to noise to show they
    # are not read.
    t = np.arange(13)
    frames = np.stack([np.array([[20 * k, 240 - 20 * k]]) for k in t]).astype(np.uint8)
    frames[1::2] = np.array([[77, 13]], np.uint8)
    assert np.array_equal(residual_sum(frames, 0, 12, 12), [[840, 840]])
    assert np.array_equal(absolute_residual_sum(frames, 0, 12, 12), [[72, 72]])


def test_ars_of_colour_frames_is_per_channel():
    colour = np.stack([THREE_FRAMES, 255 - THREE_FRAMES, np.zeros_like(THREE_FRAMES)], axis=-1)
    ars = absolute_residual_sum(colour, 0, 1, 2)
    assert ars.shape == (2, 2, 3)
    # 255 - x has the same absolute residuals as x; the constant channel has none
    assert np.array_equal(ars[..., 0], THREE_FRAMES_ARS)
    assert np.array_equal(ars[..., 1], THREE_FRAMES_ARS)
    assert np.array_equal(ars[..., 2], np.zeros((2, 2)))


def test_ars_uses_onset_as_start_inside_a_longer_array():
    # the same clip placed at indices 4..6 of a 9-frame array: frames outside are ignored
    frames = np.full((9, 2, 2), 123, np.uint8)
    frames[4:7] = THREE_FRAMES
    assert np.array_equal(absolute_residual_sum(frames, 4, 5, 6), THREE_FRAMES_ARS)


# --- equations (6)-(7): RRS ------------------------------------------------------------------------


def test_rrs_of_a_three_frame_clip_by_hand():
    # diff = [[6, 240], [510, 509]], min 6, max 510:
    # rres = (diff - 6) / 504 * 255 = [[0, 234 * 255 / 504], [255, 503 * 255 / 504]]
    rrs = relative_residual_sum(THREE_FRAMES, 0, 1, 2)
    expected = np.array([[0.0, 234 * 255 / 504], [255.0, 503 * 255 / 504]])
    assert rrs.dtype == np.float32
    np.testing.assert_allclose(rrs, expected, rtol=0, atol=1e-4)  # float32 rounding of values <= 255
    assert rrs.min() == 0.0 and rrs.max() == 255.0


def test_rrs_range_is_a_parameter_and_spans_it_exactly():
    rrs = relative_residual_sum(THREE_FRAMES, 0, 1, 2, value_range=(-1.0, 1.0))
    np.testing.assert_allclose(rrs, [[-1.0, 234 / 504 * 2 - 1], [1.0, 503 / 504 * 2 - 1]], rtol=0, atol=1e-6)


def test_rrs_of_colour_frames_stretches_all_channels_together():
    # channel 1 has half the residuals of channel 0: the joint min-max keeps the ratio
    frames = np.zeros((3, 1, 2, 2), np.int32)
    frames[1:, 0, :, 0] = [[100, 50], [100, 50]]
    frames[1:, 0, :, 1] = [[50, 25], [50, 25]]
    # diff channel 0 = [200, 100], channel 1 = [100, 50]: min 50, max 200
    rrs = relative_residual_sum(frames, 0, 1, 2)
    np.testing.assert_allclose(rrs[0], [[255, 85], [85, 0]], rtol=0, atol=1e-4)


def test_rrs_of_a_static_clip_is_gmin():
    still = np.full((12, 4, 4), 90, np.uint8)
    assert np.array_equal(relative_residual_sum(still, 0, 3, 11), np.zeros((4, 4), np.float32))
    assert np.array_equal(absolute_residual_sum(still, 0, 3, 11), np.zeros((4, 4), np.float32))


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames, indices, message",
    [
        (np.zeros((3, 4), np.uint8), (0, 1, 2), r"shape \(T, H, W\) or \(T, H, W, C\), got shape \(3, 4\)"),
        (np.zeros((3, 4, 4), bool), (0, 1, 2), "integer or float pixel values, got dtype bool"),
        (np.zeros((3, 4, 4), complex), (0, 1, 2), "integer or float pixel values"),
        (np.zeros((3, 4, 4), np.uint8), (0, 1, 3), r"offset must index the clip's 3 frames \(0..2\), got 3"),
        (np.zeros((3, 4, 4), np.uint8), (-1, 1, 2), "onset must index the clip's 3 frames"),
    ],
)
def test_bad_input_raises_a_clear_value_error(frames, indices, message):
    with pytest.raises(ValueError, match=message):
        absolute_residual_sum(frames, *indices)
    with pytest.raises(ValueError, match=message):
        relative_residual_sum(frames, *indices)


def test_bad_rrs_range_is_named():
    with pytest.raises(ValueError, match="gmin < gmax"):
        relative_residual_sum(THREE_FRAMES, 0, 1, 2, value_range=(255, 0))


# --- colour: equations (5)-(7) on three-channel frames Q_f(x, y, z) -------------------------------


def _paper_key_frames(onset, apex, offset, n_key=5):
    """start, F of equations (1)-(4), written out again from the paper (independent of the module)."""
    start = onset
    end = min(onset + 10, offset) if apex - onset < 10 else min(apex, offset)
    gap = -(-(end - start) // (n_key + 1))  # ceil of a positive integer ratio
    chosen = []
    k = 1
    while not chosen or chosen[-1] != end:
        frame = min(start + gap * k, end)
        if frame not in chosen:
            chosen.append(frame)
        k += 1
    return start, chosen


def _paper_ars_rrs(frames, onset, apex, offset, gmin=0.0, gmax=255.0):
    """Equations (5)-(7) by explicit loops over x, y, z and f, in Python integers and floats."""
    start, chosen = _paper_key_frames(onset, apex, offset)
    _, height, width, channels = frames.shape
    diff = [[[0] * channels for _ in range(width)] for _ in range(height)]
    for y in range(height):
        for x in range(width):
            for z in range(channels):
                total = 0
                for f in chosen:
                    total += abs(int(frames[f, y, x, z]) - int(frames[start, y, x, z]))
                diff[y][x][z] = total
    ares = np.zeros((height, width, channels), np.float32)
    rres = np.zeros((height, width, channels), np.float32)
    values = [diff[y][x][z] for y in range(height) for x in range(width) for z in range(channels)]
    low, high = min(values), max(values)  # min(diff), max(diff): over the whole (x, y, z) array
    for y in range(height):
        for x in range(width):
            for z in range(channels):
                ares[y, x, z] = diff[y][x][z] % 256
                rres[y, x, z] = (float(diff[y][x][z]) - low) / (high - low) * (gmax - gmin) + gmin
    return np.array(diff), ares, rres


def _tiny_colour_clip():
    """13 frames of 2 x 3 RGB pixels, onset 0, apex 12, offset 12: F = {2, 4, 6, 8, 10, 12}.

    Pixel (0, 0) swings between 0 and 255 in every channel (each residual 255, six of them:
    1530 = 5 * 256 + 250, the sum passes 256 five times); the others are random, so most of their
    sums pass 256 as well; pixel (1, 2) is still in channel 2 (residual 0).
    """
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (13, 2, 3, 3), dtype=np.uint8)
    frames[0, 0, 0] = 0
    frames[1:, 0, 0] = 255
    frames[:, 1, 2, 2] = 40
    return frames


def test_colour_ars_and_rrs_equal_a_loop_over_equations_5_to_7_exactly():
    frames = _tiny_colour_clip()
    diff, ares, rres = _paper_ars_rrs(frames, 0, 12, 12)
    assert diff[0, 0].tolist() == [1530, 1530, 1530] and ares[0, 0].tolist() == [250, 250, 250]
    assert (diff >= 256).sum() >= 10  # the % 256 wrap is exercised well beyond one pixel
    assert diff[1, 2, 2] == 0
    assert np.array_equal(residual_sum(frames, 0, 12, 12), diff)
    ars = absolute_residual_sum(frames, 0, 12, 12)
    assert ars.shape == (2, 3, 3) and ars.dtype == np.float32
    # tolerance 0: both are whole numbers 0..255
    assert np.array_equal(ars, ares)
    rrs = relative_residual_sum(frames, 0, 12, 12)
    assert rrs.shape == (2, 3, 3) and rrs.dtype == np.float32
    # tolerance 0: the same float64 operations in the same order, rounded to float32 once
    assert np.array_equal(rrs, rres)
    assert rrs.min() == 0.0 and rrs.max() == 255.0


def test_colour_ars_of_a_random_clip_is_the_gray_ars_of_each_channel():
    # equations (5)-(6) are separable per channel z: exact equality (integer sums, tolerance 0)
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (40, 16, 12, 3), dtype=np.uint8)
    for onset, apex, offset in ((0, 4, 30), (3, 25, 39), (10, 12, 14)):
        ars = absolute_residual_sum(frames, onset, apex, offset)
        total = residual_sum(frames, onset, apex, offset)
        assert ars.shape == (16, 12, 3) and ars.dtype == np.float32
        assert (total >= 256).any()  # sums that wrap are among them
        for z in range(3):
            channel = np.ascontiguousarray(frames[..., z])
            assert np.array_equal(ars[..., z], absolute_residual_sum(channel, onset, apex, offset))
            assert np.array_equal(total[..., z], residual_sum(channel, onset, apex, offset))


def test_colour_rrs_is_each_channel_gray_rrs_placed_in_the_joint_range():
    # equation (7) is not separable: one min and one max for all channels. A channel's RRS is its
    # gray RRS mapped affinely from its own range [lo_z, hi_z] into the joint range [lo, hi].
    rng = np.random.default_rng(4)
    frames = rng.integers(0, 256, (40, 16, 12, 3), dtype=np.uint8)
    frames[..., 2] //= 4  # channel 2 moves a quarter as much: its range is well inside the joint one
    rrs = relative_residual_sum(frames, 3, 25, 39)
    total = residual_sum(frames, 3, 25, 39).astype(np.float64)
    low, high = total.min(), total.max()
    for z in range(3):
        gray = relative_residual_sum(np.ascontiguousarray(frames[..., z]), 3, 25, 39).astype(np.float64)
        low_z, high_z = total[..., z].min(), total[..., z].max()
        expected = (gray * (high_z - low_z) / 255 + (low_z - low)) / (high - low) * 255
        # float32 rounding of both images (values <= 255, about 1.5e-5 each) plus the float64 map
        np.testing.assert_allclose(rrs[..., z], expected, rtol=0, atol=1e-4)
    assert rrs[..., 2].max() < 0.5 * 255  # not stretched to full scale on its own


def test_rrs_per_channel_stretches_each_channel_by_its_own_range():
    """``per_channel``: each channel of an RGB clip is its own gray RRS (equation (7) applied to
    that channel alone); the default keeps one range over all channels, as equation (7) writes it."""
    rng = np.random.default_rng(3)
    clip = rng.integers(0, 256, size=(13, 5, 6, 3), dtype=np.uint8)
    clip[..., 2] //= 4  # a dim channel: its own range differs from the image's
    per_channel = relative_residual_sum(clip, 0, 6, 12, per_channel=True)
    for c in range(3):
        np.testing.assert_allclose(per_channel[..., c], relative_residual_sum(clip[..., c], 0, 6, 12), rtol=0, atol=1e-4)
        assert per_channel[..., c].min() == 0.0 and per_channel[..., c].max() == 255.0
    joint = relative_residual_sum(clip, 0, 6, 12)
    assert joint[..., 2].max() < 255.0  # the dim channel stays dim under the paper's one range
