"""MobileViT-S (Mehta & Rastegari 2021, arXiv:2110.02178) as used by Liu et al. 2022 for
micro-expression recognition ("Lightweight ViT Model for Micro-Expression Recognition Enhanced by
Transfer Learning", Front. Neurorobot. 16:922761), in plain PyTorch.

Input: float tensor (B, in_chans, H, W) with H and W multiples of 32 (five stride-2 stages); the
paper feeds 256 x 256 images. Output: logits (B, num_classes); :meth:`MobileViT.forward_features`
gives the pooled 640-d features (B, 640) before dropout and the classifier (the paper classifies
those features with an SVM).

Architecture (the paper's Table 1; feature maps for a 256 x 256 input)::

    stem    Conv3x3 /2 -> 16, BN, SiLU                          128 x 128 x 16
    layer1  MV2 16 -> 32                                        128 x 128 x 32
    layer2  MV2 32 -> 64 /2, 2 x MV2 64 -> 64                    64 x  64 x 64
    layer3  MV2 64 -> 96 /2,   MobileViT block (d=144, L=2)      32 x  32 x 96
    layer4  MV2 96 -> 128 /2,  MobileViT block (d=192, L=4)      16 x  16 x 128
    layer5  MV2 128 -> 160 /2, MobileViT block (d=240, L=3)       8 x   8 x 160
    head    Conv1x1 160 -> 640, BN, SiLU                          8 x   8 x 640
            global average pool, dropout (0.5, the paper's), Linear 640 -> num_classes

MV2 is the MobileNetV2 inverted residual with expansion 4 and SiLU (Swish). A MobileViT block
encodes local context with a 3x3 conv, projects to d channels, cuts the map into 2 x 2 patches and
runs L pre-norm transformer layers (4 heads, FFN width 2d as the paper states) across the patches,
once for each of the 4 pixel positions inside a patch, folds back, projects to C channels and fuses
with its input by a 3x3 conv over the concatenation.

The paper's figures: 5.6 M parameters for the 1000-class ImageNet configuration (Table 1;
``mobilevit_s(num_classes=1000, in_chans=3)`` here has 5,578,632, 0.4 % less), and 35.4 ms per
sample (Table 4) on an Intel Core i9-9980HK laptop with an AMD Radeon Pro 5500M, Keras 2.2.4 (the
paper does not say whether the CPU or the GPU ran it). The 3-class grayscale model used for the
micro-expression task has 4,939,267 parameters (the 1000-way classifier is most of the difference).

Readings chosen where the paper leaves a choice open:

- The paper never gives the input channel count for its micro-expression images; ``in_chans``
  defaults to 1 (grayscale) as the project asks, and the stem adapts to any count.
- Where a stage's map is not a multiple of the 2 x 2 patch (H/32 odd, e.g. 224 x 224 gives 7 x 7 at
  layer5), the MobileViT block resizes the d-channel map bilinearly up to the next multiple of 2
  before unfolding and back after folding, as MobileViT's reference implementation does; the
  paper's 256 x 256 input never needs it.
- "L2 regularization on the convolutional and fully connected layers" is read as: every Conv2d and
  Linear weight, the transformer's attention and FFN projections included (they are fully
  connected layers); biases and the Batch/Layer norm parameters are not regularised. See
  :meth:`MobileViT.decay_parameters`. Keras' ``l2(lam)`` adds ``lam * sum(w ** 2)`` to the loss,
  which is ``weight_decay = 2 * lam`` for torch's SGD.
- Convolutions followed by BatchNorm have no bias (the norm's shift makes one redundant); the plain
  1x1 conv C -> d in the MobileViT block has none either, as in the reference. Attention and FFN
  projections have biases.
- Transfer learning (the paper trains "the MobileNetV2 block" on macro-expressions and keeps its
  weights): :meth:`MobileViT.transfer_modules` is the stem and every MV2 block, BatchNorm
  statistics included; the MobileViT blocks, head conv and classifier are not transferred.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import init_conv_stack

__all__ = [
    "Attention",
    "ConvNormAct",
    "InvertedResidual",
    "MobileViT",
    "MobileViTBlock",
    "TransformerLayer",
    "fold_patches",
    "mobilevit_s",
    "unfold_patches",
]

#: Every stage but layer1 halves the map: 2 ** 5.
STRIDE = 32


class ConvNormAct(nn.Sequential):
    """k x k convolution (no bias), BatchNorm, then SiLU unless ``act=False``. (B, in, H, W) ->
    (B, out, H / stride, W / stride), 'same' padding for odd k."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
                 act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = nn.SiLU() if act else nn.Identity()


