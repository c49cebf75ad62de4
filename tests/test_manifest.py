"""Any dataset through a manifest: `mepipe synth --layout manifest` (frame folders and mp4 videos
mixed), `verify`, `build` and LOSO training on it; video clips decoded like frame folders; the
manifest's protocol; bad input, each problem one line naming the file, row and column."""

from __future__ import annotations

import csv
import shutil

import cv2
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from mepipe.cli import main
from mepipe.datasets.adapters import read_dataset
from mepipe.datasets.errors import DatasetError
from mepipe.datasets.manifest import DEFAULT_FPS, MANIFEST_COLUMNS, frame_number_of, read_manifest, write_manifest
from mepipe.datasets.protocols import select
from mepipe.datasets.verify import verify_dataset
from mepipe.pipeline.build import BuildError, BuildOptions, build
from mepipe.pipeline.frames import decode_frames, scan_frames
from mepipe.pipeline.video import read_video, video_length, write_video
from mepipe.synth.ground_truth import GroundTruth

SIZE = ("face.size=48",)  # small crops: the code path is the same


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """`mepipe synth --layout manifest`: 2 subjects x 2 clips, each subject's second clip an mp4."""
    root = tmp_path_factory.mktemp("manifest") / "tree"
    result = CliRunner().invoke(main, ["synth", "--layout", "manifest", "--out", str(root), "--subjects", "2",
                                       "--clips-per-subject", "2", "--workers", "1"])
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture(scope="module")
def store(tree, tmp_path_factory):
    path = tmp_path_factory.mktemp("manifest_store") / "store.zarr"
    summary = build(BuildOptions("manifest", root=tree, store=path, scheduler="threads", workers=2, params=SIZE,
                                 artifacts=("flow", "strain")))
    assert not summary.failures, summary.failures
    return path


