"""Dynamic images against closed forms, Bilen et al.'s own weights and synthetic clips."""

import warnings

import numpy as np
import pytest

from mepipe.features.dynamic import (
    approximate_rank_pooling,
    approximate_rank_pooling_weights,
    display_image,
    dynamic_image_frames,
    rank_pooling,
    rank_pooling_features,
    time_varying_mean,
)


def _bilen_code_weights(n):
    """The weights as Bilen et al.'s vl_nnarpooltemporal.m computes them: a sum, not the closed form."""
    return np.array([sum((2 * j - n - 1) / j for j in range(i, n + 1)) for i in range(1, n + 1)])


def _scores(frames, direction):
    """<d, phi_t> with phi_t the mean of frames 0..t, by a plain loop (independent of the module)."""
    flat = frames.reshape(len(frames), -1).astype(np.float64)
    return np.array([flat[: t + 1].mean(axis=0) @ direction.ravel() for t in range(len(frames))])


def _correlation(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _rising_blob(seed, size=48, n_frames=24, noise=1.0):
    """A Gaussian brightening (sigma 6 px, 20 grey levels at the end) easing in over the clip, on a
    random texture, with sensor noise of ``noise`` grey levels (the synthetic sets use 0.8-1.5)."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[:size, :size]
    blob = np.exp(-((xs - 0.6 * size) ** 2 + (ys - 0.4 * size) ** 2) / (2 * 6.0**2))
    base = rng.uniform(60, 190, (size, size))
    ease = 0.5 - 0.5 * np.cos(np.pi * np.arange(n_frames) / (n_frames - 1))
    clip = base + 20 * blob * ease[:, None, None] + rng.normal(0, noise, (n_frames, size, size))
    return np.clip(np.round(clip), 0, 255).astype(np.uint8)


def _noisy_ramp(seed, size=48, n_frames=24):
    """Every pixel changes linearly in time (its own rate, 0.5 grey levels per frame on average)
    plus sensor noise of 2 grey levels."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(60, 190, (size, size))
    rate = rng.normal(0, 0.5, (size, size))
    clip = base + np.arange(n_frames)[:, None, None] * rate + rng.normal(0, 2.0, (n_frames, size, size))
    return np.clip(np.round(clip), 0, 255).astype(np.uint8)


def _moving_spot(seed, size=48, n_frames=24):
    """A bright spot sliding 0.7 px per frame to the right."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[:size, :size]
    clip = np.stack(
        [100 + 80 * np.exp(-((xs - 8 - 0.7 * t) ** 2 + (ys - size / 2) ** 2) / 30) for t in range(n_frames)]
    ) + rng.normal(0, 1.0, (n_frames, size, size))
    return np.clip(np.round(clip), 0, 255).astype(np.uint8)


# --- approximate rank pooling ----------------------------------------------------------------------


def test_weights_by_hand_for_two_and_three_frames():
    # T = 2: alpha_1 = 2*2 - 3*(H_2 - H_0) = 4 - 4.5 = -0.5, alpha_2 = 2*1 - 3*(H_2 - H_1) = 2 - 1.5
    np.testing.assert_allclose(approximate_rank_pooling_weights(2), [-0.5, 0.5], rtol=0, atol=1e-15)
    # T = 3: H_3 = 11/6; alpha = 6 - 4*11/6, 4 - 4*(11/6 - 1), 2 - 4*(1/3) = -4/3, 2/3, 2/3
    np.testing.assert_allclose(approximate_rank_pooling_weights(3), [-4 / 3, 2 / 3, 2 / 3], rtol=0, atol=1e-14)


@pytest.mark.parametrize("n", [2, 3, 10, 60, 250])
def test_weights_equal_bilen_code_and_sum_to_zero(n):
    weights = approximate_rank_pooling_weights(n)
    np.testing.assert_allclose(weights, _bilen_code_weights(n), rtol=1e-12, atol=1e-11)
    assert abs(weights.sum()) < 1e-9 * n  # float64 cancellation over n terms of size <= n
    # earlier frames count against, later ones for; alpha_T = 2 - (T + 1) / T
    assert weights[0] < 0 < weights[-1]
    assert weights[-1] == pytest.approx((n - 1) / n, abs=1e-12)


def test_approximate_image_of_a_linear_ramp_is_proportional_to_the_ramp_direction():
    # F_t = B + t D: sum_t alpha_t F_t = (sum alpha_t) B + (sum_t alpha_t t) D = (sum_t alpha_t t) D
    rng = np.random.default_rng(1)
    base = rng.uniform(50, 150, (16, 20, 3))
    direction = rng.normal(0, 1, (16, 20, 3))
    n = 15
    frames = base + np.arange(1, n + 1)[:, None, None, None] * direction
    scale = float(np.sum(approximate_rank_pooling_weights(n) * np.arange(1, n + 1)))
    result = approximate_rank_pooling(frames)
    assert result.raw.shape == (16, 20, 3) and result.raw.dtype == np.float32
    assert scale > 0
    # float32 output: relative error at the 1e-6 level of the largest value
    np.testing.assert_allclose(result.raw, scale * direction, rtol=0, atol=1e-5 * np.abs(scale * direction).max())


def test_approximate_image_ignores_a_constant_offset_and_a_static_clip_is_flat():
    frames = _rising_blob(0)
    shifted = approximate_rank_pooling(frames.astype(np.float64) + 1000.0)
    np.testing.assert_allclose(shifted.raw, approximate_rank_pooling(frames).raw, rtol=0, atol=1e-3)
    still = approximate_rank_pooling(np.full((8, 5, 5), 77, np.uint8))
    assert np.all(still.raw == 0) and np.all(still.image == 0)


# --- display ----------------------------------------------------------------------------------------


def test_display_is_bilen_min_max_over_the_whole_image():
    # (raw + 1) * 255 / 4 = 0, 63.75, 127.5, 255 -> MATLAB uint8 rounds half away from zero
    raw = np.array([[-1.0, 0.0], [1.0, 3.0]])
    assert np.array_equal(display_image(raw), np.array([[0, 64], [128, 255]], np.uint8))
    # colour: one min and one max for all channels together
    colour = np.stack([raw, raw / 2], axis=-1)
    picture = display_image(colour)
    assert picture[..., 0].max() == 255 and picture[..., 1].max() < 255
    assert np.array_equal(display_image(np.full((2, 2), 5.0)), np.zeros((2, 2), np.uint8))


# --- exact rank pooling -----------------------------------------------------------------------------


def _features(frames, normalization):
    """x_t of the SVM by plain loops (independent of the module): running means, then normalised."""
    flat = frames.reshape(len(frames), -1).astype(np.float64)
    means = np.array([flat[: t + 1].mean(axis=0) for t in range(len(frames))])
    norms = np.sqrt((means**2).sum(axis=1))
    if normalization == "clip":
        return means / np.sqrt(np.mean(norms**2))
    if normalization == "frame":
        return means / norms[:, None]
    return means


def test_time_varying_mean_is_the_running_mean():
    frames = np.arange(24, dtype=np.uint8).reshape(4, 3, 2)
    expected = np.stack([frames[: t + 1].astype(np.float64).mean(axis=0) for t in range(4)])
    np.testing.assert_allclose(time_varying_mean(frames), expected, rtol=0, atol=1e-12)


def test_features_by_hand():
    # two frames of two pixels: phi_1 = (3, 4), phi_2 = mean((3, 4), (9, 4)) = (6, 4)
    frames = np.array([[[3, 4]], [[9, 4]]], np.uint8)
    norms = np.array([5.0, np.sqrt(52.0)])
    np.testing.assert_allclose(rank_pooling_features(frames, "none"), [[[3, 4]], [[6, 4]]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        rank_pooling_features(frames, "frame"), [[[3 / 5, 4 / 5]], [[6 / norms[1], 4 / norms[1]]]], rtol=0, atol=1e-12
    )
    rms = np.sqrt((25 + 52) / 2)
    np.testing.assert_allclose(rank_pooling_features(frames), [[[3 / rms, 4 / rms]], [[6 / rms, 4 / rms]]], atol=1e-12)
    # a black frame keeps a zero feature instead of dividing by zero
    assert np.all(rank_pooling_features(np.zeros((3, 2, 2)), "frame") == 0)


def test_dynamic_image_frames_are_onset_to_apex():
    frames = np.arange(10)[:, None, None] * np.ones((10, 2, 2))
    segment = dynamic_image_frames(frames, 2, 6)
    assert segment.shape == (5, 2, 2) and segment[0, 0, 0] == 2 and segment[-1, 0, 0] == 6
    for onset, apex in ((3, 3), (5, 2), (-1, 4), (0, 10)):
        with pytest.raises(ValueError, match="0 <= onset < apex < 10"):
            dynamic_image_frames(frames, onset, apex)
    with pytest.raises(ValueError, match="apex must be an integer"):
        dynamic_image_frames(frames, 0, 2.5)


@pytest.mark.parametrize("normalization", ["clip", "frame", "none"])
@pytest.mark.parametrize("make_clip", [_noisy_ramp, _rising_blob, _moving_spot])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_dynamic_image_orders_the_frames(make_clip, seed, normalization):
    frames = make_clip(seed)
    result = rank_pooling(frames, normalization=normalization)
    scores = _features(frames, normalization).reshape(len(frames), -1) @ result.raw.ravel().astype(np.float64)
    np.testing.assert_allclose(result.scores, scores, rtol=0, atol=1e-6 * np.abs(scores).max())
    assert np.all(np.diff(scores) > 0), np.diff(scores).min()
    if normalization == "none":
        # C = 1 on 8-bit intensities is in the hard-margin regime: consecutive scores differ by
        # margin 1 up to the solver's tolerance
        assert np.all(np.diff(scores) > 0.9), np.diff(scores).min()
    assert result.image.dtype == np.uint8 and result.image.min() == 0 and result.image.max() == 255


@pytest.mark.parametrize("normalization", ["clip", "frame", "none"])
@pytest.mark.parametrize("make_clip", [_noisy_ramp, _rising_blob])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_and_approximate_dynamic_images_correlate(make_clip, seed, normalization):
    frames = make_clip(seed)
    correlation = _correlation(rank_pooling(frames, normalization=normalization).raw, approximate_rank_pooling(frames).raw)
    assert correlation >= 0.9, correlation


@pytest.mark.parametrize("normalization, c", [("none", 1.0), ("none", 1e-3), ("frame", 1.0), ("clip", 1.0), ("clip", 3e4)])
def test_exact_equals_the_svm_on_raw_pixel_pair_differences(normalization, c):
    # The reference: equation (4) handed to the SVM as written, one sample per pair (l, t) with
    # the pixels of x_l - x_t as features, on a clip small enough for that (6 frames of 8 x 8).
    # ("clip", 3e4) puts unit-norm features back into the regime where pairs reach the margin.
    from sklearn.svm import LinearSVC

    frames = _rising_blob(6, size=8, n_frames=6, noise=3.0)
    features = _features(frames, normalization)
    pairs = np.array([features[later] - features[earlier] for earlier in range(6) for later in range(earlier + 1, 6)])
    svm = LinearSVC(C=c / 2, loss="hinge", fit_intercept=False, tol=1e-10, max_iter=1_000_000, random_state=0)
    svm.fit(np.concatenate([pairs, -pairs]), np.r_[np.ones(len(pairs)), -np.ones(len(pairs))])
    reference = svm.coef_[0].reshape(8, 8)
    exact = rank_pooling(frames, C=c, normalization=normalization, tolerance=1e-10).raw
    np.testing.assert_allclose(exact, reference, rtol=0, atol=1e-4 * np.abs(reference).max())


def test_exact_tends_to_c_times_the_approximate_image_for_small_c():
    # Once no pair reaches margin 1, the optimum of 1/2|d|^2 + C sum (1 - <d, phi_l - phi_t>) is
    # d = C sum_{l>t} (phi_l - phi_t) = C * sum_t alpha_t F_t (Bilen et al.'s derivation): a closed
    # form for the whole solver path (pairs, reduction to the span, scikit-learn, mapping back).
    frames = _moving_spot(3)
    approximate = approximate_rank_pooling(frames).raw.astype(np.float64)
    means = time_varying_mean(frames).reshape(len(frames), -1)
    pairs = means[:, None, :] - means[None, :, :]  # [l, t] = phi_l - phi_t
    largest_margin = np.max(pairs.reshape(-1, pairs.shape[-1]) @ approximate.ravel())
    c = 0.5 / largest_margin  # every margin of C * approximate stays below 0.5
    exact = rank_pooling(frames, C=c, normalization="none", tolerance=1e-10).raw
    np.testing.assert_allclose(exact, c * approximate, rtol=0, atol=1e-4 * np.abs(c * approximate).max())


def test_default_scale_does_not_depend_on_the_intensity_units():
    frames = _rising_blob(2)
    grey_levels = rank_pooling(frames).raw
    unit_range = rank_pooling(frames.astype(np.float64) / 255).raw
    np.testing.assert_allclose(unit_range, grey_levels, rtol=0, atol=1e-4 * np.abs(grey_levels).max())


def test_exact_dynamic_image_of_a_static_clip_is_zero_and_colour_is_pooled_jointly():
    for normalization in ("clip", "frame", "none"):
        still = rank_pooling(np.full((6, 4, 4), 30, np.uint8), normalization=normalization)
        assert np.all(still.raw == 0) and np.all(still.image == 0) and np.all(still.scores == 0)
    grey = _rising_blob(4, size=24, n_frames=10)
    colour = np.stack([grey, grey, grey], axis=-1)
    # three equal channels: the SVM sees each pixel three times. Raw features: the optimum is the
    # grey one / 3. Normalised features are the grey ones / sqrt(3) three times: grey / sqrt(3).
    for normalization, factor in (("none", 1 / 3), ("clip", 1 / np.sqrt(3)), ("frame", 1 / np.sqrt(3))):
        result = rank_pooling(colour, normalization=normalization)
        assert result.raw.shape == (24, 24, 3)
        expected = rank_pooling(grey, normalization=normalization).raw * factor
        np.testing.assert_allclose(result.raw[..., 1], expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_no_convergence_warning_on_a_typical_clip():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for normalization in ("clip", "frame", "none"):
            rank_pooling(_rising_blob(5), normalization=normalization)


# --- rendered synthetic micro-expressions ---------------------------------------------------------


@pytest.fixture(scope="module")
def aligned_segments(demo_set):
    """Onset-to-apex frames of six rendered clips (the first of each subject), aligned 224 x 224 crops."""
    import cv2

    from mepipe.datasets.layouts import get_layout
    from mepipe.features.face import align_clip
    from mepipe.synth.ground_truth import GroundTruth

    truth = GroundTruth(demo_set.root)
    layout = get_layout("casme2")
    first_of_subject = {}
    for entry in truth.clips:
        first_of_subject.setdefault(entry["subject"], entry)
    segments = []
    for entry in first_of_subject.values():
        numbers = range(entry["first_frame"], entry["last_frame"] + 1)
        paths = [demo_set.root / entry["path"] / layout.frame_name(entry["subject"], entry["clip"], n) for n in numbers]
        frames = np.stack([cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in paths])
        onset, apex = entry["onset"] - entry["first_frame"], entry["apex"] - entry["first_frame"]
        aligned = align_clip(frames, onset, size=224, check_frames=[apex]).frames
        segments.append((entry["clip"], dynamic_image_frames(aligned, onset, apex)))
    truth.close()
    return segments


def test_exact_dynamic_image_of_rendered_clips_orders_them_and_matches_the_approximate_image(aligned_segments):
    assert len(aligned_segments) == 6
    for name, frames in aligned_segments:
        assert frames.shape[1:] == (224, 224) and len(frames) >= 10
        exact = rank_pooling(frames)
        approximate = approximate_rank_pooling(frames).raw.astype(np.float64)
        scores = _features(frames, "clip").reshape(len(frames), -1) @ exact.raw.ravel().astype(np.float64)
        assert np.all(np.diff(scores) > 0), (name, np.diff(scores).min())
        correlation = _correlation(exact.raw, approximate)
        assert correlation >= 0.9, (name, correlation)
        # the regime the module docstring describes: at Fernando et al.'s scale no pair reaches the
        # margin, so d* = C sum_{l>t} (x_l - x_t) = (C / s) * approximate image, s the clip's scale
        largest_margin = np.ptp(scores)
        assert largest_margin < 1, (name, largest_margin)
        scale = np.sqrt(np.mean(np.sum(time_varying_mean(frames).reshape(len(frames), -1) ** 2, axis=1)))
        expected = approximate / scale
        np.testing.assert_allclose(exact.raw, expected, rtol=0, atol=1e-3 * np.abs(expected).max())


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames, message",
    [
        (np.zeros((5, 4)), r"shape \(T, H, W\) or \(T, H, W, C\), got shape \(5, 4\)"),
        (np.zeros((1, 4, 4)), r"at least 2 frames, got shape \(1, 4, 4\)"),
        (np.zeros((3, 4, 4), bool), "integer or float pixel values, got dtype bool"),
        (np.full((3, 4, 4), np.nan), "NaN or infinite"),
    ],
)
def test_bad_frames_raise_a_clear_value_error(frames, message):
    for function in (approximate_rank_pooling, rank_pooling):
        with pytest.raises(ValueError, match=message):
            function(frames)


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="at least 2 frames"):
        approximate_rank_pooling_weights(1)
    with pytest.raises(ValueError, match="C must be a positive number"):
        rank_pooling(_rising_blob(0), C=0)
    for function in (rank_pooling, rank_pooling_features):
        with pytest.raises(ValueError, match='normalization must be "clip", "frame" or "none", got \'l2\''):
            function(_rising_blob(0), normalization="l2")


# --- RGB clips ---------------------------------------------------------------------------------------


def _colour_blob(seed, size=32, n_frames=12):
    """A rising blob per channel at different places and strengths: channels that differ."""
    channels = [_rising_blob(seed + k, size=size, n_frames=n_frames) for k in range(3)]
    channels[2] = (channels[2] // 2 + 60).astype(np.uint8)  # a weaker channel
    return np.stack(channels, axis=-1)


@pytest.mark.parametrize("seed", [0, 1])
def test_rgb_clip_of_three_equal_channels_gives_the_gray_image_in_each_channel(seed):
    # Tolerances: raw to 1e-6 of its largest value (float32 rounding; the two SVM solves agree to
    # about 1e-7 of it); the uint8 picture to 1 grey level, since a value that rounding moves
    # across a half-level boundary may round the other way (none did here, but another BLAS may
    # sum in another order); the ranking scores to 1e-6 of the largest.
    gray = _rising_blob(seed, size=32, n_frames=12)
    colour = np.stack([gray, gray, gray], axis=-1)
    cases = [(approximate_rank_pooling(colour), approximate_rank_pooling(gray), 1.0)]
    # "clip" and "frame": the colour problem is the gray one with d scaled by 1/sqrt(3) (rank_pooling's docstring)
    for normalization in ("clip", "frame"):
        cases.append((rank_pooling(colour, normalization=normalization), rank_pooling(gray, normalization=normalization), 1 / np.sqrt(3)))
    # "none": the gray problem with C tripled, divided by 3
    cases.append((rank_pooling(colour, normalization="none"), rank_pooling(gray, C=3.0, normalization="none"), 1 / 3))
    for result, reference, factor in cases:
        assert result.raw.shape == (32, 32, 3) and result.raw.dtype == np.float32
        assert result.image.shape == (32, 32, 3) and result.image.dtype == np.uint8
        scale = np.abs(reference.raw).max() * factor
        for z in range(3):
            np.testing.assert_allclose(result.raw[..., z], reference.raw * factor, rtol=0, atol=1e-6 * scale)
            assert np.abs(result.image[..., z].astype(int) - reference.image).max() <= 1
            np.testing.assert_allclose(result.raw[..., z], result.raw[..., 0], rtol=0, atol=1e-6 * scale)
        if result.scores is not None:
            np.testing.assert_allclose(result.scores, reference.scores, rtol=0, atol=1e-6 * np.abs(reference.scores).max())


def test_rgb_clip_with_different_channels_gives_different_channels():
    frames = _colour_blob(0)
    for result in (approximate_rank_pooling(frames), rank_pooling(frames)):
        image = result.image
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        for a, b in ((0, 1), (0, 2), (1, 2)):
            assert np.abs(image[..., a].astype(int) - image[..., b]).mean() > 5
        # one min-max for the whole image (Bilen et al.'s min(di(:)), max(di(:))): only one channel
        # need reach 0 and one 255, and the weaker channel stays inside the range
        assert image.min() == 0 and image.max() == 255
        assert np.ptp(result.raw[..., 2]) < np.ptp(result.raw[..., 0])
        np.testing.assert_array_equal(image, display_image(result.raw))
    # approximate rank pooling is a weighted sum per entry: each channel is the gray image of that
    # channel (float32 rounding, 1e-6 of the largest value)
    raw = approximate_rank_pooling(frames).raw
    for z in range(3):
        alone = approximate_rank_pooling(np.ascontiguousarray(frames[..., z])).raw
        np.testing.assert_allclose(raw[..., z], alone, rtol=0, atol=1e-6 * np.abs(alone).max())


def test_rgb_shapes_and_dtypes():
    frames = _colour_blob(2, size=20, n_frames=16)
    segment = dynamic_image_frames(frames, 3, 11)
    assert segment.shape == (9, 20, 20, 3) and segment.dtype == np.uint8
    assert np.shares_memory(segment, frames)
    approximate = approximate_rank_pooling(segment)
    exact = rank_pooling(segment)
    for result in (approximate, exact):
        assert result.raw.shape == (20, 20, 3) and result.raw.dtype == np.float32
        assert result.image.shape == (20, 20, 3) and result.image.dtype == np.uint8
    assert approximate.scores is None
    assert exact.scores.shape == (9,) and exact.scores.dtype == np.float64
    # the exact image ranks the RGB frames in time
    assert np.all(np.diff(exact.scores) > 0)
