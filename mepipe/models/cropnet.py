"""CropNet with the Cropped Gaussian Pyramid with Overlapping (CGPO) of Zhao, Chen & Luo 2021
("Micro-Expression Recognition Based on Pixel Residual Sum and Cropped Gaussian Pyramid",
Front. Neurobot. 15:746985), in plain PyTorch.

Input: float tensor (B, in_chans, S, S), an ARS or RRS residual-sum image (section 3.1); the paper
feeds S = 320 and computes the residual sums on "the three-channel image" (eq. (5)), so its input
is colour, ``in_chans`` = 3 (the recipe's, from the store's 320 px colour variant); ``in_chans`` = 1
runs a gray residual image. Output: logits (B, num_classes); :meth:`CropNet.forward_features` gives the spliced
feature vector (B, 10 x 24) before the classifier.

Architecture (sections 3.2.2-3.2.4, Figure 3; sizes for S = 320)::

    CGPO          level 1: Gaussian pyramid down-sample 320 -> 160, kept whole   1 x 160 x 160   (z_0)
                  level 0: the 320 image cut into a 3 x 3 grid of 160 x 160
                           crops, neighbours overlapping by alpha = 0.3           9 x 160 x 160   (z_1 .. z_9)
    extractor     ReXNet-1.3x (Han et al. 2020), shared by the 10 crops:
                  stem Conv3x3 /2 -> 42, BN, SiLU                                    80 x 80 x 42
                  16 inverted bottlenecks (MB1 then MB6), channels rising
                  linearly 21 -> 240, strides 1,2,1,2,1,2,1,1,1,1,2,1,1,1,1,1        5 x 5 x 240
                  Conv1x1 -> 1664, BN, SiLU; adaptive average pool; dropout;
                  FC 1664 -> 24                                                      z_i in R^24
    fusion        z_i' = z_i + p_i for i = 1..9 (trainable p_i ~ N(0, 0.2)),
                  splice [z_0, z_1', .., z_9'] -> 240, FC 240 -> num_classes

Parameters: the paper states "approximately 7.6M" (section 3.2.1). That is ReXNet-1.3x's own
ImageNet count (Han et al. 2020: 7.6 M; ``rexnet(width_mult=1.3, num_classes=1000, in_chans=3)``
here has 7,557,091, and ReXNet-1.0x 4,796,873 against the published 4.8 M), the extractor the
paper pre-trains on ImageNet (section 3.2.3).
CropNet in its micro-expression configuration (``cropnet(in_chans=3)``: colour, 3 classes) has
5,932,990: the 1000-way ImageNet classifier (1,665,000 parameters) is replaced by the 24-way
feature layer (39,960), the 240 -> 3 classifier (723) and the 9 x 24 position embeddings; the
other 5.89 M are the same ReXNet-1.3x weights. On one gray channel (``cropnet()``, the default
``in_chans`` = 1) the stem has 756 fewer weights: 5,932,234.

Readings chosen where the paper leaves a choice open:

- **Which ReXNet.** Section 3.2.3 says "we use the ReXNet feature extraction module" and Figure 3
  shows the progressive channels; the width is not named. Width 1.3 is the one whose published
  size equals the paper's 7.6 M, so it is taken (ReXNet-1.0 would be 4.8 M). The blocks follow
  ReXNet's reference implementation: depth multiplier 1 (1, 2, 2, 3, 3, 5 blocks), expansion 1 for
  the first block and 6 after (Figure 3's "MB6"), squeeze-excitation (ratio 1/12) from the third
  stage on, ReLU6 after the depthwise convolution, SiLU after the stem and expansion convs, a
  linear projection, and the partial shortcut (the input is added to the first ``in`` channels
  when a stride-1 block widens).
- **CGPO geometry (section 3.2.2).** "Divide them into several 160 x 160 images and introduce the
  overlap factor alpha": every crop is S/2 a side (the down-sampled image is one crop, so the 10
  sub-images share one extractor at one size). Neighbouring crops of the 3 x 3 grid overlap by
  exactly alpha of the crop side: stride round(S/2 x (1 - alpha)) = 112 px at S = 320. Three such
  crops span 384 px, wider than 320, so the grid is centred on the image and the 32 px beyond each
  border are zeros; for a residual-sum image zero is "no motion", which is what lies outside the
  aligned face crop. (The alternative, a 3 x 3 grid of 160 crops inside 320 px, would force an
  overlap of 0.5, not the paper's 0.3.) Crop order: z_0 the down-sampled whole image, then z_1 ..
  z_9 the grid row by row, top-left first.
- **Gaussian pyramid down-sample.** The 5 x 5 binomial kernel ([1, 4, 6, 4, 1] / 16, separable)
  and every second pixel, with mirrored borders (``cv2.pyrDown``'s BORDER_REFLECT_101).
- **Which 9 get position embeddings.** Equation (8) adds p_i to z_i for 0 < i < 10: the 9 grid
  crops, whose place in the face the crop loses; z_0 is the whole face and carries none.
  "Variance 0.2" is a standard deviation of sqrt(0.2).
- **"Splicing and classifying".** Concatenation of the ten 24-d vectors and one fully connected
  layer (no hidden layer: none is drawn or described).
- **Without CGPO (Table 4's ablation, ``cgpo=False``).** The extractor sees the whole S x S image
  once; its single 24-d vector is classified by a 24 -> num_classes layer; there are no position
  embeddings.
- Convolutions followed by BatchNorm have no bias (as in the reference ReXNet); the SE convs and
  the fully connected layers have biases.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import init_conv_stack

__all__ = [
    "CroppedGaussianPyramid",
    "CropNet",
    "LinearBottleneck",
    "ReXNet",
    "SqueezeExcite",
    "cropnet",
    "gaussian_pyramid_down",
    "rexnet",
]

#: Section 3.2.2: "alpha is 0.3".
CGPO_OVERLAP = 0.3
#: Section 3.2.2: the 320 image is cut into a grid of sub-images (3 x 3 gives the paper's 9 + 1 = 10).
CGPO_GRID = 3
#: Section 3.2.4: "become a feature vector z_i in R^24".
FEATURE_DIM = 24
#: Section 3.2.4: position embeddings drawn from N(0, variance 0.2).
POSITION_VARIANCE = 0.2
#: Section 3.2.2: "we require 320 x 320 resolution of the image input".
PAPER_SIZE = 320
#: ReXNet-1.3x: the width whose ImageNet model has the paper's 7.6 M parameters.
PAPER_WIDTH = 1.3
#: The extractor halves its map five times (a smaller map ends at 1 x 1, which still works).
EXTRACTOR_STRIDE = 32
#: Smallest CGPO input: 8 px crops, enough for the pyramid's 5-tap blur and a 1 x 1 final map.
MIN_SIZE = 16

# ReXNet's reference configuration (Han et al. 2020; clovaai/rexnet ``ReXNetV1``).
_STAGE_BLOCKS = (1, 2, 2, 3, 3, 5)
_STAGE_STRIDES = (1, 2, 2, 2, 1, 2)
_STAGE_SE = (False, False, True, True, True, True)
_FIRST_CHANNELS = 16   # the first bottleneck's output before the width multiplier
_CHANNEL_GROWTH = 180  # channels added, linearly, across the bottlenecks
_STEM_CHANNELS = 32
_PENULTIMATE = 1280
_SE_RATIO = 12


def gaussian_pyramid_down(x: Tensor) -> Tensor:
    """One Gaussian pyramid level down: (B, C, H, W) -> (B, C, ceil(H/2), ceil(W/2)).

    The 5 x 5 binomial blur ([1, 4, 6, 4, 1] / 16 in each direction) with mirrored borders
    (reflect-101, as ``cv2.pyrDown``), then every second row and column from the first.
    """
    if x.ndim != 4 or min(x.shape[-2:]) < 3:
        raise ValueError(f"gaussian_pyramid_down expects (B, C, H, W) with H, W >= 3, got shape {tuple(x.shape)}")
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16.0
    channels = x.shape[1]
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    # separable: rows then columns, one depthwise conv each
    rows = F.conv2d(padded, taps.view(1, 1, 1, 5).expand(channels, 1, 1, 5), groups=channels)
    blurred = F.conv2d(rows, taps.view(1, 1, 5, 1).expand(channels, 1, 5, 1), groups=channels)
    return blurred[..., ::2, ::2]


class CroppedGaussianPyramid(nn.Module):
    """CGPO (section 3.2.2): (B, C, S, S) -> (B, 1 + grid**2, C, S/2, S/2).

    Sub-image 0 is the image one Gaussian pyramid level down (S/2 a side, whole); sub-images
    1 .. grid**2 are crops of S/2 a side from the full-resolution image on a grid x grid lattice,
    row by row, whose neighbours overlap by ``overlap`` of the crop side. The lattice is centred on
    the image; where it reaches past the border (it does for the paper's 3 x 3 at 0.3) the image is
    padded with zeros. ``boxes`` gives each crop's (top, left) in image pixels (may be negative).
    """

    def __init__(self, size: int = PAPER_SIZE, overlap: float = CGPO_OVERLAP, grid: int = CGPO_GRID) -> None:
        super().__init__()
        if size < MIN_SIZE or size % 2:
            raise ValueError(f"CGPO size must be even and >= {MIN_SIZE}, got {size}")
        if not 0.0 <= overlap < 1.0:
            raise ValueError(f"CGPO overlap must be a fraction in [0, 1), got {overlap}")
        if grid < 1:
            raise ValueError(f"CGPO grid must be >= 1 crops a side, got {grid}")
        self.size, self.overlap, self.grid = size, overlap, grid
        self.crop = size // 2
        self.stride = round(self.crop * (1.0 - overlap))
        span = self.crop + (grid - 1) * self.stride
        first = (size - span) // 2  # negative: the lattice reaches past the border by that much
        self.starts = tuple(first + k * self.stride for k in range(grid))
        self.pad = max(0, -self.starts[0], self.starts[-1] + self.crop - size)

    @property
    def count(self) -> int:
        """Number of sub-images: the down-sampled whole image and the grid crops."""
        return 1 + self.grid * self.grid

    @property
    def boxes(self) -> list[tuple[int, int]]:
        """(top, left) of each grid crop in the full-resolution image, row by row."""
        return [(top, left) for top in self.starts for left in self.starts]

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or tuple(x.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"CGPO expects (B, C, {self.size}, {self.size}), got shape {tuple(x.shape)}")
        down = gaussian_pyramid_down(x)
        padded = F.pad(x, (self.pad,) * 4) if self.pad else x
        crops = [down]
        for top, left in self.boxes:
            top, left = top + self.pad, left + self.pad
            crops.append(padded[..., top:top + self.crop, left:left + self.crop])
        return torch.stack(crops, dim=1)


class ConvNormAct(nn.Sequential):
    """k x k convolution (no bias), BatchNorm, then ``act`` (an activation module or None)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 act: nn.Module | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = act if act is not None else nn.Identity()


class SqueezeExcite(nn.Module):
    """ReXNet's squeeze-excitation: global pool, 1x1 conv to channels/12, BN, ReLU, 1x1 conv,
    sigmoid gate. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int, ratio: int = _SE_RATIO) -> None:
        super().__init__()
        hidden = channels // ratio
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.bn = nn.BatchNorm2d(hidden)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.expand(F.relu(self.bn(self.reduce(F.adaptive_avg_pool2d(x, 1)))))
        return x * torch.sigmoid(gate)


class LinearBottleneck(nn.Module):
    """ReXNet's inverted bottleneck (MobileNetV2's MB with ReXNet's changes):
    [1x1 expand x ``expansion``, BN, SiLU] (absent for expansion 1), 3x3 depthwise with the stride,
    BN, [SE], ReLU6, 1x1 linear projection, BN. (B, in, H, W) -> (B, out, H / stride, W / stride).

    A stride-1 block that keeps or widens the channels adds its input to the first ``in`` output
    channels (ReXNet's partial shortcut)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int, use_se: bool) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"bottleneck stride must be 1 or 2, got {stride}")
        hidden = in_ch * expansion
        self.in_ch, self.out_ch = in_ch, out_ch
        self.expand = ConvNormAct(in_ch, hidden, 1, act=nn.SiLU()) if expansion != 1 else nn.Identity()
        self.depthwise = ConvNormAct(hidden, hidden, 3, stride=stride, groups=hidden)
        self.se = SqueezeExcite(hidden) if use_se else nn.Identity()
        self.act = nn.ReLU6()
        # No activation after the projection: the linear bottleneck, a non-linearity on the
        # narrow output would destroy information (Sandler et al. 2018).
        self.project = ConvNormAct(hidden, out_ch, 1)
        self.shortcut = stride == 1 and in_ch <= out_ch

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.act(self.se(self.depthwise(self.expand(x)))))
        if self.shortcut:
            out = torch.cat([out[:, :self.in_ch] + x, out[:, self.in_ch:]], dim=1)
        return out


def _bottleneck_plan(width_mult: float) -> list[tuple[int, int, int, int, bool]]:
    """(in, out, stride, expansion, SE) of each bottleneck, as ReXNet's reference computes them:
    the output channels grow by 180 / 16 per block from 16 (before the width multiplier)."""
    blocks = sum(_STAGE_BLOCKS)
    strides = [s for n, stride in zip(_STAGE_BLOCKS, _STAGE_STRIDES) for s in [stride] + [1] * (n - 1)]
    use_se = [se for n, flag in zip(_STAGE_BLOCKS, _STAGE_SE) for se in [flag] * n]
    expansions = [1] * _STAGE_BLOCKS[0] + [6] * (blocks - _STAGE_BLOCKS[0])
    stem = _STEM_CHANNELS / width_mult if width_mult < 1.0 else _STEM_CHANNELS
    planes = _FIRST_CHANNELS / width_mult if width_mult < 1.0 else _FIRST_CHANNELS
    plan = []
    for index in range(blocks):
        if index == 0:
            in_ch, out_ch = int(round(stem * width_mult)), int(round(planes * width_mult))
        else:
            in_ch = int(round(planes * width_mult))
            planes += _CHANNEL_GROWTH / blocks
            out_ch = int(round(planes * width_mult))
        plan.append((in_ch, out_ch, strides[index], expansions[index], use_se[index]))
    return plan


class ReXNet(nn.Module):
    """ReXNet (Han et al. 2020, "ReXNet: Diminishing Representational Bottleneck on Convolutional
    Neural Network", arXiv:2007.00992) at ``width_mult``: (B, in_chans, H, W) -> (B, num_classes).

    :meth:`forward_features` gives the pooled (B, 1280 x width_mult) vector before dropout and the
    fully connected layer. Any H, W work (adaptive pooling); the map shrinks 32-fold, to 1 x 1 at
    least.
    """

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, width_mult: float = PAPER_WIDTH,
                 dropout: float = 0.2) -> None:
        super().__init__()
        if width_mult <= 0:
            raise ValueError(f"ReXNet width_mult must be > 0, got {width_mult}")
        self.in_chans, self.width_mult = in_chans, width_mult
        plan = _bottleneck_plan(width_mult)
        self.stem = ConvNormAct(in_chans, plan[0][0], 3, stride=2, act=nn.SiLU())
        self.blocks = nn.Sequential(*(LinearBottleneck(*spec) for spec in plan))
        self.num_features = int(_PENULTIMATE * width_mult)
        self.head_conv = ConvNormAct(plan[-1][1], self.num_features, 1, act=nn.SiLU())
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.num_features, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Fresh random weights (:func:`mepipe.models.layers.init_conv_stack`)."""
        init_conv_stack(self)

    def stages(self) -> list[tuple[str, nn.Module]]:
        """stem, the bottlenecks (``block0`` .. ``block15``) and head_conv, in forward order."""
        return [("stem", self.stem), *((f"block{i}", b) for i, b in enumerate(self.blocks)),
                ("head_conv", self.head_conv)]

    def forward_features(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"ReXNet expects (B, {self.in_chans}, H, W), got shape {tuple(x.shape)}")
        return F.adaptive_avg_pool2d(self.head_conv(self.blocks(self.stem(x))), 1).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(self.forward_features(x)))


class CropNet(nn.Module):
    """CropNet (section 3.2, Figure 3): CGPO, a shared ReXNet extractor giving a 24-d vector per
    sub-image, position embeddings on the 9 grid crops, splice, classify.

    (B, in_chans, size, size) -> (B, num_classes); with ``cgpo=False`` the extractor sees the whole
    image once (Table 4's "without CGPO").
    """

    def __init__(self, num_classes: int = 3, in_chans: int = 1, size: int = PAPER_SIZE, cgpo: bool = True,
                 overlap: float = CGPO_OVERLAP, grid: int = CGPO_GRID, width_mult: float = PAPER_WIDTH,
                 feature_dim: int = FEATURE_DIM, dropout: float = 0.2) -> None:
        super().__init__()
        self.in_chans, self.size, self.use_cgpo = in_chans, size, cgpo
        if cgpo:
            self.cgpo = CroppedGaussianPyramid(size, overlap, grid)
            sub_images = self.cgpo.count
        else:
            if size < MIN_SIZE:
                raise ValueError(f"CropNet size must be >= {MIN_SIZE}, got {size}")
            self.cgpo = None
            sub_images = 1
        self.sub_images, self.feature_dim = sub_images, feature_dim
        self.extractor = ReXNet(num_classes=feature_dim, in_chans=in_chans, width_mult=width_mult, dropout=dropout)
        if cgpo:
            # One embedding per grid crop; z_0 (the whole down-sampled face) has no position to learn.
            self.position = nn.Parameter(torch.randn(sub_images - 1, feature_dim) * math.sqrt(POSITION_VARIANCE))
        else:
            self.register_parameter("position", None)
        self.classifier = nn.Linear(sub_images * feature_dim, num_classes)
        nn.init.xavier_uniform_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.in_chans or tuple(x.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"CropNet expects input (B, {self.in_chans}, {self.size}, {self.size}), "
                             f"got shape {tuple(x.shape)}")

    def sub_image_features(self, x: Tensor) -> Tensor:
        """(B, sub_images, 24) vectors z_i (position embeddings added to z_1 .. z_9)."""
        self._check_input(x)
        if self.cgpo is None:
            return self.extractor(x)[:, None]
        crops = self.cgpo(x)  # (B, 10, C, S/2, S/2)
        batch = crops.shape[0]
        z = self.extractor(crops.flatten(0, 1)).view(batch, self.sub_images, self.feature_dim)
        return torch.cat([z[:, :1], z[:, 1:] + self.position], dim=1)

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, sub_images x 24): the spliced vector the classifier sees."""
        return self.sub_image_features(x).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.forward_features(x))


def rexnet(num_classes: int = 1000, in_chans: int = 3, width_mult: float = PAPER_WIDTH, dropout: float = 0.2) -> ReXNet:
    """A ReXNet classifier; the defaults are the ImageNet ReXNet-1.3x the paper's 7.6 M refers to."""
    return ReXNet(num_classes=num_classes, in_chans=in_chans, width_mult=width_mult, dropout=dropout)


def cropnet(num_classes: int = 3, in_chans: int = 1, cgpo: bool = True, size: int = PAPER_SIZE,
            overlap: float = CGPO_OVERLAP, dropout: float = 0.2) -> CropNet:
    """CropNet at the paper's configuration (ReXNet-1.3x extractor, 3 x 3 + 1 CGPO, 24-d vectors)."""
    return CropNet(num_classes=num_classes, in_chans=in_chans, size=size, cgpo=cgpo, overlap=overlap, dropout=dropout)