class InvertedResidual(nn.Module):
    """MobileNetV2 block (MV2): 1x1 expand (x expansion), 3x3 depthwise with the stride, 1x1 linear
    projection. (B, in, H, W) -> (B, out, H / stride, W / stride)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, expansion: int = 4) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"MV2 stride must be 1 or 2, got {stride}")
        hidden = in_ch * expansion
        self.expand = ConvNormAct(in_ch, hidden, 1)
        self.depthwise = ConvNormAct(hidden, hidden, 3, stride=stride, groups=hidden)
        # No activation after the projection: the linear bottleneck of MobileNetV2, a non-linearity
        # on the narrow output would destroy information.
        self.project = ConvNormAct(hidden, out_ch, 1, act=False)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: Tensor) -> Tensor:
        y = self.project(self.depthwise(self.expand(x)))
        return x + y if self.residual else y


class Attention(nn.Module):
    """Multi-head self-attention over a token sequence (B, N, dim) -> (B, N, dim)."""

    def __init__(self, dim: int, heads: int, attn_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class TransformerLayer(nn.Module):
    """Pre-norm transformer encoder layer: x + MHSA(LN(x)), then x + FFN(LN(x)), FFN dim -> ffn_dim
    (SiLU) -> dim. Tokens (B, N, dim) -> (B, N, dim).

    ``attn_dropout`` drops attention weights; ``dropout`` drops the FFN hidden units and the output
    of each residual branch."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, attn_dropout: float = 0.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, attn_dropout)
        self.drop1 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.SiLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop1(self.attn(self.norm1(x)))
        return x + self.drop2(self.ffn(self.norm2(x)))


