"""The face stage against closed forms, an independent warp, and the synthetic ground truth."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage

from mepipe.datasets.layouts import get_layout
from mepipe.features import face
from mepipe.features.face import FaceNotFoundError, align_clip, find_face
from mepipe.synth.ground_truth import GroundTruth

SIZE = 224


def _clip_frames(root: Path, entry: dict) -> np.ndarray:
    layout = get_layout("casme2")
    numbers = range(entry["first_frame"], entry["last_frame"] + 1)
    paths = [root / entry["path"] / layout.frame_name(entry["subject"], entry["clip"], n) for n in numbers]
    return np.stack([cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in paths])


@pytest.fixture(scope="module")
def truth(demo_set):
    return GroundTruth(demo_set.root)


@pytest.fixture(scope="module")
def chosen_clips(truth):
    """Every clip with a blink plus the clips with the largest head motion onset -> apex: 14 clips."""
    def head_motion(entry):
        matrix = truth.head_matrix(entry["subject"], entry["clip"])
        centre = np.array(truth.frame_shape[::-1]) / 2
        return np.hypot(*(face.transform_points(matrix, centre[None])[0] - centre))

    blinking = [e for e in truth.clips if e["blink_frames"]]
    moving = sorted((e for e in truth.clips if not e["blink_frames"]), key=head_motion, reverse=True)
    return blinking + moving[: 14 - len(blinking)]


@pytest.fixture(scope="module")
def aligned(demo_set, chosen_clips):
    """Clip-mode alignment (the default) of the chosen clips, with their onset and apex indices."""
    results = []
    for entry in chosen_clips:
        frames = _clip_frames(demo_set.root, entry)
        onset, apex = entry["onset"] - entry["first_frame"], entry["apex"] - entry["first_frame"]
        results.append((entry, onset, apex, align_clip(frames, onset, size=SIZE, check_frames=[apex])))
    return results


# ---------------------------------------------------------------------------------------------
# Must-show 1 and 2 on synthetic clips with known head motion and blinks
# ---------------------------------------------------------------------------------------------


def test_clip_alignment_leaves_at_most_half_a_pixel_of_head_motion(truth, aligned):
    """The true head motion onset -> apex, mapped through each frame's transform, nearly vanishes.

    Residual = M_apex . H . M_onset^-1 - identity, averaged over the face (eyes excluded), in crop
    pixels at S=224. Without stabilisation the same clips keep 0.5-1.7 px (measured, see
    docs/face-stage.md); the bound asked for is 0.5 px.
    """
    worst = 0.0
    for entry, onset, apex, result in aligned:
        head = truth.head_matrix(entry["subject"], entry["clip"])
        residual_map = face.compose(result.matrices[apex], face.compose(head, face.invert_similarity(result.matrices[onset])))
        landmarks = face.transform_points(result.matrices[onset], truth.landmarks(entry["subject"], entry["clip"], entry["onset"]))
        region = face.face_region(landmarks, SIZE, eyes=face.eye_mask(landmarks, SIZE))
        residual = face.motion_magnitude(residual_map, region)
        unaligned = face.motion_magnitude(face.compose(result.matrices[onset], face.compose(head, face.invert_similarity(result.matrices[onset]))), region)
        assert residual <= 0.5, f"{entry['clip']}: {residual:.3f} px of head motion left (was {unaligned:.3f})"
        worst = max(worst, residual)
        # the quality record measured the same thing from the pixels alone
        assert result.quality.residual_motion_px <= 0.5
    assert worst <= 0.5


def test_aligned_eye_centres_of_every_frame_lie_within_a_pixel_of_their_targets(truth, aligned):
    targets = face.eye_targets(SIZE)
    for entry, _, _, result in aligned:
        for index, number in enumerate(range(entry["first_frame"], entry["last_frame"] + 1)):
            true_landmarks = truth.landmarks(entry["subject"], entry["clip"], number)
            centres = np.array(face.eye_centres(face.transform_points(result.matrices[index], true_landmarks)))
            error = np.hypot(*(centres - targets).T).max()
            assert error <= 1.0, f"{entry['clip']} frame {number}: eye centre {error:.2f} px from its target"


def test_eye_mask_covers_every_blink_pixel_and_at_most_a_tenth_of_the_crop(truth, aligned):
    blinks = 0
    for entry, _, _, result in aligned:
        assert result.eye_mask.mean() <= 0.10
        blink = truth.blink_mask(entry["subject"], entry["clip"]).astype(np.float32)
        if not blink.any():
            continue
        for index, number in enumerate(range(entry["first_frame"], entry["last_frame"] + 1)):
            if number not in entry["blink_frames"]:
                continue
            # any crop pixel the blink touches (bilinear weight > 0 counts: a conservative footprint)
            footprint = cv2.warpAffine(blink, result.matrices[index], (SIZE, SIZE), flags=cv2.INTER_LINEAR) > 0
            assert footprint.any()
            outside = footprint & ~result.eye_mask
            assert not outside.any(), f"{entry['clip']} frame {number}: {outside.sum()} blink pixels outside the mask"
            blinks += 1
    assert blinks > 0


def test_a_blink_on_the_onset_frame_moves_the_anchor_to_open_eyes(aligned):
    shut = [(entry, result) for entry, onset, _, result in aligned if entry["onset"] in entry["blink_frames"]]
    assert shut, "the demo set has clips that start in a blink"
    for entry, result in shut:
        assert result.quality.eye_aspect_ratio >= face.OPEN_EYES


def test_clip_mode_frames_stay_registered_and_quality_is_recorded(aligned):
    entry, onset, apex, result = aligned[0]
    quality = result.quality
    assert result.frames.shape == (entry["last_frame"] - entry["first_frame"] + 1, SIZE, SIZE)
    assert result.frames.dtype == np.uint8
    assert (result.frames[:, result.eye_mask] == 0).all()  # eyes filled with zero by default
    assert quality.fallback == "none" and quality.n_faces == 1 and quality.detector_score > 0.5
    assert quality.mode == "clip" and quality.unstabilised_frames == 0
    assert 0.8 < quality.scale < 1.2 and abs(quality.roll_degrees) < 3
    assert quality.head_motion_px > quality.residual_motion_px


def test_per_frame_mode_follows_landmarks_with_blinks_ignored(demo_set, truth, aligned):
    entry = next(e for e, *_ in aligned if e["blink_frames"])
    frames = _clip_frames(demo_set.root, entry)
    result = align_clip(frames, entry["onset"] - entry["first_frame"], size=SIZE, mode="frame")
    assert result.quality.mode == "frame" and math.isnan(result.quality.head_motion_px)
    targets = face.eye_targets(SIZE)
    for index, number in enumerate(range(entry["first_frame"], entry["last_frame"] + 1)):
        centres = np.array(face.eye_centres(face.transform_points(result.matrices[index], truth.landmarks(entry["subject"], entry["clip"], number))))
        # per-frame landmarks jitter; smoothed and with the blink frames interpolated they stay close
        assert np.hypot(*(centres - targets).T).max() <= 2.0


def test_colour_crops_and_mean_fill(demo_set, truth):
    entry = truth.clips[1]
    layout = get_layout("casme2")
    paths = [demo_set.root / entry["path"] / layout.frame_name(entry["subject"], entry["clip"], n)
             for n in range(entry["first_frame"], entry["first_frame"] + 4)]
    frames = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths])
    result = align_clip(frames, 0, size=256, grayscale=False, eye_fill="mean")
    assert result.frames.shape == (4, 256, 256, 3)
    masked = result.frames[:, result.eye_mask]
    assert masked.min() > 20  # skin tone, not black
    gray = align_clip(frames, 0, size=256, eye_fill=None)
    assert gray.frames.shape == (4, 256, 256) and gray.frames[:, gray.eye_mask].std() > 5  # eyes kept


# ---------------------------------------------------------------------------------------------
# Must-show 3: no face, blank frame, tiny face, two faces
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def face_frame(truth, demo_set):
    """A 640x480 gray onset frame of the demo set and its face's landmarks (truth)."""
    entry = truth.clips[0]
    frames = _clip_frames(demo_set.root, entry)
    return frames[entry["onset"] - entry["first_frame"]], truth.landmarks(entry["subject"], entry["clip"], entry["onset"])


