"""MSMMT (Wang, Li, Qi, Wang & Wang, "Multi-scale multi-modal micro-expression recognition algorithm
based on transformer"), in plain PyTorch: two modalities, each seen by one ViT at three scales, the
patch weighting of the last encoder layer from the first L-1 layers' attention, and a two-layer
classifier on the concatenated class tokens.

Input: float tensor (B, C, m, m), the modalities' channels stacked in ``modalities`` order:
``dynamic`` (the dynamic image of section 3.1, "a standard RGB image": ``dynamic_chans`` = 3
channels R, G, B, as the recipe reads the store's colour variant, or 1 for a gray dynamic image,
the default) and ``flow`` (3 channels, u, v and the optical strain of the Eulerian-magnified clip,
section 3.2 and Figure 3). Output: logits
(B, num_classes); :meth:`MSMMT.forward_features` gives the fused features (B, M * S * D) before
the classifier (M modalities, S scales, D the ViT width), :meth:`MSMMT.modality_features` each
modality's F_final (equation (18)) for the contrastive loss.

Architecture (section 3.3; shapes for the paper's ViT-B at m = 224)::

    per modality, one ViT (weights shared by its scales):
      scale s = 0, 1, 2: resize to m / 2**s  -> 16 x 16 patches   14 x 14, 7 x 7, 3 x 3 patches
                         patch embedding + [cls] + position       (B, 1 + P_s, 768)
                         encoder layers 1 .. L-1 (attention kept) (B, 1 + P_s, 768)
                         patch weights G (eqs (10)-(14))          (B, P_s)
                         [cls, G * Z_{L-1}] -> layer L (eqs (15)-(16)), LayerNorm, cls token (B, 768)
      F_final = concat of the S class tokens (eq. (18))          (B, 3 * 768)
    concat of the modalities' F_final                            (B, 6 * 768)
    FC1 -> ReLU -> dropout -> FC2 (eq. (17))                     (B, num_classes)

ViT sizes (:data:`VIT_SIZES`; the encoder layers are ViT's pre-norm blocks, MLP ratio 4, GELU):
``tiny`` (D 192, 3 heads), ``small`` (D 384, 6 heads, our default: the paper's ImageNet weights
cannot be downloaded, and ViT-B from scratch is far beyond this project's CPU budget), ``base``
(D 768, 12 heads, the paper's section 4.4), all 12 layers. One modality's ViT-B at m = 224 with a
3-channel input has 85,798,656 parameters (:func:`vit_parameter_count`), the paper's "ViT-B"
of 86 M (Dosovitskiy et al. give 86 M with the 1000-class head, here 86,567,656).

Readings chosen where the paper leaves a choice open:

- Scales (section 3.3.1, Figure 4): scale s resizes the image to m / 2**s and cuts 16 x 16 patches.
  m / 4 = 56 is not a multiple of 16 for m = 224; a scale's side is therefore rounded down to whole
  patches, ``16 * max(1, (m // 2**s) // 16)`` (224, 112, 48 px: 196, 49 and 9 patches), so no
  pixels are silently cropped by the patch embedding. One ViT per modality encodes every scale
  (the paper's one "ViT-base" per modality); its learned position embedding is made for the
  largest grid and bilinearly resized to the smaller ones, as pre-trained ViTs are run at other
  resolutions.
- Patch weighting (section 3.3.2): equation (12) is read as the mean of a layer's attention over
  its heads, rows renormalised to sum to 1; equation (13) as the recursive product
  G = G_{L-1} ... G_2 G_1 (later layers on the left, the order of TransFG [42] whose part selection
  it follows); equation (14) as the mean of G over its rows (the attention each token receives,
  averaged over the querying tokens), keeping the patch tokens and dividing by their largest
  value, so the most attended patch keeps its features and the others are scaled down, never
  dropped. Gradients flow through the weights. ``patch_weighting=False`` feeds Z_{L-1} unchanged.
- Where G applies (equation (15)): on the patch tokens as the last layer's attention reads them,
  i.e. after that layer's LayerNorm. Scaling Z_{L-1} itself, before the pre-norm layer, would be a
  no-op for the class token: LayerNorm removes any per-token positive scale.
- Equation (16) is read as the standard pre-norm encoder layer, as equation (15) feeds the usual
  last ViT layer; a final LayerNorm precedes the class token, as in ViT.
- Fusion (section 3.3.3): the paper gives neither the width of FC1 nor the dropout rate; FC1 has
  ``hidden`` = D units (768 for ViT-B) and dropout 0.5.
- A dynamic image is an RGB image in the paper (section 3.1); the store's colour variant keeps its
  three channels, so the dynamic ViT's patch embedding takes ``dynamic_chans`` = 3 channels (1 for
  a gray dynamic image).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import EncoderLayer

__all__ = [
    "MODALITY_CHANNELS",
    "MSMMT",
    "PATCH",
    "VIT_SIZES",
    "MultiScaleViT",
    "modality_channels",
    "msmmt",
    "patch_weights",
    "scale_sides",
    "vit_parameter_count",
]

#: ViT patch side in pixels (section 3.3.1: 16 x 16 at every scale).
PATCH = 16
#: name -> (width D, encoder layers L, heads H). ``base`` is the paper's ViT-B (section 4.4).
VIT_SIZES: dict[str, tuple[int, int, int]] = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}
#: Channels of each modality in the stacked input, in this order within a modality, for a gray
#: dynamic image; a colour one has 3 (``MSMMT(dynamic_chans=3)``, :func:`modality_channels`).
MODALITY_CHANNELS: dict[str, int] = {"dynamic": 1, "flow": 3}


def modality_channels(dynamic_chans: int = 1) -> dict[str, int]:
    """Channels of each modality with a dynamic image of ``dynamic_chans`` channels (1 or 3)."""
    if dynamic_chans not in (1, 3):
        raise ValueError(f"dynamic_chans must be 1 (gray) or 3 (RGB), got {dynamic_chans}")
    return {**MODALITY_CHANNELS, "dynamic": dynamic_chans}


def scale_sides(image_size: int, scales: int) -> list[int]:
    """Pixel side of each scale: ``16 * max(1, (image_size // 2**s) // 16)`` for s = 0 .. scales-1.

    Raises ValueError unless ``image_size`` is a positive multiple of 16 and ``scales`` >= 1.
    """
    if scales < 1:
        raise ValueError(f"MSMMT needs at least one scale, got scales={scales}")
    if image_size < PATCH or image_size % PATCH:
        raise ValueError(f"MSMMT image_size must be a positive multiple of the {PATCH}-pixel patch, got {image_size}")
    return [PATCH * max(1, (image_size // 2 ** s) // PATCH) for s in range(scales)]


def patch_weights(attentions: Sequence[Tensor]) -> Tensor:
    """Weights (B, P) of the P patch tokens from the attention (B, H, 1 + P, 1 + P) of layers
    1 .. L-1 (equations (12)-(14), read as in the module docstring). Token 0 is the class token.
    The largest weight of each sample is 1."""
    if not attentions:
        raise ValueError("patch weighting needs the attention of at least one layer before the last (depth >= 2)")
    product = None
    for attention in attentions:
        layer = attention.mean(dim=1)  # eq. (12): mean over the heads
        layer = layer / layer.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        product = layer if product is None else layer @ product  # eq. (13)
    received = product.mean(dim=-2)[:, 1:]  # eq. (14): mean over the rows, patch tokens only
    return received / received.amax(dim=-1, keepdim=True).clamp_min(1e-12)


class MultiScaleViT(nn.Module):
    """One modality's ViT, run on every scale with shared weights.

    Parameters: ``in_chans`` (the modality's channels), ``image_size`` m (a multiple of 16),
    ``dim``, ``depth``, ``heads`` (:data:`VIT_SIZES`), ``scales`` S, ``patch_weighting``
    (equations (10)-(16) before the last layer), ``dropout`` in the encoder layers.

    Input (B, in_chans, m, m); output F_final (B, S * dim), the scales' class tokens concatenated
    (equation (18)).
    """

    def __init__(self, in_chans: int, image_size: int, dim: int, depth: int, heads: int, scales: int = 3,
                 patch_weighting: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        if patch_weighting and depth < 2:
            raise ValueError(f"patch weighting needs depth >= 2 (the first L-1 layers' attention), got {depth}")
        self.in_chans, self.image_size, self.dim = in_chans, image_size, dim
        self.sides = scale_sides(image_size, scales)
        self.patch_weighting = patch_weighting
        self.patch_embed = nn.Conv2d(in_chans, dim, PATCH, stride=PATCH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.grid = self.sides[0] // PATCH
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid ** 2, dim))
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, dropout=dropout, norm_eps=1e-6) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ViT's initialisation: truncated normal (std 0.02) position embedding and class token,
        Xavier uniform Linear weights with zero biases, the patch embedding as a Linear layer
        (LeCun normal), unit LayerNorms."""
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        fan_in = self.in_chans * PATCH * PATCH
        nn.init.trunc_normal_(self.patch_embed.weight, std=math.sqrt(1.0 / fan_in))
        nn.init.zeros_(self.patch_embed.bias)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def position_embedding(self, grid: int) -> Tensor:
        """(1, 1 + grid**2, dim): the class token's entry and the patch grid resized bilinearly."""
        if grid == self.grid:
            return self.pos_embed
        cls, patches = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patches = patches.reshape(1, self.grid, self.grid, self.dim).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=(grid, grid), mode="bilinear", align_corners=False)
        return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(1, grid * grid, self.dim)], dim=1)

    def tokens(self, image: Tensor) -> Tensor:
        """(B, in_chans, s, s) with s a multiple of 16 -> tokens (B, 1 + (s/16)**2, dim)."""
        patches = self.patch_embed(image).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(len(image), -1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding(image.shape[-1] // PATCH)

    def encode(self, image: Tensor) -> tuple[Tensor, Tensor | None]:
        """One scale: (class token (B, dim), patch weights (B, P) or None without weighting)."""
        x = self.tokens(image)
        attentions = []
        for layer in self.layers[:-1]:
            x, attention = layer(x)
            attentions.append(attention)
        weights = token_weights = None
        if self.patch_weighting:
            weights = patch_weights(attentions)
            # eq. (15): the class token keeps weight 1; the patches are scaled where layer L's
            # attention reads them (after its LayerNorm, which would cancel a scale given earlier)
            token_weights = torch.cat([weights.new_ones(len(weights), 1), weights], dim=1)
        x, _ = self.layers[-1](x, token_weights)  # eq. (16)
        return self.norm(x)[:, 0], weights

    def scaled_inputs(self, x: Tensor) -> list[Tensor]:
        """The input at every scale: (B, in_chans, side, side) per :func:`scale_sides`."""
        return [x if side == x.shape[-1] else
                F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
                for side in self.sides]

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.encode(image)[0] for image in self.scaled_inputs(x)], dim=1)


