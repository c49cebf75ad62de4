"""The artifact graph: what each artifact is computed from, which arrays it writes, where it applies.

=================  ==============  ==========================================================
artifact           computed from   writes (per sample)
=================  ==============  ==========================================================
``face``           the raw frames  ``face`` (2, S, S) uint8 onset and apex crops, eyes filled;
                                   ``eye_mask`` (1, S, S); ``clips/frames`` (T, S, S) uint8
                                   aligned clip (eyes kept; the mask beside it); ``apex_used``
``flow``           face            ``flow`` (2, S, S) float32 TV-L1 onset -> apex (u, v), pixels
``strain``         flow            ``strain`` (1, S, S) float32 optical strain magnitude
``residual``       face            ``residual`` (2, S, S) float32 ARS and RRS images
``dynamic``        face            ``dynamic`` (1, S, S) uint8 dynamic image of onset..apex
``magnified``      face            ``clips/magnified`` (T, S, S) uint8 EVM-magnified clip
``magnified_flow`` magnified, flow ``magnified_flow`` (3, S, S) float32 (u, v, strain) of the
                                   magnified onset -> apex, with the ``flow`` parameters
=================  ==============  ==========================================================

Flow-type arrays are zero inside the eye mask (strain also one pixel around it, where its
central differences reach into the mask), unless ``face.eye_fill`` is ``none``.

In a colour variant (``face.colour``) the arrays defined on colour have each channel three times,
``_r``, ``_g``, ``_b`` (:func:`array_specs`): ``face`` (6, S, S) onset_r .. apex_b, ``residual``
(6, S, S) ars_r .. rrs_b, ``dynamic`` (3, S, S); the clip ``clips/frames`` is (T, S, S, 3) RGB. The
flow-type arrays and the magnified clip are the same in both: computed on the gray crops.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArraySpec:
    """A fixed-size per-sample array: stored (N, C, S, S) with one chunk per sample."""

    name: str
    channels: tuple[str, ...]
    dtype: str


@dataclass(frozen=True)
class Artifact:
    name: str
    depends: tuple[str, ...]
    arrays: tuple[ArraySpec, ...]
    ragged: str | None
    description: str


ARTIFACTS: dict[str, Artifact] = {
    artifact.name: artifact
    for artifact in (
        Artifact(
            "face", (),
            (ArraySpec("face", ("onset", "apex"), "uint8"), ArraySpec("eye_mask", ("eyes",), "uint8")),
            "frames", "aligned, cropped, eye-masked faces",
        ),
        Artifact("flow", ("face",), (ArraySpec("flow", ("u", "v"), "float32"),), None, "TV-L1 optical flow onset -> apex"),
        Artifact("strain", ("flow",), (ArraySpec("strain", ("strain",), "float32"),), None, "optical strain"),
        Artifact("residual", ("face",), (ArraySpec("residual", ("ars", "rrs"), "float32"),), None, "ARS / RRS residual-sum images"),
        Artifact("dynamic", ("face",), (ArraySpec("dynamic", ("dynamic",), "uint8"),), None, "dynamic image (rank pooling)"),
        Artifact("magnified", ("face",), (), "magnified", "Eulerian-magnified clip"),
        Artifact(
            "magnified_flow", ("magnified", "flow"), (ArraySpec("magnified_flow", ("u", "v", "strain"), "float32"),), None,
            "flow and strain of the magnified clip",
        ),
    )
}

DEPENDS: dict[str, tuple[str, ...]] = {name: artifact.depends for name, artifact in ARTIFACTS.items()}

#: Micro-expression clips take every artifact (a manifest lists micro-expression clips: CAS(ME)^3,
#: MMEW, 4DME, a lab's own); macro-expression sequences (neutral -> peak, at 25-30 fps, too slow
#: for the 2-25 Hz magnification band) all but magnification; JAFFE's single images only the face.
MICRO = ("casme2", "samm", "smic", "manifest")
DEFAULT_ARTIFACTS: dict[str, tuple[str, ...]] = {
    **{name: tuple(ARTIFACTS) for name in MICRO},
    **{name: ("face", "flow", "strain", "residual", "dynamic") for name in ("ckplus", "oulu", "mug")},
    "jaffe": ("face",),
}


#: The arrays that hold one set of channels per colour in a colour variant.
COLOUR_ARRAYS = ("face", "residual", "dynamic")
#: The ragged clips stored in colour in a colour variant (``magnified`` feeds the flow: gray).
COLOUR_CLIPS = ("frames",)
RGB = ("r", "g", "b")


def array_specs(name: str, colour: bool = False) -> tuple[ArraySpec, ...]:
    """The fixed-size arrays artifact ``name`` writes, in a gray or a colour variant."""
    specs = ARTIFACTS[name].arrays
    if not colour:
        return specs
    return tuple(
        ArraySpec(spec.name, tuple(f"{channel}_{c}" for channel in spec.channels for c in RGB), spec.dtype)
        if spec.name in COLOUR_ARRAYS else spec
        for spec in specs
    )


def with_dependencies(names) -> tuple[str, ...]:
    """``names`` and everything they are computed from, in dependency order."""
    wanted: set[str] = set()

    def add(name: str) -> None:
        if name not in wanted:
            wanted.add(name)
            for dep in DEPENDS[name]:
                add(dep)

    for name in names:
        add(name)
    return tuple(name for name in ARTIFACTS if name in wanted)


def downstream(name: str) -> tuple[str, ...]:
    """The artifacts computed, directly or not, from ``name``."""
    found = [other for other in ARTIFACTS if name in DEPENDS[other]]
    for other in list(found):
        found.extend(x for x in downstream(other) if x not in found)
    return tuple(n for n in ARTIFACTS if n in found)
