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


#: A tiny MEGC2019 composite: clips of the composite list, short, and EP99_01 that the list does not hold.
COMPOSITE_CODING = {
    "casme2": "subject,clip,onset,apex,offset,action_units,emotion,first_frame,last_frame,n_frames\n"
              "sub01,EP02_01f,46,52,58,12,happiness,46,58,13\n"
              "sub01,EP19_05f,10,15,21,4+9,disgust,10,21,12\n"
              "sub02,EP11_01,5,10,16,1+2,surprise,5,16,12\n"
              "sub02,EP99_01,5,9,14,4,others,5,14,10\n",
    "samm": "subject,clip,inducement_code,onset,apex,offset,action_units,emotion,objective_class\n"
            "006,006_1_2,1,5562,5568,5575,4+7,Anger,3\n"
            "007,007_6_1,6,1000,1006,1012,12,Happiness,1\n",
    "smic": "dataset,subject,clip,label\nsmic,s01,s01_ne_01,negative\nsmic,s02,s02_sur_01,surprise\n",
}


def composite_store(tmp: Path, artifacts: tuple[str, ...], size: int = 48, macro: bool = False) -> Path:
    """Synthetic casme2, samm and smic trees of COMPOSITE_CODING (and a 3 x 3 CK+ with ``macro``)
    built into one store at ``tmp / "store.zarr"`` (threads, one worker, ``size`` px faces)."""
    from mepipe.pipeline.build import BuildOptions, build
    from mepipe.synth.generate import SynthOptions, synthesize

    store = tmp / "store.zarr"
    sets = {name: dict(coding=tmp / f"{name}.csv") for name in COMPOSITE_CODING}
    for name, text in COMPOSITE_CODING.items():
        (tmp / f"{name}.csv").write_text(text)
    if macro:
        sets["ckplus"] = dict(subjects=3, clips_per_subject=3, seed=3)
    for name, extra in sets.items():
        synthesize(SynthOptions(layout=name, out=tmp / name, workers=1, **extra))
        wanted = ("face",) if name == "ckplus" else artifacts
        summary = build(BuildOptions(name, root=tmp / name, store=store, scheduler="threads", workers=1,
                                     artifacts=wanted, params=(f"face.size={size}",)))
        assert not summary.failures, summary.failures
    return store
