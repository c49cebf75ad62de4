"""Picture of the clip-level features on synthetic micro-expression clips: docs/clip-features.png.

One command, from the repository root, with the project's environment (``make test`` or
``make demo`` builds it)::

    .venv/bin/python docs/figures/clip_features.py [--out docs/clip-features.png] [--clips 4]

It makes a small synthetic CASME II-layout set in a temporary folder (one clip for each of
``--clips`` subjects, emotions taken in turn: happiness, disgust, repression, surprise, ...),
aligns every clip with the face stage (``mepipe.features.face.align_clip``: one similarity from
the onset frame's landmarks, rigid stabilisation, 224 x 224 grey crops, eyes filled), and shows
for every clip, one row each: the apex frame, ARS and RRS (Zhao et al. 2021), the approximate and
the exact dynamic image of the onset-to-apex frames (Bilen et al. 2016; the RankSVM of the MSMMT
paper at Fernando et al.'s feature scale), and what Eulerian video magnification (alpha 10, Wu et
al. 2012) adds to the apex frame, twice:

- within Wu et al.'s bound ``(1 + alpha) delta < lambda / 8``: the cutoff wavelength set to
  ``lambda_c = 8 (1 + alpha) delta`` with delta the clip's largest expression displacement (the
  ground truth's ``amplitude_px``, times the crop's scale), so no level is amplified beyond what
  the bound allows for that motion (levels below lambda_c get Wu's linearly attenuated alpha);
- with the defaults (``lambda_c`` = 16 px, Wu et al.'s value for alpha 10), which assume motions
  under 16 / 88 = 0.18 px. These clips move 1-4 px, so this panel breaks the bound and shows the
  artefacts (overshoots of hundreds of grey levels) that linear EVM makes then.

It prints one line per clip (frame counts, the correlation r of the exact and approximate dynamic
images, whether the exact image's scores increase, the EVM settings) and the PNG's path. About
15 s on two cores (rendering the set is most of it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mepipe.datasets.layouts import get_layout  # noqa: E402
from mepipe.features.dynamic import approximate_rank_pooling, dynamic_image_frames, rank_pooling  # noqa: E402
from mepipe.features.face import align_clip  # noqa: E402
from mepipe.features.magnify import (  # noqa: E402
    AMPLIFICATION,
    CUTOFF_WAVELENGTH,
    level_amplification,
    level_wavelengths,
    magnify_motion,
    pyramid_levels,
)
from mepipe.features.residual import absolute_residual_sum, relative_residual_sum, select_residual_frames  # noqa: E402
from mepipe.synth.generate import SynthOptions, synthesize  # noqa: E402
from mepipe.synth.ground_truth import GroundTruth  # noqa: E402

CROP = 224  # the pipeline's face crop size
ROW_LABEL_WIDTH = 150
CAPTION_LINE = 18
FONT = cv2.FONT_HERSHEY_SIMPLEX


def clip_frames(root: Path, truth: GroundTruth, entry: dict) -> np.ndarray:
    """(T, H, W) uint8 grey frames of a clip as the dataset stores them."""
    layout = get_layout(truth.manifest["dataset"])
    frames = []
    for number in range(entry["first_frame"], entry["last_frame"] + 1):
        path = root / entry["path"] / layout.frame_name(entry["subject"], entry["clip"], number)
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise OSError(f"cannot read frame {path}")
        frames.append(image)
    return np.stack(frames)


def caption(image: np.ndarray, lines: list[str]) -> np.ndarray:
    """The image (grey or RGB) with a white band of caption lines on top."""
    if image.ndim == 2:
        image = cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_GRAY2RGB)
    band = np.full((CAPTION_LINE * 2 + 6, image.shape[1], 3), 255, np.uint8)
    for number, text in enumerate(lines):
        cv2.putText(band, text, (4, CAPTION_LINE * (number + 1)), FONT, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([band, image])


def signed_picture(values: np.ndarray) -> tuple[np.ndarray, float]:
    """uint8 picture of a signed image: mid grey at 0, black and white at -+ its largest magnitude."""
    spread = max(float(np.abs(values).max()), 1e-6)
    return np.clip(np.round(128 + 127 * values / spread), 0, 255).astype(np.uint8), spread


def evm_added(aligned: np.ndarray, apex: int, fps: float, cutoff: float) -> tuple[np.ndarray, float, np.ndarray]:
    """What EVM (alpha 10, ideal 2-25 Hz band) adds to the apex frame, its largest magnitude, alpha_l."""
    magnified = magnify_motion(aligned, fps=fps, cutoff_wavelength=cutoff)
    added = magnified[apex] - aligned[apex].astype(np.float32)
    picture, spread = signed_picture(added)
    amplification = level_amplification(pyramid_levels(*aligned.shape[1:3]), AMPLIFICATION, cutoff)
    return picture, spread, amplification


def alphas_text(amplification: np.ndarray) -> str:
    """alpha_l of the amplified levels, e.g. 'alpha_l 0/0/1.2/3.4/7.7' for levels 1..4."""
    return "alpha_l " + "/".join(f"{a:.1f}".rstrip("0").rstrip(".") for a in amplification[1:-1])


def clip_row(root: Path, truth: GroundTruth, entry: dict) -> tuple[np.ndarray, str]:
    """One row of the picture, and a line of figures about it for the console."""
    frames = clip_frames(root, truth, entry)
    first = entry["first_frame"]
    # the sheet's frame numbers, as the pipeline will read them; the true ones where the sheet has none
    onset, apex, offset = (
        (entry[key] if entry[key] is not None else entry["true_" + key]) - first for key in ("onset", "apex", "offset")
    )
    aligned_clip = align_clip(frames, onset, size=CROP, check_frames=[apex])
    aligned = aligned_clip.frames
    fps = float(truth.manifest["fps"])

    selection = select_residual_frames(onset, apex, offset)
    ars = absolute_residual_sum(aligned, onset, apex, offset)
    rrs = relative_residual_sum(aligned, onset, apex, offset)
    segment = dynamic_image_frames(aligned, onset, apex)
    approximate = approximate_rank_pooling(segment)
    exact = rank_pooling(segment)
    correlation = float(np.corrcoef(approximate.raw.ravel(), exact.raw.ravel())[0, 1])
    ordered = bool(np.all(np.diff(exact.scores) > 0))

    # Wu et al.'s bound (1 + alpha) delta < lambda / 8, delta the clip's largest displacement in crop pixels
    delta = entry["amplitude_px"] * aligned_clip.quality.scale
    bounded_cutoff = 8 * (1 + AMPLIFICATION) * delta
    bounded, bounded_spread, bounded_alpha = evm_added(aligned, apex, fps, bounded_cutoff)
    default, default_spread, default_alpha = evm_added(aligned, apex, fps, CUTOFF_WAVELENGTH)

    keys = ",".join(str(k) for k in selection.key_frames)
    tiles = [
        caption(aligned[apex], [f"apex frame {apex} of {len(aligned)}", "aligned crop, eyes filled"]),
        caption(ars, [f"ARS, F={{{keys}}}", f"max {ars.max():.0f}"]),
        caption(rrs, [f"RRS vs frame {selection.start}", "stretched to 0..255"]),
        caption(approximate.image, ["dynamic image, approximate", f"frames {onset}..{apex} (onset-apex)"]),
        caption(exact.image, ["dynamic image, exact RankSVM", f"r = {correlation:.3f} with approximate"]),
        caption(bounded, [f"EVM x10 within bound, +-{bounded_spread:.0f} grey", f"lc {bounded_cutoff:.0f} px, {alphas_text(bounded_alpha)}"]),
        caption(default, [f"EVM x10 default, +-{default_spread:.0f} grey", f"lc 16 px: BREAKS bound ({delta:.1f} px)"]),
    ]
    row = np.hstack([np.pad(tile, ((2, 2), (2, 2), (0, 0)), constant_values=255) for tile in tiles])
    band = np.full((row.shape[0], ROW_LABEL_WIDTH, 3), 255, np.uint8)
    lines = [
        (entry["emotion"], 0.7, 2),
        ("AU " + "+".join(entry["rendered_action_units"]), 0.45, 1),
        (f"{entry['subject']}/{entry['clip']}", 0.4, 1),
        (f"onset {onset} apex {apex}", 0.4, 1),
        (f"offset {offset}", 0.4, 1),
        (f"motion {delta:.1f} px in crop", 0.4, 1),
        (f"scores increase: {'yes' if ordered else 'NO'}", 0.4, 1),
    ]
    y = CAPTION_LINE * 2 + 40
    for text, scale, thickness in lines:
        cv2.putText(band, text, (8, y), FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)
        y += 30 if scale > 0.5 else 22
    summary = (
        f"{entry['emotion']:<11} {entry['subject']}/{entry['clip']}: frames {len(aligned)}, onset {onset} apex {apex} "
        f"offset {offset}, F {selection.key_frames}; dynamic image over {len(segment)} frames: exact vs approximate "
        f"r = {correlation:.4f}, exact scores increasing: {ordered}; motion {delta:.2f} px in the crop: EVM within "
        f"the bound (lambda_c {bounded_cutoff:.0f} px, {alphas_text(bounded_alpha)}) adds up to {bounded_spread:.1f} "
        f"grey levels at apex, the default (lambda_c 16 px, {alphas_text(default_alpha)}) {default_spread:.1f}"
    )
    return np.hstack([band, row]), summary


def text_band(width: int, lines: list[tuple[str, float, int]], height: int) -> np.ndarray:
    band = np.full((height, width, 3), 255, np.uint8)
    y = 0
    for text, scale, thickness in lines:
        y += 26 if scale > 0.5 else 20
        cv2.putText(band, text, (8, y), FONT, scale, (0, 0, 0) if thickness > 1 else (50, 50, 50), thickness, cv2.LINE_AA)
    return band


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "clip-features.png")
    parser.add_argument("--clips", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "casme2"
        synthesize(SynthOptions(layout="casme2", out=root, subjects=args.clips, clips_per_subject=1, workers=2))
        truth = GroundTruth(root)
        rows = []
        for entry in truth.clips:
            row, summary = clip_row(root, truth, entry)
            rows.append(row)
            print(summary)
        truth.close()
    montage = np.vstack(rows)
    wavelengths = ", ".join(f"{w:.0f}" for w in level_wavelengths(pyramid_levels(CROP, CROP))[1:-1])
    header = text_band(
        montage.shape[1],
        [
            ("Clip features of synthetic micro-expressions (CASME II layout, 200 fps), aligned 224 x 224 crops", 0.7, 2),
            (
                "Aligned by mepipe.features.face.align_clip (onset landmarks, rigid stabilisation, eyes filled). "
                "Dynamic images pool the onset-to-apex frames; exact = RankSVM of MSMMT eq. (1)-(4) on the "
                "time-varying means scaled to unit norm, C = 1 (Fernando et al.); r = its correlation with the approximate image.",
                0.42,
                1,
            ),
            (
                "At that scale no pair of frames reaches the RankSVM's margin, so its optimum is exactly the approximate image "
                "times a constant (Bilen et al.'s derivation): r = 1.",
                0.42,
                1,
            ),
            (
                "EVM: alpha 10 (MSMMT), ideal temporal band 2-25 Hz, Wu et al.'s linear attenuation below the cutoff "
                f"wavelength lc; amplified levels 1-4 have wavelengths {wavelengths} px. Panels show what EVM adds to "
                "the apex frame (mid grey = 0, scaled to +- the largest value).",
                0.42,
                1,
            ),
            (
                "Within bound: lc = 8 (1 + alpha) delta, delta = the clip's largest expression displacement in the crop, "
                "so (1 + alpha_l) delta < lambda_l / 8 on every level. Default: lc = 16 px assumes delta < 0.18 px; "
                "these clips move 1-4 px, so it breaks Wu's bound: the overshoots are artefacts.",
                0.42,
                1,
            ),
        ],
        120,
    )
    montage = np.vstack([header, montage])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(montage, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"cannot write {args.out}")
    print(f"wrote {args.out} ({montage.shape[1]} x {montage.shape[0]})")


if __name__ == "__main__":
    main()