def test_no_face_is_a_recorded_failure_not_a_crop():
    rng = np.random.default_rng(0)
    texture = ndimage.gaussian_filter(rng.normal(128, 60, (480, 640)), 3).clip(0, 255).astype(np.uint8)
    frames = np.stack([texture] * 8)
    with pytest.raises(FaceNotFoundError) as caught:
        align_clip(frames, 0)
    error = caught.value
    assert error.reason.startswith("no face found in frames 0-5")
    # every frame was tried downscaled and upsampled, in order
    assert error.attempts[:3] == ("frame 0 at 320 px wide: no face", "frame 0 at 640 px wide: no face", "frame 0 at 1280 px wide: no face")
    assert len(error.attempts) == 18


def test_blank_frames_are_skipped_then_the_next_frame_is_used(face_frame):
    frame, _ = face_frame
    blank = np.zeros_like(frame)
    detection = find_face(np.stack([blank, blank, frame, frame]), 0)
    assert detection.fallback == "next_frame" and detection.frame_index == 2
    assert detection.attempts[0] == "frame 0: blank (all grey values in 0..0)"
    with pytest.raises(FaceNotFoundError, match=r"blank frames only \(frames 0-3\)"):
        find_face(np.stack([blank] * 4), 0, next_frames=3)


def test_a_small_face_is_found_by_upsampling(face_frame):
    frame, landmarks = face_frame
    small = cv2.resize(frame, None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA)  # face ~80 px wide
    canvas = np.full_like(frame, int(np.median(frame)))
    canvas[100:100 + small.shape[0], 200:200 + small.shape[1]] = small
    detection = find_face(canvas[None], 0)
    assert detection.fallback == "upsample" and detection.detect_scale == 1.0
    expected = np.array(face.eye_centres(landmarks)) * 0.4 + [200, 100]
    assert np.hypot(*(np.array(face.eye_centres(detection.landmarks)) - expected).T).max() < 2.0


