"""The ``mepipe`` command line. Thin: parse options, call one function, print."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from mepipe import __version__


@click.group()
@click.version_option(__version__, prog_name="mepipe")
def main() -> None:
    """mepipe: reproducible, parallel preprocessing for facial micro-expression recognition."""


@main.command()
@click.option("--layout", default="casme2", show_default=True,
              help="Dataset layout: casme2, samm, smic, ckplus, or manifest (frame folders and mp4 videos listed in manifest.csv).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder  [default: cache/demo/<layout>]")
@click.option("--subjects", type=int, default=6, show_default=True, help="Subjects of a default set.")
@click.option("--clips-per-subject", type=int, default=6, show_default=True, help="Clips per subject of a default set.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed and options: byte-identical output.")
@click.option("--faces", type=click.Path(path_type=Path), default=None, help="Folder of face photos (default: scikit-image's astronaut).")
@click.option("--coding", type=click.Path(path_type=Path), default=None, help="Coding table (format of shared/reference/*.csv) whose clips to reproduce.")
@click.option("--preview", type=click.Path(path_type=Path), default=None, help="Write a PNG of a few clips: onset, apex, difference, true flow.")
@click.option("--workers", type=int, default=None, help="Worker processes  [default: CPU cores]")
def synth(layout, out, subjects, clips_per_subject, seed, faces, coding, preview, workers) -> None:
    """Make a synthetic micro-expression dataset in a real dataset's layout, with ground truth."""
    from mepipe.synth.appearance import SynthError
    from mepipe.synth.generate import SynthOptions, check_layout, synthesize

    try:
        check_layout(layout)
    except SynthError as error:
        raise click.ClickException(str(error)) from None
    options = SynthOptions(
        layout=layout, out=out if out is not None else Path("cache", "demo", layout), subjects=subjects,
        clips_per_subject=clips_per_subject, seed=seed, faces=faces, coding=coding, preview=preview, workers=workers,
    )
    click.echo(f"mepipe synth: {layout} set -> {options.out}", err=True)
    try:
        summary = synthesize(options, progress=_progress_printer())
    except SynthError as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:  # disk full, permissions, a vanished folder: the user's to fix
        where = f" ({error.filename})" if error.filename else ""
        raise click.ClickException(f"{error.strerror or error}{where}") from None
    click.echo(
        f"made {summary.clips} clips, {summary.frames} frames of {summary.subjects} subjects "
        f"({summary.layout} layout) in {summary.seconds:.1f} s, {summary.bytes_written / 1e6:.1f} MB"
    )
    click.echo(f"  frames        {summary.root}")
    if summary.sheet:
        click.echo(f"  coding sheet  {summary.sheet}")
    click.echo(f"  ground truth  {summary.ground_truth}")
    if summary.preview:
        click.echo(f"  preview       {summary.preview}")
    click.echo("  emotions      " + ", ".join(f"{name} {count}" for name, count in summary.emotions.items()))
    click.echo(f"  blinks        {summary.blinks} clips")


@main.command()
@click.option("--dataset", required=True, help="casme2, samm, smic, ckplus, oulu, jaffe, mug, or manifest (any dataset listed in ROOT/manifest.csv).")
@click.option("--root", required=True, type=click.Path(path_type=Path), help="The dataset's root folder.")
@click.option("--sheet", type=click.Path(path_type=Path), default=None, help="Annotation sheet, or a manifest's csv (default: found in the root).")
@click.option("--strict", is_flag=True, help="Warnings fail too: exit 1 on any problem.")
@click.option("--decode", is_flag=True, help="Also decode every frame file; each bad one is an error.")
@click.option("--workers", type=int, default=None, help="Threads for --decode  [default: CPU cores]")
def verify(dataset, root, sheet, strict, decode, workers) -> None:
    """Check a raw dataset before a long build; list every error and warning. Exit 1 on an error (or, with --strict, a warning), else 0."""
    from mepipe.datasets.errors import DatasetError
    from mepipe.datasets.verify import verification_report, verify_dataset

    options = {"sheet": sheet} if sheet is not None else {}
    if dataset == "manifest":  # the adapter decodes nothing: a video's frames are counted here
        from mepipe.pipeline.video import video_length

        options["video_length"] = video_length
    try:
        result = verify_dataset(dataset, root, **options)
    except DatasetError as error:
        raise click.ClickException(str(error)) from None
    if decode:
        from mepipe.pipeline.frames import scan_samples

        click.echo(f"mepipe verify: decoding every frame of {len(result.reading.samples)} clips", err=True)
        result.problems.extend(scan_samples(result.reading.samples, workers=workers, progress=_progress_printer()))
    click.echo(verification_report(result, root, strict))
    if not result.passes(strict):
        raise SystemExit(1)