def _manifest_rows(root):
    with open(root / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------------------------
# the synthetic tree, verify, build, train


def test_synth_writes_frame_folders_and_videos_listed_in_the_manifest(tree):
    rows = _manifest_rows(tree)
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    assert [row["path"].endswith(".mp4") for row in rows] == [False, True, False, True]
    truth = GroundTruth(tree)
    assert truth.manifest["dataset"] == "manifest" and truth.manifest["frame_layout"] == "casme2"
    for row, entry in zip(rows, truth.clips):
        assert (row["subject"], row["clip"], row["path"]) == (entry["subject"], entry["clip"], entry["path"])
        assert entry["video"] == row["path"].endswith(".mp4")
        n_frames = entry["last_frame"] - entry["first_frame"] + 1
        base = entry["first_frame"] if entry["video"] else 0  # a video's frames count from 0
        assert (int(row["onset"]), int(row["apex"]), int(row["offset"])) == (
            entry["onset"] - base, entry["apex"] - base, entry["offset"] - base)
        if entry["video"]:
            video = read_video(tree / row["path"])
            assert video.frames.shape == (n_frames, 480, 640, 3) and video.fps == 200
        else:
            assert len(list((tree / row["path"]).glob("img*.jpg"))) == n_frames
    truth.close()


def test_the_same_seed_writes_the_same_bytes(tree, tmp_path):
    """A one-subject tree is the first subject of the two-subject one (plans and pixels are drawn
    per clip), so its files must be byte for byte the same: a folder and a video."""
    other = tmp_path / "again"
    result = CliRunner().invoke(main, ["synth", "--layout", "manifest", "--out", str(other), "--subjects", "1",
                                       "--clips-per-subject", "2", "--workers", "1"])
    assert result.exit_code == 0, result.output
    files = sorted(p.relative_to(other) for p in (other / "sub01").rglob("*") if p.is_file())
    assert any(str(f).endswith(".mp4") for f in files) and any(str(f).endswith(".jpg") for f in files)
    assert files == sorted(p.relative_to(tree) for p in (tree / "sub01").rglob("*") if p.is_file())
    for name in files:
        assert (other / name).read_bytes() == (tree / name).read_bytes(), name
    assert _manifest_rows(other) == _manifest_rows(tree)[:2]


def test_verify_is_clean_and_decodes_every_frame_and_video(tree):
    for extra in ([], ["--decode", "--workers", "2"]):
        result = CliRunner().invoke(main, ["verify", "--dataset", "manifest", "--root", str(tree), *extra])
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[-1] == f"manifest at {tree}: 4 samples, 2 subjects; 0 errors, 0 warnings. Clean."


def test_build_is_complete_and_keeps_each_clip_s_indices(tree, store):
    group = zarr.open_group(str(store / "manifest"), mode="r")
    assert list(group["sample_id"][:]) == [f"manifest/{r['subject']}/{r['clip']}" for r in _manifest_rows(tree)]
    for name in ("face", "flow", "strain"):
        assert group["done"][name][:].all(), name
    assert list(group["qc"]["status"][:]) == ["ok"] * 4
    truth = GroundTruth(tree)
    for index, (row, entry) in enumerate(zip(_manifest_rows(tree), truth.clips)):
        n_frames = entry["last_frame"] - entry["first_frame"] + 1
        assert str(group["source"][index]) == row["path"]
        assert int(group["n_frames"][index]) == n_frames
        assert group[f"clips/frames/{row['subject']}/{row['clip']}"].shape == (n_frames, 48, 48)
        # indices into the clip: a folder's frame numbers less its first, a video's as written
        expected = [entry[key] - entry["first_frame"] for key in ("onset", "apex", "offset")]
        assert [int(group[key][index]) for key in ("onset", "apex", "offset")] == expected
        assert int(group["apex_used"][index]) == expected[1]
    assert group.attrs["fps"] == 200.0
    truth.close()


def test_train_runs_loso_on_the_manifest(tree, store, tmp_path):
    result = CliRunner().invoke(main, ["train", "--model", "ststnet", "--dataset", "manifest", "-s", "epochs=2", "--seeds", "0",
                                       "--store", str(store), "--out", str(tmp_path), "--name", "run", "--variant", "default"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "run" / "predictions.csv", newline="") as handle:
        predictions = list(csv.DictReader(handle))
    assert sorted(row["sample_id"] for row in predictions) == sorted(f"manifest/{r['subject']}/{r['clip']}" for r in _manifest_rows(tree))
    assert {row["test_subject"] for row in predictions} == {"manifest/sub01", "manifest/sub02"}
    # native: every distinct emotion a class, sorted
    assert [name[len("score_"):] for name in predictions[0] if name.startswith("score_")] == ["disgust", "happiness", "repression"]


def test_a_clip_whose_frame_rate_changed_is_recomputed_and_only_it(tree, store, tmp_path):
    """The magnification filters in Hz: a clip's rate is an input of its sample, like its onset."""
    root, path = tmp_path / "tree", tmp_path / "store.zarr"
    shutil.copytree(tree, root)
    shutil.copytree(store, path)
    rows = _manifest_rows(root)
    rows[1]["fps"] = "100"
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    summary = build(BuildOptions("manifest", root=root, store=path, scheduler="threads", workers=1, params=SIZE,
                                 artifacts=("flow", "strain")))
    assert not summary.failures
    assert summary.counts["face"].computed == 1 and summary.counts["face"].reused == 3
    group = zarr.open_group(str(path / "manifest"), mode="r")
    assert list(group["fps"][:]) == [200.0, 100.0, 200.0, 200.0]


# --------------------------------------------------------------------------------------------
# a video clip and the same clip as a frame folder


def test_a_video_and_the_same_clip_as_frames_read_and_build_alike(tree, tmp_path):
    """The tree's first clip as its frame folder and as an mp4 of the same frames: one frame
    count, one set of onset/apex/offset indices, and the build's key frames agree up to the
    video's compression."""
    folder_row = _manifest_rows(tree)[0]
    folder = tree / folder_row["path"]
    root = tmp_path / "pair"
    shutil.copytree(folder, root / "clip")
    paths = sorted(folder.glob("img*.jpg"), key=lambda p: frame_number_of(p.name))
    first = frame_number_of(paths[0].name)
    write_video(root / "clip.mp4", decode_frames(paths, colour=True), 200)
    onset, apex, offset = (int(folder_row[key]) for key in ("onset", "apex", "offset"))
    write_manifest(root / "manifest.csv", [
        {"subject": "s1", "clip": "folder", "path": "clip", "onset": onset, "apex": apex, "offset": offset, "emotion": "happiness"},
        {"subject": "s1", "clip": "video", "path": "clip.mp4", "onset": onset - first, "apex": apex - first,
         "offset": offset - first, "emotion": "happiness"},
    ])
    reading = read_manifest(root, video_length=video_length)
    assert not reading.problems
    as_folder, as_video = reading.samples
    assert as_video.video == root / "clip.mp4" and as_folder.video is None
    assert as_video.n_frames == as_folder.n_frames == len(paths) == len(decode_frames(as_video.frames))
    assert (as_video.onset, as_video.apex, as_video.offset) == (as_folder.onset, as_folder.apex, as_folder.offset)
    assert as_video.fps == 200 and as_folder.fps == DEFAULT_FPS

    store = tmp_path / "store.zarr"
    summary = build(BuildOptions("manifest", root=root, store=store, scheduler="threads", workers=2, params=SIZE, artifacts=("face",)))
    assert not summary.failures, summary.failures
    group = zarr.open_group(str(store / "manifest"), mode="r")
    for key in ("onset", "apex", "offset", "apex_used", "n_frames"):
        assert group[key][0] == group[key][1], key
    folder_face, video_face = group["face"][0].astype(float), group["face"][1].astype(float)
    mask = group["eye_mask"][0, 0].astype(bool)
    assert np.abs(folder_face - video_face)[:, ~mask].mean() < 6  # gray levels: the mp4's compression
    assert [str(s) for s in group["source"][:]] == ["clip", "clip.mp4"]


def test_video_frame_indices_are_the_decoded_positions(tmp_path):
    """Frame i of a video is the i-th decoded frame: a bar moving one step per frame, written as
    numbered images (from 100) and as a video; the manifest's index and number meet on one picture."""
    frames = np.zeros((12, 64, 96, 3), np.uint8)
    for i in range(12):
        frames[i, :, 8 * i:8 * i + 8] = 255
    (tmp_path / "f").mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / "f" / f"frame_{100 + i}.png"), frame)
    write_video(tmp_path / "v.avi", frames, 25)
    write_manifest(tmp_path / "manifest.csv", [
        {"subject": "s", "clip": "f", "path": "f", "onset": 102, "apex": 105, "offset": 110, "emotion": "x"},
        {"subject": "s", "clip": "v", "path": "v.avi", "onset": 2, "apex": 5, "offset": 10, "emotion": "x"},
    ])
    as_folder, as_video = read_manifest(tmp_path, video_length=video_length).samples
    assert as_video.fps == 25  # the video's declared rate
    folder_frames, video_frames = decode_frames(as_folder.frames), decode_frames(as_video.frames)
    for index in (as_folder.onset, as_folder.apex, as_folder.offset):
        column = int(video_frames[index].mean(axis=0).argmax()) // 8
        assert column == index == int(folder_frames[index].mean(axis=0).argmax()) // 8


