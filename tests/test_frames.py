"""Frames are checked as they are decoded: truncated, empty, foreign, missing and odd-sized files
are named, in `decode_frames`, in `scan_frames`, in a build's failures and in `mepipe verify --decode`."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from mepipe.cli import main
from mepipe.pipeline.frames import FrameError, FrameProblem, check_frame_bytes, decode_frames, read_frame, scan_frames
from mepipe.synth.generate import SynthOptions, synthesize


def _image(height: int = 120, width: int = 160, seed: int = 0) -> np.ndarray:
    """Smooth colour noise: compresses like a photo, so a cut JPEG still has image data before it."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (7, 7), 2.0)


def _write(path: Path, image: np.ndarray | None = None, **kwargs) -> Path:
    assert cv2.imwrite(str(path), _image(**kwargs) if image is None else image)
    return path


def _truncate(path: Path, fraction: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def _reason(path: Path) -> str:
    with pytest.raises(FrameError) as caught:
        read_frame(path)
    assert caught.value.path == path
    assert str(caught.value).startswith(f"frames: {path} ")
    assert "\n" not in str(caught.value)
    return caught.value.reason


@pytest.mark.parametrize("suffix", [".jpg", ".bmp", ".png"])
def test_a_good_frame_decodes_bit_identically_to_imread(suffix, tmp_path):
    path = _write(tmp_path / f"frame{suffix}")
    image = read_frame(path)
    assert image.dtype == np.uint8 and image.shape == (120, 160)
    assert np.array_equal(image, cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))


def test_a_clip_decodes_to_the_stacked_imread_frames(tmp_path):
    paths = [_write(tmp_path / f"img{n}.jpg", seed=n) for n in range(4)]
    clip = decode_frames(paths)
    assert clip.dtype == np.uint8 and clip.shape == (4, 120, 160)
    assert np.array_equal(clip, np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]))
    assert scan_frames(paths) == []


def test_a_truncated_jpeg_that_imread_accepts_is_rejected(tmp_path):
    path = _truncate(_write(tmp_path / "img46.jpg"))
    assert cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) is not None  # OpenCV alone would use it
    reason = _reason(path)
    assert reason.startswith("is truncated (no JPEG end-of-image marker") and f"{path.stat().st_size} bytes" in reason


def test_a_truncated_jpeg_names_the_size_of_the_clips_other_frames(tmp_path):
    paths = [_write(tmp_path / f"img{n}.jpg", seed=0) for n in range(3)]
    full = paths[0].stat().st_size
    _truncate(paths[1])
    with pytest.raises(FrameError, match=rf"img1\.jpg is truncated .*the clip's frames have ~{full}\)$"):
        decode_frames(paths)


def test_padding_after_the_jpeg_end_marker_is_allowed(tmp_path):
    path = _write(tmp_path / "padded.jpg")
    reference = read_frame(path)
    path.write_bytes(path.read_bytes() + b"\x00" * 512)
    assert np.array_equal(read_frame(path), reference)


