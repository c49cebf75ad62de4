"""Eulerian video magnification against synthetic ground truth: textures translated by known amounts.

The output's translation is measured independently of the EVM code: from the phase of the
texture's own Fourier components (a translation by s multiplies the component at frequency f by
exp(-2 pi i f.s); the shift is the weighted least-squares fit of those phases over the texture's
band). Phase correlation (cv2.phaseCorrelate) is not used: it weighs every frequency equally, and
a band-limited texture has no signal outside its band.
"""

import cv2
import numpy as np
import pytest

from mepipe.features.magnify import (
    level_amplification,
    level_wavelengths,
    magnify_motion,
    pyramid_down,
    pyramid_levels,
    pyramid_up,
    temporal_bandpass,
)

FPS = 200.0  # CASME II and SAMM
ALPHA = 10.0  # the default, as in the MSMMT paper


class Texture:
    """A periodic random texture with all its energy at wavelengths ``shortest``..``longest`` px,
    translated along x exactly (Fourier shift theorem), grey levels about 128 +- 60."""

    def __init__(self, size, shortest, longest, seed=0):
        rng = np.random.default_rng(seed)
        frequencies = np.fft.fftfreq(size)
        self.fy, self.fx = np.meshgrid(frequencies, frequencies, indexing="ij")
        radius = np.hypot(self.fx, self.fy)
        self.band = (radius >= 1 / longest) & (radius <= 1 / shortest)
        self.spectrum = np.fft.fft2(rng.normal(size=(size, size))) * self.band
        self.scale = 60 / np.abs(np.fft.ifft2(self.spectrum).real).max()

    def frames(self, shifts):
        phase = np.exp(-2j * np.pi * self.fx[None] * np.asarray(shifts)[:, None, None])
        images = np.fft.ifft2(self.spectrum[None] * phase).real
        return (128 + self.scale * images).astype(np.float32)

    def shifts(self, frames, reference):
        """x translation of every frame relative to ``reference``, from the band's phases."""
        ref = np.fft.fft2(reference)
        weights_root = np.sqrt(np.abs(ref[self.band]))
        design = np.stack([-2 * np.pi * self.fx[self.band], -2 * np.pi * self.fy[self.band]], axis=1)
        measured = []
        for frame in frames:
            phases = np.angle(np.fft.fft2(frame)[self.band] * np.conj(ref[self.band]))
            solution = np.linalg.lstsq(design * weights_root[:, None], phases * weights_root, rcond=None)[0]
            measured.append(solution[0])
        return np.array(measured)


def _amplitude(shifts, frequency, times):
    """Amplitude of the sinusoid of ``frequency`` fitted (with an offset) to ``shifts``."""
    phase = 2 * np.pi * frequency * times
    design = np.stack([np.sin(phase), np.cos(phase), np.ones_like(times)], axis=1)
    sine, cosine, _ = np.linalg.lstsq(design, shifts, rcond=None)[0]
    return float(np.hypot(sine, cosine))


@pytest.fixture(scope="module")
def texture():
    # wavelengths 32-64 px on a 224 px frame (the pipeline's crop size): lambda / 8 >= 4 px
    return Texture(224, 32, 64)


def test_measurement_recovers_known_shifts(texture):
    frames = texture.frames([0.0, 0.3, 1.7, -2.5])
    np.testing.assert_allclose(texture.shifts(frames, frames[0]), [0, 0.3, 1.7, -2.5], rtol=0, atol=1e-4)


# --- pyramid levels and their amplification --------------------------------------------------------


def test_pyramid_depth_follows_the_five_pixel_rule():
    # 224 -> 112 -> 56 -> 28 -> 14 -> 7 (next would be 4 < 5): six levels
    assert pyramid_levels(224, 224) == 6
    assert pyramid_levels(128, 128) == 5  # 128 .. 8
    assert pyramid_levels(224, 9) == 2  # the narrow side decides
    assert pyramid_levels(17, 17) == 3 and pyramid_levels(16, 16) == 2  # 17 -> 9 -> 5, 16 -> 8 -> 4