def test_verify_decode_finds_a_damaged_video(tmp_path):
    write_video(tmp_path / "v.mp4", np.full((10, 32, 32, 3), 128, np.uint8), 30)
    data = (tmp_path / "v.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 3])
    problems = scan_frames([tmp_path / "v.mp4"], expected_frames=10) + scan_frames([tmp_path / "v.mp4"], expected_frames=12)
    assert [str(p) for p in problems] == [
        f"frames: {tmp_path / 'v.mp4'} decodes to 10 frames, the dataset's reading counted 12 (the file changed since it was read)"]
    [cut] = scan_frames([tmp_path / "cut.mp4"], expected_frames=10)
    assert cut.path == tmp_path / "cut.mp4" and ("not a readable video" in cut.reason or "decodes to" in cut.reason)


# --------------------------------------------------------------------------------------------
# the protocol


def test_native_classes_are_the_distinct_emotions_sorted_without_case(tmp_path):
    rows = [{"subject": subject, "clip": f"c{n}", "path": "f", "onset": 1, "apex": 2, "offset": 3, "emotion": emotion}
            for n, (subject, emotion) in enumerate([("a", "Surprise"), ("a", "happiness "), ("b", "Happiness"), ("b", "awe")])]
    _frames_folder(tmp_path / "f", range(1, 5))
    write_manifest(tmp_path / "manifest.csv", rows)
    readings = {"manifest": read_dataset("manifest", tmp_path)}
    native = select("manifest", None, readings)
    assert native.protocol == "native" and native.classes == ("awe", "happiness", "surprise")
    assert native.label_names == ["surprise", "happiness", "happiness", "awe"] and len(native.folds) == 2
    three = select("manifest", "3class", readings)
    assert three.label_names == ["surprise", "positive", "positive"]
    assert three.excluded == [("manifest/b/c3", "emotion 'awe' is not a class of manifest 3class")]
    assert verify_dataset("manifest", tmp_path).clean  # free text: no emotion is unknown


# --------------------------------------------------------------------------------------------
# defaults and bad input


def _frames_folder(folder, numbers, name="img{}.jpg"):
    """A frame folder of empty files: the adapter reads names, never pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    for number in numbers:
        (folder / name.format(number)).touch()


def _bad_tree(root, header=MANIFEST_COLUMNS, **changes):
    """A manifest of two folder clips (frames 1..10) with the second row's cells changed."""
    _frames_folder(root / "sub01" / "a", range(1, 11))
    _frames_folder(root / "sub01" / "b", range(1, 11))
    second = {"subject": "sub01", "clip": "b", "path": "sub01/b", "onset": 2, "apex": 5, "offset": 9, "emotion": "joy"}
    second.update(changes)
    rows = [{"subject": "sub01", "clip": "a", "path": "sub01/a", "onset": 1, "apex": 4, "offset": 8, "emotion": "joy"}, second]
    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow([row.get(column, "") for column in header])
    return root


def test_defaults_frame_numbers_and_a_clean_reading(tmp_path):
    root = _bad_tree(tmp_path)
    (root / "sub01" / "a" / ".DS_Store").touch()
    (root / "sub01" / "a" / "._img3.jpg").touch()  # macOS's resource fork: hidden, not a frame
    reading = read_manifest(root)
    assert not reading.problems
    first = reading.samples[0]
    assert first.frame_numbers == tuple(range(1, 11)) and [p.name for p in first.frames[:2]] == ["img1.jpg", "img2.jpg"]
    assert (first.onset, first.apex, first.offset) == (0, 3, 7) and first.fps == DEFAULT_FPS == 200
    assert first.sources["fps"] == "the manifest's default (200 fps): the row gives none"
    assert first.sample_id == "manifest/sub01/a" and first.video is None


@pytest.mark.parametrize(("name", "number"), [("img46.jpg", 46), ("006_05562.jpg", 5562), ("reg_image046433.bmp", 46433),
                                              ("S005_001_00000001.png", 1), ("frame-0046.PNG", 46), ("cover.jpg", None)])
def test_frame_numbers_are_the_last_digits_of_the_name(name, number):
    assert frame_number_of(name) == number


@pytest.mark.parametrize(("changes", "check", "message"), [
    (dict(path="sub01/nope"), "path", "manifest.csv, row 3, column 'path': sub01/nope does not exist under {root}; "
                                      "expected the clip's frame folder or video file"),
    (dict(onset="abc"), "sheet", "manifest.csv, row 3, column 'onset': 'abc' is not a frame number; expected an integer"),
    (dict(onset=""), "sheet", "manifest.csv, row 3, column 'onset': empty; expected the onset's frame number (a video's: its 0-based frame index)"),
    (dict(onset=9, offset=3), "onset after offset", "manifest.csv, row 3: onset 9 comes after offset 3; expected onset <= offset"),
    (dict(offset=12), "not a frame", "manifest.csv, row 3, column 'offset': offset 12 is not a frame of sub01/b, whose frames are numbered 1-10"),
    (dict(clip="a", path="sub01/a", onset=3), "duplicate clip", "manifest.csv, row 3: clip sub01/a is also on row 2, with a different onset, apex, offset; "
                                                "neither row is used"),
    (dict(clip="x/y"), "sheet", "manifest.csv, row 3, column 'clip': 'x/y' cannot name a sample; expected a clip name without '/' or '\\', "
                                "not '.', '..' or starting with '__' (it names the sample's arrays in the store)"),
    (dict(emotion=""), "sheet", "manifest.csv, row 3, column 'emotion': empty; expected an emotion (free text)"),
    (dict(fps="fast"), "sheet", "manifest.csv, row 3, column 'fps': 'fast' is not a frame rate; expected frames per second, a number > 0"),
    (dict(action_units="4+zz"), "sheet", None),
    (dict(path="notes.txt"), "path", "manifest.csv, row 3, column 'path': notes.txt is a file but not a video (.mp4, .avi, .mov, .mkv, .m4v, "
                                     ".webm); expected a frame folder or a video file"),
    (dict(path="empty"), "empty clip", "manifest.csv, row 3, column 'path': no frames in empty; expected image files numbered in their names "
                                       "(img46.jpg), of the kinds .jpg, .jpeg, .png, .bmp, .tif, .tiff, .webp, .gif, .pgm, .ppm, .pbm, .pnm, .jp2"),
])
def test_a_bad_row_is_one_error_naming_file_row_and_column(tmp_path, changes, check, message):
    root = _bad_tree(tmp_path, **changes)
    (root / "notes.txt").write_text("not a clip")
    (root / "empty").mkdir()
    reading = read_manifest(root)
    [problem] = reading.problems
    assert problem.fatal and problem.check == check
    if message is not None:
        assert str(problem) == message.format(root=root)
    else:
        assert str(problem).startswith("manifest.csv, row 3, column 'action_units': ")
    assert [s.clip for s in reading.samples] == ([] if check == "duplicate clip" else ["a"])


def test_a_missing_column_is_one_problem_naming_it_and_the_columns_found(tmp_path):
    root = _bad_tree(tmp_path, header=[c for c in MANIFEST_COLUMNS if c != "onset"])
    result = verify_dataset("manifest", root)
    [problem] = result.problems
    assert problem.fatal and not result.reading.samples
    assert str(problem) == (f"{root / 'manifest.csv'}, row 1: missing column 'onset' (the header has 'subject', 'clip', 'path', 'apex', "
                            "'offset', 'emotion', 'action_units', 'fps')")
    cli = CliRunner().invoke(main, ["verify", "--dataset", "manifest", "--root", str(root)])
    assert cli.exit_code == 1 and problem.message in cli.output
    with pytest.raises(BuildError, match="no usable manifest samples \\(1 problems; .*missing column 'onset'"):
        build(BuildOptions("manifest", root=root, store=tmp_path / "store.zarr", scheduler="threads"))


def test_warnings_resolve_as_in_the_other_adapters(tmp_path):
    root = _bad_tree(tmp_path, apex="")
    (root / "sub01" / "b" / "img5.jpg").unlink()
    (root / "sub01" / "b" / "cover.jpg").touch()
    reading = read_manifest(root)
    assert not [p for p in reading.problems if p.fatal]
    assert [str(p) for p in reading.problems] == [
        "sub01/b: image file cover.jpg carries no frame number in the name; left out of the clip",
        "sub01/b: frame numbers are not contiguous: 5 missing in 1..10; the frames present are used in order",
        "sub01/b: frame 5 of onset..offset 2..9 are missing; the clip runs on the frames present",
        "manifest.csv, row 3, column 'apex': apex is empty; resolved by policy 'middle' to frame 6",
    ]
    no_apex = _bad_tree(tmp_path / "no_apex", header=[c for c in MANIFEST_COLUMNS if c != "apex"])
    reading = read_manifest(no_apex)
    assert [str(p) for p in reading.problems] == ["manifest.csv: no apex column; every apex is resolved by policy 'middle'"]
    assert [s.apex_source for s in reading.samples] == ["middle", "middle"]


def test_video_rows_need_a_decoder_and_stay_inside_the_video(tmp_path):
    root = _bad_tree(tmp_path, path="v.mp4", onset=2, apex=20, offset=9)
    write_video(root / "v.mp4", np.full((10, 32, 32, 3), 100, np.uint8), 30)
    with pytest.raises(DatasetError, match="manifest.csv, row 3, column 'path': v.mp4 is a video, and its length takes decoding it"):
        read_manifest(root)
    reading = read_manifest(root, video_length=video_length)
    assert [str(p) for p in reading.problems] == [
        "manifest.csv, row 3, column 'apex': apex 20 lies outside onset..offset 2..9; resolved by policy 'middle' to frame 5"]
    video = reading.samples[1]
    assert video.frames == (root / "v.mp4",) and video.frame_numbers == tuple(range(10)) and video.fps == 30
    _bad_tree(root, path="v.mp4", onset=2, offset=10)
    [problem] = read_manifest(root, video_length=video_length).problems
    assert str(problem) == ("manifest.csv, row 3, column 'offset': offset 10 is not a frame of v.mp4, whose 10 frames are 0..9 "
                            "(0-based indices)")
    (root / "v.mp4").write_text("not a video")
    [problem] = read_manifest(root, video_length=video_length).problems
    assert problem.check == "bad video" and str(problem).startswith(
        f"manifest.csv, row 3, column 'path': {root / 'v.mp4'} is not a readable video")


def test_synth_refuses_an_unknown_layout_in_one_line():
    result = CliRunner().invoke(main, ["synth", "--layout", "manifests"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: unknown layout 'manifests'; choose one of: casme2, samm, smic, ckplus, manifest"


def test_for_models_builds_their_variants_of_a_manifest():
    from mepipe.models.recipes import build_targets

    targets = build_targets(["ststnet", "cropnet"], "manifest")
    assert [target.readers for target in targets] == [("ststnet",), ("cropnet",)]
    assert targets[1].variant.name == "320-rgb-eyes-kept" and "residual" in targets[1].artifacts
