"""Picture of the motion features on synthetic clips: docs/flow.png.

    python docs/figures/flow.py [--root cache/demo/casme2] [--out docs/flow.png]

One row per clip (four emotions) of the demo set (made when missing), all on the aligned crops
(S=224, eyes masked) of the face stage:
the apex crop; the true onset -> apex motion as seen between the crops; TV-L1 with OpenCV; TV-L1
with the torch backend; the optical strain of the torch field. Flows share one colour scale per
row (hue: direction, saturation: speed; the wheel is in the corner of the truth panel, and the
row's caption gives the speed at full saturation); strain is a heat map scaled to its row's 99th
percentile. Each panel's caption gives the end-point error against the truth over the face
without the eyes.
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
from mepipe.features.flow import tvl1  # noqa: E402
from mepipe.features.strain import optical_strain  # noqa: E402
from mepipe.features.visualize import color_wheel, flow_to_color, label  # noqa: E402
from mepipe.synth.ground_truth import GroundTruth  # noqa: E402

from _common import demo_truth, side_by_side  # noqa: E402  (docs/figures/_common.py, beside this script)

SIZE = 224


def _row(root: Path, truth: GroundTruth, entry: dict) -> np.ndarray:
    layout = get_layout("casme2")
    subject, clip = entry["subject"], entry["clip"]
    frames = np.stack([cv2.imread(str(root / entry["path"] / layout.frame_name(subject, clip, entry[k])), cv2.IMREAD_GRAYSCALE) for k in ("onset", "apex")])
    aligned = face.align_clip(frames, 0, size=SIZE)
    region = face.face_region(aligned.landmarks, SIZE, eyes=aligned.eye_mask)
    true_flow = truth.crop_flow(subject, clip, aligned.matrices[0], aligned.matrices[1], SIZE)
    true_flow[:, ~region] = 0  # the truth is scored over the face only; show it there
    opencv_flow = tvl1(aligned.frames[0], aligned.frames[1], backend="opencv")
    torch_flow = tvl1(aligned.frames[0], aligned.frames[1], backend="torch")
    strain = optical_strain(torch_flow)
    top = float(np.percentile(np.hypot(*true_flow)[region], 99.5))

    def error(flow):
        return float(np.hypot(*(flow - true_flow))[region].mean())

    truth_panel = flow_to_color(true_flow, top)
    truth_panel[-52:, -52:] = cv2.resize(color_wheel(64), (52, 52), interpolation=cv2.INTER_AREA)
    strain_image = np.clip(strain / max(np.percentile(strain[region], 99), 1e-6) * 255, 0, 255).astype(np.uint8)
    strain_panel = cv2.cvtColor(cv2.applyColorMap(strain_image, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    panels = [
        label(cv2.cvtColor(aligned.frames[1], cv2.COLOR_GRAY2RGB), f"apex crop: {entry['emotion']}"),
        label(truth_panel, f"truth, full colour = {top:.2f} px"),
        label(flow_to_color(opencv_flow, top), f"TV-L1 OpenCV, EPE {error(opencv_flow):.3f} px"),
        label(flow_to_color(torch_flow, top), f"TV-L1 torch, EPE {error(torch_flow):.3f} px"),
        label(strain_panel, f"optical strain (torch), 99th pct {np.percentile(strain[region], 99):.3f}"),
    ]
    strip = side_by_side(panels)
    caption = f"{subject}/{clip} AU {'+'.join(entry['rendered_action_units'])}, amplitude {entry['amplitude_px']:.2f} px at 640x480"
    print(caption, f"EPE opencv {error(opencv_flow):.3f} torch {error(torch_flow):.3f}")
    return label(strip, caption, height=24)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=Path("cache/demo/casme2"))
    parser.add_argument("--out", type=Path, default=Path("docs/flow.png"))
    args = parser.parse_args()
    truth = demo_truth(args.root)
    chosen, seen = [], set()
    for entry in sorted(truth.clips, key=lambda e: -e["amplitude_px"]):
        if entry["emotion"] not in seen and len(chosen) < 4:
            chosen.append(entry)
            seen.add(entry["emotion"])
    rows = [_row(args.root, truth, entry) for entry in chosen]
    sheet = np.vstack([np.pad(r, ((0, 8), (0, 0), (0, 0)), constant_values=255) for r in rows])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
