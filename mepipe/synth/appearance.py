"""Synthetic subjects: a face photograph made into a distinct person on a dataset's frame canvas.

From one photograph many subjects are made, each distinct in scale, position, in-plane tilt,
mirroring, skin tone and exposure, background, small face-shape changes and fine skin texture. The
subject's neutral frame is then landmarked again with dlib, so every landmark used later is one
that dlib itself finds on the synthetic face.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mepipe.features.face import detect_faces, eye_centres, face_landmarks

#: File name suffixes read as photographs by ``--faces``.
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class SynthError(ValueError):
    """Bad options or inputs for synthesis; the message names the problem."""


@dataclass(frozen=True, eq=False)  # compared by identity: a cache key for the subjects made from it
class Photo:
    """A face photograph (RGB uint8) and the 68 landmarks dlib finds on it."""

    name: str
    image: np.ndarray
    landmarks: np.ndarray


@dataclass
class Subject:
    """A synthetic person: the neutral frame and its landmarks.

    neutral : (H, W, 3) float32 RGB or (H, W) float32 grayscale, values in [0, 255].
    landmarks : (68, 2) float64, dlib's landmarks found on ``neutral``.
    detector_score : dlib's score of the face on ``neutral``.
    look : the parameters that made this subject (for the ground truth).
    """

    neutral: np.ndarray
    landmarks: np.ndarray
    detector_score: float
    look: dict


def default_photo() -> Photo:
    """scikit-image's astronaut portrait (public domain, NASA), the default identity source."""
    from skimage import data

    return landmark_photo("skimage:astronaut", data.astronaut())


def load_photos(folder: str | Path) -> list[Photo]:
    """Every face photograph of a folder, sorted by file name, with its landmarks.

    Raises SynthError naming the folder or file when the folder cannot be read, holds no photo, a
    photo cannot be decoded, or a photo shows no face.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SynthError(f"--faces {folder}: not a readable folder")
    try:
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
    except OSError as error:
        raise SynthError(f"--faces {folder}: cannot list the folder ({error.strerror})") from None
    if not paths:
        raise SynthError(f"--faces {folder}: no photos ({', '.join(PHOTO_SUFFIXES)}) in the folder")
    photos = []
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise SynthError(f"--faces: cannot decode {path} as an image")
        photos.append(landmark_photo(str(path), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    return photos


def landmark_photo(name: str, rgb: np.ndarray) -> Photo:
    """Find the face of a photograph; SynthError naming the photo when there is none."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    boxes = detect_faces(gray, upsample=1)
    if not boxes:
        raise SynthError(f"--faces: no face found in {name} (dlib's frontal detector, upsampled once)")
    landmarks = face_landmarks(gray, boxes[0])
    right_eye, left_eye = eye_centres(landmarks)
    if np.hypot(*(left_eye - right_eye)) < 20:
        raise SynthError(f"--faces: the face in {name} is too small (eyes under 20 px apart)")
    return Photo(name, np.ascontiguousarray(rgb), landmarks)


@functools.lru_cache(maxsize=64)
def make_subject(
    photo: Photo, frame_size: tuple[int, int], color: bool, seed: int, subject_index: int
) -> Subject:
    """The neutral frame of one synthetic subject.

    Parameters
    ----------
    photo : the identity source.
    frame_size : (width, height) of the dataset's frames.
    color : RGB output when True, grayscale otherwise.
    seed, subject_index : the subject's look is drawn from ``default_rng([seed, 1, subject_index])``,
        so a subject looks the same whichever process makes it.

    A drawn look on which dlib finds no single face is drawn again (up to 20 times).
    """
    for attempt in range(20):
        rng = np.random.default_rng([seed, 1, subject_index, attempt])
        look = _draw_look(rng, frame_size)
        neutral = _compose(photo, look, frame_size, rng)
        gray = neutral if neutral.ndim == 2 else cv2.cvtColor(neutral, cv2.COLOR_RGB2GRAY)
        gray8 = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
        boxes = detect_faces(gray8)
        if len(boxes) == 1:
            landmarks = face_landmarks(gray8, boxes[0])
            stored = neutral if color else gray.astype(np.float32)
            return Subject(stored, landmarks, boxes[0].score, {**look, "attempt": attempt, "photo": photo.name})
    raise SynthError(f"could not make subject {subject_index} from {photo.name}: dlib finds no single face on it")


