"""Video files -> frame arrays, with OpenCV's FFmpeg reader (the wheel ships FFmpeg).

A micro-expression clip from a video (``mepipe predict --video``, a manifest row whose ``path``
is a video) is decoded whole into memory, like a frame folder: clips are seconds long. Frame
``i`` of the video is the ``i``-th frame the decoder returns (0-based), which is how the frame
indices of a manifest's video rows and of ``predict --onset/--apex/--offset`` count.

Errors are :class:`~mepipe.pipeline.frames.FrameError`, one line naming the file: a file that is
not a video, a video with no frame, frames of changing size.

A video's length is what decoding it gives (:func:`video_length`): the container's frame count
(``CAP_PROP_FRAME_COUNT``) is an estimate from its duration and rate, and is wrong for files with
variable frame rates or edit lists. :func:`read_video` and :func:`video_length` run one decoding
loop, so the length the manifest adapter records is the number of frames the build decodes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mepipe.datasets.errors import DatasetError
from mepipe.datasets.samples import VIDEO_SUFFIXES, is_video_file
from mepipe.pipeline.frames import FrameError

__all__ = ["VIDEO_SUFFIXES", "Video", "count_video_frames", "is_video", "read_video", "video_length", "write_video"]


@dataclass(frozen=True)
class Video:
    """A decoded video: ``frames`` (T, H, W, 3) uint8 RGB (or (T, H, W) gray when asked), the
    frame rate the file declares (``fps``, frames per second; None when it declares none)."""

    frames: np.ndarray
    fps: float | None


@contextmanager
def _quiet():
    """OpenCV's and FFmpeg's own log lines off: a bad file is reported once, as a FrameError."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # read by OpenCV when it opens a file
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


def is_video(path) -> bool:
    """True when ``path``'s name ends in one of :data:`VIDEO_SUFFIXES`."""
    return is_video_file(path)


def read_video(path, colour: bool = True) -> Video:
    """Every frame of the video file ``path``, in decoding order.

    ``colour``: (T, H, W, 3) RGB; else (T, H, W) gray (BT.601 luma, as ``cv2.cvtColor`` makes it).
    Raises :class:`FrameError` when the file is missing, is not a video OpenCV's FFmpeg reader can
    open, has no frame, or changes frame size.
    """
    code = cv2.COLOR_BGR2RGB if colour else cv2.COLOR_BGR2GRAY
    with _opened(path) as (capture, fps):
        frames = [cv2.cvtColor(image, code) for image in _decoded(capture, Path(path))]
    return Video(np.stack(frames), fps)


def count_video_frames(path) -> tuple[int, float | None]:
    """(number of frames, declared frame rate or None) of the video file ``path``.

    The frames are counted by decoding every one of them, as :func:`read_video` does, and none is
    kept. Raises :class:`FrameError` as :func:`read_video` does.
    """
    with _opened(path) as (capture, fps):
        return sum(1 for _ in _decoded(capture, Path(path))), fps


def video_length(path) -> tuple[int, float | None]:
    """:func:`count_video_frames` for the manifest adapter, which decodes nothing itself
    (:mod:`mepipe.datasets.manifest`; ``mepipe verify`` and ``mepipe build`` pass it this): raises
    :class:`~mepipe.datasets.errors.DatasetError`, one line naming the file."""
    try:
        return count_video_frames(path)
    except FrameError as error:
        raise DatasetError(f"{error.path} {error.reason}") from None


@contextmanager
def _opened(path):
    """An open ``cv2.VideoCapture`` of ``path`` and the frame rate it declares (None: none)."""
    path = Path(path)
    if not path.exists():
        raise FrameError(path, "is missing")
    if path.is_dir():
        raise FrameError(path, "is a folder, not a video file")
    with _quiet():
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            raise FrameError(path, "is not a readable video (OpenCV's FFmpeg reader cannot open it; "
                                   f"videos: {', '.join(VIDEO_SUFFIXES)})")
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        yield capture, (fps if fps > 0 else None)
    finally:
        capture.release()


def _decoded(capture, path: Path) -> Iterator[np.ndarray]:
    """The capture's frames (H, W, 3) BGR in decoding order; FrameError when there is none or
    when the frame size changes."""
    first_shape = None
    index = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        if first_shape is None:
            first_shape = image.shape
        elif image.shape != first_shape:
            raise FrameError(path, f"changes frame size at frame {index}: {image.shape[1]}x{image.shape[0]}, "
                                   f"the first frame is {first_shape[1]}x{first_shape[0]}")
        index += 1
        yield image
    if first_shape is None:
        raise FrameError(path, "is not a readable video (no frame could be decoded)")


def write_video(path, frames: np.ndarray, fps: float) -> str:
    """Write (T, H, W, 3) RGB or (T, H, W) gray uint8 ``frames`` to ``path`` (.mp4 or .avi) with the
    first codec the installed OpenCV can write (H.264, then MPEG-4 Part 2); returns the codec's
    FourCC. For tests and ``mepipe synth``; raises OSError when no codec can write the file."""
    frames = np.asarray(frames, np.uint8)
    height, width = frames.shape[1:3]
    path = Path(path)
    for fourcc in ("avc1", "mp4v", "XVID", "MJPG"):
        with _quiet():
            writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), float(fps),
                                     (width, height))
        if writer.isOpened():
            try:
                for frame in frames:
                    writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if frame.ndim == 3
                                 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
            finally:
                writer.release()
            return fourcc
        writer.release()
    raise OSError(f"{path}: no video codec of this OpenCV build can write it")
