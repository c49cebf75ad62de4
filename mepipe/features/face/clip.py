"""A whole clip through the face stage: one geometry per clip, any number of warps.

:func:`estimate_clip_geometry` does what depends on the face and not on the crops' size or colour:
detection, landmarks, the alignment transform and the head-motion correction, once per clip, in a
:class:`ClipGeometry`. :meth:`ClipGeometry.scaled` carries it to another crop size without
re-running anything, :func:`warp_clip` makes the gray or colour crops of a geometry, and
:func:`align_clip` is the two in one call plus the eye mask and its filling.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from mepipe.features.face._checks import _check_frame, _frame_count, to_gray
from mepipe.features.face.geometry import (
    DEFAULT_SIZE, EYE_LINE, INTER_OCULAR, alignment_matrix, compose, crop_frames, crop_rescale_matrix, invert_similarity,
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
    inter_ocular_px : eye distance in the frame, pixels; ``scale`` crop pixels per frame pixel
        (of the crop size the record belongs to, see :meth:`ClipGeometry.scaled`).
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

@dataclass(frozen=True, eq=False)  # eq=False: arrays do not compare as a tuple of fields
class ClipGeometry:
    """Where the face of one clip lies in every frame: what all crops of the clip share.

    size : side S of the crop the matrices and landmarks map to, pixels.
    matrices : (T, 2, 3) float64 frame -> crop transform of every frame at ``size`` (the clip
        transform composed with the head-motion correction, or one similarity per frame).
    landmarks : (68, 2) float64 anchor-frame landmarks in crop pixels at ``size``.
    quality : the :class:`FaceQuality` record; ``head_motion_px``, ``residual_motion_px`` in crop
        pixels and ``scale`` in crop pixels per frame pixel, at ``size``.

    The arrays are read-only: one geometry is shared by every warp of the clip.
    """

    size: int
    matrices: np.ndarray
    landmarks: np.ndarray
    quality: FaceQuality

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _crop_size(self.size))
        matrices = np.array(self.matrices, np.float64)
        if matrices.ndim != 3 or matrices.shape[1:] != (2, 3) or len(matrices) == 0:
            raise ValueError(f"expected (T, 2, 3) frame -> crop matrices, got shape {matrices.shape}")
        landmarks = np.array(self.landmarks, np.float64)
        if landmarks.shape != (68, 2):
            raise ValueError(f"expected (68, 2) landmarks in crop pixels, got shape {landmarks.shape}")
        matrices.flags.writeable = False
        landmarks.flags.writeable = False
        object.__setattr__(self, "matrices", matrices)
        object.__setattr__(self, "landmarks", landmarks)

    def scaled(self, size: int) -> ClipGeometry:
        """The same face at crop side ``size``: nothing is detected or measured again.

        Every matrix M becomes ``A o M`` and the landmarks ``A(p)``, with A =
        :func:`crop_rescale_matrix` ``(self.size, size)``, ``p -> k p + ((k - 1) / 2, 0)`` for
        ``k = size / self.size``. The alignment targets are fractions of S except for the crop
        centre's half pixel (see that function), so for the clip transform this is exactly the
        transform :func:`alignment_matrix` gives at ``size`` (float64 rounding aside), and a
        stabilised matrix ``C^-1 o M`` becomes ``(A C^-1 A^-1) o (A M)``: the same head-motion
        correction, expressed in the new crop's pixels. It is not the entry-wise product ``k M``,
        which misses the targets by ``(k - 1) / 2`` px in x.

        ``head_motion_px``, ``residual_motion_px`` and ``scale`` are multiplied by k (they were
        measured on, or refer to, crops of ``self.size``); ``inter_ocular_px`` (frame pixels) and
        the rest of the record stay as they are.
        """
        size = _crop_size(size)
        if size == self.size:
            return self
        rescale = crop_rescale_matrix(self.size, size)
        k = rescale[0, 0]
        linear, shift = rescale[:, :2], rescale[:, 2]
        matrices = np.concatenate(
            [linear @ self.matrices[:, :, :2], (linear @ self.matrices[:, :, 2:]) + shift[:, None]], axis=2
        )
        quality = replace(
            self.quality,
            scale=self.quality.scale * k,
            head_motion_px=self.quality.head_motion_px * k,
            residual_motion_px=self.quality.residual_motion_px * k,
        )
        return ClipGeometry(size, matrices, transform_points(rescale, self.landmarks), quality)

    def eye_mask(self, margin: float = EYE_MARGIN) -> np.ndarray:
        """(S, S) bool: the eyes' mask at this geometry's size, :func:`eye_mask` of its landmarks.

        ``margin`` is in inter-ocular distances of the crop's landmarks, so the mask is the same
        part of the face at every size (up to the pixel grid).
        """
        return eye_mask(self.landmarks, self.size, margin)

    def face_region(self, margin: float = EYE_MARGIN) -> np.ndarray:
        """(S, S) bool: the face without the eyes, as the head motion is measured on.

        :func:`face_region` of the landmarks with the eyes excluded at ``max(margin, EYE_MARGIN)``
        (never less than the default margin: the motion fit must not see the lids). With the
        ``eye_margin`` given to :func:`estimate_clip_geometry`, this is exactly the region its
        stabilisation used (at that geometry's own size); apex spotting takes it too.
        """
        return face_region(self.landmarks, self.size, eyes=self.eye_mask(max(margin, EYE_MARGIN)))


def estimate_clip_geometry(
    frames: Sequence[np.ndarray] | np.ndarray,
    reference: int = 0,
    *,
    size: int = DEFAULT_SIZE,
    mode: str = "clip",
    stabilize: bool = True,
    eye_margin: float = EYE_MARGIN,
    eye_line: float = EYE_LINE,
    inter_ocular: float = INTER_OCULAR,
    smoothing: float = 4.0,
    check_frames: Sequence[int] | None = None,
    stabilize_step: int = 4,
    detect_width: int = DETECT_WIDTH,
    next_frames: int = 5,
    min_inter_ocular: float = MIN_INTER_OCULAR,
    interpolation: str = "cubic",
) -> ClipGeometry:
    """Detect, landmark, align and stabilise a clip once: its :class:`ClipGeometry` at ``size``.

    Every crop of the clip, at any size and in gray or colour, is then :func:`warp_clip` of this
    geometry or of its :meth:`~ClipGeometry.scaled` copy.

    Sizes. The clip transform and the per-frame transforms of ``mode="frame"`` are functions of
    the frame's landmarks and S alone, so estimating at ``size`` and scaling gives exactly (to
    float64 rounding) what estimating at the other size gives. The head-motion correction
    (``stabilize``) and ``residual_motion_px`` are measured on crops of ``size``; measured on
    crops of another size, the flow and the fit see other pixels, and the two corrections differ
    by that measurement's own noise. So the pipeline always estimates at one size (224,
    ``mepipe.pipeline.variants.GEOMETRY_SIZE``) and scales to each variant's size: every variant
    of a clip shows the same face, and results do not depend on which sizes a build makes.

    Colour. Detection and landmarks run on ``to_gray`` of the frames; the head motion and the
    residual motion are measured on gray crops made by warping ``to_gray`` of each frame (one
    channel to warp per measured frame). A gray source and an RGB source whose gray is that
    source give the same geometry.

    Parameters
    ----------
    frames : (T, H, W) grayscale or (T, H, W, 3) RGB frames of one clip (or a sequence of such
        frames), uint8 or float in [0, 255].
    reference : index of the onset frame: the face is found and the landmarks taken there (when
        its eyes are closing in a blink, on the nearest frame with open eyes; see ``FaceQuality``).
    size : side S of the crop the geometry is estimated at and maps to, default 224.
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
    eye_margin : eye-mask margin in inter-ocular distances; the motion is measured on the face
        without the eyes at ``max(eye_margin, EYE_MARGIN)`` (:meth:`ClipGeometry.face_region`).
    eye_line, inter_ocular : crop geometry, fractions of S (see :func:`alignment_matrix`).
    smoothing : frame mode, the Gaussian's sigma in frames.
    check_frames : frames on which the residual rigid motion is measured after alignment
        (default: the middle and the last frame; pass the apex). Their head motion is always
        measured, never interpolated.
    stabilize_step : the head's motion is measured on every ``stabilize_step``-th frame, the
        last frame and the ``check_frames``, and interpolated in between (head motion is smooth
        at 100-200 fps, and a measurement costs many times a frame's decoding). 1 measures every
        frame.
    detect_width, next_frames, min_inter_ocular : detection, see :func:`find_face`.
    interpolation : ``"cubic"`` or ``"linear"`` warp of the measurement crops.

    Returns
    -------
    :class:`ClipGeometry` at ``size``.

    Raises
    ------
    FaceNotFoundError : no usable face; its ``reason`` and ``attempts`` say why.
    ValueError : bad frames or parameters, named.
    """
    if mode not in MODES:
        raise ValueError(f"alignment mode must be one of {MODES}, got {mode!r}")
    size = _crop_size(size)
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

    # Only the anchor and the check frames are warped to measure what is left: a crop is a pure
    # function of its frame and matrix, so these are the very crops a full warp would make.
    checked = [index for index in dict.fromkeys(check_frames) if index != anchor]
    residual = 0.0
    if checked:
        picked = [anchor, *checked]
        gray_crops = crop_frames([frames[i] for i in picked], matrices[picked], size, interpolation=interpolation)
        for crop in gray_crops[1:]:
            motion = estimate_global_motion(gray_crops[0], crop, region)
            if motion.ok:
                residual = max(residual, motion_magnitude(motion.matrix, region))
            else:
                residual = float("nan")

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
    return ClipGeometry(size, matrices, crop_landmarks, quality)


def warp_clip(
    frames: Sequence[np.ndarray] | np.ndarray,
    geometry: ClipGeometry,
    *,
    colour: bool,
    interpolation: str = "cubic",
) -> np.ndarray:
    """The crops of a clip at its geometry: every frame warped by its matrix to S x S.

    Parameters
    ----------
    frames : the clip's (T, H, W) gray or (T, H, W, 3) RGB frames (or a sequence of such frames),
        uint8 or float in [0, 255], the ones the geometry was estimated on.
    geometry : a :class:`ClipGeometry` of these T frames, at the crops' size S (e.g.
        ``estimate_clip_geometry(frames).scaled(320)``).
    colour : True: (T, S, S, 3) RGB crops; a gray source gives its gray channel three times.
        False: (T, S, S) gray crops. For an RGB source they are ``to_gray`` (ITU-R BT.601, OpenCV's
        ``COLOR_RGB2GRAY``) of the colour crops, not crops of the gray frames, so the gray crops
        of a gray variant and of a colour variant of one size are bit-identical, and ``to_gray``
        of a colour variant's stored crops gives them back exactly. For a gray source, the warp
        of the frames.
    interpolation : ``"cubic"`` (default) or ``"linear"``, see :func:`crop_frames` (which also
        low-passes frames that the crop shrinks).

    Returns
    -------
    (T, S, S, 3) or (T, S, S) array, uint8 for uint8 frames (float32 for float frames). The eyes
    are not filled (:func:`fill_eyes` with ``geometry.eye_mask()``).
    """
    if not isinstance(geometry, ClipGeometry):
        raise TypeError(f"expected a ClipGeometry, got {type(geometry).__name__}")
    count = _frame_count(frames)
    if count != len(geometry.matrices):
        raise ValueError(f"the geometry has {len(geometry.matrices)} frames' matrices, the clip {count} frames")
    size = geometry.size
    if not _is_colour(frames):
        gray = crop_frames(frames, geometry.matrices, size, interpolation=interpolation)
        return np.repeat(gray[..., None], 3, axis=-1) if colour else gray
    if colour:
        return crop_frames(frames, geometry.matrices, size, grayscale=False, interpolation=interpolation)
    # frame by frame: no (T, S, S, 3) array only to convert it
    out = None
    for index in range(count):
        crop = to_gray(crop_frames([frames[index]], geometry.matrices[index], size, grayscale=False, interpolation=interpolation)[0])
        if out is None:
            out = np.empty((count, size, size), crop.dtype)
        out[index] = crop
    return out


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

    :func:`estimate_clip_geometry` at ``size``, :func:`warp_clip`, then :func:`fill_eyes` with
    the geometry's :meth:`~ClipGeometry.eye_mask` at ``eye_margin``. To make crops of one clip at
    several sizes or in gray and colour, call those directly: the geometry once, the warps many
    times.

    Parameters
    ----------
    frames : (T, H, W) grayscale or (T, H, W, 3) RGB frames of one clip, uint8 or float in [0, 255].
    reference, size, mode, stabilize, eye_margin, eye_line, inter_ocular, smoothing, check_frames,
    stabilize_step, detect_width, next_frames, min_inter_ocular, interpolation : see
        :func:`estimate_clip_geometry` (``size`` is the side S of the crops: 224, 256 and 320 in
        the papers; ``interpolation`` also that of the crops).
    grayscale : crops in gray (the papers' choice): for RGB frames, ``to_gray`` of the colour
        crops (:func:`warp_clip`). False keeps RGB crops of RGB frames; gray frames give gray
        crops either way.
    eye_fill : ``"zero"``, ``"mean"`` (see :func:`fill_eyes`) or None to leave the eyes visible
        (the mask is returned either way).

    Returns
    -------
    :class:`AlignedClip`.

    Raises
    ------
    FaceNotFoundError : no usable face; its ``reason`` and ``attempts`` say why.
    """
    geometry = estimate_clip_geometry(
        frames, reference, size=size, mode=mode, stabilize=stabilize, eye_margin=eye_margin, eye_line=eye_line,
        inter_ocular=inter_ocular, smoothing=smoothing, check_frames=check_frames, stabilize_step=stabilize_step,
        detect_width=detect_width, next_frames=next_frames, min_inter_ocular=min_inter_ocular,
        interpolation=interpolation,
    )
    crops = warp_clip(frames, geometry, colour=not grayscale and _is_colour(frames), interpolation=interpolation)
    mask = geometry.eye_mask(eye_margin)
    if eye_fill is not None:
        crops = fill_eyes(crops, mask, eye_fill)
    # writable copies, as align_clip always returned
    return AlignedClip(crops, mask, np.array(geometry.matrices), np.array(geometry.landmarks), geometry.quality)


def _is_colour(frames) -> bool:
    """Whether the clip's frames are RGB (H, W, 3); (H, W) and (H, W, 1) are gray. A clip mixing both is refused."""
    if isinstance(frames, np.ndarray):
        return frames.ndim == 4 and frames.shape[3] == 3
    kinds = {np.ndim(frame) == 3 and np.shape(frame)[2] == 3 for frame in frames}
    if len(kinds) > 1:
        raise ValueError("the clip mixes gray and RGB frames")
    return kinds == {True}


def _crop_size(size) -> int:
    try:
        size = operator.index(size)
    except TypeError:
        raise ValueError(f"the crop size must be an integer number of pixels, got {size!r}") from None
    if size < 8:
        raise ValueError(f"the crop size must be at least 8 px, got {size}")
    return size

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
