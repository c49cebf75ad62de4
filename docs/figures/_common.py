"""What the figure scripts share: the demo set they draw from, and strips of panels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mepipe.synth.ground_truth import GroundTruth


def demo_truth(root: Path) -> GroundTruth:
    """The ground truth of the synthetic demo set at ``root``, made there first when missing."""
    if not (root / "mepipe_ground_truth.npz").is_file():
        from mepipe.synth.generate import SynthOptions, synthesize

        synthesize(SynthOptions(layout="casme2", out=root))
    return GroundTruth(root)


def side_by_side(panels: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """(H, sum of widths + gaps, 3) uint8: RGB panels of one height in a row on white."""
    strip = np.full((panels[0].shape[0], sum(p.shape[1] for p in panels) + gap * (len(panels) - 1), 3), 255, np.uint8)
    x = 0
    for panel in panels:
        strip[:, x:x + panel.shape[1]] = panel
        x += panel.shape[1] + gap
    return strip