@main.command()
@click.option("--dataset", required=True,
              help="casme2, samm, smic, ckplus, oulu, jaffe, mug, manifest (any dataset listed in ROOT/manifest.csv), or demo (the built-in synthetic set).")
@click.option("--root", type=click.Path(path_type=Path), default=None, help="The dataset's root folder (demo: where the synthetic set is made).")
@click.option("--sheet", type=click.Path(path_type=Path), default=None, help="Annotation sheet, or a manifest's csv (default: found in the root).")
@click.option("--store", type=click.Path(path_type=Path), default=None, help="Zarr store  [default: $MEPIPE_STORE or cache/mepipe.zarr]")
@click.option("--artifacts", default=None, help="Comma-separated artifacts (what they need is added)  [default: all that apply]")
@click.option("--for", "for_models", default=None, metavar="MODELS",
              help="Build what these models read, each at its paper's settings (crop size, colour, eyes): "
                   "comma-separated model names, or all (every model, and the default build).")
@click.option("--config", type=click.Path(path_type=Path), default=None, help="TOML file of parameters, one [artifact] table each.")
@click.option("--param", "-p", "params", multiple=True, metavar="ARTIFACT.NAME=VALUE", help="A parameter, e.g. -p flow.lambda_=0.1 (repeatable).")
@click.option("--scheduler", default="processes", show_default=True, help="threads, processes, or a dask.distributed scheduler address (tcp://host:8786).")
@click.option("--workers", type=int, default=None, help="Local workers  [default: CPU cores]")
@click.option("--strict", is_flag=True, help="Exit non-zero when any sample failed.")
@click.option("--wait", is_flag=True, help="When another build is writing the same dataset group, wait for it to end.")
@click.option("--retry-failed", is_flag=True, help="Retry every recorded failure (by default only those whose frame files changed).")
def build(dataset, root, sheet, store, artifacts, for_models, config, params, scheduler, workers, strict, wait, retry_failed) -> None:
    """Build a dataset's aligned faces and features into the Zarr store (only what is missing or stale)."""
    from mepipe.pipeline.build import DATASETS, BuildError, BuildOptions, build as run_build
    from mepipe.pipeline.report import build_table

    names = tuple(name.strip() for name in artifacts.split(",") if name.strip()) if artifacts is not None else None
    targets = None
    if for_models is not None and dataset in DATASETS:
        from mepipe.models.recipes import OptionError, build_targets

        try:
            targets = build_targets(for_models.split(","), "casme2" if dataset == "demo" else dataset)
        except OptionError as error:
            raise click.ClickException(str(error)) from None
    options = BuildOptions(dataset=dataset, root=root, sheet=sheet, store=store, artifacts=names, config=config, params=params,
                           scheduler=scheduler, workers=workers, wait=wait, retry_failed=retry_failed, targets=targets)
    click.echo(f"mepipe build: {dataset} -> {store or 'the default store'}", err=True)
    try:
        summary = run_build(options, progress=_build_progress(), notice=lambda text: click.echo(f"  {text}", err=True))
    except BuildError as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        click.echo("\ninterrupted: what was written is kept; run the same command again to resume", err=True)
        raise SystemExit(130) from None
    click.echo(build_table(summary))
    if summary.failures and strict:
        raise SystemExit(1)