class MSMMT(nn.Module):
    """The two-modality network (module docstring). Parameters as :func:`msmmt`."""

    def __init__(self, num_classes: int = 3, size: str = "small", image_size: int = 224, scales: int = 3,
                 modalities: Sequence[str] = ("dynamic", "flow"), patch_weighting: bool = True,
                 hidden: int | None = None, dropout: float = 0.5, encoder_dropout: float = 0.0,
                 dynamic_chans: int = 1) -> None:
        super().__init__()
        if size not in VIT_SIZES:
            raise ValueError(f"MSMMT size must be one of {', '.join(VIT_SIZES)}, got {size!r}")
        modalities = tuple(modalities)
        unknown = [name for name in modalities if name not in MODALITY_CHANNELS]
        if not modalities or unknown or len(set(modalities)) != len(modalities):
            raise ValueError(f"MSMMT modalities must be distinct names from {', '.join(MODALITY_CHANNELS)}, "
                             f"got {modalities!r}")
        dim, depth, heads = VIT_SIZES[size]
        self.modalities, self.image_size, self.scales, self.dim = modalities, image_size, scales, dim
        self.channels = modality_channels(dynamic_chans)
        self.in_chans = sum(self.channels[name] for name in modalities)
        self.branches = nn.ModuleDict({
            name: MultiScaleViT(self.channels[name], image_size, dim, depth, heads, scales, patch_weighting,
                                encoder_dropout)
            for name in modalities})
        self.num_features = len(modalities) * scales * dim
        hidden = dim if hidden is None else hidden
        self.fc1 = nn.Linear(self.num_features, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, num_classes)
        for layer in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_chans or x.shape[-2:] != (self.image_size, self.image_size):
            layout = " + ".join(f"{name} {self.channels[name]}" for name in self.modalities)
            raise ValueError(f"MSMMT expects input (B, {self.in_chans}, {self.image_size}, {self.image_size}) "
                             f"(channels {layout}), got shape {tuple(x.shape)}")

    def modality_features(self, x: Tensor) -> list[Tensor]:
        """F_final (B, S * dim) of each modality, in ``modalities`` order (equation (18))."""
        self._check_input(x)
        features, start = [], 0
        for name in self.modalities:
            stop = start + self.channels[name]
            features.append(self.branches[name](x[:, start:stop]))
            start = stop
        return features

    def classify(self, features: Tensor) -> Tensor:
        """Equation (17): FC2(dropout(ReLU(FC1(features)))), (B, num_features) -> (B, num_classes)."""
        return self.fc2(self.dropout(F.relu(self.fc1(features))))

    def forward_features(self, x: Tensor) -> Tensor:
        return torch.cat(self.modality_features(x), dim=1)

    def forward_with_modalities(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(logits, each modality's F_final) of one pass: what the contrastive loss needs."""
        features = self.modality_features(x)
        return self.classify(torch.cat(features, dim=1)), features

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.forward_features(x))

    def decay_parameters(self) -> list[nn.Parameter]:
        """Weight decay applies to the Linear and convolution weights (not biases, norms, the class
        token or the position embedding, as in ViT's training)."""
        return [p for p in self.parameters() if id(p) in self._decay_ids()]

    def no_decay_parameters(self) -> list[nn.Parameter]:
        decay = self._decay_ids()
        return [p for p in self.parameters() if id(p) not in decay]

    def _decay_ids(self) -> set[int]:
        return {id(m.weight) for m in self.modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


def msmmt(num_classes: int = 3, size: str = "small", image_size: int = 224, scales: int = 3,
          modalities: Sequence[str] = ("dynamic", "flow"), patch_weighting: bool = True, hidden: int | None = None,
          dropout: float = 0.5, encoder_dropout: float = 0.0, dynamic_chans: int = 1) -> MSMMT:
    """MSMMT with a ``size`` ViT (tiny, small, base: :data:`VIT_SIZES`) per modality.

    image_size : m, the first scale's side (a multiple of 16; the paper's ViT-B runs at 224).
    scales : S (the paper: 3, sides m, m/2, m/4; 1 is the single-scale ablation).
    modalities : ``dynamic`` and/or ``flow`` (u, v, strain), stacked in this order in the input.
    patch_weighting : equations (10)-(16) before the last layer; False feeds Z_{L-1} unchanged.
    hidden : FC1 width (default the ViT width). dropout : after FC1 (0.5).
    encoder_dropout : inside the encoder layers (0, ViT-B's fine-tuning value).
    dynamic_chans : channels of the dynamic image, 3 (RGB, the paper's) or 1 (gray, the default).
    """
    return MSMMT(num_classes=num_classes, size=size, image_size=image_size, scales=scales, modalities=modalities,
                 patch_weighting=patch_weighting, hidden=hidden, dropout=dropout, encoder_dropout=encoder_dropout,
                 dynamic_chans=dynamic_chans)


def vit_parameter_count(size: str = "base", in_chans: int = 3, image_size: int = 224) -> int:
    """Parameters of one modality's ViT (patch embedding, class token, position embedding, L
    layers, final norm; no classifier). 85,798,656 for ``base``, 3 channels, 224 px."""
    dim, depth, heads = VIT_SIZES[size]
    with torch.device("meta"):  # counts only: no memory for ViT-B's weights
        vit = MultiScaleViT(in_chans, image_size, dim, depth, heads, scales=1)
    return sum(p.numel() for p in vit.parameters())
