"""Layout-only dataset trees for adapter tests: the real folder and file names, empty frame files.

Adapters never read pixels, so a tree of empty files made from the same plans and layout
definitions as `mepipe synth` tests them exactly, in a fraction of a second instead of minutes.
"""

from __future__ import annotations

from pathlib import Path

from mepipe.datasets.coding_tables import read_coding_table
from mepipe.datasets.layouts import get_layout
from mepipe.synth.generate import write_coding_sheet
from mepipe.synth.plan import default_plans, plans_from_coding


def layout_tree(layout_name: str, root: Path, coding: Path | None = None, subjects: int = 3, clips_per_subject: int = 4, seed: int = 0):
    """Write the tree; returns its plans (one per clip, with frame numbers and emotion)."""
    layout = get_layout(layout_name)
    if coding is None:
        plans = default_plans(layout, subjects, clips_per_subject, seed)
    else:
        _, rows = read_coding_table(coding, dataset=layout_name)
        plans = plans_from_coding(layout, rows, seed, str(coding))
    root.mkdir(parents=True, exist_ok=True)
    for plan in plans:
        folder = root / layout.clip_folder(plan.subject, plan.clip, plan.emotion)
        folder.mkdir(parents=True, exist_ok=True)
        for number in plan.frame_numbers:
            (folder / layout.frame_name(plan.subject, plan.clip, number)).touch()
    write_coding_sheet(layout, root, plans)
    return plans
