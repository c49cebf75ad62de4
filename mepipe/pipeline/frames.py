"""Frame files -> grayscale arrays, every file checked as it is decoded.

OpenCV's decoders are lenient where it hurts: a JPEG cut short decodes without an error, its
missing rows filled grey (libjpeg only warns "Premature end of JPEG file" on stderr), so a
truncated frame silently gives wrong crops and wrong flow. Here each file is read once into
memory, its byte stream is checked for the marks of a complete file, and the same bytes are then
decoded with ``cv2.imdecode(..., IMREAD_GRAYSCALE)``: the check costs no second read, and a good
file decodes to exactly what ``cv2.imread(path, IMREAD_GRAYSCALE)`` gives.

The format is found from the file's first bytes, not its name. What is checked:

- JPEG: starts with SOI (FFD8); the header segments before the image data fit in the file and
  include a frame header (SOF); the file ends with the end-of-image marker FFD9, which may be
  followed by padding (zero bytes, 0xFF fill, whitespace: some cameras and copy tools write it);
  the image data holds no reserved marker (0xFF then 0x02..0xBF), the mark of overwritten bytes.
- PNG: ends with the IEND chunk (padding allowed as for JPEG).
- BMP: the header's file size and the pixel data (offset + rows x row stride) fit in the file.
- TIFF: the first image directory lies inside the file, then the decoder must accept the file.
- WebP: the RIFF size fits in the file. GIF: ends with its trailer byte. PNM, JPEG 2000: the
  decoder must accept them.
- Anything else is not an image: no known format's magic bytes.

Limitation: damaged data inside a complete file is mostly not caught. A JPEG whose image data
is damaged without making a reserved marker (a zeroed disk block, a block lost in the middle)
still decodes to wrong pixels: libjpeg warns, but OpenCV does not pass the warning on, and
catching it would take a second, strict decoder. Uncompressed BMP and TIFF have no redundancy to
check at all. PNG's checksums make its decoder reject such damage.

A clip can also be one video file (a manifest's video row: ``Sample.video``): :func:`decode_frames`
and :func:`scan_frames` then decode it whole with :mod:`mepipe.pipeline.video` (OpenCV's FFmpeg),
whose errors are the same :class:`FrameError` lines. A video's damage shows only as frames the
decoder cannot return (fewer than the manifest's reading counted) or as no frame at all.

Errors name the file and say what is wrong in one line: :class:`FrameError` from
:func:`read_frame` and :func:`decode_frames` (the first bad file), :class:`FrameProblem` records
from :func:`scan_frames` and :class:`~mepipe.datasets.samples.Problem` rows from
:func:`scan_samples` (every bad file).
"""

from __future__ import annotations

import os
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mepipe.datasets.samples import Problem, Sample, is_video_file

#: The check name of a bad frame in ``mepipe verify``'s problem table.
BAD_FRAME = "bad frame"

# Bytes that may follow an image's last mark without making the file incomplete.
_PADDING = b"\x00\xff \t\r\n"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# SOFn markers: C0..CF except DHT (C4), JPG (C8) and DAC (CC)
_JPEG_FRAME_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class FrameError(Exception):
    """A frame file that cannot be used: ``.path`` (None when no file is to blame) and ``.reason``.

    ``str(error)`` is one line: ``frames: <path> <reason>``, e.g. ``frames: /x/img46.jpg is
    truncated (no JPEG end-of-image marker; 40213 bytes, the clip's frames have ~67002)``.
    """

    def __init__(self, path, reason: str):
        self.path = None if path is None else Path(path)
        self.reason = reason
        super().__init__(f"frames: {path} {reason}" if path is not None else f"frames: {reason}")


