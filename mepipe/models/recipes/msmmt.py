"""MSMMT's recipe: the dynamic image and the magnified (u, v, strain) image stacked as channels,
rotation / scale / flip augmentation, AdamW, and the loss (1 - alpha) contrastive + alpha
cross-entropy (Wang et al., sections 3.3.4, 4.1 and 4.4)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mepipe.models.recipes.base import (FoldData, FoldOutput, Normaliser, Recipe, RunContext, TrainedModel, epoch_logger,
                                        fit_with_validation, image_channels, resize)
from mepipe.models.training import TrainConfig
from mepipe.pipeline.load import LoadedData
from mepipe.pipeline.variants import ModelInputs, Source, Variant

#: The store arrays each modality is read from (``mepipe.pipeline.artifacts``).
MODALITY_ARTIFACTS = {"dynamic": "dynamic", "flow": "magnified_flow"}

#: What MSMMT reads (Wang, Li, Qi, Wang & Wang, ``/work/shared/papers/msmmt-dynamic-image-flow-strain-evm.md``).
INPUTS = ModelInputs(
    model="msmmt",
    paper="Wang, Li, Qi, Wang & Wang",
    variant=Variant(size=224, colour=True, eye_fill="none"),
    artifacts=("dynamic", "magnified_flow"),
    frames="dynamic image of onset .. apex; u, v and strain onset -> apex of the magnified clip (alpha 10)",
    sources={
        "artifact": Source(
            "dynamic (RGB dynamic image) and magnified_flow (u, v, strain of the Eulerian-magnified clip)",
            "The algorithm takes the dynamic imaging and the optical flow-optical strain images as inputs.",
            "section 3 (the magnification: section 4.3.1, amplification factor 10)"),
        "size": Source(
            "224 x 224",
            "To acquire images at different scales, as shown in figure 4, the image is converted to the specified "
            "size (m, n) for patches at the first scale, which can be divided into $(m/16) \\times (m/16)$ patches.",
            "section 3.3.1; m is not given: 224, the side of the ImageNet ViT-B/16 the paper starts from "
            "(section 4.4, 'the pre-trained official ViT-B model on ImageNet')"),
        "colour": Source(
            "colour: the dynamic image in RGB (u, v and strain from the gray clip)",
            "A dynamic imaging is a standard RGB image that preserves the spatial and temporal information of an "
            "entire video sequence into a single image [37].",
            "section 3.1; the flow's colour is not stated: TV-L1 on intensity (section 3.2, 'the pixel intensities "
            "of the two images are constant over time')"),
        "eyes": Source(
            "kept",
            "Therefore, we only compute the affine transformation for the first frame image with two inner eye "
            "angle coordinates, align the subsequent frames with the same transformation, and then perform facial "
            "cropping with the landmark points of the aligned face.",
            "section 4.3; masking is not stated: the preprocessing aligns on the inner eye corners and crops, "
            "nothing is masked, so the eyes are kept"),
        "frames": Source(
            "onset .. apex",
            "The SMIC dataset does not provide the onset and apex frames of expressions, so we take the intermediate "
            "frames as the apex frames for feature extraction.",
            "section 4.1; which frames the dynamic image pools is not stated (section 3.1 defines a dynamic image "
            "over 'an entire video sequence'): onset .. apex, our choice, the span of the flow"),
    },
)


@dataclass(frozen=True)
class MSMMTOptions:
    """Wang, Li, Qi, Wang & Wang ("Multi-scale multi-modal micro-expression recognition algorithm
    based on transformer"); the network is :mod:`mepipe.models.msmmt`.

    Input (``modalities``): ``dynamic``, the store's dynamic image of onset..apex (section 3.1,
    "a standard RGB image": 3 channels in the 224 px colour variant this model reads, 1 in a gray
    one; 0..255 / 255), and ``flow``, the store's ``magnified_flow``: TV-L1 u, v (pixels of
    the resized grid) and optical strain of the onset -> apex of the Eulerian-magnified clip
    (alpha 10, section 4.3.1; sections 3.2 and Figure 3). Both are resized to ``image_size`` m and
    stacked as channels (dynamic R, G, B or gray, u, v, strain), so every augmentation moves them
    together. Normalisation, fitted on the training fold only: each dynamic channel is standardised; u and v
    are divided by one common root-mean-square displacement and the strain by its root mean square,
    without subtracting a mean, so zero stays "no motion" and rotations and flips commute with it.

    Network: ``size`` (tiny / small / base ViT per modality; base is the paper's ViT-B; small is
    our default, the ImageNet weights of the paper cannot be downloaded), ``scales`` (3: m, m/2,
    m/4), ``patch_weighting`` (equations (10)-(16)), FC1 of ``hidden`` units (0: the ViT width)
    with ``dropout`` (the paper gives neither; 0.5).

    Loss (equation (21)): (1 - ``alpha``) L_con + ``alpha`` cross-entropy, ``alpha`` = 0.1
    (section 4.5.3). L_con (equations (19)-(20)) is the cross-modal NT-Xent of CrossPoint [43]:
    the positive of the dynamic F_final of sample i is the flow F_final of sample i; its negatives
    are the flow and the dynamic F_final of the other samples of the batch (the two sums of the
    denominator of equation (19)); cosine similarity over ``temperature`` (not given in the paper;
    0.1), both directions averaged over the batch, 1 / (2B). Contrast needs two modalities: a
    single-modality run must set ``alpha=1``.

    Training (section 4.4): AdamW, ``lr`` 5e-5, ``weight_decay`` 0.05 (decoupled, on Linear and
    convolution weights), ``batch_size`` 16, ``epochs`` 50. Augmentation (section 4.1, "rotating
    [-10, 10], flipping horizontally, scale change, etc."): every training batch is rotated by an
    angle uniform in [-``rotation``, ``rotation``] degrees, scaled by a factor uniform in
    ``scale_range`` (the paper gives no range; 0.9..1.1) and flipped with probability ``flip``;
    the (u, v) vectors are rotated, scaled and mirrored with the image (the strain, a norm of the
    displacement gradient, is unchanged by all three). ``augment=false`` turns it off. Classes are
    balanced (``balance``, :mod:`mepipe.models.training`) by copies that are also shifted up to
    ``max_shift`` of the side and flipped with u negated.

    Ablations: ``modalities=dynamic`` or ``modalities=flow`` (with ``alpha=1``), ``scales=1``,
    ``patch_weighting=false``, ``alpha=1`` (cross-entropy only).
    """

    size: str = "small"
    image_size: int = 224
    scales: int = 3
    modalities: tuple[str, ...] = ("dynamic", "flow")
    patch_weighting: bool = True
    hidden: int = 0
    dropout: float = 0.5
    alpha: float = 0.1
    temperature: float = 0.1
    epochs: int = 50
    batch_size: int = 16
    lr: float = 5e-5
    weight_decay: float = 0.05
    augment: bool = True
    rotation: float = 10.0
    scale_range: tuple[float, ...] = (0.9, 1.1)
    flip: float = 0.5
    balance: str = "augment"
    max_shift: float = 0.05
    validation: float = 0.0

    def __post_init__(self) -> None:
        from mepipe.models.msmmt import MODALITY_CHANNELS, VIT_SIZES, scale_sides

        if self.size not in VIT_SIZES:
            raise ValueError(f"size must be one of {', '.join(VIT_SIZES)}, got {self.size!r}")
        unknown = [name for name in self.modalities if name not in MODALITY_CHANNELS]
        if not self.modalities or unknown or len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities must be distinct names from {', '.join(MODALITY_CHANNELS)}, "
                             f"got {','.join(self.modalities)!r}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.alpha < 1 and len(self.modalities) < 2:
            raise ValueError(f"alpha={self.alpha} weights a contrastive term between two modalities, but only "
                             f"{self.modalities[0]} is used: set alpha=1 for a single modality")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ValueError(f"scale_range must be two factors 0 < low <= high, got {self.scale_range}")
        if not 0 <= self.flip <= 1:
            raise ValueError(f"flip must be a probability in [0, 1], got {self.flip}")
        scale_sides(self.image_size, self.scales)  # raises on a size the patches cannot cut


class MSMMTRecipe(Recipe):
    name = "msmmt"
    artifacts = INPUTS.artifacts
    Options = MSMMTOptions
    inputs_spec = INPUTS

    def inputs(self, data: LoadedData, options: MSMMTOptions) -> torch.Tensor:
        """(N, C, m, m) float32: dynamic (0..1; R, G, B for a colour variant, 1 channel for a gray
        one) and/or u, v (pixels at m) and strain, in ``options.modalities`` order."""
        parts = []
        for name in options.modalities:
            stored = np.asarray(data.arrays[MODALITY_ARTIFACTS[name]])
            if name == "dynamic":
                image_channels(data, "dynamic", "MSMMT", "the dynamic image")
                parts.append(resize(torch.from_numpy(stored.astype(np.float32) / 255.0), options.image_size))
                continue
            if stored.ndim != 4 or stored.shape[1] != 3 or stored.shape[2] != stored.shape[3]:
                first = data.meta["sample_id"][0] if len(data) else f"(no samples of {data.dataset})"
                raise ValueError(f"sample {first}: magnified_flow is {tuple(stored.shape[1:])}; MSMMT reads (3, S, S) "
                                 "u, v and strain")
            field = torch.from_numpy(stored.astype(np.float32))
            # displacements are in pixels of the stored grid: they shrink or grow with it
            flow = resize(field[:, :2], options.image_size) * (options.image_size / field.shape[-1])
            parts.append(torch.cat([flow, resize(field[:, 2:], options.image_size)], dim=1))
        x = torch.cat(parts, dim=1)
        bad = ~torch.isfinite(x).flatten(1).all(dim=1)
        if bad.any():
            first = int(bad.nonzero()[0])
            raise ValueError(f"sample {data.meta['sample_id'][first]}: non-finite values in "
                             f"{', '.join(MODALITY_ARTIFACTS[m] for m in options.modalities)}")
        return x

    def network(self, options: MSMMTOptions, num_classes: int, dynamic_chans: int = 1, **shape):
        from mepipe.models.msmmt import msmmt

        return msmmt(num_classes=num_classes, size=options.size, image_size=options.image_size,
                     scales=options.scales, modalities=options.modalities, patch_weighting=options.patch_weighting,
                     hidden=options.hidden or None, dropout=options.dropout, dynamic_chans=dynamic_chans)

    def train_fold(self, context: RunContext, options: MSMMTOptions, prepared, fold: FoldData, seed: int) -> FoldOutput:
        dynamic_chans = dynamic_channels(fold.x_train, options.modalities)
        normalise = modality_normaliser(fold.x_train, options.modalities, dynamic_chans)
        torch.manual_seed(seed)
        shape = {"dynamic_chans": dynamic_chans}
        model = self.network(options, len(context.classes), **shape)
        u_channel = u_channel_of(options.modalities, dynamic_chans)
        config = TrainConfig(epochs=options.epochs, batch_size=options.batch_size, lr=options.lr, optimizer="adamw",
                             weight_decay=options.weight_decay, balance=options.balance, max_shift=options.max_shift,
                             flip_negates=() if u_channel is None else (u_channel,), validation=options.validation,
                             patience=options.epochs)
        history = fit_with_validation(model, normalise(fold.x_train), fold.y_train, fold.groups_train, config,
                                       seed=seed, device=context.device,
                                       criterion=msmmt_criterion(options, dynamic_chans),
                                       parameters=lambda m: (m.decay_parameters(), m.no_decay_parameters()),
                                       progress=epoch_logger(context.log, "  msmmt", options.epochs))
        trained = TrainedModel(model, len(context.classes), shape, normalise)
        return FoldOutput.of(trained, fold.x_test, context, history)


# ---------------------------------------------------------------- pieces (tested on their own)

def dynamic_channels(x: torch.Tensor, modalities: tuple[str, ...]) -> int:
    """Channels of the dynamic image in the stacked input ``x`` (N, C, m, m): 3 (RGB) or 1 (gray);
    1 when ``modalities`` has no dynamic image."""
    if "dynamic" not in modalities:
        return 1
    count = x.shape[1] - (3 if "flow" in modalities else 0)
    if count not in (1, 3):
        raise ValueError(f"MSMMT input of {x.shape[1]} channels for {', '.join(modalities)}: the dynamic image "
                         f"would have {count}, expected 1 (gray) or 3 (RGB)")
    return count


def u_channel_of(modalities: tuple[str, ...], dynamic_chans: int = 1) -> int | None:
    """Position of the flow's u channel in the stacked input, None without the flow modality."""
    from mepipe.models.msmmt import modality_channels

    channels, start = modality_channels(dynamic_chans), 0
    for name in modalities:
        if name == "flow":
            return start
        start += channels[name]
    return None


def modality_normaliser(x_train: torch.Tensor, modalities: tuple[str, ...],
                        dynamic_chans: int = 1) -> Normaliser:
    """Per-modality scaling fitted on the training samples (see :class:`MSMMTOptions`): each
    dynamic channel standardised, u and v over one shared RMS, strain over its RMS."""
    mean = torch.zeros(1, x_train.shape[1], 1, 1)
    scale = torch.ones(1, x_train.shape[1], 1, 1)
    start = 0
    for name in modalities:
        if name == "dynamic":
            for index in range(start, start + dynamic_chans):
                channel = x_train[:, index]
                mean[0, index] = channel.mean()
                scale[0, index] = channel.std().clamp_min(1e-8)
            start += dynamic_chans
        else:
            displacement = x_train[:, start:start + 2].pow(2).mean().sqrt().clamp_min(1e-8)
            scale[0, start:start + 2] = displacement
            scale[0, start + 2] = x_train[:, start + 2].pow(2).mean().sqrt().clamp_min(1e-8)
            start += 3
    return Normaliser(mean, scale)


def random_rotate_scale_flip(images: torch.Tensor, max_degrees: float, scale_range: tuple[float, float],
                             flip: float, u_channel: int | None) -> torch.Tensor:
    """Each image of (B, C, H, W) rotated by an angle uniform in [-max_degrees, max_degrees],
    scaled about its centre by a factor uniform in ``scale_range`` and mirrored left-right with
    probability ``flip`` (bilinear, zeros outside). Channels ``u_channel`` and ``u_channel + 1``
    hold a displacement field (u right, v down): its vectors get the same linear map as the image.
    Draws from torch's global generator (seeded by the training loop)."""
    b = len(images)
    angle = (torch.rand(b) * 2 - 1) * math.radians(max_degrees)
    factor = scale_range[0] + torch.rand(b) * (scale_range[1] - scale_range[0])
    mirror = torch.where(torch.rand(b) < flip, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # the content map p_out = M p_in, M = factor * R(angle) * diag(mirror, 1), in (x right, y down)
    m = torch.stack([torch.stack([factor * cos * mirror, -factor * sin], dim=-1),
                     torch.stack([factor * sin * mirror, factor * cos], dim=-1)], dim=-2)
    # affine_grid samples the input at theta @ p_out: the inverse map (square images: the
    # normalised coordinates are the pixel ones up to one common factor)
    theta = torch.cat([torch.linalg.inv(m), torch.zeros(b, 2, 1)], dim=-1).to(images)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if u_channel is not None:
        m = m.to(images)[:, :, :, None, None]
        u, v = out[:, u_channel], out[:, u_channel + 1]
        out = out.clone()
        out[:, u_channel] = m[:, 0, 0] * u + m[:, 0, 1] * v
        out[:, u_channel + 1] = m[:, 1, 0] * u + m[:, 1, 1] * v
    return out


def cross_modal_contrastive(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """L_con of equations (19)-(20) for features (B, F) of two modalities of the same B samples:
    the mean over both directions of -log(exp(s(a_i, b_i)/t) / (sum_k exp(s(a_i, b_k)/t) +
    sum_{k != i} exp(s(a_i, a_k)/t))), s the cosine similarity."""
    if first.shape != second.shape or first.ndim != 2:
        raise ValueError(f"contrastive loss needs two (B, F) feature tensors of one shape, got "
                         f"{tuple(first.shape)} and {tuple(second.shape)}")
    a, b = F.normalize(first, dim=1), F.normalize(second, dim=1)
    cross = a @ b.T / temperature
    own = torch.eye(len(a), dtype=torch.bool, device=a.device)
    targets = torch.arange(len(a), device=a.device)
    loss = 0.0
    for anchor, across in ((a, cross), (b, cross.T)):
        within = (anchor @ anchor.T / temperature).masked_fill(own, float("-inf"))
        loss = loss + F.cross_entropy(torch.cat([across, within], dim=1), targets, reduction="sum")
    return loss / (2 * len(a))


def msmmt_criterion(options: MSMMTOptions, dynamic_chans: int = 1):
    """The ``criterion`` of :func:`~mepipe.models.training.fit`: augmentation, then
    (1 - alpha) L_con + alpha cross-entropy (equation (21)); returns (loss, logits).
    ``dynamic_chans``: the dynamic image's channels (3 RGB, 1 gray), which place u and v."""
    u_channel = u_channel_of(options.modalities, dynamic_chans)

    def criterion(model, inputs: torch.Tensor, targets: torch.Tensor):
        if options.augment:
            inputs = random_rotate_scale_flip(inputs, options.rotation, options.scale_range, options.flip, u_channel)
        logits, features = model.forward_with_modalities(inputs)
        classification = F.cross_entropy(logits, targets)
        if options.alpha >= 1:
            return classification, logits
        contrast = cross_modal_contrastive(features[0], features[1], options.temperature)
        return (1 - options.alpha) * contrast + options.alpha * classification, logits
    return criterion