def test_a_progressive_jpeg_and_one_with_restart_markers_pass(tmp_path):
    for name, flags in (("progressive.jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), ("restarts.jpg", [cv2.IMWRITE_JPEG_RST_INTERVAL, 2])):
        path = tmp_path / name
        assert cv2.imwrite(str(path), _image(), flags)
        assert np.array_equal(read_frame(path), cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))


def test_a_reserved_marker_in_the_jpeg_image_data_is_corrupt(tmp_path):
    data = bytearray(_write(tmp_path / "good.jpg").read_bytes())
    middle = len(data) // 2
    data[middle:middle + 2] = b"\xff\x3a"
    with pytest.raises(FrameError, match=rf"is corrupt \(reserved JPEG marker 0xFF3A at byte {middle} in the image data\)"):
        check_frame_bytes(bytes(data), "x.jpg")


def test_a_truncated_bmp_is_rejected(tmp_path):
    path = _truncate(_write(tmp_path / "reg_image046433.bmp"))
    size = path.stat().st_size
    assert _reason(path) == f"is truncated (the BMP header gives {160 * 120 * 3 + 54} bytes, the file has {size})"


def test_a_bmp_whose_pixels_overrun_the_file_is_rejected(tmp_path):
    data = bytearray(_write(tmp_path / "frame.bmp").read_bytes())
    data[2:6] = (0).to_bytes(4, "little")  # a writer that leaves the file size out
    with pytest.raises(FrameError, match=r"is truncated \(the BMP pixel data needs bytes 54\.\.57654, the file has 40000"):
        check_frame_bytes(bytes(data[:40000]), "frame.bmp")


def test_a_truncated_png_is_rejected(tmp_path):
    path = _truncate(_write(tmp_path / "frame.png"), 0.9)
    assert _reason(path).startswith("is truncated (no PNG IEND chunk at the end")


def test_an_empty_file_is_rejected(tmp_path):
    path = tmp_path / "img46.jpg"
    path.write_bytes(b"")
    assert _reason(path) == "is empty (0 bytes)"


def test_a_text_file_named_jpg_is_not_an_image(tmp_path):
    path = tmp_path / "img46.jpg"
    path.write_text("hello, this is not a picture")
    assert _reason(path) == "is not a readable image (no known image format; starts with b'hello, this ')"


def test_a_missing_file_is_named(tmp_path):
    assert _reason(tmp_path / "img46.jpg") == "is missing"


def test_a_wrong_size_frame_stops_decode_frames_and_is_the_only_one_scan_frames_blames(tmp_path):
    paths = [_write(tmp_path / f"img{n}.jpg", seed=n) for n in range(5)]
    _write(paths[2], height=60, width=80)
    with pytest.raises(FrameError) as caught:
        decode_frames(paths)
    assert caught.value.path == paths[2]
    assert caught.value.reason == "is 80x60, the clip's first frame is 160x120"
    assert scan_frames(paths) == [FrameProblem(paths[2], "is 80x60, the clip's other frames are 160x120")]
    # an odd first frame is blamed itself, not the frames after it
    _write(paths[2], seed=2)
    _write(paths[0], height=60, width=80)
    assert scan_frames(paths) == [FrameProblem(paths[0], "is 80x60, the clip's other frames are 160x120")]


def test_scan_frames_lists_every_bad_file_in_clip_order(tmp_path):
    paths = [_write(tmp_path / f"img{n}.jpg", seed=n) for n in range(6)]
    _truncate(paths[1])
    paths[2].write_bytes(b"")
    paths[3].unlink()
    _write(paths[4], height=60, width=80)
    found = scan_frames(paths)
    assert [problem.path for problem in found] == paths[1:5]
    assert [problem.reason.split(" (")[0] for problem in found] == [
        "is truncated", "is empty", "is missing", "is 80x60, the clip's other frames are 160x120"]
    with pytest.raises(FrameError) as caught:
        decode_frames(paths)
    assert caught.value.path == paths[1]  # the first bad file


def test_an_empty_clip_is_an_error():
    with pytest.raises(FrameError, match="^frames: the clip has no frames$"):
        decode_frames([])


# ---- the build and `mepipe verify --decode` on synthetic trees -------------------------------


@pytest.fixture(scope="module")
def casme2_tree(tiny) -> Path:
    """The session's synthetic CASME II tree: 2 subjects x 3 clips of 640x480 JPEG (tests that
    damage frames damage a copy)."""
    return tiny


def _frames_of(clip: Path) -> list[Path]:
    return sorted(clip.iterdir(), key=lambda path: int("".join(filter(str.isdigit, path.stem))))


def _break_four_clips(root: Path) -> dict[str, Path]:
    """One bad frame in each of four clips: sample id -> the bad file."""
    clips = sorted(clip for subject in sorted(root.glob("sub*")) for clip in subject.iterdir() if clip.is_dir())
    broken = {}
    for clip, damage in zip(clips, ("truncated", "empty", "wrong size", "text")):
        frame = _frames_of(clip)[5]
        if damage == "truncated":
            _truncate(frame)
            assert cv2.imread(str(frame), cv2.IMREAD_GRAYSCALE) is not None
        elif damage == "empty":
            frame.write_bytes(b"")
        elif damage == "wrong size":
            _write(frame, height=240, width=320)
        else:
            frame.write_text("hello")
        broken[f"casme2/{clip.parent.name}/{clip.name}"] = frame
    return broken


def test_a_build_records_each_sample_with_a_bad_frame_naming_the_file(casme2_tree, tmp_path):
    from mepipe.pipeline.build import BuildOptions, build

    root = tmp_path / "casme2"
    shutil.copytree(casme2_tree, root)
    broken = _break_four_clips(root)
    summary = build(BuildOptions("casme2", root=root, store=tmp_path / "store.zarr", scheduler="threads", workers=2,
                                 params=("face.size=64",), artifacts=("face",)))
    reasons = {sample: reason for sample, artifact, reason in summary.failures if artifact == "face"}
    assert set(reasons) == set(broken)
    for sample, frame in broken.items():
        assert str(frame) in reasons[sample]
    truncated, empty, wrong_size, text = (reasons[sample] for sample in broken)
    assert "is truncated (no JPEG end-of-image marker" in truncated
    assert "is empty (0 bytes)" in empty
    assert "is 320x240, the clip's first frame is 640x480" in wrong_size
    assert "is not a readable image" in text
    assert summary.counts["face"].computed == 2


def test_verify_decode_lists_every_bad_frame_and_fails(casme2_tree, tmp_path):
    clean = CliRunner().invoke(main, ["verify", "--dataset", "casme2", "--root", str(casme2_tree), "--decode", "--workers", "2"])
    assert clean.exit_code == 0, clean.output
    assert "bad frame" not in clean.output

    root = tmp_path / "casme2"
    shutil.copytree(casme2_tree, root)
    broken = _break_four_clips(root)
    result = CliRunner().invoke(main, ["verify", "--dataset", "casme2", "--root", str(root), "--decode", "--workers", "2"])
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("bad frame")]
    assert len(lines) == 4
    for frame in broken.values():
        # the where column may be shortened from the left; the clip and file stay
        assert sum(f"{frame.parent.name}/{frame.name}" in line for line in lines) == 1, frame
    messages = "\n".join(lines)
    for expected in ("is truncated (no JPEG end-of-image marker", "is empty (0 bytes)", "is 320x240, the clip's other frames are 640x480",
                     "is not a readable image (no known image format; starts with b'hello')"):
        assert expected in messages


def test_verify_decode_finds_a_truncated_bmp_of_smic(tmp_path):
    root = tmp_path / "smic"
    synthesize(SynthOptions(layout="smic", out=root, subjects=1, clips_per_subject=1, workers=1))
    frame = _frames_of(next(root.glob("HS/*/micro/*/*")))[4]
    _truncate(frame)
    plain = CliRunner().invoke(main, ["verify", "--dataset", "smic", "--root", str(root)])
    assert plain.exit_code == 0, plain.output  # without --decode the file is not looked at
    result = CliRunner().invoke(main, ["verify", "--dataset", "smic", "--root", str(root), "--decode", "--workers", "1"])
    assert result.exit_code == 1, result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("bad frame")]
    assert frame.name in line and "is truncated (the BMP header gives" in line