@dataclass(frozen=True)
class FrameProblem:
    """One bad frame of a clip: the file and what is wrong with it (``is empty (0 bytes)``)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"frames: {self.path} {self.reason}"


def check_frame_bytes(data: bytes, path, typical_size: int | None = None) -> str:
    """Check that ``data``, the whole content of the file ``path``, is a complete image file.

    Returns the format's name (``JPEG``, ``PNG``, ``BMP``, ...). Raises :class:`FrameError` naming
    ``path`` when the file is empty, is no known image format, or is cut short or damaged in a
    way its format shows (see the module's docstring). ``typical_size`` (the size of the clip's
    other frames) only adds a hint to the message of a truncated file. Decodes nothing: a file
    that passes can still be one the decoder rejects.
    """
    if not data:
        raise FrameError(path, "is empty (0 bytes)")
    name, check = _format_of(data)
    if name is None:
        raise FrameError(path, f"is not a readable image (no known image format; starts with {data[:12]!r})")
    if check is not None:
        reason = check(data, _size_hint(len(data), typical_size))
        if reason is not None:
            raise FrameError(path, reason)
    return name


def read_frame(path, typical_size: int | None = None, colour: bool = False) -> np.ndarray:
    """The file ``path`` as a (H, W) uint8 grayscale image, checked, read once.

    Raises :class:`FrameError` when it is missing, unreadable, fails :func:`check_frame_bytes` or
    is rejected by the decoder. A good file gives exactly ``cv2.imread(path, IMREAD_GRAYSCALE)``.
    ``colour``: a colour file as (H, W, 3) uint8 RGB, a gray one (SAMM's) as (H, W), as stored.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise FrameError(path, "is missing") from None
    except IsADirectoryError:
        raise FrameError(path, "is a folder, not an image file") from None
    except OSError as error:
        raise FrameError(path, f"cannot be read ({error.strerror or error})") from None
    name = check_frame_bytes(data, path, typical_size)
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_ANYCOLOR if colour else cv2.IMREAD_GRAYSCALE)
        if image is not None and image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    except cv2.error as error:
        raise FrameError(path, f"is not a readable image (the {name} decoder failed: {str(error).strip().splitlines()[-1]})") from None
    if image is None:
        raise FrameError(path, f"is not a readable image (the {name} decoder rejected it)")
    return image


def decode_frames(paths: Iterable, colour: bool = False) -> np.ndarray:
    """A clip's frame files as one (T, H, W) uint8 grayscale array, in the order given.

    ``colour``: (T, H, W, 3) RGB for colour files, (T, H, W) for gray ones (:func:`read_frame`).

    Every file is checked as :func:`read_frame` does, and every frame must have the first frame's
    size. Raises :class:`FrameError` for the first bad file (or for an empty ``paths``); use
    :func:`scan_frames` to find every bad file of a clip.

    ``paths`` of one video file (a video clip, ``Sample.video``): every frame the video decodes
    to, in decoding order (``colour``: RGB, else gray), as :func:`mepipe.pipeline.video.read_video`.
    """
    paths = list(paths)
    if not paths:
        raise FrameError(None, "the clip has no frames")
    if len(paths) == 1 and is_video_file(paths[0]):
        return _read_video(paths[0], colour).frames
    typical = _median_size(paths)
    first = read_frame(paths[0], typical, colour)
    # filled in place: stacking a list of frames would hold the clip twice at the peak
    clip = np.empty((len(paths), *first.shape), np.uint8)
    clip[0] = first
    for index, path in enumerate(paths[1:], start=1):
        image = read_frame(path, typical, colour)
        if image.shape != first.shape:
            if image.shape[:2] == first.shape[:2]:  # same size, one gray and one colour
                raise FrameError(path, f"is {_kind(image.shape)}, the clip's first frame is {_kind(first.shape)}")
            raise FrameError(path, f"is {_size(image.shape)}, the clip's first frame is {_size(first.shape)}")
        clip[index] = image
    return clip


def scan_frames(paths: Sequence, expected_frames: int | None = None) -> list[FrameProblem]:
    """Every bad frame of one clip, in the order of ``paths``; empty when all are good.

    Decodes every file as :func:`read_frame` does (and keeps none of them). A file is bad when
    :func:`read_frame` rejects it, or when its size differs from that of most of the clip's good
    frames (the first good frame's size on a tie), so that one odd frame is blamed, not the rest.

    ``paths`` of one video file: at most one problem, the video's, when it cannot be decoded to
    the end or (``expected_frames``, what the dataset's reading counted) decodes to another number
    of frames.
    """
    paths = list(paths)
    if len(paths) == 1 and is_video_file(paths[0]):
        return _scan_video(Path(paths[0]), expected_frames)
    typical = _median_size(paths)
    found: dict[int, FrameProblem] = {}
    shapes: dict[int, tuple[int, ...]] = {}
    for index, path in enumerate(paths):
        try:
            shapes[index] = read_frame(path, typical).shape
        except FrameError as error:
            found[index] = FrameProblem(Path(path), error.reason)
    if shapes:
        usual = Counter(shapes.values()).most_common(1)[0][0]
        for index, shape in shapes.items():
            if shape != usual:
                found[index] = FrameProblem(Path(paths[index]), f"is {_size(shape)}, the clip's other frames are {_size(usual)}")
    return [found[index] for index in sorted(found)]


#: ``progress(clips_done, clips_total, frames_done, frames_total)``, as the CLI's progress printer.
Progress = Callable[[int, int, int, int], None]