def test_a_tiny_face_fails_with_its_reason(face_frame):
    frame, _ = face_frame
    tiny = cv2.resize(frame, None, fx=0.12, fy=0.12, interpolation=cv2.INTER_AREA)  # face ~25 px wide
    canvas = np.full_like(frame, int(np.median(frame)))
    canvas[200:200 + tiny.shape[0], 300:300 + tiny.shape[1]] = tiny
    with pytest.raises(FaceNotFoundError, match="no face found in frame 0"):
        find_face(canvas[None], 0)
    with pytest.raises(FaceNotFoundError, match=r"face too small in frame 0: eyes [\d.]+ px apart, at least 200 needed"):
        find_face(frame[None], 0, min_inter_ocular=200)


def test_of_two_faces_the_largest_is_taken(face_frame):
    frame, landmarks = face_frame
    smaller = cv2.resize(frame, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)[:, 12:-12]
    canvas = np.full((480, 640 + smaller.shape[1]), int(np.median(frame)), np.uint8)
    canvas[:, :640] = frame
    canvas[100:100 + smaller.shape[0], 640:] = smaller
    detection = find_face(canvas[None], 0, detect_width=canvas.shape[1])
    assert detection.n_faces == 2 and detection.fallback == "none"
    assert np.hypot(*(np.array(face.eye_centres(detection.landmarks)) - np.array(face.eye_centres(landmarks))).T).max() < 2.0
    result = align_clip(np.stack([canvas] * 3), 0, detect_width=canvas.shape[1])
    assert result.quality.n_faces == 2


# ---------------------------------------------------------------------------------------------
# Kernels against closed forms and independent implementations
# ---------------------------------------------------------------------------------------------


def _rotated_face(landmarks: np.ndarray, angle_degrees: float, scale: float, shift) -> np.ndarray:
    angle = math.radians(angle_degrees)
    rotation = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return landmarks @ rotation.T + np.asarray(shift)


