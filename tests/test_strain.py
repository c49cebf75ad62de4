"""Optical strain against closed forms: affine fields, where every finite difference is exact."""

import warnings

import cv2
import numpy as np
import pytest
import torch

from mepipe.features.flow import tvl1
from mepipe.features.strain import flow_strain_image, optical_strain

from test_flow import INTERIOR, texture


def affine_field(a: float, b: float, c: float, d: float, shape=(48, 64)) -> np.ndarray:
    """(2, H, W) float64 u = a x + b y, v = c x + d y about the centre."""
    height, width = shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    x -= (width - 1) / 2
    y -= (height - 1) / 2
    return np.stack([a * x + b * y, c * x + d * y])


def closed_form_strain(a, b, c, d) -> float:
    # exx = a, eyy = d, exy = (b + c) / 2
    return float(np.sqrt(a**2 + d**2 + 2 * ((b + c) / 2) ** 2))


@pytest.mark.parametrize("coefficients", [(0.02, -0.01, 0.03, -0.015), (0.0, 0.05, 0.0, 0.0), (0.05, 0.0, 0.0, 0.0), (0.1, 0.2, -0.2, 0.1)])
def test_strain_of_an_affine_field_is_exact_everywhere(coefficients):
    """Central and one-sided differences are exact on a linear field, border included (float32 precision)."""
    strain = optical_strain(affine_field(*coefficients))
    assert strain.shape == (48, 64) and strain.dtype == np.float32
    np.testing.assert_allclose(strain, closed_form_strain(*coefficients), rtol=1e-6, atol=1e-9)


def test_axes_are_not_swapped():
    """np.gradient gives d/dy first: unpacking it as (d/dx, d/dy) swaps stretch and shear.

    A pure shear u = b y has strain |b| / sqrt(2) (all in exy); with the axes swapped it would read
    |b|. A pure stretch u = a x has strain |a|; swapped, |a| / sqrt(2). A rotation-free field with
    b != c tells exy = (b + c) / 2 from the swapped (a + d) / 2.
    """
    b = 0.04
    assert optical_strain(affine_field(0, b, 0, 0)) == pytest.approx(b / np.sqrt(2), rel=1e-6)
    a = 0.04
    assert optical_strain(affine_field(a, 0, 0, 0)) == pytest.approx(a, rel=1e-6)
    # the swapped computation gives a different number for this field
    field = affine_field(0.01, 0.05, -0.02, 0.03)
    du_dx, du_dy = np.gradient(field[0])  # the mistake: these are really d/dy, d/dx
    dv_dx, dv_dy = np.gradient(field[1])
    swapped = np.sqrt(du_dx**2 + dv_dy**2 + 2 * ((du_dy + dv_dx) / 2) ** 2)
    assert not np.allclose(swapped, closed_form_strain(0.01, 0.05, -0.02, 0.03), rtol=1e-3)
    np.testing.assert_allclose(optical_strain(field), closed_form_strain(0.01, 0.05, -0.02, 0.03), rtol=1e-6)


def test_border_uses_one_sided_differences():
    """u = x^2 / 2: du/dx is x inside (central) and the one-sided difference on the first/last column."""
    width = 9
    x = np.arange(width, dtype=np.float64)
    flow = np.stack([np.tile(x**2 / 2, (5, 1)), np.zeros((5, width))])
    strain = optical_strain(flow)[2]
    expected = x.copy()  # (x+1)^2/2 - (x-1)^2/2 over 2 = x
    expected[0] = 0.5  # 1/2 - 0
    expected[-1] = (8**2 - 7**2) / 2  # 7.5
    np.testing.assert_allclose(strain, expected, rtol=1e-6)


@pytest.mark.parametrize("backend", ["opencv", "torch"])
def test_tvl1_then_strain_recovers_an_affine_motion(backend):
    """A texture moved by a known affine map: the strain of the TV-L1 field within 6% of the
    closed form (median over the interior), its flow within 0.06 px on average."""
    torch_threads, cv_threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    try:
        size = 128
        a, b, c, d = 0.012, -0.008, 0.02, -0.01  # b != c: a swapped-axes strain would be off
        matrix = np.array([[a, b], [c, d]])
        y, x = np.mgrid[0:size, 0:size].astype(np.float64)
        centre = (size - 1) / 2
        # next(x + M (x - centre)) = prev(x): sample prev's texture where each next pixel came from
        inverse = np.linalg.inv(np.eye(2) + matrix)
        source_x = centre + inverse[0, 0] * (x - centre) + inverse[0, 1] * (y - centre)
        source_y = centre + inverse[1, 0] * (x - centre) + inverse[1, 1] * (y - centre)
        prev, next = texture(x, y).astype(np.float32), texture(source_x, source_y).astype(np.float32)
        flow = tvl1(prev, next, backend=backend)
    finally:
        torch.set_num_threads(torch_threads)
        cv2.setNumThreads(cv_threads)
    truth = affine_field(a, b, c, d, (size, size))
    assert np.hypot(*(flow - truth))[INTERIOR].mean() <= 0.06
    expected = closed_form_strain(a, b, c, d)
    assert np.median(optical_strain(flow)[INTERIOR]) == pytest.approx(expected, rel=0.06)


def test_flow_strain_image_raw_and_minmax():
    flow = affine_field(0.02, -0.01, 0.03, -0.015).astype(np.float32)
    raw = flow_strain_image(flow)
    assert raw.shape == (3, 48, 64) and raw.dtype == np.float32
    np.testing.assert_array_equal(raw[:2], flow)
    np.testing.assert_array_equal(raw[2], optical_strain(flow))
    scaled = flow_strain_image(flow, normalize="minmax")
    assert scaled.dtype == np.float32
    for channel in (0, 1):
        low, high = flow[channel].min(), flow[channel].max()
        np.testing.assert_allclose(scaled[channel], (flow[channel] - low) / (high - low), rtol=1e-6, atol=1e-7)
    # u = x / 2, v = 0: v and the strain (1/2 everywhere, exactly) are constant channels, which
    # map to 0, without a division warning
    ramp = np.stack([np.tile(np.arange(16, dtype=np.float32) / 2, (8, 1)), np.zeros((8, 16), np.float32)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scaled = flow_strain_image(ramp, normalize="minmax")
    np.testing.assert_allclose(scaled[0], np.tile(np.arange(16) / 15, (8, 1)), rtol=1e-6)
    assert np.array_equal(scaled[1:], np.zeros((2, 8, 16), np.float32))


def test_bad_flow_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        optical_strain(np.zeros((48, 64, 2), np.float32))  # OpenCV's (H, W, 2) layout
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        flow_strain_image(np.zeros((48, 64), np.float32))
    with pytest.raises(ValueError, match="floating point"):
        optical_strain(np.zeros((2, 8, 8), np.int32))
    with pytest.raises(ValueError, match="at least 2 x 2"):
        optical_strain(np.zeros((2, 1, 8), np.float32))
    with pytest.raises(ValueError, match="normalize"):
        flow_strain_image(np.zeros((2, 8, 8), np.float32), normalize="zscore")