def scan_samples(samples: Iterable[Sample], workers: int | None = None, progress: Progress | None = None) -> list[Problem]:
    """Decode every frame file of every sample; one fatal ``bad frame`` problem per bad file.

    Clips are scanned in parallel by ``workers`` threads (default: the CPU count), each clip by
    :func:`scan_frames`; OpenCV runs one thread per decode meanwhile (restored afterwards). A
    problem's ``where`` is the file, its ``message`` what is wrong with it, its ``sample_id`` the
    sample's. Problems come in the order of ``samples`` and their frames, whatever order the
    clips finish in. ``progress`` is called after each clip.
    """
    samples = list(samples)
    frames_total = sum(sample.n_frames for sample in samples)
    workers = max(1, workers if workers is not None else os.cpu_count() or 1)
    found: dict[int, list[FrameProblem]] = {}
    clips_done = frames_done = 0
    threads_before = cv2.getNumThreads()
    # the decoder releases the GIL, so threads decode in parallel without shipping paths and
    # results between processes; parallelism is across files, so one OpenCV thread per decode
    cv2.setNumThreads(1)
    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(scan_frames, sample.frames, sample.n_frames): index for index, sample in enumerate(samples)}
            for future in as_completed(futures):
                index = futures[future]
                found[index] = future.result()
                clips_done += 1
                frames_done += samples[index].n_frames
                if progress is not None:
                    progress(clips_done, len(samples), frames_done, frames_total)
    finally:
        cv2.setNumThreads(threads_before)
    return [
        Problem(BAD_FRAME, str(problem.path), problem.reason, samples[index].sample_id, fatal=True)
        for index in sorted(found) for problem in found[index]
    ]


def _read_video(path, colour: bool):
    # imported here: pipeline.video imports FrameError from this module
    from mepipe.pipeline.video import read_video

    return read_video(path, colour=colour)


def _scan_video(path: Path, expected_frames: int | None) -> list[FrameProblem]:
    from mepipe.pipeline.video import count_video_frames

    try:
        frames, _ = count_video_frames(path)
    except FrameError as error:
        return [FrameProblem(path, error.reason)]
    if expected_frames is not None and frames != expected_frames:
        return [FrameProblem(path, f"decodes to {frames} frames, the dataset's reading counted {expected_frames} "
                                   "(the file changed since it was read)")]
    return []


def _format_of(data: bytes) -> tuple[str | None, Callable[[bytes, str], str | None] | None]:
    """The image format whose magic bytes ``data`` starts with, and its check (None: decode only).

    A check returns what is wrong, or None; its second argument, ``; <size> bytes[, the clip's
    frames have ~<size>]``, is for the messages of truncated files that give no sizes of their own.
    """
    if data.startswith(b"\xff\xd8"):
        return "JPEG", _check_jpeg
    if data.startswith(_PNG_SIGNATURE):
        return "PNG", _check_png
    if data.startswith(b"BM"):
        return "BMP", _check_bmp
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF", _check_tiff
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WebP", _check_riff
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF", _check_gif
    if len(data) > 2 and data[0:1] == b"P" and data[1:2] in b"123456" and data[2:3] in b" \t\r\n#":
        return "PNM", None
    if data.startswith(b"\x00\x00\x00\x0cjP  \r\n\x87\n") or data.startswith(b"\xff\x4f\xff\x51"):
        return "JPEG 2000", None
    return None, None


def _check_jpeg(data: bytes, sizes: str) -> str | None:
    end = len(data.rstrip(_PADDING))
    if data[end - 2:end] != b"\xff\xd9":
        return f"is truncated (no JPEG end-of-image marker{sizes})"
    # the header segments, by their lengths, up to the start of the image data (SOS)
    position, has_frame = 2, False
    while True:
        while data[position:position + 2] == b"\xff\xff":  # fill bytes before a marker
            position += 1
        if position + 4 > end:
            return f"is truncated (the JPEG headers run past the end{sizes})"
        if data[position] != 0xFF:
            return f"is corrupt (no JPEG marker at byte {position} of the headers)"
        marker = data[position + 1]
        if marker == 0x00 or 0x02 <= marker <= 0xBF:
            return f"is corrupt (no JPEG marker at byte {position} of the headers)"
        if marker == 0xD9:
            return "is not a readable image (the JPEG ends before any image data)"
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a segment
            position += 2
            continue
        length = int.from_bytes(data[position + 2:position + 4], "big")
        if length < 2:
            return f"is corrupt (a JPEG segment of length {length} at byte {position})"
        if position + 2 + length > end:
            return f"is truncated (the JPEG header segment at byte {position} runs past the end{sizes})"
        has_frame = has_frame or marker in _JPEG_FRAME_MARKERS
        position += 2 + length
        if marker == 0xDA:
            break
    if not has_frame:
        return "is not a readable image (no JPEG frame header before the image data)"
    # In the entropy-coded data a 0xFF byte is followed by 00 (stuffing), D0..D7 (restart), FF
    # (fill) or a real marker; reserved values mean bytes were overwritten. Vectorised so that a
    # baseline file (whose only real marker is the end) costs one pass in numpy.
    body = np.frombuffer(data, np.uint8, count=end - position, offset=position)
    after = np.flatnonzero(body[:-1] == 0xFF) + 1
    following = body[after]
    markers = after[(following != 0x00) & (following != 0xFF) & ((following < 0xD0) | (following > 0xD7))] - 1 + position
    skip_to = position
    for at in markers.tolist():
        if at < skip_to:
            continue  # inside a segment between scans (a Huffman table may hold any bytes)
        marker = data[at + 1]
        if marker == 0xD9:
            return None  # data after an early end (a second image, a maker's trailer) is not judged
        if 0x02 <= marker <= 0xBF:
            return f"is corrupt (reserved JPEG marker 0xFF{marker:02X} at byte {at} in the image data)"
        if marker != 0x01:  # a table or the next scan's header (progressive JPEG): skip it
            skip_to = at + 2 + int.from_bytes(data[at + 2:at + 4], "big")
            if skip_to > end:
                return f"is truncated (the JPEG segment at byte {at} runs past the end{sizes})"
    return None