def test_alignment_matrix_puts_the_eyes_on_their_targets_exactly(face_frame):
    _, landmarks = face_frame
    for angle, scale, shift in [(0, 1, (0, 0)), (17, 0.6, (40, -12)), (-33, 2.5, (-100, 80))]:
        moved = _rotated_face(landmarks, angle, scale, shift)
        for size in (224, 256, 320):
            matrix = face.alignment_matrix(moved, size)
            centres = np.array(face.eye_centres(face.transform_points(matrix, moved)))
            np.testing.assert_allclose(centres, face.eye_targets(size), atol=1e-9)
            # a similarity: orthogonal rows of equal norm; eye distance 0.36 S
            linear = matrix[:, :2]
            np.testing.assert_allclose(linear @ linear.T, np.eye(2) * np.linalg.det(linear), atol=1e-12)
            assert abs(np.hypot(*(centres[1] - centres[0])) - 0.36 * size) < 1e-9
    with pytest.raises(ValueError, match=r"expected \(68, 2\) landmarks"):
        face.alignment_matrix(landmarks[:5])


def test_crop_matches_an_independent_warp():
    """cv2.warpAffine through the region shortcut vs scipy's affine_transform of the whole frame."""
    rng = np.random.default_rng(1)
    frame = ndimage.gaussian_filter(rng.uniform(0, 255, (300, 400)), 2.0)
    matrix = np.array([[1.1 * math.cos(0.2), -1.1 * math.sin(0.2), -60.0], [1.1 * math.sin(0.2), 1.1 * math.cos(0.2), -90.0]])
    ours = face.crop_frames(frame[None].astype(np.float32), matrix, 128, interpolation="cubic")[0]
    inverse = face.invert_similarity(matrix)
    # scipy works in (row, col): output (r, c) samples input at inverse applied to (x=c, y=r)
    reference = ndimage.affine_transform(
        frame, inverse[::-1, 1::-1], offset=inverse[::-1, 2], output_shape=(128, 128), order=3, mode="nearest"
    )
    interior = (slice(4, -4), slice(4, -4))
    assert np.abs(ours[interior] - reference[interior]).mean() < 0.15  # grey levels; cubic kernels differ slightly
    assert np.abs(ours[interior] - reference[interior]).max() < 1.0


def test_shrinking_crops_are_anti_aliased():
    """A fine grating shrunk 4x: without low-pass it aliases into a strong pattern; with it, fades."""
    xs = np.arange(800)
    grating = (127.5 + 127 * np.sin(2 * np.pi * xs / 2.2))[None].repeat(800, 0).astype(np.float32)
    shrink = np.array([[0.25, 0, 0], [0, 0.25, 0]])
    ours = face.crop_frames(grating[None], shrink, 200)[0]
    naive = cv2.warpAffine(grating, shrink, (200, 200), flags=cv2.INTER_CUBIC)
    assert naive[20:-20, 20:-20].std() > 40
    assert ours[20:-20, 20:-20].std() < 5


def test_eye_mask_is_the_polygons_grown_by_the_margin(face_frame):
    """Against the exact definition: pixel centres within margin * IOD of an eye polygon.

    Reference: cv2.pointPolygonTest's exact signed Euclidean distance at every pixel centre. The
    mask is rasterised (distance to the nearest pixel centre inside a polygon), so pixels may
    differ only where the exact distance is within 1.5 px of the margin (a pixel's diagonal, at
    the eye corners' sharp tips).
    """
    _, landmarks = face_frame
    crop_landmarks = face.transform_points(face.alignment_matrix(landmarks, SIZE), landmarks)
    iod = face.inter_ocular_distance(crop_landmarks)
    distance = np.full((SIZE, SIZE), np.inf)
    for eye in (face.RIGHT_EYE, face.LEFT_EYE):
        contour = crop_landmarks[eye].astype(np.float32)
        inside = np.array([[-cv2.pointPolygonTest(contour, (float(x), float(y)), True) for x in range(SIZE)] for y in range(SIZE)])
        distance = np.minimum(distance, np.maximum(inside, 0.0))  # 0 inside, distance to the edge outside
    for margin in (0.0, 0.1, 0.15, 0.25):
        mask = face.eye_mask(crop_landmarks, SIZE, margin)
        expected = distance <= margin * iod
        disagree = mask != expected
        off = np.abs(distance[disagree] - margin * iod)
        assert (off <= 1.5).all(), f"margin {margin}: a pixel {off.max():.2f} px from the edge differs"
        assert disagree.sum() <= 0.1 * expected.sum() + 20
    assert face.eye_mask(crop_landmarks, SIZE).mean() <= 0.10  # default margin