def _draw_look(rng: np.random.Generator, frame_size: tuple[int, int]) -> dict:
    width, height = frame_size
    return {
        # inter-ocular distance as a fraction of the frame width: CASME II faces at 640x480 have
        # eyes about 80-90 px apart
        "iod_fraction": float(rng.uniform(0.120, 0.140)),
        "centre_x": float(width / 2 + rng.uniform(-0.06, 0.06) * width),
        "eye_line_y": float(height * rng.uniform(0.38, 0.44)),
        "tilt_degrees": float(rng.uniform(-4, 4)),
        "mirror": bool(rng.integers(2)),
        "gamma": float(rng.uniform(0.8, 1.25)),
        "channel_gain": [float(g) for g in rng.uniform(0.85, 1.15, 3)],
        "exposure": float(rng.uniform(-15, 15)),
        "background": [[float(c) for c in rng.uniform(20, 235, 3)] for _ in range(2)],
        "texture_amplitude": float(rng.uniform(3.0, 5.0)),
    }


def _compose(photo: Photo, look: dict, frame_size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    width, height = frame_size
    right_eye, left_eye = eye_centres(photo.landmarks)
    photo_iod = float(np.hypot(*(left_eye - right_eye)))
    photo_tilt = math.degrees(math.atan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0]))
    scale = look["iod_fraction"] * width / photo_iod
    angle = math.radians(look["tilt_degrees"] - photo_tilt)
    mid = (right_eye + left_eye) / 2
    flip = -1.0 if look["mirror"] else 1.0
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    linear = np.array([[cos, -sin], [sin, cos]]) @ np.diag([flip, 1.0])
    target = np.array([look["centre_x"], look["eye_line_y"]])
    matrix = np.hstack([linear, (target - linear @ mid)[:, None]])
    person = cv2.warpAffine(
        photo.image.astype(np.float32), matrix, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT
    )
    landmarks = photo.landmarks @ linear.T + matrix[:, 2]
    iod = look["iod_fraction"] * width

    person = _reshape_face(person, landmarks, iod, rng)
    person = _retone(person, look)
    person += _skin_texture(rng, (height, width), look["texture_amplitude"])[..., None]

    alpha = _portrait_alpha(landmarks, iod, (height, width))
    background = _background(rng, look["background"], (height, width))
    composed = alpha[..., None] * person + (1 - alpha[..., None]) * background
    return np.clip(composed, 0, 255).astype(np.float32)


def _reshape_face(person: np.ndarray, landmarks: np.ndarray, iod: float, rng: np.random.Generator) -> np.ndarray:
    """Small face-shape changes: jaw width, mouth width, nose length, brow height."""
    height, width = person.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    map_x, map_y = xs.copy(), ys.copy()
    centre_x = landmarks[27:31, 0].mean()
    changes = [
        ((4, 5), "lateral", rng.uniform(-0.08, 0.08)),
        ((11, 12), "lateral", rng.uniform(-0.08, 0.08)),
        ((48,), "lateral", rng.uniform(-0.05, 0.05)),
        ((54,), "lateral", rng.uniform(-0.05, 0.05)),
        ((33,), "vertical", rng.uniform(-0.05, 0.05)),
        ((19, 24), "vertical", rng.uniform(-0.05, 0.05)),
    ]
    sigma = 0.45 * iod
    for points, kind, amount in changes:
        centre = landmarks[list(points)].mean(axis=0)
        weight = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2))
        shift = amount * iod
        if kind == "lateral":
            map_x -= weight * shift * np.sign(centre[0] - centre_x)
        else:
            map_y -= weight * shift
    return cv2.remap(person, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


def _retone(person: np.ndarray, look: dict) -> np.ndarray:
    normalised = np.clip(person / 255.0, 0, 1) ** look["gamma"]
    return normalised * 255.0 * np.array(look["channel_gain"], np.float32) + look["exposure"]


def _skin_texture(rng: np.random.Generator, shape: tuple[int, int], amplitude: float) -> np.ndarray:
    """Fine static texture (pores, fine hair): upscaled photos are too smooth for motion to show."""
    noise = rng.standard_normal(shape).astype(np.float32)
    texture = cv2.GaussianBlur(noise, (0, 0), 0.9)
    return texture * (amplitude / max(float(texture.std()), 1e-6))


def _portrait_alpha(landmarks: np.ndarray, iod: float, shape: tuple[int, int]) -> np.ndarray:
    """Soft mask of head and shoulders: the photo's own background is replaced by the subject's."""
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    head = landmarks[27:36].mean(axis=0)
    head_mask = ((xs - head[0]) / (1.9 * iod)) ** 2 + ((ys - head[1] + 0.35 * iod) / (2.5 * iod)) ** 2 < 1
    chin_y = landmarks[8, 1]
    shoulders = (ys > chin_y + 0.3 * iod) & (np.abs(xs - head[0]) < 3.2 * iod)
    mask = (head_mask | shoulders).astype(np.float32)
    return cv2.GaussianBlur(mask, (0, 0), 0.18 * iod)


def _background(rng: np.random.Generator, colours: list[list[float]], shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    top, bottom = np.array(colours, np.float32)
    ramp = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    gradient = top * (1 - ramp) + bottom * ramp
    blotches = cv2.resize(rng.standard_normal((6, 8)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    return gradient + 12.0 * blotches[..., None]