@main.command()
@click.option("--store", type=click.Path(path_type=Path), default=None, help="Zarr store  [default: $MEPIPE_STORE or cache/mepipe.zarr]")
@click.option("--check", is_flag=True, help="Read back every chunk a done flag vouches for; clear the damaged ones (exit 1 if any).")
@click.option("--wait", is_flag=True, help="With --check: wait for a build that is writing a group to end.")
def info(store, check, wait) -> None:
    """What a store holds: datasets, samples, artifacts with their parameters, QC failures, size."""
    from mepipe.pipeline.report import store_report
    from mepipe.pipeline.store import StoreError, default_store

    path = store or default_store()
    try:
        click.echo(store_report(path))
        if check:
            from mepipe.pipeline.check import check_store

            reports = check_store(path, repair=True, wait=wait)
    except StoreError as error:
        raise click.ClickException(str(error)) from None
    if not check:
        return
    click.echo("")
    damaged = 0
    for report in reports:
        damaged += len(report.damaged)
        tail = f"; removed {report.partial_files} leftover partial writes" if report.partial_files else ""
        click.echo(f"check [{report.group}]: {report.checked} done (sample, artifact) pairs read back, "
                   f"{len(report.damaged)} damaged{tail}")
        for damage in report.damaged:
            click.echo(f"  {damage.sample_id}  {damage.artifact}: {damage.reason}; flag cleared")
    if damaged:
        click.echo(f"{damaged} damaged results cleared: the next `mepipe build` of their groups recomputes exactly those")
        raise SystemExit(1)