def test_fill_eyes_zero_and_ring_mean():
    frames = np.full((2, 40, 40), 90, np.uint8)
    frames[1] = 150
    frames[:, 10:20, 10:20] = 255  # an "eye"
    mask = np.zeros((40, 40), bool)
    mask[10:20, 10:20] = True
    assert (face.fill_eyes(frames, mask, "zero")[:, mask] == 0).all()
    filled = face.fill_eyes(frames, mask, "mean")
    assert (filled[0, mask] == 90).all() and (filled[1, mask] == 150).all()
    assert (filled[:, ~mask] == frames[:, ~mask]).all()
    with pytest.raises(ValueError, match="eye fill must be one of"):
        face.fill_eyes(frames, mask, "blur")


def test_global_motion_of_a_known_similarity_is_recovered():
    rng = np.random.default_rng(2)
    texture = ndimage.gaussian_filter(rng.uniform(0, 255, (SIZE, SIZE)), 1.5)
    texture = ((texture - texture.min()) / np.ptp(texture) * 255).astype(np.float32)
    angle = math.radians(0.8)
    truth = np.array([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0]])
    centre = np.array([SIZE / 2, SIZE / 2])
    truth[:, 2] = centre - truth[:, :2] @ centre + [1.3, -0.6]
    # moving(truth(p)) = reference(p): warp the reference forward by the truth
    moving = cv2.warpAffine(texture, truth, (SIZE, SIZE), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    region = np.zeros((SIZE, SIZE), bool)
    region[30:-30, 30:-30] = True
    motion = face.estimate_global_motion(np.rint(texture).astype(np.uint8), np.rint(moving).clip(0, 255).astype(np.uint8), region)
    assert motion.ok and motion.inliers > 0.5
    error = face.motion_magnitude(face.compose(face.invert_similarity(motion.matrix), truth), region)
    assert error < 0.05  # pixels


def test_bad_input_names_what_was_expected():
    with pytest.raises(ValueError, match=r"expected \(T, H, W\) or \(T, H, W, 3\) frames"):
        align_clip(np.zeros((10, 10)))
    with pytest.raises(ValueError, match="reference frame 5 is outside the clip's 2 frames"):
        find_face(np.zeros((2, 48, 64), np.uint8), 5)
    with pytest.raises(ValueError, match="frame 1: expected uint8 or float pixels"):
        align_clip([np.zeros((48, 64), np.uint8), np.zeros((48, 64), np.int64)])
    with pytest.raises(ValueError, match="alignment mode must be one of"):
        align_clip(np.zeros((2, 48, 64), np.uint8), mode="per-frame")
    with pytest.raises(ValueError, match="expected a \\(2, 3\\) matrix or \\(2, 2, 3\\) matrices"):
        face.crop_frames(np.zeros((2, 48, 64), np.uint8), np.eye(3))


def test_landmark_model_is_found_without_importing_its_package():
    path = face.landmark_model_path()
    assert path.name == "shape_predictor_68_face_landmarks.dat" and path.stat().st_size > 90_000_000


def test_detection_on_two_threads_at_once_equals_detection_on_one(face_frame):
    # dlib's detector shared between threads changed detection scores under load; each thread
    # now has its own (a build on a thread pool must give the same store every time)
    from concurrent.futures import ThreadPoolExecutor

    frame, _ = face_frame
    frames = [np.roll(frame, shift, axis=1) for shift in range(0, 40, 5)]
    sequential = [(face.detect_faces(frame), face.face_landmarks(frame, face.detect_faces(frame)[0])) for frame in frames]

    def detect(frame):
        boxes = face.detect_faces(frame)
        return boxes, face.face_landmarks(frame, boxes[0])

    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            concurrent = list(pool.map(detect, frames))
            for (boxes, points), (boxes_alone, points_alone) in zip(concurrent, sequential):
                assert boxes == boxes_alone
                np.testing.assert_array_equal(points, points_alone)
