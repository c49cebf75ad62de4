"""What a kept model costs: checkpoint size and load time per model, and ``mepipe predict`` per stage.

    python benchmarks/predict.py [--root cache/demo/casme2] [--repeats 5]

Measured in one run:

- for each of the six models at its default options and its own variant's channels (3 classes,
  the composite's): the checkpoint's tensor file size and parameter count, and the median wall
  time of :func:`mepipe.models.checkpoint.load_checkpoint` (the sha256 check, ``torch.load
  (weights_only=True)``, building the network and loading its state);
- the same clips as an mp4 video and as their frame folder, for ``--clips`` demo clips: the mean
  |difference| of the decoded pixels and of the TV-L1 flow (onset -> apex, 224 px gray crops, eyes
  kept) computed from each, beside the flow's own mean magnitude: what the video's compression
  changes;
- ``predict`` on a 60-frame clip of the demo set (its first clip of at least 60 frames, cut to
  60) with STSTNet: the median seconds of each stage (decode, face, flow, strain, the recipe's
  input, the model) over ``--repeats`` runs, beside the decode floor (the same frames read by
  ``cv2.imread`` alone, one thread).

The weights are random (a network's cost does not depend on its values): the checkpoints are
written by the same ``save_checkpoint`` that ``mepipe train`` uses, into a temporary run
directory. The demo set is made when missing (``mepipe synth``'s default, seed 0). Figures go to
``docs/benchmarks.md`` by hand.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mepipe.models.checkpoint import CHECKPOINTS, load_checkpoint, save_checkpoint  # noqa: E402
from mepipe.models.recipes import RECIPES, get_recipe, model_inputs  # noqa: E402
from mepipe.models.recipes.base import TrainedModel  # noqa: E402
from mepipe.pipeline.params import PARAM_TYPES, as_dict  # noqa: E402

CLASSES = ("negative", "positive", "surprise")
FRAMES = 60


def shape_of(model: str) -> dict:
    """The network's channel arguments for the model's own variant (colour: 3, gray: 1)."""
    channels = 3 if model_inputs(model).variant.colour else 1
    return {"ststnet": {}, "mobilevit": {}, "cropnet": {"in_chans": channels}, "cva": {"in_chans": channels},
            "msmmt": {"dynamic_chans": channels}, "mfvan": {"in_chans": channels}}[model]


def inputs_record(model: str) -> dict:
    variant = model_inputs(model).variant
    params = {name: as_dict(kind()) for name, kind in PARAM_TYPES.items()}
    params["face"].update(size=variant.size, colour=variant.colour, eye_fill=variant.eye_fill)
    return {"variant": {"name": variant.name, "size": variant.size, "colour": variant.colour,
                        "eye_fill": variant.eye_fill},
            "artifacts": list(get_recipe(model).artifacts),
            "groups": {"casme2": {"path": "casme2", "adapter": "casme2", "fps": 200.0, "params": params}}}


def write_run(directory: Path, model: str) -> Path:
    """A run directory with one final checkpoint of ``model`` at its defaults (random weights)."""
    recipe = get_recipe(model)
    options = recipe.Options()
    shape = shape_of(model)
    trained = TrainedModel(recipe.network(options, len(CLASSES), **shape), len(CLASSES), shape)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"model": model, "classes": list(CLASSES)}))
    save_checkpoint(directory / CHECKPOINTS, "final", recipe, options, trained,
                    {"classes": CLASSES, "seed": 0, "fold": None, "test_subject": None, "train_subjects": [],
                     "samples": 0, "inputs": inputs_record(model)})
    return directory


def checkpoint_table(work: Path, repeats: int) -> list[str]:
    lines = ["| model | variant | parameters | checkpoint | load (median) |", "|:--|:--|--:|--:|--:|"]
    for model in RECIPES:
        run = write_run(work / model, model)
        record = run / CHECKPOINTS / "final.json"
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            checkpoint = load_checkpoint(record)
            times.append(time.perf_counter() - start)
        parameters = sum(p.numel() for p in checkpoint.trained.network.parameters())
        size = (run / CHECKPOINTS / "final.pt").stat().st_size
        lines.append(f"| {model} | {model_inputs(model).variant.name} | {parameters:,} | "
                     + (f"{size / 1e6:.1f} MB | " if size >= 100_000 else f"{size / 1e3:.1f} kB | ") + f"{statistics.median(times):.2f} s |")
        print(lines[-1], flush=True)
    return lines


def predict_table(work: Path, root: Path, repeats: int) -> list[str]:
    from mepipe.datasets.adapters import read_dataset
    from mepipe.models.predict import predict_clip
    from mepipe.pipeline.frames import decode_frames
    from mepipe.pipeline.video import write_video

    samples = [s for s in read_dataset("casme2", root).samples if s.n_frames >= FRAMES]
    if not samples:
        raise SystemExit(f"{root}: no clip of {FRAMES} frames or more")
    sample = samples[0]
    clip = work / "clip"
    clip.mkdir()
    for index, path in enumerate(sample.frames[:FRAMES]):
        (clip / f"img{index:03d}{path.suffix}").write_bytes(Path(path).read_bytes())
    video = work / "clip.mp4"
    write_video(video, decode_frames(sample.frames[:FRAMES], colour=True), 200)
    run = work / "ststnet"
    apex = min(sample.apex, FRAMES - 1)
    rows = {}
    for kind, source in (("frames", {"frames": clip}), ("video", {"video": video})):
        seconds: dict[str, list[float]] = {}
        totals = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = predict_clip(run, onset=0, apex=apex, offset=FRAMES - 1, **source)
            totals.append(time.perf_counter() - start)
            for stage, value in result.seconds.items():
                seconds.setdefault(stage, []).append(value)
        rows[kind] = ({stage: statistics.median(values) for stage, values in seconds.items()},
                      statistics.median(totals))
    cv2.setNumThreads(1)
    floor = []
    for _ in range(repeats):
        start = time.perf_counter()
        for path in sorted(clip.iterdir()):
            cv2.imread(str(path), cv2.IMREAD_COLOR)
        floor.append(time.perf_counter() - start)
    stages = list(rows["frames"][0])
    lines = [f"`predict` of STSTNet on a {FRAMES}-frame {sample.frames[0].suffix} clip of {sample.sample_id} "
             f"({cv2.imread(str(sample.frames[0])).shape[1]} x {cv2.imread(str(sample.frames[0])).shape[0]}), "
             f"median of {repeats} runs, seconds:", "",
             "| input | " + " | ".join(stages) + " | total (incl. loading the checkpoint) |",
             "|:--|" + "--:|" * (len(stages) + 1)]
    for kind, (medians, total) in rows.items():
        lines.append(f"| {kind} | " + " | ".join(f"{medians.get(stage, 0.0):.3f}" for stage in stages)
                     + f" | {total:.2f} |")
    lines += ["", f"Decode floor (cv2.imread of the {FRAMES} files, one thread): {statistics.median(floor):.3f} s."]
    for line in lines:
        print(line, flush=True)
    return lines


def video_table(root: Path, clips: int) -> list[str]:
    import numpy as np

    from mepipe.datasets.adapters import read_dataset
    from mepipe.pipeline.frames import decode_frames
    from mepipe.pipeline.params import resolve_params
    from mepipe.pipeline.tasks import compute_clip
    from mepipe.pipeline.variants import Variant
    from mepipe.pipeline.video import read_video, write_video

    params = resolve_params()
    rows = []
    codec = ""
    with tempfile.TemporaryDirectory() as folder:
        video = Path(folder) / "clip.mp4"
        for sample in read_dataset("casme2", root).samples[:clips]:
            frames = decode_frames(sample.frames, colour=True)
            codec = write_video(video, frames, 200)
            decoded = read_video(video).frames
            flows = [compute_clip(clip, sample.onset, sample.apex, sample.offset, 200, params,
                                  Variant(224, False, "none"), ["flow"]).arrays["flow"] for clip in (frames, decoded)]
            rows.append((np.abs(decoded.astype(np.int16) - frames).mean(), np.abs(flows[1] - flows[0]).mean(),
                         np.abs(flows[0]).mean()))
    pixels, flow, magnitude = (float(np.median([row[k] for row in rows])) for k in range(3))
    lines = [f"Video ({codec}, OpenCV's default quality) against the frame folder, {len(rows)} demo clips, medians: "
             f"pixels differ by {pixels:.2f} gray levels on average; the flow by {flow:.3f} px against a mean flow of "
             f"{magnitude:.3f} px ({100 * flow / magnitude:.0f} %)."]
    print(lines[0], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("cache/demo/casme2"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clips", type=int, default=6, help="demo clips of the video-against-folder comparison")
    args = parser.parse_args()
    if not (args.root / "sub01").is_dir():
        from mepipe.synth.generate import SynthOptions, synthesize

        print(f"making the demo set in {args.root}", flush=True)
        synthesize(SynthOptions(layout="casme2", out=args.root))
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        print("checkpoints at each model's defaults (random weights, 3 classes):", flush=True)
        checkpoint_table(work, args.repeats)
        print("", flush=True)
        predict_table(work, args.root, args.repeats)
    print("", flush=True)
    video_table(args.root, args.clips)


if __name__ == "__main__":
    main()
