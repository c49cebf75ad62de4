"""One geometry per clip, many warps: ClipGeometry, estimate_clip_geometry, warp_clip.

On the synthetic demo set's faces (colour JPEG frames, read as RGB, and their gray decode). Exact
comparisons are bit-exact (np.array_equal) unless a tolerance is stated.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from mepipe.datasets.layouts import get_layout
from mepipe.features import face
from mepipe.features.face import ClipGeometry, align_clip, estimate_clip_geometry, to_gray, warp_clip
from mepipe.synth.ground_truth import GroundTruth

SIZE = 224


def _paths(root: Path, entry: dict, count: int | None = None) -> list[Path]:
    layout = get_layout("casme2")
    last = entry["last_frame"] if count is None else entry["first_frame"] + count - 1
    return [root / entry["path"] / layout.frame_name(entry["subject"], entry["clip"], n) for n in range(entry["first_frame"], last + 1)]


@pytest.fixture(scope="module")
def clip(demo_set):
    """One clip of the demo set: its RGB frames, their BT.601 gray, onset and apex indices."""
    truth = GroundTruth(demo_set.root)
    entry = truth.clips[2]
    truth.close()
    rgb = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in _paths(demo_set.root, entry)])
    gray = np.stack([to_gray(frame) for frame in rgb])
    return rgb, gray, entry["onset"] - entry["first_frame"], entry["apex"] - entry["first_frame"]


@pytest.fixture(scope="module")
def geometry(clip):
    rgb, _, onset, apex = clip
    return estimate_clip_geometry(rgb, onset, size=SIZE, check_frames=[apex])


def _same_quality(a, b) -> bool:
    """Field by field, NaN equal to NaN (head_motion_px is NaN when nothing was measured)."""
    def same(x, y):
        return x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))

    return all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))


def _frame_landmarks(geometry: ClipGeometry) -> np.ndarray:
    """The anchor frame's landmarks in frame pixels (the anchor's matrix is the clip transform)."""
    anchor = geometry.quality.landmark_frame
    return face.transform_points(face.invert_similarity(geometry.matrices[anchor]), geometry.landmarks)


# --- scaling -----------------------------------------------------------------------------------------


def test_scaled_geometry_puts_the_eyes_exactly_on_the_targets_of_the_new_size(geometry):
    np.testing.assert_allclose(np.array(face.eye_centres(geometry.landmarks)), face.eye_targets(SIZE), rtol=0, atol=1e-9)
    for size in (256, 320, 160):
        scaled = geometry.scaled(size)
        assert scaled.size == size and scaled.matrices.shape == geometry.matrices.shape
        np.testing.assert_allclose(np.array(face.eye_centres(scaled.landmarks)), face.eye_targets(size), rtol=0, atol=1e-9)
        # the anchor frame's transform is the clip transform alignment_matrix gives at that size
        anchor = geometry.quality.landmark_frame
        direct = face.alignment_matrix(_frame_landmarks(geometry), size)
        np.testing.assert_allclose(scaled.matrices[anchor], direct, rtol=0, atol=1e-9)
        frame_eyes = np.array(face.eye_centres(face.transform_points(scaled.matrices[anchor], _frame_landmarks(geometry))))
        np.testing.assert_allclose(frame_eyes, face.eye_targets(size), rtol=0, atol=1e-9)


def test_scaling_is_not_the_entry_wise_product_because_of_the_centre_half_pixel(geometry):
    # the x target is (S - 1) / 2, not a fraction of S: k M misses it by (k - 1) / 2 px in x
    k = 320 / SIZE
    scaled = geometry.scaled(320).matrices
    difference = scaled - k * geometry.matrices
    np.testing.assert_allclose(difference[:, 0, 2], (k - 1) / 2, rtol=0, atol=1e-9)
    difference[:, 0, 2] = 0
    np.testing.assert_allclose(difference, 0, rtol=0, atol=1e-9)


def test_scaling_carries_the_stabilisation_and_the_quality(geometry):
    quality = geometry.quality
    assert quality.mode == "clip" and quality.head_motion_px > 0  # stabilised: matrices differ per frame
    assert np.ptp(geometry.matrices[:, :, 2], axis=0).max() > 0
    scaled = geometry.scaled(320)
    k = 320 / SIZE
    rescale = face.crop_rescale_matrix(SIZE, 320)
    for matrix, moved in zip(geometry.matrices, scaled.matrices):
        np.testing.assert_allclose(moved, face.compose(rescale, matrix), rtol=0, atol=1e-9)
    assert scaled.quality.head_motion_px == pytest.approx(quality.head_motion_px * k, rel=1e-12)
    assert scaled.quality.residual_motion_px == pytest.approx(quality.residual_motion_px * k, rel=1e-12)
    assert scaled.quality.scale == pytest.approx(quality.scale * k, rel=1e-12)
    unchanged = {f.name for f in dataclasses.fields(quality)} - {"head_motion_px", "residual_motion_px", "scale"}
    assert all(getattr(scaled.quality, name) == getattr(quality, name) for name in unchanged)  # inter_ocular_px too
    # there and back, and the same size is the same geometry
    back = scaled.scaled(SIZE)
    np.testing.assert_allclose(back.matrices, geometry.matrices, rtol=0, atol=1e-9)
    np.testing.assert_allclose(back.landmarks, geometry.landmarks, rtol=0, atol=1e-9)
    assert geometry.scaled(SIZE) is geometry


def test_scaled_equals_estimating_at_the_other_size(clip):
    # exact (to float64 rounding, 1e-9) where nothing is measured on crops: the clip transform
    # alone and per-frame landmarks; up to the head-motion measurement with stabilisation
    rgb, _, onset, apex = clip
    short = rgb[:10]
    for settings in (dict(stabilize=False), dict(mode="frame")):
        small = estimate_clip_geometry(short, 0, size=SIZE, **settings)
        large = estimate_clip_geometry(short, 0, size=320, **settings)
        np.testing.assert_allclose(small.scaled(320).matrices, large.matrices, rtol=0, atol=1e-9)
        np.testing.assert_allclose(small.scaled(320).landmarks, large.landmarks, rtol=0, atol=1e-9)
    small = estimate_clip_geometry(rgb, onset, size=SIZE, check_frames=[apex]).scaled(320)
    large = estimate_clip_geometry(rgb, onset, size=320, check_frames=[apex])
    region = small.face_region()
    worst = max(face.motion_magnitude(face.compose(a, face.invert_similarity(b)), region) for a, b in zip(small.matrices, large.matrices))
    # two measurements of the same head motion on different pixel grids: a small fraction of a
    # crop pixel apart (the micro-expression itself moves about a pixel)
    assert worst < 0.15, worst


def test_eye_mask_and_face_region_of_a_scaled_geometry(geometry):
    for size in (256, 320):
        scaled = geometry.scaled(size)
        # the landmarks at the new size, from the frame's landmarks, without the scaled geometry
        # (k * p would be half a pixel off in x; see crop_rescale_matrix)
        frame_landmarks = _frame_landmarks(geometry)
        landmarks = face.transform_points(face.alignment_matrix(frame_landmarks, size), frame_landmarks)
        for margin in (0.0, face.EYE_MARGIN, 0.25):
            mask = scaled.eye_mask(margin)
            assert mask.shape == (size, size) and mask.dtype == bool
            assert np.array_equal(mask, face.eye_mask(landmarks, size, margin))
        expected = face.face_region(landmarks, size, eyes=face.eye_mask(landmarks, size, face.EYE_MARGIN))
        assert np.array_equal(scaled.face_region(), expected)
        assert np.array_equal(scaled.face_region(0.05), expected)  # never less than the default margin
        # the same share of the crop at every size (pixel grid aside)
        assert scaled.eye_mask().mean() == pytest.approx(geometry.eye_mask().mean(), rel=0.05)


# --- warps -------------------------------------------------------------------------------------------


def test_gray_crops_are_to_gray_of_the_colour_crops_bit_exactly(clip, geometry):
    rgb, gray, _, _ = clip
    for size in (SIZE, 320):
        scaled = geometry.scaled(size)
        colour = warp_clip(rgb, scaled, colour=True)
        crops = warp_clip(rgb, scaled, colour=False)
        assert colour.shape == (len(rgb), size, size, 3) and colour.dtype == np.uint8
        assert crops.shape == (len(rgb), size, size) and crops.dtype == np.uint8
        assert np.array_equal(crops, np.stack([to_gray(frame) for frame in colour]))
        assert np.array_equal(crops, np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in colour]))
        # not the warp of the gray frames: that rounds to 8 bits before the warp
        assert not np.array_equal(crops, warp_clip(gray, scaled, colour=False))


def test_a_gray_source_gives_three_equal_channels(clip, geometry):
    _, gray, _, _ = clip
    scaled = geometry.scaled(256)
    colour = warp_clip(gray, scaled, colour=True)
    crops = warp_clip(gray, scaled, colour=False)
    assert colour.shape == (len(gray), 256, 256, 3) and colour.dtype == np.uint8
    assert crops.shape == (len(gray), 256, 256)
    for channel in range(3):
        assert np.array_equal(colour[..., channel], crops)
    assert np.array_equal(crops, face.crop_frames(gray, scaled.matrices, 256))  # the plain warp
    assert np.array_equal(crops, np.stack([to_gray(frame) for frame in colour]))  # BT.601 of equal channels


def test_a_gray_source_and_its_rgb_give_the_same_geometry(clip, geometry):
    rgb, gray, onset, apex = clip
    from_gray = estimate_clip_geometry(gray, onset, size=SIZE, check_frames=[apex])
    assert np.array_equal(from_gray.matrices, geometry.matrices)
    assert np.array_equal(from_gray.landmarks, geometry.landmarks)
    assert _same_quality(from_gray.quality, geometry.quality)


def test_align_clip_is_estimate_warp_and_fill(clip):
    rgb, gray, onset, apex = clip
    for frames, settings in (
        (gray, {}),
        (rgb, {}),
        (rgb, dict(grayscale=False, eye_fill="mean", size=256)),
        (gray, dict(grayscale=False, eye_fill=None, stabilize=False, size=320)),
    ):
        settings = dict(settings)
        grayscale = settings.pop("grayscale", True)
        fill = settings.pop("eye_fill", "zero")
        result = align_clip(frames, onset, check_frames=[apex], grayscale=grayscale, eye_fill=fill, **settings)
        geometry = estimate_clip_geometry(frames, onset, check_frames=[apex], **settings)
        colour = not grayscale and frames.ndim == 4
        crops = warp_clip(frames, geometry, colour=colour)
        mask = geometry.eye_mask()
        if fill is not None:
            crops = face.fill_eyes(crops, mask, fill)
        assert np.array_equal(result.frames, crops) and result.frames.dtype == crops.dtype
        assert np.array_equal(result.eye_mask, mask)
        assert np.array_equal(result.matrices, geometry.matrices)
        assert np.array_equal(result.landmarks, geometry.landmarks)
        assert _same_quality(result.quality, geometry.quality)
        # gray frames give gray crops even with grayscale=False, as align_clip always did
        assert result.frames.ndim == (4 if colour else 3)
        assert result.matrices.flags.writeable  # a copy: the geometry's arrays are read-only


def test_float_frames_keep_float_crops(clip, geometry):
    rgb, _, _, _ = clip
    short = rgb[:3].astype(np.float32)
    part = ClipGeometry(geometry.size, geometry.matrices[:3], geometry.landmarks, geometry.quality)
    colour = warp_clip(short, part, colour=True)
    crops = warp_clip(short, part, colour=False)
    assert colour.dtype == np.float32 and crops.dtype == np.float32
    assert np.array_equal(crops, np.stack([to_gray(frame) for frame in colour]))


# --- checks --------------------------------------------------------------------------------------------


def test_geometry_is_read_only_and_checked(geometry):
    with pytest.raises(ValueError, match="read-only"):
        geometry.matrices[0, 0, 0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        geometry.size = 320
    with pytest.raises(ValueError, match=r"expected \(T, 2, 3\) frame -> crop matrices"):
        ClipGeometry(SIZE, np.zeros((2, 3)), geometry.landmarks, geometry.quality)
    with pytest.raises(ValueError, match=r"expected \(68, 2\) landmarks"):
        ClipGeometry(SIZE, geometry.matrices, geometry.landmarks[:10], geometry.quality)
    for bad in (0, 4, 224.5):
        with pytest.raises(ValueError, match="crop size"):
            geometry.scaled(bad)
    with pytest.raises(ValueError, match="crop sizes must be positive"):
        face.crop_rescale_matrix(0, 224)


def test_warp_clip_refuses_a_geometry_of_another_clip(clip, geometry):
    rgb, gray, _, _ = clip
    with pytest.raises(ValueError, match=rf"the geometry has {len(rgb)} frames' matrices, the clip 5 frames"):
        warp_clip(rgb[:5], geometry, colour=True)
    with pytest.raises(TypeError, match="expected a ClipGeometry"):
        warp_clip(rgb, geometry.matrices, colour=True)
    mixed = [gray[0], *rgb[1:]]
    with pytest.raises(ValueError, match="mixes gray and RGB frames"):
        warp_clip(mixed, geometry, colour=False)


def test_rescale_matrix_maps_alignment_at_one_size_to_alignment_at_another():
    rng = np.random.default_rng(0)
    for _ in range(5):
        right, left = rng.uniform(100, 500, 2), rng.uniform(100, 500, 2)
        for small, large in ((224, 320), (320, 256), (48, 224)):
            for eye_line, inter_ocular in ((face.EYE_LINE, face.INTER_OCULAR), (0.4, 0.3)):
                a = face.similarity_from_eyes(right, left, small, eye_line=eye_line, inter_ocular=inter_ocular)
                b = face.similarity_from_eyes(right, left, large, eye_line=eye_line, inter_ocular=inter_ocular)
                np.testing.assert_allclose(face.compose(face.crop_rescale_matrix(small, large), a), b, rtol=0, atol=1e-9)
    assert np.array_equal(face.crop_rescale_matrix(224, 224), np.eye(2, 3))
    assert math.isclose(face.crop_rescale_matrix(224, 320)[0, 2], (320 / 224 - 1) / 2)