def unfold_patches(x: Tensor, patch: int = 2) -> Tensor:
    """Cut (B, d, H, W) into non-overlapping patch x patch patches: tokens (B * P, N, d).

    P = patch ** 2 pixel positions in a patch, N = H W / P patches. Row ``b * P + i * patch + j``
    holds, in raster order of the patches, the pixel at offset (i, j) of every patch of image b:
    ``out[b * P + i * patch + j, r * (W // patch) + c] == x[b, :, r * patch + i, c * patch + j]``.
    A transformer over the rows therefore relates same-position pixels of different patches.
    H and W must be multiples of ``patch``.
    """
    b, d, h, w = x.shape
    if h % patch or w % patch:
        raise ValueError(f"unfold_patches needs H and W multiples of the patch size {patch}, got shape {tuple(x.shape)}")
    x = x.reshape(b, d, h // patch, patch, w // patch, patch)
    # (b, d, rows, i, cols, j) -> (b, i, j, rows, cols, d)
    return x.permute(0, 3, 5, 2, 4, 1).reshape(b * patch * patch, (h // patch) * (w // patch), d)


def fold_patches(tokens: Tensor, height: int, width: int, patch: int = 2) -> Tensor:
    """Inverse of :func:`unfold_patches`: tokens (B * P, N, d) -> map (B, d, height, width)."""
    bp, n, d = tokens.shape
    p = patch * patch
    rows, cols = height // patch, width // patch
    if height % patch or width % patch or bp % p or n != rows * cols:
        raise ValueError(f"fold_patches cannot fold tokens of shape {tuple(tokens.shape)} into a "
                         f"{height} x {width} map with {patch} x {patch} patches")
    x = tokens.reshape(bp // p, patch, patch, rows, cols, d)
    # (b, i, j, rows, cols, d) -> (b, d, rows, i, cols, j)
    return x.permute(0, 5, 3, 1, 4, 2).reshape(bp // p, d, height, width)


class MobileViTBlock(nn.Module):
    """MobileViT block: local 3x3 conv, global transformer over 2 x 2 patches, fusion.
    (B, C, H, W) -> (B, C, H, W).

    Parameters: ``channels`` C, ``dim`` d (transformer width), ``depth`` L (transformer layers),
    ``heads``, ``ffn_dim`` (default 2 d, the paper's), ``patch`` (2), dropouts as in
    :class:`TransformerLayer`.
    """

    def __init__(self, channels: int, dim: int, depth: int, heads: int = 4, ffn_dim: int | None = None,
                 patch: int = 2, attn_dropout: float = 0.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.patch = patch
        self.conv_local = ConvNormAct(channels, channels, 3)
        self.conv_in = nn.Conv2d(channels, dim, 1, bias=False)
        ffn_dim = 2 * dim if ffn_dim is None else ffn_dim
        self.transformer = nn.Sequential(
            *(TransformerLayer(dim, heads, ffn_dim, attn_dropout, dropout) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.conv_out = ConvNormAct(dim, channels, 1)
        self.fuse = ConvNormAct(2 * channels, channels, 3)

    def global_representation(self, x: Tensor) -> Tensor:
        """Unfold -> transformer layers -> final LayerNorm -> fold, (B, d, H, W) -> (B, d, H, W);
        H and W multiples of the patch size."""
        tokens = self.norm(self.transformer(unfold_patches(x, self.patch)))
        return fold_patches(tokens, x.shape[-2], x.shape[-1], self.patch)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv_in(self.conv_local(x))
        h, w = y.shape[-2:]
        ph, pw = math.ceil(h / self.patch) * self.patch, math.ceil(w / self.patch) * self.patch
        resize = (ph, pw) != (h, w)
        if resize:
            y = F.interpolate(y, size=(ph, pw), mode="bilinear", align_corners=False)
        y = self.global_representation(y)
        if resize:
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([x, self.conv_out(y)], dim=1))


class MobileViT(nn.Module):
    """MobileViT classifier (see the module docstring for the layout).

    Parameters
    ----------
    num_classes : outputs of the final Linear (the paper: 3, positive / negative / surprise).
    in_chans : input channels (1 for grayscale faces).
    channels : output channels of stem, layer1 .. layer5 and the head conv (7 values).
    dims : transformer widths d of the MobileViT blocks in layers 3, 4, 5.
    depths : transformer layers L of those blocks.
    expansion : MV2 expansion factor.
    heads : attention heads in every transformer layer.
    dropout : dropout before the classifier (the paper: 0.5).
    attn_dropout, ffn_dropout : dropouts inside the transformer layers (0: none).

    Input (B, in_chans, H, W) float, H and W multiples of 32.
    """

    def __init__(self, num_classes: int = 3, in_chans: int = 1,
                 channels: tuple[int, ...] = (16, 32, 64, 96, 128, 160, 640),
                 dims: tuple[int, ...] = (144, 192, 240), depths: tuple[int, ...] = (2, 4, 3),
                 expansion: int = 4, heads: int = 4, dropout: float = 0.5, attn_dropout: float = 0.0,
                 ffn_dropout: float = 0.0) -> None:
        super().__init__()
        if len(channels) != 7 or len(dims) != 3 or len(depths) != 3:
            raise ValueError(f"need 7 channels, 3 dims and 3 depths, got {len(channels)}, {len(dims)}, {len(depths)}")
        c0, c1, c2, c3, c4, c5, c_head = channels
        self.in_chans = in_chans
        self.num_features = c_head
        self.stem = ConvNormAct(in_chans, c0, 3, stride=2)
        self.layer1 = nn.Sequential(InvertedResidual(c0, c1, 1, expansion))
        self.layer2 = nn.Sequential(InvertedResidual(c1, c2, 2, expansion),
                                    InvertedResidual(c2, c2, 1, expansion),
                                    InvertedResidual(c2, c2, 1, expansion))
        blocks = []
        for c_in, c_out, dim, depth in zip((c2, c3, c4), (c3, c4, c5), dims, depths):
            blocks.append(nn.Sequential(
                InvertedResidual(c_in, c_out, 2, expansion),
                MobileViTBlock(c_out, dim, depth, heads, attn_dropout=attn_dropout, dropout=ffn_dropout)))
        self.layer3, self.layer4, self.layer5 = blocks
        self.head_conv = ConvNormAct(c5, c_head, 1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_head, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fresh random weights (:func:`mepipe.models.layers.init_conv_stack`)."""
        init_conv_stack(self)

    def stages(self) -> list[tuple[str, nn.Module]]:
        """The feature stages in forward order: stem, layer1 .. layer5, head_conv (not the
        classifier), for progressive unfreezing."""
        return [(name, getattr(self, name))
                for name in ("stem", "layer1", "layer2", "layer3", "layer4", "layer5", "head_conv")]

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"MobileViT expects input (B, {self.in_chans}, H, W), got shape {tuple(x.shape)}")
        if x.shape[-2] % STRIDE or x.shape[-1] % STRIDE:
            raise ValueError(f"MobileViT needs H and W multiples of {STRIDE} (five stride-2 stages), "
                             f"got input of shape {tuple(x.shape)}")

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, in_chans, H, W) -> pooled head features (B, 640), before dropout and classifier."""
        self._check_input(x)
        for _, stage in self.stages():
            x = stage(x)
        return x.mean(dim=(-2, -1))

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_chans, H, W) -> logits (B, num_classes)."""
        return self.classifier(self.dropout(self.forward_features(x)))

    def transfer_modules(self) -> list[tuple[str, nn.Module]]:
        """The convolutional part the paper pre-trains on macro-expressions and transfers: the stem
        and every MV2 block (layer1.0, layer2.0-2, and the first block of layers 3-5), in forward
        order, with their names in :meth:`state_dict`."""
        names = ["stem", "layer1.0", "layer2.0", "layer2.1", "layer2.2", "layer3.0", "layer4.0", "layer5.0"]
        return [(name, self.get_submodule(name)) for name in names]

    def transfer_state_dict(self) -> dict[str, Tensor]:
        """The :meth:`state_dict` entries of :meth:`transfer_modules` (weights and BatchNorm
        statistics) under their full names. Like ``state_dict`` the tensors share storage with the
        model: clone them to keep a snapshot while training goes on."""
        return {f"{name}.{key}": value for name, module in self.transfer_modules()
                for key, value in module.state_dict().items()}

    def load_transfer_state_dict(self, state: dict[str, Tensor]) -> None:
        """Copy transferred weights (from :meth:`transfer_state_dict` of another model) in place.

        ``state`` must hold exactly the transfer keys with this model's shapes; ValueError names
        the missing, unexpected or mis-shaped keys otherwise (a 3-channel stem into a 1-channel
        model, say). Everything else keeps its values."""
        own = self.transfer_state_dict()
        missing = sorted(own.keys() - state.keys())
        unexpected = sorted(state.keys() - own.keys())
        shapes = [f"{key}: got {tuple(state[key].shape)}, model has {tuple(own[key].shape)}"
                  for key in own.keys() & state.keys() if state[key].shape != own[key].shape]
        if missing or unexpected or shapes:
            parts = []
            if missing:
                parts.append(f"missing {len(missing)} keys (first: {missing[:3]})")
            if unexpected:
                parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[:3]})")
            if shapes:
                parts.append("shape mismatch: " + "; ".join(sorted(shapes)[:3]))
            raise ValueError("load_transfer_state_dict: " + ", ".join(parts))
        with torch.no_grad():
            for key, value in state.items():
                own[key].copy_(value)

    def _decay_ids(self) -> set[int]:
        return {id(m.weight) for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}

    def decay_parameters(self) -> list[nn.Parameter]:
        """Weights that get L2 / weight decay: every Conv2d and Linear weight (the paper's
        "convolutional and fully connected layers")."""
        decay = self._decay_ids()
        return [p for p in self.parameters() if id(p) in decay]

    def no_decay_parameters(self) -> list[nn.Parameter]:
        """Every other parameter: biases and BatchNorm / LayerNorm scales and shifts."""
        decay = self._decay_ids()
        return [p for p in self.parameters() if id(p) not in decay]


def mobilevit_s(num_classes: int = 3, in_chans: int = 1, dropout: float = 0.5) -> MobileViT:
    """MobileViT-S with the paper's Table 1 widths and depths; input (B, in_chans, H, W), H and W
    multiples of 32 (the paper: 256 x 256). 5,578,632 parameters for 1000 classes and 3 channels,
    4,939,267 for 3 classes and 1 channel."""
    return MobileViT(num_classes=num_classes, in_chans=in_chans, dropout=dropout)