@pytest.mark.parametrize("shape", [(60, 224, 224), (7, 37, 40), (5, 18, 11), (3, 17, 17), (4, 4, 9), (6, 9, 9, 3), (2, 20, 21, 1)])
def test_whole_clip_pyramid_equals_opencv_frame_by_frame(shape):
    # one call for the whole clip must give what cv2.pyrDown / cv2.pyrUp give on every frame
    clip = np.random.default_rng(sum(shape)).uniform(0, 255, shape).astype(np.float32)
    down = pyramid_down(clip)
    up = pyramid_up(down, shape[1:3])
    frames = clip[..., 0] if shape[3:] == (1,) else clip
    expected_down = np.stack([cv2.pyrDown(frame) for frame in frames])
    expected_up = np.stack([cv2.pyrUp(frame, dstsize=(shape[2], shape[1])) for frame in expected_down])
    if shape[3:] == (1,):
        expected_down, expected_up = expected_down[..., None], expected_up[..., None]
    assert down.shape == expected_down.shape and up.shape == clip.shape
    assert np.array_equal(down, expected_down) and np.array_equal(up, expected_up)


def _reference_evm(clip, amplification, fps, levels):
    """Wu et al.'s linear EVM as written, frame by frame with OpenCV: Laplacian pyramid of every
    frame, every level band-passed in time (ideal filter by numpy's FFT), times alpha_l, added back,
    every frame's pyramid collapsed. No commuting of filters, no whole-clip pyramid."""
    pyramids = []
    for frame in clip.astype(np.float64):
        gaussian = [frame]
        for _ in range(levels - 1):
            gaussian.append(cv2.pyrDown(gaussian[-1]))
        laplacian = [g - cv2.pyrUp(gaussian[i + 1], dstsize=g.shape[::-1]) for i, g in enumerate(gaussian[:-1])]
        pyramids.append(laplacian + [gaussian[-1]])
    frequencies = np.abs(np.fft.fftfreq(len(clip), d=1 / fps))
    keep = (frequencies > 2.0) & (frequencies < 25.0)
    for level in range(levels):
        stack = np.stack([pyramid[level] for pyramid in pyramids])
        filtered = np.fft.ifft(np.fft.fft(stack, axis=0) * keep[:, None, None], axis=0).real
        for pyramid, band in zip(pyramids, filtered):
            pyramid[level] = pyramid[level] + amplification[level] * band
    output = []
    for pyramid in pyramids:
        image = pyramid[-1]
        for band in pyramid[-2::-1]:
            image = cv2.pyrUp(image, dstsize=band.shape[::-1]) + band
        output.append(image)
    return np.stack(output)


def test_magnification_equals_wu_et_al_frame_by_frame(texture):
    times = np.arange(40) / FPS
    clip = np.round(texture.frames(0.3 * np.sin(2 * np.pi * 15.0 * times))).astype(np.uint8)[:, :120, :100]
    levels = pyramid_levels(120, 100)
    expected = _reference_evm(clip, level_amplification(levels), FPS, levels)
    output = magnify_motion(clip, fps=FPS)
    assert not np.array_equal(output, clip)  # something was amplified
    np.testing.assert_allclose(output, expected, rtol=0, atol=2e-3)  # float32 against float64


def _laplacian_shares(image, levels):
    """Amplitude of a unit grating carried by each Laplacian level, expanded back to full size."""
    gaussian = [image]
    for _ in range(levels - 1):
        gaussian.append(cv2.pyrDown(gaussian[-1]))
    shares = []
    for level in range(levels - 1):
        band = gaussian[level] - cv2.pyrUp(gaussian[level + 1], dstsize=gaussian[level].shape[::-1])
        for _ in range(level):
            band = cv2.pyrUp(band, dstsize=(band.shape[1] * 2, band.shape[0] * 2))
        shares.append(band)
    return shares


