"""CVA + FPF + AU: the dual-stream micro-expression network of "A novel approach for
micro-expression recognition incorporating vertical attention and position localization"
(anonymous, under review; ``/work/shared/papers/cva-fpf-swin-au.md``), in plain PyTorch.

Inputs: ``frames`` (B, 2 C, S, S) float, the onset frame's C channels then the apex frame's (C =
``in_chans``: 3 for colour, R, G, B, the project's variant for this model; 1 for gray; the paper
feeds 224 x 224 faces), and ``action_units`` (B, 21) in {0, 1}, the AU activity vector
(Section 3.3). Output: logits (B, num_classes). :meth:`CVANet.forward_features` gives the MLP's
input (B, 512 * (S/16)^2 + 21): the flattened fused map with the AU vector appended.

Layout (Figure 1; sizes for S = 224)::

    motion stream    apex - onset (C x 224 x 224)
                     CVA block (Section 3.1): four CVA modules, each halving the map
                       64 x 112 x 112 -> 128 x 56 x 56 -> 256 x 28 x 28 -> 512 x 14 x 14  = F_M
    position stream  onset and apex separately through one FPF (Section 3.2), a Swin Transformer:
                       4 x 4 patch embedding -> 128 x 56 x 56, stage 1 (2 blocks, 4 heads)
                       patch merging -> 256 x 28 x 28, stage 2 (2 blocks, 8 heads)
                       patch merging -> 512 x 14 x 14, stage 3 (6 blocks, 16 heads), LayerNorm
                     F_POS = FPF(onset) + FPF(apex)                            512 x 14 x 14
    fusion           F_M + F_POS, flattened (100,352), concatenated with the 21 AU bits
    head             MLP: Linear -> GELU -> dropout -> Linear -> num_classes

One CVA module (equations (1), (2), (4)) on its input F^i (C_in x H x W)::

    F_conv   = f1x1(f3x3(F^i)) + f1x1'(F^i)             C x H/2 x W/2 (the 3x3 conv strides by 2)
    AttnY^i  = sigmoid(f2(act(BN(f1(P_AY(F_conv))))))  (x)  f1x1''(P_M(AttnY^(i-1)))    C x H/2 x 1
    out      = F_conv (.) AttnY^i                       every column reweighted by the vertical map

Readings chosen where the paper leaves a choice open (section / equation numbers of the paper):

- Widths and strides of the CVA block (3.1): the paper gives only the block's output,
  512 x 14 x 14 from a 224 input, and "four stacked CVA modules". Four modules that each halve
  the map with ResNet-18's widths 64, 128, 256, 512 (the paper's baseline, Table 2) give exactly
  that, with no stem the paper does not describe.
- Eq. (2)'s convolutions: "two layers of convolutional networks and a residual structure" is
  read as a ResNet unit: f3x3 = Conv3x3 (stride 2) + BN + ReLU, f1x1 = Conv1x1 + BN, the shortcut
  f1x1' = Conv1x1 (stride 2) + BN (a projection shortcut, as channels and size change), and a
  ReLU after the sum. Without the norms and the ReLU the four modules would be nearly linear.
- P_AY (eq. 1) "adaptive average pooling along the height dimension" is read as coordinate
  attention's pooling that *keeps* the height: the mean over the width, C x H x 1, so the
  attention is one weight per row and channel and "every column ... is reweighted by the
  vertical attention map" (eq. 4). Horizontal attention (the ablation of Table 3) keeps the
  width instead (C x 1 x W); both directions is coordinate attention (Hou et al. 2021): one
  shared f1 over the concatenated pools, separate f2 per direction, the two maps multiplied.
- The reduced width of f1 is max(8, C / 32) channels ("reduction factor max{8, C/32}", which is
  coordinate attention's ``mip = max(8, inp // 32)``).
- F_act (eq. 3) is implemented exactly as written, x * ReLU(x + 3) / 6. Coordinate attention's
  h-swish caps the ReLU at 6; the two agree for x <= 3, where batch-normed values almost always lie.
- Continuity (eq. 1): P_M, max pooling over height and width, brings the previous module's map to
  the current size (2 x 2 pooling, of which the size-1 axis keeps 1) and f1x1'' (a 1x1 conv with
  bias) to the current channel count; the first module has no previous map. With
  ``continuous=False`` (Table 4, "independent attention") every module uses only its own map.
- FPF (3.2): "128 flattened 2D patches" is read as Swin's embedding width C = 128 (4 x 4 patches,
  as in Swin; heads of width 32 in every stage: 128/4, 256/8, 512/16), window 7 (Swin's; 56, 28
  and 14 are multiples of 7), MLP ratio 4, absolute position embedding off, stochastic depth
  rising linearly to ``drop_path`` (Swin's schedule; the paper gives no rate). "Three
  downsampling layers" are the patch embedding and the two patch mergings, which bring the
  width to F_M's 512. The paper's "512 x 196 ... reshaped to 196 * 14 * 14" is read as
  512 x 14 x 14. One FPF (shared weights) encodes onset and apex ("we input each frame
  separately into the FPF module"). A map no larger than the window is attended whole and
  unshifted, as Swin does.
- Fusion and head (3.3): the sum F_M + F_POS is flattened *without pooling*, as the paper says,
  and concatenated with the AU vector; the MLP's hidden width (``mlp_hidden``, 256) and dropout
  (0.5) are not given by the paper. ``head_input="pool"`` averages the map over space first
  (MMNet's head) for a far smaller first layer.
- ViT ablation (Table 5): MMNet's position ViT (Li et al. 2022: embedding 512, depth 3, 4 heads,
  MLP ratio 2) with 16 x 16 patches, so that its token grid is F_M's (14 x 14 at 224), learned
  position embeddings, final LayerNorm.
- Single-frame ablation (Table 6): ``frames="apex"`` or ``"onset"`` runs the FPF on that frame
  alone; the CVA stream still sees apex - onset.

Sizes other than 224: S must be a multiple of 16 and every Swin stage map (S/4, S/8, S/16) a
multiple of the window (or no larger than it): 112 works with window 7, 64 with window 4.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ATTENTION_KINDS",
    "CVABlock",
    "CVAModule",
    "CVANet",
    "FPF_KINDS",
    "FRAME_CHOICES",
    "PatchMerging",
    "PositionViT",
    "SwinBlock",
    "SwinTransformer",
    "WindowAttention",
    "cva_net",
    "shifted_window_mask",
    "window_partition",
    "window_reverse",
]

ATTENTION_KINDS = ("vertical", "horizontal", "both")
FPF_KINDS = ("swin", "vit")
FRAME_CHOICES = ("both", "apex", "onset")
HEAD_INPUTS = ("flatten", "pool")
#: The CVA block and the FPF each reduce the side 16-fold (four halvings; 4 x 4 patches and two merges).
STRIDE = 16


# ---------------------------------------------------------------- CVA block (Section 3.1)

def paper_activation(x: Tensor) -> Tensor:
    """Eq. (3): F_act(x) = x * ReLU(x + 3) / 6."""
    return x * F.relu(x + 3) / 6


class CVAModule(nn.Module):
    """One continuous vertical attention module: eq. (2) features, eq. (1) attention, eq. (4) output.

    (B, in_ch, H, W) and the previous attention map (or None) -> (output (B, out_ch, H/2, W/2),
    this module's attention map). The map is (B, out_ch, H/2, 1) for ``vertical``, (B, out_ch, 1,
    W/2) for ``horizontal`` and a pair of both for ``both``. ``prev_ch`` is the previous module's
    width (None for the first module, or with ``continuous=False``).
    """

    def __init__(self, in_ch: int, out_ch: int, attention: str = "vertical", prev_ch: int | None = None,
                 stride: int = 2) -> None:
        super().__init__()
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION_KINDS)}, got {attention!r}")
        self.attention = attention
        # eq. (2): f1x1(f3x3(F)) + f1x1(F), read as a ResNet unit with a projection shortcut
        self.conv3x3 = nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
                                     nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))
        self.conv1x1 = nn.Sequential(nn.Conv2d(out_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
        # eq. (1): f1 reduces to max(8, C/32) channels, BN, F_act, f2 restores
        reduced = max(8, out_ch // 32)
        self.reduce = nn.Conv2d(out_ch, reduced, 1)
        self.reduce_norm = nn.BatchNorm2d(reduced)
        directions = ("y", "x") if attention == "both" else (("y",) if attention == "vertical" else ("x",))
        self.restore = nn.ModuleDict({d: nn.Conv2d(reduced, out_ch, 1) for d in directions})
        # f1x1 of eq. (1) on the max-pooled previous map: to this module's channel count
        self.previous = None if prev_ch is None else nn.ModuleDict(
            {d: nn.Conv2d(prev_ch, out_ch, 1) for d in directions})

    def features(self, x: Tensor) -> Tensor:
        """F_conv of eq. (2): (B, in_ch, H, W) -> (B, out_ch, H/2, W/2)."""
        return F.relu(self.conv1x1(self.conv3x3(x)) + self.shortcut(x))

    def attention_maps(self, features: Tensor, previous: dict[str, Tensor] | None) -> dict[str, Tensor]:
        """AttnY^i of eq. (1) (and its horizontal twin): direction ``y`` (B, C, H, 1), ``x`` (B, C, 1, W)."""
        h, w = features.shape[-2:]
        pooled = {}
        if "y" in self.restore:
            pooled["y"] = features.mean(dim=3, keepdim=True)                    # P_AY: (B, C, H, 1)
        if "x" in self.restore:
            pooled["x"] = features.mean(dim=2, keepdim=True).transpose(2, 3)    # P_AX: (B, C, W, 1)
        # coordinate attention encodes the pooled directions together through one f1 / BN / F_act
        joined = torch.cat(list(pooled.values()), dim=2)
        hidden = paper_activation(self.reduce_norm(self.reduce(joined)))
        parts = torch.split(hidden, [p.shape[2] for p in pooled.values()], dim=2)
        maps = {}
        for direction, part in zip(pooled, parts):
            weight = torch.sigmoid(self.restore[direction](part))
            maps[direction] = weight if direction == "y" else weight.transpose(2, 3)  # x: (B, C, 1, W)
        if self.previous is not None and previous is not None:
            for direction in maps:
                prior = previous[direction]
                # P_M: max pooling to this module's size (the size-1 axis stays 1)
                size = (h, 1) if direction == "y" else (1, w)
                if prior.shape[-2:] != size:
                    prior = F.adaptive_max_pool2d(prior, size)
                maps[direction] = maps[direction] * self.previous[direction](prior)
        return maps

    def forward(self, x: Tensor, previous: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        features = self.features(x)
        maps = self.attention_maps(features, previous)
        out = features
        for weight in maps.values():
            out = out * weight  # eq. (4): broadcast over the other axis
        return out, maps


class CVABlock(nn.Module):
    """Four stacked CVA modules (Figure 3): (B, in_ch, S, S) -> F_M (B, 512, S/16, S/16).

    ``continuous`` passes each module's attention map to the next (eq. 1); without it the
    modules attend independently (Table 4).
    """

    def __init__(self, in_ch: int = 1, widths: tuple[int, ...] = (64, 128, 256, 512), attention: str = "vertical",
                 continuous: bool = True) -> None:
        super().__init__()
        self.continuous = continuous
        modules, previous = [], None
        for width in widths:
            modules.append(CVAModule(in_ch, width, attention, previous if continuous else None))
            in_ch, previous = width, width
        self.layers = nn.ModuleList(modules)
        self.out_channels = widths[-1]

    def forward(self, x: Tensor, return_maps: bool = False):
        maps, every = None, []
        for layer in self.layers:
            x, maps = layer(x, maps if self.continuous else None)
            every.append(maps)
        return (x, every) if return_maps else x


# ---------------------------------------------------------------- Swin Transformer (FPF, Section 3.2)

class DropPath(nn.Module):
    """Stochastic depth: drops a residual branch per sample with probability ``rate`` in training."""

    def __init__(self, rate: float = 0.0) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


def window_partition(x: Tensor, window: int) -> Tensor:
    """(B, H, W, C) -> (B * nW, window * window, C), windows in raster order; H, W multiples of window."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: Tensor, window: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nW, window * window, C) -> (B, height, width, C)."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((height // window) * (width // window))
    x = windows.view(b, height // window, width // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, height, width, c)


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> Tensor:
    """(nW, window^2, window^2) additive mask: -100 between tokens that the cyclic shift brought
    into one window from different image regions (Swin, Liu et al. 2021, Section 3.2), else 0."""
    region = torch.zeros(1, height, width, 1)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for rows in cuts:
        for cols in cuts:
            region[:, rows, cols, :] = label
            label += 1
    ids = window_partition(region, window).squeeze(-1)                  # (nW, window^2)
    differs = ids.unsqueeze(1) != ids.unsqueeze(2)
    return differs.float() * -100.0


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window with a learned relative position bias.

    (B * nW, window^2, dim) and an optional (nW, window^2, window^2) mask -> same shape. The bias
    table holds (2 window - 1)^2 entries per head, indexed by the relative (dy, dx) of two tokens.
    """

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"Swin attention width {dim} is not divisible by {heads} heads")
        self.window, self.heads = window, heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # (N, N, 2), >= 0
        self.register_buffer("relative_index", relative[..., 0] * (2 * window - 1) + relative[..., 1],
                             persistent=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        bw, n, d = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q * self.scale) @ k.transpose(-2, -1)                     # (bw, heads, n, n)
        bias = self.relative_bias_table[self.relative_index.view(-1)].view(n, n, self.heads).permute(2, 0, 1)
        scores = scores + bias.unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            scores = scores.view(bw // windows, windows, self.heads, n, n) + mask[None, :, None]
            scores = scores.view(bw, self.heads, n, n)
        y = scores.softmax(dim=-1) @ v
        return self.proj(y.transpose(1, 2).reshape(bw, n, d))


class SwinBlock(nn.Module):
    """Swin Transformer block: x + W-MSA / SW-MSA(LN(x)), then x + MLP(LN(x)).

    Tokens (B, H * W, dim) of an H x W map -> same. ``shift`` > 0 rolls the map by -shift before
    the window attention (masked) and back after it. A map no larger than ``window`` is one
    window, unshifted.
    """

    def __init__(self, dim: int, resolution: int, heads: int, window: int = 7, shift: int = 0,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0) -> None:
        super().__init__()
        if resolution <= window:
            window, shift = resolution, 0
        if resolution % window:
            raise ValueError(f"a Swin stage of {resolution} x {resolution} tokens needs a window that divides it, "
                             f"got window {window}")
        self.resolution, self.window, self.shift = resolution, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.register_buffer("mask", shifted_window_mask(resolution, resolution, window, shift) if shift else None,
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        side = self.resolution
        y = self.norm1(x).view(b, side, side, d)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = window_reverse(self.attn(window_partition(y, self.window), self.mask), self.window, side, side)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(y.reshape(b, n, d))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """Swin's downsampling: each 2 x 2 group of tokens concatenated (4 dim), LayerNorm, Linear to 2 dim.
    Tokens (B, R * R, dim) -> (B, (R/2)^2, 2 dim)."""

    def __init__(self, dim: int, resolution: int) -> None:
        super().__init__()
        if resolution % 2:
            raise ValueError(f"patch merging needs an even map side, got {resolution}")
        self.resolution = resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        b, _, d = x.shape
        x = x.view(b, self.resolution, self.resolution, d)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * d)))


class SwinTransformer(nn.Module):
    """The FPF encoder: a three-stage Swin Transformer, (B, in_ch, S, S) -> (B, 4 embed, S/16, S/16).

    ``depths`` (2, 2, 6) and ``heads`` (4, 8, 16) are the paper's (4.3); ``embed_dim`` 128 its
    "128 ... patches" (3.2); ``window`` 7 and ``mlp_ratio`` 4 are Swin's.
    """

    def __init__(self, image_size: int = 224, in_ch: int = 1, embed_dim: int = 128,
                 depths: tuple[int, ...] = (2, 2, 6), heads: tuple[int, ...] = (4, 8, 16), window: int = 7,
                 patch: int = 4, mlp_ratio: float = 4.0, drop_path: float = 0.1) -> None:
        super().__init__()
        if len(depths) != len(heads):
            raise ValueError(f"need one head count per stage, got depths {depths} and heads {heads}")
        if image_size % (patch * 2 ** (len(depths) - 1)):
            raise ValueError(f"the Swin FPF needs an image side divisible by {patch * 2 ** (len(depths) - 1)}, "
                             f"got {image_size}")
        self.patch_embed = nn.Conv2d(in_ch, embed_dim, patch, stride=patch)
        self.patch_norm = nn.LayerNorm(embed_dim)
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        resolution, dim, stages, index = image_size // patch, embed_dim, [], 0
        for number, (depth, head_count) in enumerate(zip(depths, heads)):
            layers: list[nn.Module] = []
            if number:
                layers.append(PatchMerging(dim, resolution))
                resolution, dim = resolution // 2, dim * 2
            for block in range(depth):
                layers.append(SwinBlock(dim, resolution, head_count, window, shift=window // 2 if block % 2 else 0,
                                        mlp_ratio=mlp_ratio, drop_path=rates[index]))
                index += 1
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.norm = nn.LayerNorm(dim)
        self.out_channels, self.out_resolution = dim, resolution

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)                                  # (B, C, S/4, S/4)
        x = self.patch_norm(x.flatten(2).transpose(1, 2))        # (B, N, C)
        for stage in self.stages:
            x = stage(x)
        x = self.norm(x)
        b, n, d = x.shape
        return x.transpose(1, 2).reshape(b, d, self.out_resolution, self.out_resolution)


class PositionViT(nn.Module):
    """The ViT of the FPF ablation (Table 5), MMNet's position encoder: (B, in_ch, S, S) ->
    (B, dim, S/patch, S/patch). Patch embedding, learned position embedding, ``depth`` pre-norm
    encoder layers (``heads``, MLP ratio ``mlp_ratio``, GELU), final LayerNorm."""

    def __init__(self, image_size: int = 224, in_ch: int = 1, dim: int = 512, depth: int = 3, heads: int = 4,
                 patch: int = 16, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"the ViT FPF needs an image side divisible by its patch {patch}, got {image_size}")
        self.grid = image_size // patch
        self.patch_embed = nn.Conv2d(in_ch, dim, patch, stride=patch)
        self.position = nn.Parameter(torch.zeros(1, self.grid * self.grid, dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.out_channels, self.out_resolution = dim, self.grid

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.position
        tokens = self.norm(self.encoder(tokens))
        b, n, d = tokens.shape
        return tokens.transpose(1, 2).reshape(b, d, self.grid, self.grid)


# ---------------------------------------------------------------- the dual-stream network

class CVANet(nn.Module):
    """CVA + FPF + AU dual-stream network (see the module docstring).

    Parameters
    ----------
    num_classes : outputs (3 for the composite protocol; the paper uses 5).
    image_size : side S of the onset/apex frames (224, the paper's; a multiple of 16).
    in_chans : channels C of each frame: 1 (gray, the default) or 3 (colour); ``frames`` is then
        (B, 2 C, S, S), the onset's C channels first.
    attention : ``vertical`` (the paper's), ``horizontal`` or ``both`` (Table 3).
    continuous : pass attention maps between CVA modules (True, the paper's) or not (Table 4).
    position : FPF encoder, ``swin`` (the paper's) or ``vit`` (Table 5).
    frames : frames through the FPF: ``both`` (summed; the paper's), ``apex`` or ``onset`` (Table 6).
    use_au : concatenate the AU vector (True) or not (Table 7).
    num_aus : length of the AU vector (21, Section 3.3).
    window, drop_path : the Swin's window (7) and stochastic-depth rate.
    head_input : ``flatten`` (the paper's) or ``pool`` (spatial mean before the MLP).
    mlp_hidden, dropout : the MLP's hidden width and its dropout.
    """

    def __init__(self, num_classes: int = 3, image_size: int = 224, attention: str = "vertical",
                 continuous: bool = True, position: str = "swin", frames: str = "both", use_au: bool = True,
                 num_aus: int = 21, window: int = 7, drop_path: float = 0.1, head_input: str = "flatten",
                 mlp_hidden: int = 256, dropout: float = 0.5, in_chans: int = 1) -> None:
        super().__init__()
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1 channels per frame, got {in_chans}")
        if position not in FPF_KINDS:
            raise ValueError(f"position must be one of {', '.join(FPF_KINDS)}, got {position!r}")
        if frames not in FRAME_CHOICES:
            raise ValueError(f"frames must be one of {', '.join(FRAME_CHOICES)}, got {frames!r}")
        if head_input not in HEAD_INPUTS:
            raise ValueError(f"head_input must be one of {', '.join(HEAD_INPUTS)}, got {head_input!r}")
        if image_size % STRIDE:
            raise ValueError(f"image_size must be a multiple of {STRIDE}, got {image_size}")
        self.image_size, self.frames, self.use_au, self.num_aus = image_size, frames, use_au, num_aus
        self.head_input, self.in_chans = head_input, in_chans
        self.motion = CVABlock(in_chans, attention=attention, continuous=continuous)
        if position == "swin":
            self.position = SwinTransformer(image_size, in_chans, window=window, drop_path=drop_path)
        else:
            self.position = PositionViT(image_size, in_chans, dim=self.motion.out_channels)
        if self.position.out_channels != self.motion.out_channels:
            raise ValueError(f"the FPF gives {self.position.out_channels} channels, the CVA block "
                             f"{self.motion.out_channels}: they must match to be summed")
        side = image_size // STRIDE
        fused = self.motion.out_channels * (side * side if head_input == "flatten" else 1)
        self.num_features = fused + (num_aus if use_au else 0)
        self.head = nn.Sequential(nn.Linear(self.num_features, mlp_hidden), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(mlp_hidden, num_classes))
        self.reset_head()

    def reset_head(self) -> None:
        """Xavier-uniform MLP weights, zero biases (the rest keep PyTorch's and the Swin's inits)."""
        for m in self.head:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.position.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)  # Swin's / ViT's initialisation
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _check(self, frames: Tensor, action_units: Tensor | None) -> None:
        expected = (2 * self.in_chans, self.image_size, self.image_size)
        if frames.ndim != 4 or tuple(frames.shape[1:]) != expected:
            raise ValueError(f"CVANet expects frames (B, {expected[0]}, {self.image_size}, {self.image_size}) with onset "
                             f"and apex as channels ({self.in_chans} each), got {tuple(frames.shape)}")
        if self.use_au:
            if action_units is None:
                raise ValueError("CVANet was built with use_au=True but got no action-unit vectors")
            if tuple(action_units.shape) != (frames.shape[0], self.num_aus):
                raise ValueError(f"CVANet expects action units ({frames.shape[0]}, {self.num_aus}), "
                                 f"got {tuple(action_units.shape)}")

    def motion_features(self, frames: Tensor) -> Tensor:
        """F_M: the CVA block on apex - onset, (B, 512, S/16, S/16)."""
        c = self.in_chans
        return self.motion(frames[:, c:2 * c] - frames[:, :c])

    def position_features(self, frames: Tensor) -> Tensor:
        """F_POS: the FPF of each chosen frame, summed, (B, 512, S/16, S/16)."""
        c = self.in_chans
        if self.frames == "both":
            # one pass over the onsets and apexes stacked on the batch axis: the same encoder for both
            both = self.position(torch.cat([frames[:, :c], frames[:, c:2 * c]], dim=0))
            onset, apex = both.chunk(2, dim=0)
            return onset + apex
        first = c if self.frames == "apex" else 0
        return self.position(frames[:, first:first + c])

    def forward_features(self, frames: Tensor, action_units: Tensor | None = None) -> Tensor:
        """The MLP's input (B, num_features): (F_M + F_POS) flattened (or pooled), then the AU bits."""
        self._check(frames, action_units)
        fused = self.motion_features(frames) + self.position_features(frames)
        fused = fused.flatten(1) if self.head_input == "flatten" else fused.mean(dim=(2, 3))
        if self.use_au:
            fused = torch.cat([fused, action_units.to(fused.dtype)], dim=1)
        return fused

    def forward(self, frames: Tensor, action_units: Tensor | None = None) -> Tensor:
        return self.head(self.forward_features(frames, action_units))


def cva_net(num_classes: int = 3, attention: str = "vertical", continuous: bool = True, position: str = "swin",
            frames: str = "both", use_au: bool = True, image_size: int = 224, **kwargs) -> CVANet:
    """The paper's network (vertical, continuous attention; Swin FPF on both frames; AU vector) at
    ``image_size`` 224, or an ablation of it. Further keywords go to :class:`CVANet`."""
    return CVANet(num_classes=num_classes, image_size=image_size, attention=attention, continuous=continuous,
                  position=position, frames=frames, use_au=use_au, **kwargs)