def _check_png(data: bytes, sizes: str) -> str | None:
    end = len(data.rstrip(_PADDING))
    if data[end - len(_PNG_IEND):end] != _PNG_IEND:
        return f"is truncated (no PNG IEND chunk at the end{sizes})"
    return None


def _check_bmp(data: bytes, sizes: str) -> str | None:
    size = len(data)
    if size < 26:
        return f"is truncated (the BMP headers need at least 26 bytes, the file has {size})"
    declared = int.from_bytes(data[2:6], "little")
    if declared > size:  # 0 is written by some encoders and means "not given"
        return f"is truncated (the BMP header gives {declared} bytes, the file has {size})"
    offset = int.from_bytes(data[10:14], "little")
    header = int.from_bytes(data[14:18], "little")
    if header == 12:  # OS/2 core header
        width, height = int.from_bytes(data[18:20], "little"), int.from_bytes(data[20:22], "little")
        bits, compression, image_size = int.from_bytes(data[24:26], "little"), 0, 0
    elif header >= 40:
        if size < 54:
            return f"is truncated (the BMP headers need at least 54 bytes, the file has {size})"
        width = int.from_bytes(data[18:22], "little", signed=True)
        height = abs(int.from_bytes(data[22:26], "little", signed=True))  # negative: rows top-down
        bits = int.from_bytes(data[28:30], "little")
        compression = int.from_bytes(data[30:34], "little")
        image_size = int.from_bytes(data[34:38], "little")
    else:
        return f"is not a readable image (a BMP info header of {header} bytes)"
    if compression in (0, 3, 6):  # uncompressed rows (plain, bit fields), each padded to 4 bytes
        pixels = (max(width, 0) * bits + 31) // 32 * 4 * height
    else:  # run-length or embedded JPEG/PNG: only the header's own figure says how long
        pixels = image_size
    if offset + pixels > size:
        return f"is truncated (the BMP pixel data needs bytes {offset}..{offset + pixels}, the file has {size})"
    return None


def _check_tiff(data: bytes, sizes: str) -> str | None:
    order = "little" if data[:2] == b"II" else "big"
    big = data[2:4] in (b"+\x00", b"\x00+")
    directory = int.from_bytes(data[8:16], order) if big else int.from_bytes(data[4:8], order)
    if len(data) < (16 if big else 8) or directory + 2 > len(data):
        return f"is truncated (the TIFF image directory at byte {directory} lies past the end{sizes})"
    return None


def _check_riff(data: bytes, sizes: str) -> str | None:
    declared = int.from_bytes(data[4:8], "little") + 8
    if declared > len(data):
        return f"is truncated (the RIFF header gives {declared} bytes, the file has {len(data)})"
    return None


def _check_gif(data: bytes, sizes: str) -> str | None:
    if not data.rstrip(_PADDING).endswith(b";"):
        return f"is truncated (no GIF trailer at the end{sizes})"
    return None


def _size_hint(size: int, typical: int | None) -> str:
    if typical is not None and typical > size:
        return f"; {size} bytes, the clip's frames have ~{typical}"
    return f"; {size} bytes"


def _median_size(paths: Sequence) -> int | None:
    """The median file size of the clip's frames: what a truncated one is compared with."""
    sizes = []
    for path in paths:
        try:
            sizes.append(os.stat(path).st_size)
        except OSError:
            pass
    return int(statistics.median(sizes)) if sizes else None


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


def _kind(shape: tuple[int, ...]) -> str:
    return "gray" if len(shape) == 2 else f"colour ({shape[2]} channels)"
