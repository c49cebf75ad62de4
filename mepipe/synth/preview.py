"""Preview picture of a synthetic tree: onset, apex, their difference and the true motion."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mepipe.datasets.layouts import get_layout
from mepipe.features.visualize import color_wheel, draw_arrows, flow_to_color, label
from mepipe.synth.ground_truth import GroundTruth
from mepipe.synth.motion import FaceFrame

TILE = 220  # pixels per picture in the montage


def write_preview(root: Path, out: Path, clips: int = 4) -> Path:
    """Write a PNG montage of a few clips of the tree at ``root``; returns its path.

    One row per clip (distinct subjects and emotions first): the onset frame, the apex frame, their absolute
    difference (contrast-stretched: the motion is sub-pixel to a few pixels), the true onset->apex
    flow colour-coded (expression + head motion), and the expression alone with arrows.
    """
    truth = GroundTruth(root)
    # a manifest tree's clips are rendered in a dataset's layout, which it names
    layout = get_layout(truth.manifest.get("frame_layout", truth.manifest["dataset"]))
    chosen, emotions, subjects = [], set(), set()
    for entry in truth.clips:  # different people showing different emotions first
        if entry["emotion"] not in emotions and entry["subject"] not in subjects:
            chosen.append(entry)
            emotions.add(entry["emotion"])
            subjects.add(entry["subject"])
    chosen = (chosen + [c for c in truth.clips if c not in chosen])[:clips]
    rows = [_clip_row(truth, layout, entry) for entry in chosen]
    montage = np.vstack(rows)
    legend = np.full((montage.shape[0], 90, 3), 255, np.uint8)
    legend[30:94, 13:77] = color_wheel(64)
    cv2.putText(legend, "direction", (12, 112), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    montage = np.hstack([montage, legend])
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), cv2.cvtColor(montage, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write the preview to {out}")
    truth.close()
    return out


def _clip_row(truth: GroundTruth, layout, entry: dict) -> np.ndarray:
    subject, clip = entry["subject"], entry["clip"]
    folder = truth.path.parent / entry["path"]
    onset = min(max(entry["true_onset"], entry["first_frame"]), entry["last_frame"])
    apex = min(max(entry["true_apex"], entry["first_frame"]), entry["last_frame"])
    if entry.get("video"):  # a manifest tree's video: frame first_frame + i is the video's frame i
        from mepipe.pipeline.video import read_video

        frames = read_video(folder).frames
        onset_image, apex_image = frames[onset - entry["first_frame"]], frames[apex - entry["first_frame"]]
    else:
        onset_image = _read_rgb(folder / layout.frame_name(subject, clip, onset))
        apex_image = _read_rgb(folder / layout.frame_name(subject, clip, apex))
    landmarks = truth.landmarks(subject, clip, onset)
    face = FaceFrame.from_landmarks(landmarks)
    # a square around the face: from above the brows to below the chin
    centre = landmarks[[8, 19, 24]].mean(axis=0)
    half = int(round(1.35 * face.iod))
    box = _clamp_box(int(centre[0]) - half, int(centre[1]) - half, 2 * half, onset_image.shape)

    def crop(image):
        x, y, size = box
        return cv2.resize(image[y:y + size, x:x + size], (TILE, TILE), interpolation=cv2.INTER_AREA)

    difference = np.abs(apex_image.astype(np.float32) - onset_image.astype(np.float32)).mean(axis=2)
    difference = np.clip(difference * (255 / max(np.percentile(difference, 99.5), 1)), 0, 255).astype(np.uint8)
    difference = cv2.applyColorMap(255 - difference, cv2.COLORMAP_BONE)[..., ::-1]
    total = truth.total_flow(subject, clip)
    expression = truth.expression_flow(subject, clip)
    x, y, size = box
    scale = TILE / size
    total_crop = cv2.resize(total[:, y:y + size, x:x + size].transpose(1, 2, 0), (TILE, TILE)).transpose(2, 0, 1) * scale
    expression_crop = cv2.resize(expression[:, y:y + size, x:x + size].transpose(1, 2, 0), (TILE, TILE)).transpose(2, 0, 1) * scale
    peak = float(np.hypot(*total_crop).max())
    total_color = flow_to_color(total_crop, peak)
    expression_peak = float(np.hypot(*expression_crop).max())
    arrows = draw_arrows(flow_to_color(expression_crop, max(expression_peak, 1e-6)), expression_crop, 14, 6.0 / max(expression_peak, 1e-6))
    tiles = [
        label(crop(onset_image), f"{subject}/{clip} onset {onset}"),
        label(crop(apex_image), f"{entry['emotion']} AU {'+'.join(entry['rendered_action_units'])} apex {apex}"),
        label(difference_crop(difference, box), "|apex - onset|, stretched"),
        label(total_color, f"true flow, max {peak / scale:.2f} px"),
        label(arrows, f"expression only, max {entry['amplitude_px']:.2f} px"),
    ]
    row = np.hstack([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles])
    return row


def difference_crop(difference: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    x, y, size = box
    return cv2.resize(difference[y:y + size, x:x + size], (TILE, TILE), interpolation=cv2.INTER_AREA)


def _clamp_box(x: int, y: int, size: int, shape) -> tuple[int, int, int]:
    height, width = shape[:2]
    size = min(size, height, width)
    return min(max(x, 0), width - size), min(max(y, 0), height - size), size


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise OSError(f"cannot read frame {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