@pytest.mark.parametrize("level", [1, 2, 3])
def test_a_grating_at_a_level_wavelength_lands_mostly_in_that_level(level):
    size = 512
    wavelength = level_wavelengths(7)[level]
    cycles = round(size / wavelength)
    xs = np.arange(size)
    grating = np.tile(np.cos(2 * np.pi * cycles * xs / size).astype(np.float32), (size, 1))
    row = np.cos(2 * np.pi * cycles * xs / size)
    shares = [abs(2 * np.mean(band[size // 2] * row)) for band in _laplacian_shares(grating, 7)]
    assert int(np.argmax(shares)) == level, shares


def test_level_amplification_by_hand_and_within_the_bound():
    # lambda_l = 2^(l + 2.5) = 5.66, 11.31, 22.63, 45.25, 90.51, 181.0 px; lambda_c = 16:
    # level 1: (1 + 10) * 11.31 / 16 - 1 = 6.778; levels 2-4: full 10; level 0 and residual: 0
    linear = level_amplification(6, alpha=10, cutoff_wavelength=16)
    np.testing.assert_allclose(linear, [0, 11 * 2**3.5 / 16 - 1, 10, 10, 10, 0], rtol=1e-12)
    np.testing.assert_allclose(level_amplification(6, 10, 16, "zero"), [0, 0, 10, 10, 10, 0])
    # the bound (1 + alpha_l) delta <= lambda_l / 8 at the delta the cutoff implies
    delta = 16 / (8 * (1 + 10))
    wavelengths = level_wavelengths(6)
    assert np.all((1 + linear[1:-1]) * delta <= wavelengths[1:-1] / 8 + 1e-12)


# --- temporal filters ------------------------------------------------------------------------------


def test_ideal_filter_keeps_in_band_frequencies_exactly_and_removes_the_rest():
    # 64 frames at 200 fps: DFT bins every 3.125 Hz. Band (2, 25): 6.25 and 18.75 Hz pass,
    # the mean, 31.25 and 62.5 Hz do not.
    times = np.arange(64) / FPS
    passing = np.sin(2 * np.pi * 6.25 * times) + 0.5 * np.cos(2 * np.pi * 18.75 * times)
    stopped = 3.0 + np.sin(2 * np.pi * 31.25 * times) + np.cos(2 * np.pi * 62.5 * times)
    signal = np.stack([passing + stopped, passing], axis=1)
    filtered = temporal_bandpass(signal, FPS)
    np.testing.assert_allclose(filtered, np.stack([passing, passing], axis=1), rtol=0, atol=1e-12)


def test_butterworth_filter_is_scipys_forward_backward_filter():
    from scipy.signal import butter, sosfiltfilt

    signal = np.random.default_rng(0).normal(size=(50, 3, 4))
    reference = sosfiltfilt(butter(2, [2.0, 25.0], btype="bandpass", fs=FPS, output="sos"), signal, axis=0)
    filtered = temporal_bandpass(signal, FPS, temporal_filter="butterworth", order=2)
    np.testing.assert_allclose(filtered, reference, rtol=0, atol=1e-12)


def test_butterworth_passes_its_centre_and_attenuates_outside():
    times = np.arange(2000) / FPS
    middle = slice(500, 1500)  # away from the ends, where forward-backward filtering has transients
    centre = np.sqrt(2.0 * 25.0)  # the band's geometric centre
    gains = {}
    for frequency in (centre, 100 / 2.0 - 10, 0.3):
        wave = np.sin(2 * np.pi * frequency * times)
        filtered = temporal_bandpass(wave, FPS, temporal_filter="butterworth")
        gains[frequency] = np.abs(filtered[middle]).max()
    assert gains[centre] == pytest.approx(1.0, abs=0.01)
    assert gains[40.0] < 0.35 and gains[0.3] < 0.1  # first order, squared: a gentle roll-off


# --- magnification ----------------------------------------------------------------------------------


@pytest.mark.parametrize("amplitude", [0.1, 0.3, 0.35])
def test_in_band_translation_is_amplified_by_one_plus_alpha(texture, amplitude):
    # 12.5 Hz, 2 periods in 32 frames; (1 + 10) * 0.35 = 3.85 px < lambda / 8 = 4 px at the
    # texture's shortest wavelength: inside Wu et al.'s bound up to 96 % of it
    times = np.arange(32) / FPS
    clip = texture.frames(amplitude * np.sin(2 * np.pi * 12.5 * times))
    output = magnify_motion(clip, fps=FPS)
    measured = _amplitude(texture.shifts(output, clip[0]), 12.5, times)
    # within 15 %; what is lost: the part of the texture in the unamplified finest level and
    # residual, the attenuated level 1, and the first-order (Taylor) nature of linear EVM
    assert measured == pytest.approx((1 + ALPHA) * amplitude, rel=0.15)


def test_in_band_translation_is_amplified_with_the_butterworth_filter(texture):
    times = np.arange(100) / FPS
    frequency = np.sqrt(2.0 * 25.0)
    clip = texture.frames(0.2 * np.sin(2 * np.pi * frequency * times))
    output = magnify_motion(clip, fps=FPS, temporal_filter="butterworth")
    middle = slice(25, 75)
    measured = _amplitude(texture.shifts(output[middle], clip[0]), frequency, times[middle])
    assert measured == pytest.approx((1 + ALPHA) * 0.2, rel=0.15)


def test_translation_above_the_band_is_not_amplified(texture):
    # 50 Hz (a period of 4 frames), well above the 25 Hz edge
    times = np.arange(32) / FPS
    clip = texture.frames(0.3 * np.sin(2 * np.pi * 50.0 * times))
    output = magnify_motion(clip, fps=FPS)
    measured = _amplitude(texture.shifts(output, clip[0]), 50.0, times)
    assert measured == pytest.approx(0.3, rel=0.05)


def test_translation_below_the_band_is_not_amplified():
    # 1 Hz, one period in 200 frames, below the 2 Hz edge
    small = Texture(128, 32, 64, seed=1)
    times = np.arange(200) / FPS
    clip = small.frames(0.3 * np.sin(2 * np.pi * 1.0 * times))
    output = magnify_motion(clip, fps=FPS)
    measured = _amplitude(small.shifts(output, clip[0]), 1.0, times)
    assert measured == pytest.approx(0.3, rel=0.05)


@pytest.mark.parametrize("temporal_filter", ["ideal", "butterworth"])
def test_a_static_clip_comes_out_unchanged(texture, temporal_filter):
    still = np.repeat(np.round(texture.frames([0.0])).astype(np.uint8), 24, axis=0)
    output = magnify_motion(still, fps=FPS, temporal_filter=temporal_filter)
    assert output.dtype == np.float32 and output.shape == still.shape
    np.testing.assert_allclose(output, still, rtol=0, atol=1e-3)  # float32 rounding of 0..255 values


def test_colour_channels_are_magnified_alike_and_clip_bounds_the_output(texture):
    times = np.arange(16) / FPS
    grey = texture.frames(0.3 * np.sin(2 * np.pi * 25.0 * times / 2))
    colour = np.stack([grey, grey * 0.5, grey], axis=-1)
    output = magnify_motion(colour, fps=FPS)
    reference = magnify_motion(grey, fps=FPS)
    np.testing.assert_allclose(output[..., 0], reference, rtol=0, atol=1e-3)
    np.testing.assert_allclose(output[..., 1], magnify_motion(grey * 0.5, fps=FPS), rtol=0, atol=1e-3)
    assert magnify_motion(grey[..., None], fps=FPS).shape == grey.shape + (1,)
    bounded = magnify_motion(grey, fps=FPS, alpha=50, clip=(100, 150))
    assert bounded.min() >= 100 and bounded.max() <= 150


# --- bad input --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frames, options, message",
    [
        (np.zeros((4, 32)), {}, r"shape \(T, H, W\) or \(T, H, W, C\) with C <= 4, got shape \(4, 32\)"),
        (np.zeros((4, 32, 32, 5)), {}, "C <= 4"),
        (np.zeros((1, 32, 32)), {}, "at least 2 frames"),
        (np.zeros((4, 32, 32), bool), {}, "got dtype bool"),
        (np.zeros((4, 16, 40)), {}, r"16 x 40 px are too small: .* at least 17 x 17 px"),
        (np.zeros((4, 64, 64)), {"levels": 9}, r"levels must be an integer in 3..4"),
        (np.zeros((4, 64, 64)), {"fps": 0}, "fps must be a positive frame rate"),
        (np.zeros((4, 64, 64)), {"fps": 30}, r"0 < low < high < fps / 2 = 15 Hz, got \(2, 25\) Hz"),
        (np.zeros((4, 64, 64)), {"band": (5, 3)}, "0 < low < high"),
        (np.zeros((4, 64, 64)), {"temporal_filter": "fir"}, 'temporal_filter must be "ideal" or "butterworth"'),
        (np.zeros((4, 64, 64)), {"temporal_filter": "butterworth"}, "needs more than 9 frames, got 4"),
        (np.zeros((4, 64, 64)), {"attenuation": "cubic"}, 'attenuation must be "linear" or "zero"'),
        (np.zeros((4, 64, 64)), {"alpha": -1}, "alpha must be a number >= 0"),
        (np.zeros((4, 64, 64)), {"clip": (1, 0)}, "low < high"),
    ],
)
def test_bad_input_raises_a_clear_value_error(frames, options, message):
    options = {"fps": FPS, **options}
    with pytest.raises(ValueError, match=message):
        magnify_motion(frames, **options)


def test_frame_rate_is_required():
    with pytest.raises(TypeError, match="fps"):
        magnify_motion(np.zeros((4, 64, 64)))
