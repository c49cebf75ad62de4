"""Picture of the face stage on synthetic clips: docs/face-stage.png.

    python docs/figures/face_stage.py [--root cache/demo/casme2] [--out docs/face-stage.png]

Uses the demo set (made with `mepipe synth --layout casme2` into ``--root`` when missing) and shows,
one row per clip (four emotions, one clip starting in a blink):

1. the onset frame as recorded, with dlib's face box and 68 landmarks;
2. the aligned onset crop (S=224) with its landmarks and the two eye targets (crosses);
3. the aligned apex crop;
4. the apex crop as the stage returns it, eyes masked (zero fill, default margin);
5. |apex - onset| x 8 with the clip transform alone: the head's drift shows as edges everywhere;
6. |apex - onset| x 8 after stabilisation: what is left is the micro-expression (and the blink).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from mepipe.datasets.layouts import get_layout  # noqa: E402
from mepipe.features import face  # noqa: E402
from mepipe.features.visualize import label  # noqa: E402
from mepipe.synth.ground_truth import GroundTruth  # noqa: E402

from _common import demo_truth, side_by_side  # noqa: E402  (docs/figures/_common.py, beside this script)

SIZE = 224
GAIN = 8


def _rgb(gray: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)


def _draw_landmarks(image: np.ndarray, points: np.ndarray, colour=(0, 255, 0), radius: int = 1) -> np.ndarray:
    out = image.copy()
    for x, y in points:
        cv2.circle(out, (int(round(x * 4)), int(round(y * 4))), radius * 4, colour, -1, cv2.LINE_AA, shift=2)
    return out


def _row(root: Path, truth: GroundTruth, entry: dict) -> tuple[list[np.ndarray], str]:
    layout = get_layout("casme2")
    numbers = range(entry["first_frame"], entry["last_frame"] + 1)
    frames = np.stack([cv2.imread(str(root / entry["path"] / layout.frame_name(entry["subject"], entry["clip"], n)), cv2.IMREAD_GRAYSCALE) for n in numbers])
    onset, apex = entry["onset"] - entry["first_frame"], entry["apex"] - entry["first_frame"]
    result = face.align_clip(frames, onset, size=SIZE, check_frames=[apex], eye_fill=None)
    fixed = face.align_clip(frames, onset, size=SIZE, check_frames=[apex], eye_fill=None, stabilize=False)
    quality = result.quality

    detection = face.find_face(frames, onset)
    raw = _rgb(frames[onset])
    box = detection.box
    cv2.rectangle(raw, (box.left, box.top), (box.right, box.bottom), (255, 200, 0), 2)
    raw = _draw_landmarks(raw, detection.landmarks, radius=2)
    height = SIZE
    raw = cv2.resize(raw, (int(round(raw.shape[1] * height / raw.shape[0])), height), interpolation=cv2.INTER_AREA)

    onset_crop = _draw_landmarks(_rgb(result.frames[onset]), result.landmarks)
    for x, y in face.eye_targets(SIZE):
        cv2.drawMarker(onset_crop, (int(round(x)), int(round(y))), (255, 0, 0), cv2.MARKER_CROSS, 9, 1)
    apex_crop = _rgb(result.frames[apex])
    masked = _rgb(face.fill_eyes(result.frames[apex:apex + 1], result.eye_mask)[0])

    def difference(clip: face.AlignedClip) -> np.ndarray:
        delta = np.abs(clip.frames[apex].astype(np.int16) - clip.frames[onset].astype(np.int16)) * GAIN
        return _rgb(np.clip(delta, 0, 255).astype(np.uint8))

    anchor_note = f", landmarks from frame +{quality.landmark_frame - onset} (eyes shut at onset)" if quality.landmark_frame != onset else ""
    panels = [
        label(raw, f"{entry['subject']}/{entry['clip']} onset, score {quality.detector_score:.2f}"),
        label(onset_crop, f"aligned onset, roll {quality.roll_degrees:+.1f} deg"),
        label(apex_crop, f"aligned apex ({entry['emotion']})"),
        label(masked, f"masked apex, {100 * result.eye_mask.mean():.1f}% of crop"),
        label(difference(fixed), f"|apex-onset| x{GAIN}, clip transform only"),
        label(difference(result), f"|apex-onset| x{GAIN}, stabilised"),
    ]
    blink = (" blink" if entry["blink_frames"] else "") + anchor_note
    note = (f"{entry['subject']}/{entry['clip']} {entry['emotion']} AU {'+'.join(entry['rendered_action_units'])}{blink}: "
            f"head motion {quality.head_motion_px:.2f} px removed, residual {quality.residual_motion_px:.3f} px "
            f"(clip transform only: {fixed.quality.residual_motion_px:.2f} px)")
    return panels, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("cache/demo/casme2"))
    parser.add_argument("--out", type=Path, default=Path("docs/face-stage.png"))
    args = parser.parse_args()
    truth = demo_truth(args.root)
    chosen, seen = [], set()
    starts_in_blink = next((e for e in truth.clips if e["onset"] in e["blink_frames"]), None)
    if starts_in_blink is not None:
        chosen.append(starts_in_blink)
        seen.add(starts_in_blink["emotion"])
    for entry in truth.clips:
        if entry["emotion"] not in seen and len(chosen) < 4:
            chosen.append(entry)
            seen.add(entry["emotion"])
    rows = []
    for entry in chosen:
        panels, note = _row(args.root, truth, entry)
        rows.append(label(side_by_side(panels), note, height=24))
        print(note)
    width = max(r.shape[1] for r in rows)
    sheet = np.vstack([np.pad(r, ((0, 8), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
