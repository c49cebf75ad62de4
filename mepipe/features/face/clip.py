"""A whole clip through the face stage: :func:`align_clip` and its quality record."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from mepipe.features.face._checks import _check_frame, _frame_count, to_gray
from mepipe.features.face.geometry import (
    DEFAULT_SIZE, EYE_LINE, INTER_OCULAR, alignment_matrix, compose, crop_frames, invert_similarity,
    similarity_from_eyes, transform_points,
)
from mepipe.features.face.landmarks import (
    DETECT_WIDTH, MIN_INTER_OCULAR, FaceBox, FaceDetection, eye_aspect_ratio, eye_centres, face_landmarks,
    find_face, inter_ocular_distance,
)
from mepipe.features.face.mask import EYE_MARGIN, eye_mask, face_region, fill_eyes
from mepipe.features.face.stabilize import estimate_global_motion, motion_magnitude

MODES = ("clip", "frame")
#: Eye aspect ratio (Soukupova and Cech 2016: the eye's height over its width, from the six eye
#: landmarks) under which the eyes may be closing and the clip's own open-eye ratio is looked up;
#: open eyes measure 0.25-0.35. A closing lid
#: drags the upper eye landmarks, and the eye centre with them, down by up to half the eye's height.
OPEN_EYES = 0.25
#: The anchor frame's landmarks are predicted on the face enlarged this many times (see
#: :func:`face_landmarks`): the alignment inherits their error in every frame.
LANDMARK_UPSCALE = 4


@dataclass(frozen=True)
class FaceQuality:
    """Quality figures of one aligned clip.

    detector_score : dlib's detection score (SVM margin; above ~0.5 is a clear face).
    fallback : how the face was found (see :class:`FaceDetection`).
    detection_frame : index of the frame the face was found on (the reference unless it had no face).
    landmark_frame : index of the frame whose landmarks anchor the alignment: the detection frame,
        or the nearest frame with open eyes when a blink closes them there.
    eye_aspect_ratio : the anchor landmarks' eye aspect ratio (about 0.3 open, under 0.2 closing).
    n_faces : faces the detector saw on that frame (the largest was taken).
    inter_ocular_px : eye distance in the frame, pixels; ``scale`` crop pixels per frame pixel.
    roll_degrees : the eye line's angle the alignment removed.
    mode : ``"clip"`` or ``"frame"``.
    head_motion_px : largest rigid motion of the face relative to the reference frame that the
        alignment removed, crop pixels (mean over the face); NaN when not measured.
    residual_motion_px : rigid motion left between the aligned reference frame and the checked
        frames (largest, crop pixels, mean over the face).
    unstabilised_frames : measured frames whose head motion could not be estimated (they take the
        motion interpolated from their neighbours).
    attempts : every detection try, in order.
    """

    detector_score: float
    fallback: str
    detection_frame: int
    landmark_frame: int
    eye_aspect_ratio: float
    n_faces: int
    inter_ocular_px: float
    scale: float
    roll_degrees: float
    mode: str
    head_motion_px: float
    residual_motion_px: float
    unstabilised_frames: int
    attempts: tuple[str, ...] = field(default=())

@dataclass(frozen=True)
class AlignedClip:
    """The output of :func:`align_clip`.

    frames : (T, S, S) uint8 (or (T, S, S, 3) when colour was kept), eyes filled unless
        ``eye_fill=None`` was asked.
    eye_mask : (S, S) bool, the masked eye pixels.
    matrices : (T, 2, 3) frame -> crop transform of every frame.
    landmarks : (68, 2) the anchor frame's landmarks in crop pixels.
    quality : the :class:`FaceQuality` record.
    """

    frames: np.ndarray
    eye_mask: np.ndarray
    matrices: np.ndarray
    landmarks: np.ndarray
    quality: FaceQuality

def align_clip(
    frames: Sequence[np.ndarray] | np.ndarray,
    reference: int = 0,
    *,
    size: int = DEFAULT_SIZE,
    mode: str = "clip",
    stabilize: bool = True,
    grayscale: bool = True,
    eye_margin: float = EYE_MARGIN,
    eye_fill: str | None = "zero",
    eye_line: float = EYE_LINE,
    inter_ocular: float = INTER_OCULAR,
    smoothing: float = 4.0,
    check_frames: Sequence[int] | None = None,
    stabilize_step: int = 4,
    detect_width: int = DETECT_WIDTH,
    next_frames: int = 5,
    min_inter_ocular: float = MIN_INTER_OCULAR,
    interpolation: str = "cubic",
) -> AlignedClip:
    """Detect, landmark, align, crop and eye-mask every frame of a clip.

    Parameters
    ----------
    frames : (T, H, W) grayscale or (T, H, W, 3) RGB frames of one clip, uint8 or float in [0, 255].
    reference : index of the onset frame: the face is found and the landmarks taken there (when
        its eyes are closing in a blink, on the nearest frame with open eyes; see ``FaceQuality``).
    size : side S of the square crops (224, 256 and 320 in the papers).
    mode : ``"clip"``: one similarity for the clip, from the reference frame's eye centres, so
        the frames stay registered to each other (per-frame landmarks jitter by about a pixel,
        as much as a micro-expression moves). ``"frame"``: landmarks on every frame, eye centres
        smoothed over time with a Gaussian of ``smoothing`` frames, one similarity per frame;
        for clips with real head motion.
    stabilize : clip mode only. The face's rigid motion relative to the reference frame
        (:func:`estimate_global_motion` between crops) is removed from every frame by composing
        the clip transform with the inverse of that small similarity. Head drift of a pixel or
        two over a clip is as large as the micro-expression; this keeps the registration of the
        clip transform without landmark jitter. ``False`` applies the clip transform alone.
    stabilize_step : the head's motion is measured on every ``stabilize_step``-th frame, the
        last frame and the ``check_frames``, and interpolated in between (a measurement costs
        about 10 ms at S=224, ten times a frame's decoding; head motion is smooth at 100-200 fps).
        1 measures every frame.
    grayscale : crops in gray (the papers' choice) or RGB.
    eye_margin : eye-mask margin in inter-ocular distances.
    eye_fill : ``"zero"``, ``"mean"`` (see :func:`fill_eyes`) or None to leave the eyes visible
        (the mask is returned either way).
    eye_line, inter_ocular : crop geometry, fractions of S (see :func:`alignment_matrix`).
    check_frames : frames on which the residual rigid motion is measured after alignment
        (default: the middle and the last frame; pass the apex). Their head motion is always
        measured, never interpolated.
    detect_width, next_frames, min_inter_ocular : detection, see :func:`find_face`.
    interpolation : ``"cubic"`` or ``"linear"`` warp.

    Raises
    ------
    FaceNotFoundError : no usable face; its ``reason`` and ``attempts`` say why.
    """
    if mode not in MODES:
        raise ValueError(f"alignment mode must be one of {MODES}, got {mode!r}")
    count = _frame_count(frames)
    if count == 0:
        raise ValueError("the clip has no frames")
    for index in range(count):
        _check_frame(frames[index], index)
    detection = find_face(
        frames, reference, detect_width=detect_width, next_frames=next_frames, min_inter_ocular=min_inter_ocular
    )
    anchor, landmarks, eyes_open = _open_eye_landmarks(frames, detection)
    geometry = dict(eye_line=eye_line, inter_ocular=inter_ocular)
    clip_matrix = alignment_matrix(landmarks, size, **geometry)
    crop_landmarks = transform_points(clip_matrix, landmarks)
    mask = eye_mask(crop_landmarks, size, eye_margin)
    region = face_region(crop_landmarks, size, eyes=eye_mask(crop_landmarks, size, max(eye_margin, EYE_MARGIN)))

    if check_frames is None:
        check_frames = sorted({count // 2, count - 1} - {anchor})
    for index in check_frames:
        if not 0 <= index < count:
            raise ValueError(f"check frame {index} is outside the clip's {count} frames")
    if stabilize_step < 1:
        raise ValueError(f"stabilize_step must be >= 1, got {stabilize_step}")
    head_motion = float("nan")
    unstabilised = 0
    if mode == "frame":
        matrices = _per_frame_matrices(frames, detection.box, anchor, landmarks, size, smoothing, geometry)
    else:
        matrices = np.repeat(clip_matrix[None], count, axis=0)
        if stabilize and count > 1:
            measured = sorted({*range(0, count, stabilize_step), count - 1, *check_frames} - {anchor})
            head_motion, unstabilised, corrections = _head_motion(frames, anchor, measured, clip_matrix, region, size, interpolation)
            matrices = np.stack([compose(invert_similarity(c), clip_matrix) for c in corrections])

    crops = crop_frames(frames, matrices, size, grayscale=grayscale, interpolation=interpolation)
    gray_crops = crops if crops.ndim == 3 else np.stack([to_gray(crop) for crop in crops])
    residual = 0.0
    for index in check_frames:
        if index == anchor:
            continue
        motion = estimate_global_motion(gray_crops[anchor], gray_crops[index], region)
        if motion.ok:
            residual = max(residual, motion_magnitude(motion.matrix, region))
        else:
            residual = float("nan")
    if eye_fill is not None:
        crops = fill_eyes(crops, mask, eye_fill)

    right, left = eye_centres(landmarks)
    quality = FaceQuality(
        detector_score=detection.box.score,
        fallback=detection.fallback,
        detection_frame=detection.frame_index,
        landmark_frame=anchor,
        eye_aspect_ratio=eyes_open,
        n_faces=detection.n_faces,
        inter_ocular_px=inter_ocular_distance(landmarks),
        scale=float(math.sqrt(abs(np.linalg.det(clip_matrix[:, :2])))),
        roll_degrees=math.degrees(math.atan2(left[1] - right[1], left[0] - right[0])),
        mode=mode,
        head_motion_px=head_motion,
        residual_motion_px=residual,
        unstabilised_frames=unstabilised,
        attempts=detection.attempts,
    )
    return AlignedClip(crops, mask, matrices, crop_landmarks, quality)

def _head_motion(frames, anchor, measured, clip_matrix, region, size, interpolation):
    """Rigid motion of the face from the anchor frame to every frame, in crop pixels.

    Measured on the ``measured`` frames, interpolated linearly in time (entry by entry of the
    near-identity matrices) in between: head motion is slow next to the frame rate. Returns the
    largest measured motion (px, mean over the face), the number of frames whose estimate
    failed, and the (T, 2, 3) motions.
    """
    count = _frame_count(frames)
    anchor_crop = crop_frames([frames[anchor]], clip_matrix, size, interpolation=interpolation)[0]
    known = {anchor: np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])}
    largest, failed = 0.0, 0
    for index in measured:
        moving = crop_frames([frames[index]], clip_matrix, size, interpolation=interpolation)[0]
        motion = estimate_global_motion(anchor_crop, moving, region)
        if not motion.ok:
            failed += 1
            continue
        known[index] = motion.matrix
        largest = max(largest, motion_magnitude(motion.matrix, region))
    times = np.array(sorted(known))
    values = np.stack([known[t] for t in times]).reshape(len(times), 6)
    motions = np.stack([np.interp(np.arange(count), times, values[:, k]) for k in range(6)], axis=1)
    return largest, failed, motions.reshape(count, 2, 3)


def _open_eye_landmarks(frames, detection: FaceDetection) -> tuple[int, np.ndarray, float]:
    """The frame whose landmarks anchor the clip, its landmarks (to 1/4 px) and their eye aspect ratio.

    The detection frame, unless its eyes look closing (aspect ratio under ``OPEN_EYES``): then
    the clip's open-eye ratio is taken as the largest over up to 16 frames spread over the clip,
    and the anchor is the frame nearest the detection frame that reaches 95 % of it. Landmarks of
    other frames are taken in the detection box (a clip's head motion is a few pixels).
    """
    anchor = detection.frame_index
    box = detection.box
    ratio = eye_aspect_ratio(detection.landmarks)
    if ratio < OPEN_EYES:
        count = _frame_count(frames)
        ratios = {anchor: ratio}

        def ratio_of(index: int) -> float:
            if index not in ratios:
                ratios[index] = eye_aspect_ratio(face_landmarks(to_gray(frames[index]), box))
            return ratios[index]

        for index in np.linspace(0, count - 1, min(count, 16)).round().astype(int):
            ratio_of(int(index))
        wanted = 0.95 * max(ratios.values())
        if ratio < wanted:
            order = sorted(range(count), key=lambda index: (abs(index - anchor), index))
            anchor = next(index for index in order if ratio_of(index) >= wanted)
    landmarks = face_landmarks(to_gray(frames[anchor]), box, upscale=LANDMARK_UPSCALE)
    return anchor, landmarks, eye_aspect_ratio(landmarks)


def _per_frame_matrices(
    frames, box: FaceBox, anchor: int, landmarks: np.ndarray, size: int, smoothing: float, geometry: dict
) -> np.ndarray:
    """One similarity per frame from each frame's landmarks, eye centres smoothed over time.

    Frames whose eyes are closing (aspect ratio under 90 % of the clip's open-eye ratio, its 90th
    percentile) do not vote: a blink drags the eye landmarks down by several pixels. Their eye
    centres are interpolated in time from the frames around them before the smoothing.
    """
    from scipy.ndimage import gaussian_filter1d

    count = _frame_count(frames)
    centres = np.empty((count, 2, 2))
    ratios = np.empty(count)
    centres[anchor] = eye_centres(landmarks)
    ratios[anchor] = eye_aspect_ratio(landmarks)
    # Track outwards from the anchor frame: each frame's box is the previous one moved with the eyes.
    for order in (range(anchor + 1, count), range(anchor - 1, -1, -1)):
        previous = anchor
        for index in order:
            shift = np.rint(centres[previous].mean(axis=0) - centres[anchor].mean(axis=0)).astype(int)
            moved = FaceBox(box.left + shift[0], box.top + shift[1], box.right + shift[0], box.bottom + shift[1], box.score)
            frame_landmarks = face_landmarks(to_gray(frames[index]), moved)
            centres[index] = eye_centres(frame_landmarks)
            ratios[index] = eye_aspect_ratio(frame_landmarks)
            previous = index
    voting = ratios >= 0.9 * np.percentile(ratios, 90)
    if voting.any() and not voting.all():
        times = np.arange(count)
        for eye in range(2):
            for axis in range(2):
                centres[~voting, eye, axis] = np.interp(times[~voting], times[voting], centres[voting, eye, axis])
    if smoothing > 0 and count > 1:
        centres = gaussian_filter1d(centres, smoothing, axis=0, mode="nearest")
    return np.stack([similarity_from_eyes(c[0], c[1], size, **geometry) for c in centres])