@main.command()
@click.argument("sample")
@click.option("--artifact", required=True, help="face, frames, flow, strain, residual, dynamic, magnified or magnified_flow.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="PNG to write.")
@click.option("--store", type=click.Path(path_type=Path), default=None, help="Zarr store  [default: $MEPIPE_STORE or cache/mepipe.zarr]")
@click.option("--variant", default=None, metavar="NAME", help="The input variant to show, e.g. 320-rgb-eyes-kept  [default: the dataset's own]")
def show(sample, artifact, out, store, variant) -> None:
    """Write a picture of one artifact of one sample (SAMPLE: group/subject/clip, e.g. demo/sub01/EP02_01f)."""
    from mepipe.pipeline.pictures import PictureError, artifact_picture, write_picture
    from mepipe.pipeline.store import StoreError, default_store

    try:
        write_picture(artifact_picture(store or default_store(), sample, artifact, variant), out)
    except (PictureError, StoreError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {out}")


@main.command()
@click.option("--model", required=True, help="ststnet, mobilevit, cropnet, cva, msmmt or mfvan.")
@click.option("--dataset", required=True, help="A dataset group of the store, or composite.")
@click.option("--protocol", default=None, help="5class, 3class, native  [default: the dataset's first]")
@click.option("--store", type=click.Path(path_type=Path), default=None, help="Zarr store  [default: $MEPIPE_STORE or cache/mepipe.zarr]")
@click.option("--seeds", default="0,1,2", show_default=True, help="Comma-separated seeds; the run is repeated for each.")
@click.option("--folds", default=None, help="Comma-separated fold positions to run (a quick look)  [default: all]")
@click.option("--set", "-s", "settings", multiple=True, metavar="NAME=VALUE", help="A model option, e.g. -s epochs=50 -s transfer=false (repeatable).")
@click.option("--device", default="auto", show_default=True, help="auto (the GPU when there is one), cpu, cuda, cuda:1 ...")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs"), show_default=True, help="Folder of run directories.")
@click.option("--name", default=None, help="Run directory name  [default: MODEL-DATASET-PROTOCOL-TIME]")
@click.option("--variant", default=None, metavar="NAME",
              help="Read this input variant instead of the model's own (e.g. 224-gray-eyes-zero, or default: the "
                   "dataset group's own); recorded as a deviation  [default: the model's, built by --for MODEL]")
@click.option("--final", is_flag=True, help="Also train one model on every subject (first seed, same settings): "
                                             "what mepipe predict applies to new clips.")
@click.option("--checkpoints", type=click.Choice(["all", "first-seed", "none"]), default="first-seed", show_default=True,
              help="Which seeds' fold models to keep in RUN/checkpoints (mepipe predict --fold).")
def train(model, dataset, protocol, store, seeds, folds, settings, device, out, name, variant, final, checkpoints) -> None:
    """Train a model leave-one-subject-out over a protocol's folds; write a run directory."""
    from mepipe.models.loso import RunError, RunOptions, train_run
    from mepipe.models.recipes import OptionError
    from mepipe.pipeline.store import StoreError

    try:
        options = RunOptions(model=model, dataset=dataset, protocol=protocol, store=store, seeds=_integers(seeds, "--seeds"),
                             out=out, device=device, folds=_integers(folds, "--folds") if folds else None,
                             settings=tuple(settings), name=name, variant=variant, final=final,
                             checkpoints=checkpoints)
        result = train_run(options, log=lambda text: click.echo(f"  {text}", err=True))
    except (RunError, OptionError, StoreError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(result.markdown)
    click.echo(f"run directory: {result.directory}")


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
def evaluate(run) -> None:
    """Recompute a run's metrics, table and pictures from its predictions (RUN: a run directory)."""
    from mepipe.models.loso import RunError, evaluate_run

    try:
        result = evaluate_run(run)
    except RunError as error:
        raise click.ClickException(str(error)) from None
    click.echo(result.markdown)


@main.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--video", type=click.Path(path_type=Path), default=None, help="A video file (mp4, avi, mov, mkv ...).")
@click.option("--frames", type=click.Path(path_type=Path), default=None,
              help="A folder of frame images (sorted by the number in their names).")
@click.option("--onset", type=int, default=None, help="0-based position of the onset frame in the decoded clip  [default: 0]")
@click.option("--apex", type=int, default=None, help="0-based position of the apex  [default: spotted, the largest facial motion]")
@click.option("--offset", type=int, default=None, help="0-based position of the offset  [default: the last frame]")
@click.option("--fold", default=None, metavar="SUBJECT", help="Use the model of the fold that tested SUBJECT (sub01 or "
                                                              "casme2/sub01)  [default: the final model, train --final]")
@click.option("--seed", type=int, default=None, help="With --fold: the seed's model  [default: the first kept]")
@click.option("--fps", type=float, default=None, help="Frame rate  [default: the video's, else the training dataset's]")
@click.option("--action-units", default=None, metavar="AUS", help="The clip's FACS action units, e.g. 4+12 (CVA reads them).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, auto ...")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the text.")
@click.option("--picture", type=click.Path(path_type=Path), default=None,
              help="Write a PNG of the aligned onset and apex, the model's input and the scores.")
def predict(run, video, frames, onset, apex, offset, fold, seed, fps, action_units, device, as_json, picture) -> None:
    """Recognise the micro-expression of one clip with a trained run (RUN: its directory).

    The clip (--video FILE or --frames FOLDER) goes through the build's face stage and artifacts
    with the run's parameters, then the run's final model (or, with --fold, one fold's). Onset,
    apex and offset are 0-based positions in the decoded clip: a folder's frames sorted by the
    number in their names, a video's frames in decoding order. Without --apex the apex is
    spotted; without --onset/--offset the whole clip is used.
    """
    import json

    from mepipe.models.predict import PredictError, predict_clip

    try:
        result = predict_clip(run, video=video, frames=frames, onset=onset, apex=apex, offset=offset, fold=fold,
                              seed=seed, fps=fps, action_units=action_units, device=device)
        if picture is not None:
            result.picture(picture)
    except PredictError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(result.text())
        if picture is not None:
            click.echo(f"  picture: {picture}")


@main.command()
@click.argument("run", type=click.Path(path_type=Path), required=False)
@click.option("--store", type=click.Path(path_type=Path), default=None,
              help="Zarr store  [default: $MEPIPE_STORE or cache/mepipe.zarr; with RUN: the store the run read]")
@click.option("--dataset", default=None, help="The dataset group to report on (without RUN).")
@click.option("--variant", default=None, metavar="NAME",
              help="The input variant whose samples to show  [default: the dataset's own, else its first built]")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="HTML file to write  [default: report-DATASET.html beside the store; RUN/report.html]")
def report(run, store, dataset, variant, out) -> None:
    """Write one self-contained HTML page of a build (--dataset) or of a training run (RUN: its directory).

    A build's page shows every sample's aligned key frames, flow and QC record, suspects first, with
    filters and sortable columns; a run's shows its scores, confusion matrix, curves, per-subject UF1
    and the worst-predicted samples. Open it in any browser; it needs no network.
    """
    from mepipe.models.run_report import RunReportError, run_report
    from mepipe.pipeline.build_report import ReportError, build_report
    from mepipe.pipeline.store import default_store
    from mepipe.pipeline.webpage import PageError, write_page

    if (run is None) == (dataset is None):
        raise click.UsageError("give either RUN (a run directory) or --dataset D (a build in --store)")
    if run is not None and variant is not None:
        raise click.UsageError("--variant is for a build's report; a run's report shows the variant the run read")
    try:
        if run is not None:
            made = run_report(run, store=store)
            out = out or Path(run) / "report.html"
            summary = f"{len(made.worst)} worst-predicted samples, {made.thumbnails} with pictures"
        else:
            store = store or default_store()
            progress = _count_progress("samples")
            made = build_report(store, dataset, variant, progress=progress)
            out = out or Path(store).parent / f"report-{dataset}.html"
            failed = sum(1 for s in made.samples if s.failed)
            flagged = sum(1 for s in made.samples if s.flags and not s.failed)
            summary = f"{len(made.samples)} samples of {made.group}: {failed} failed, {flagged} flagged"
        write_page(out, made.html)
    except (RunReportError, ReportError, PageError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"wrote {out} ({len(made.html.encode()) / 1e6:.1f} MB, {made.seconds:.1f} s): {summary}")


def _tenths_printer(width: int):
    """``show(line, done, total)``: the line on stderr, rewritten in place on a terminal, else
    printed once per tenth of the work."""
    interactive = sys.stderr.isatty()
    last_tenth = [-1]

    def show(line: str, done: int, total: int) -> None:
        if interactive:
            click.echo("\r" + line.ljust(width), nl=done == total, err=True)
        elif 10 * done // max(total, 1) != last_tenth[0]:
            last_tenth[0] = 10 * done // max(total, 1)
            click.echo(line, err=True)

    return show


def _count_progress(unit: str):
    """``done/total unit`` on stderr (:func:`_tenths_printer`)."""
    show = _tenths_printer(40)
    return lambda done, total: show(f"  {done}/{total} {unit}", done, total)


def _integers(text: str, option: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}", param_hint=option) from None


def _build_progress():
    """Samples done / to do, rate and time left, on stderr (:func:`_tenths_printer`)."""
    show = _tenths_printer(70)

    def report(done: int, total: int, elapsed: float) -> None:
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (total - done) / rate if rate > 0 else float("nan")
        show(f"  {done}/{total} samples, {rate:.2f} samples/s, " + (f"{left:.0f} s left" if done else "starting workers"),
             done, total)

    return report


def _progress_printer():
    """Clips and frames done, rate and time left, on stderr (:func:`_tenths_printer`)."""
    started = time.perf_counter()
    show = _tenths_printer(78)

    def report(clips_done: int, clips_total: int, frames_done: int, frames_total: int) -> None:
        elapsed = time.perf_counter() - started
        rate = frames_done / elapsed if elapsed > 0 else 0.0
        left = (frames_total - frames_done) / rate if rate > 0 else 0.0
        show(f"  {clips_done}/{clips_total} clips, {frames_done}/{frames_total} frames, {rate:.0f} frames/s, {left:.0f} s left",
             clips_done, clips_total)

    return report


if __name__ == "__main__":
    main()
