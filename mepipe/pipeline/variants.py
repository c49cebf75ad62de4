"""Input variants: the same artifacts made at another crop size, in colour or gray, eyes masked or kept.

A model reads exactly what its paper describes (``docs/models/inputs.md``): CropNet 320 px colour
residual images with the eyes visible, MobileViT 256 px gray apex frames with the eyes masked, and
so on. Each such setting is a :class:`Variant`; a dataset's group holds the variant of a build
without ``--for`` (224 px, gray, eyes zero-filled) at its root and every other variant in a group
of its own, side by side::

    <store>/<dataset>/                       the default variant (``224-gray-eyes-zero``)
    <store>/<dataset>/variants/<name>/       e.g. ``320-rgb-eyes-kept``: same schema, own keys

Each variant's group has its own metadata, parameters, cache keys and completion flags, so building
one never invalidates another. What variants share is computed once per clip in a build: the
decoded frames, the face detection and landmarks, and the alignment transform (estimated on a
:data:`GEOMETRY_SIZE` crop and scaled to each variant's size), and, between variants of one crop
size, every artifact that does not depend on colour or the eye mask (flow, the magnified clip).

:class:`ModelInputs` is what a training recipe declares it reads: its variant, its artifacts and
frames, each with the sentence of its paper that says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Side of the crop on which the alignment transform (and the head-motion correction) of a clip is
#: estimated; every variant's transform is this one scaled to its size, so the faces of all
#: variants are the same face, whatever set of variants a build makes.
GEOMETRY_SIZE = 224
#: The group (below a dataset's group) holding its variants other than the root's.
VARIANTS_GROUP = "variants"
EYE_FILLS = {"zero": "eyes-zero", "mean": "eyes-mean", "none": "eyes-kept"}


@dataclass(frozen=True)
class Variant:
    """One setting of the face stage that artifacts are made at.

    size : side S of the square crops, pixels.
    colour : keep the frames' three RGB channels (a gray source, e.g. SAMM, gives its gray
        channel three times); False: gray (ITU-R BT.601 luma of the colour crop).
    eye_fill : how the eyes are hidden in what the models read: ``zero`` or ``mean``
        (``features.face.fill_eyes``), or ``none``: the eyes are kept and no artifact is masked.
    """

    size: int = 224
    colour: bool = False
    eye_fill: str = "zero"

    def __post_init__(self) -> None:
        if self.eye_fill not in EYE_FILLS:
            raise ValueError(f"eye_fill must be one of {', '.join(EYE_FILLS)}, got {self.eye_fill!r}")
        if self.size < 32:
            raise ValueError(f"a variant's crop size must be at least 32 px, got {self.size}")

    @property
    def name(self) -> str:
        """``<size>-<rgb|gray>-<eyes-zero|eyes-mean|eyes-kept>``, e.g. ``320-rgb-eyes-kept``."""
        return f"{self.size}-{'rgb' if self.colour else 'gray'}-{EYE_FILLS[self.eye_fill]}"

    @property
    def masked(self) -> bool:
        return self.eye_fill != "none"

    def describe(self) -> str:
        eyes = "eyes kept" if not self.masked else f"eyes masked ({self.eye_fill})"
        return f"{self.size} px, {'colour' if self.colour else 'gray'}, {eyes}"

    @classmethod
    def parse(cls, name: str) -> Variant:
        """The variant named ``name`` (:attr:`name`); ValueError naming what is wrong."""
        parts = name.split("-", 2)
        fills = {text: fill for fill, text in EYE_FILLS.items()}
        if len(parts) != 3 or not parts[0].isdigit() or parts[1] not in ("rgb", "gray") or parts[2] not in fills:
            raise ValueError(f"variant {name!r}: expected SIZE-(rgb|gray)-(eyes-zero|eyes-mean|eyes-kept), e.g. 320-rgb-eyes-kept")
        return cls(int(parts[0]), parts[1] == "rgb", fills[parts[2]])

    @classmethod
    def of_face(cls, face_params) -> Variant:
        """The variant of a ``FaceParams`` (or its stored dict)."""
        get = face_params.get if isinstance(face_params, dict) else lambda key, default=None: getattr(face_params, key, default)
        return cls(int(get("size", 224)), bool(get("colour", False)), str(get("eye_fill", "zero")))


#: What a build without ``--for`` makes (and always made): 224 px, gray, eyes zero-filled.
DEFAULT_VARIANT = Variant()


@dataclass(frozen=True)
class Source:
    """Where a declared input comes from: the paper's words, with section, or why we chose."""

    fact: str  # e.g. "320 x 320"
    quote: str  # the paper's sentence (verbatim), or "" when the paper says nothing
    where: str  # "section 3.2.2", or "not stated: our choice, because ..."


@dataclass(frozen=True)
class ModelInputs:
    """The inputs a model's recipe reads, as its paper describes them.

    model : the recipe's name (``cropnet``).
    paper : short citation (``Zhao, Chen & Luo 2021``).
    variant : the :class:`Variant` its artifacts are made at.
    artifacts : the loadable names it reads (``face``, ``residual``, ``frames``, ...).
    frames : which frames, in words (``onset and apex``, ``onset .. offset, N_key = 5``).
    sources : property -> :class:`Source`, for ``artifact``, ``size``, ``colour``, ``eyes``, ``frames``.
    datasets : the groups it reads beside the one trained on (MobileViT's macro sets), with
        their variant when it differs.
    """

    model: str
    paper: str
    variant: Variant
    artifacts: tuple[str, ...]
    frames: str
    sources: dict[str, Source] = field(default_factory=dict)
    macro: tuple[str, ...] = ()
    macro_artifacts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    """What one build makes in one variant: its artifacts and the models that read them.

    variant : None for a build without ``--for``: the variant of the build's face parameters
        (224 px gray eyes zero-filled unless ``-p face.size=...`` and the like say otherwise).
    artifacts : artifact names (their inputs are added); None: every artifact that applies.
    readers : the models this variant is built for (shown by ``mepipe info``).
    """

    variant: Variant | None
    artifacts: tuple[str, ...] | None = None
    readers: tuple[str, ...] = ()
