"""MFVAN, the multi-scale fusion visual attention network of Pan, Yang, Xie & Wang 2023
("Multi-scale fusion visual attention network for facial micro-expression recognition",
Front. Neurosci. 17:1216181), in plain PyTorch.

Input: the ``face`` artifact's (onset, apex) pair, float (B, 2 C, H, W) in 0..1, the onset's C
channels then the apex's (C = ``in_chans``: 3 for colour, R, G, B, the variant the recipe reads;
1 for gray, the default), with H = W a multiple of ``4 * tokens_per_side``; we work on 224 x 224
faces (the paper gives no size). By default (``identity_source="student"``) a prediction reads the
apex channels only; the onset's are the training target of eq. (2)-(3). Output: logits
(B, num_classes); :meth:`MFVAN.forward_outputs` gives everything the losses of equation (9) need.

Architecture (feature maps for the default 224 x 224 input, ``tokens_per_side`` s = 14)::

    identity removal (section 3.1, Figure 3)
      teacher  Conv3x3 /2 C->32, Conv3x3 /2 32->64, 4 residual blocks (64), Deconv x2 64->32, Deconv x2 32->C
               (pre-trained to reconstruct every frame, eq. (1); then maps apex -> onset, eq. (2))
      student  Conv3x3 /2 C->32 (E1: 112 x 112 x 32), Conv3x3 /2 32->64 (E2: 56 x 56 x 64),
               Deconv x2 64->32, Deconv x2 32->C: maps apex -> onset, eq. (3), and follows the
               teacher's onset from the same apex (the soft target of section 3.1, L_distill)
    scales (section 3.2)                                   map              patch   tokens
      1  change image      apex - identity image           224 x 224 x C    16      14 x 14
      2  change features   E1(apex) - E1(identity image)   112 x 112 x 32    8      14 x 14
      3  change features   E2(apex) - E2(identity image)    56 x  56 x 64    4      14 x 14
    per scale: BatchNorm, patch embedding (conv, kernel = stride = patch) -> q = ``dim``, class token,
      position embedding (eq. (5), (6)), L pre-norm transformer layers (eq. (8)), a classifier on
      the class token (p_i of eq. (9))
    masking: the class token's attention to the patches in the last layer (heads averaged), f_c;
      patches with f_c >= theta / k are kept (eq. (7), (11))
    fusion: the mean of the kept patch tokens of each scale, averaged over the scales,
      MLP_f (LayerNorm, Linear q->q, GELU, Linear q->classes) -> logits (eq. (7))

Readings chosen where the paper leaves a choice open:

- **What removes identity** (section 3.1). The paper maps the apex frame to the onset frame (the
  "identity image") with the student and calls the result "global change features". We read the
  change as the apex *minus* the identity image, at every scale: the image itself and the student
  encoder's two feature maps E1, E2 (the "first and second convolutional feature map scales" of
  section 4.5). ``identity_source`` picks the identity image: ``"student"`` (the default, the
  paper's) is the student's reconstruction of the onset from the apex alone, so a prediction reads
  the apex frame only and the onset frame is nothing but the training target of eq. (2)-(3);
  ``"onset"`` (a deviation from the paper) uses the sample's own onset frame, which the paper calls
  the identity image ("the onset frame can be considered as an identity image"), with the student's
  encoder still giving the feature scales: an apex-minus-onset network. ``identity_removal=False``
  (the paper's "Global" vs "Global+RI", Table 3) feeds the apex and E1(apex), E2(apex) unchanged.
- **The teacher-to-student term** (section 3.1). The paper's teacher "is used as a soft target to
  guide shallow student networks so that a simpler student model with fewer parameters can have a
  similar performance as the teacher network", and both are "jointly trained" on "the apex frame
  input" to "output the onset frame", "optimized by the mean squared error (MSE) loss function of
  the two models". Its printed eq. (2)-(4) hold only each network's error against the true onset,
  L_remove = L_teacher + L_student; the soft-target term has no equation of its own. We write it
  in the form of eq. (2)-(3) with the teacher's output in place of the onset,
  L_distill = 1/(N M) sum_i sum_j |x'_onset,i,j - x''_onset,i,j|^2 (x' the teacher's and x'' the
  student's onset from the same apex frame, M pixels x channels), a soft target: the teacher's
  output is detached, so the term moves the student only and the teacher learns from eq. (2).
  It joins L_remove with weight 1, the weight eq. (4) and eq. (9) give every term
  (:func:`distillation_loss`; the recipe's ``distill_weight``, 0 for the printed eq. (4) alone).
- **Sizes.** The paper gives none: the teacher/student widths above, ``dim`` q = 192 and 3 heads
  (ViT-Tiny, Dosovitskiy et al. 2021, which the paper cites), ``depth`` L = 4, MLP ratio 4, and
  s x s = 14 x 14 tokens at every scale (a 16 x 16 patch of a 224 face, as in ViT) are our choices.
- **Scales** (Table 3): ``scales=1`` is the change image alone, 2 adds E1, 3 adds E2.
- **theta** (eq. (7), (11)) is given relative to the uniform attention weight 1/k (k = s x s
  patches): ``theta = 1`` keeps the patches the class token attends to more than average. The
  patch with the highest weight is always kept, so the fused feature is never empty.
- **The fused feature** "1/3 sum_i f'_{i,L}, f_c >= theta" (eq. (7)) is read as: per scale, the
  mean of the output tokens of the kept patches; averaged over the scales used.
- **Mask loss** (eq. (11)): the sum of the kept patches' weights f_c, averaged over the scales and
  the batch. Its gradient reaches the attention weights only (the keep/drop choice is a hard
  threshold, as the paper's mask operation).
- BatchNorm before each scale's patch embedding: the change maps are small (the motion is a few
  pixels) next to the position embeddings; normalising them keeps them from being drowned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import EncoderLayer

__all__ = [
    "IdentityRemoval",
    "MFVAN",
    "ResidualBlock",
    "ScaleTransformer",
    "StudentAutoencoder",
    "TeacherAutoencoder",
    "distillation_loss",
    "focal_loss",
    "mfvan",
]

#: The student encoder halves the map twice: the input side must be a multiple of 4 x tokens_per_side.
STRIDE = 4
#: What the identity image is: the student's onset from the apex (the paper's), or the true onset frame.
IDENTITY_SOURCES = ("student", "onset")


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


def _deconv_bn_relu(in_ch: int, out_ch: int) -> nn.Sequential:
    """Transposed 4x4 convolution doubling the side: (B, in, H, W) -> (B, out, 2H, 2W)."""
    return nn.Sequential(nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity shortcut (He et al. 2016); (B, C, H, W) -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn_relu(channels, channels),
                                  nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x))


class TeacherAutoencoder(nn.Module):
    """The teacher of section 3.1: "multiple residual modules at the image encoder and then
    returned to the original image by deconvolution". (B, C, H, W) in 0..1 -> (B, C, H, W) in 0..1,
    C = ``in_chans``."""

    def __init__(self, width: int = 32, blocks: int = 4, in_chans: int = 1) -> None:
        super().__init__()
        self.encoder = nn.Sequential(_conv_bn_relu(in_chans, width, 2), _conv_bn_relu(width, 2 * width, 2),
                                     *[ResidualBlock(2 * width) for _ in range(blocks)])
        self.decoder = nn.Sequential(_deconv_bn_relu(2 * width, width),
                                     nn.ConvTranspose2d(width, in_chans, 4, stride=2, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.decoder(self.encoder(x)))


class StudentAutoencoder(nn.Module):
    """The shallow student of section 3.1: apex -> onset. (B, C, H, W) in 0..1 -> (B, C, H, W) in 0..1.

    :meth:`encode` also returns its two encoder maps, E1 (B, width, H/2, W/2) and E2
    (B, 2 width, H/4, W/4): the second and third scales of the transformer.
    """

    def __init__(self, width: int = 32, in_chans: int = 1) -> None:
        super().__init__()
        self.layer1 = _conv_bn_relu(in_chans, width, 2)
        self.layer2 = _conv_bn_relu(width, 2 * width, 2)
        self.decoder = nn.Sequential(_deconv_bn_relu(2 * width, width),
                                     nn.ConvTranspose2d(width, in_chans, 4, stride=2, padding=1))

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        first = self.layer1(x)
        return first, self.layer2(first)

    def decode(self, deepest: Tensor) -> Tensor:
        """E2 (B, 2 width, H/4, W/4) -> the onset image (B, C, H, W) in 0..1."""
        return torch.sigmoid(self.decoder(deepest))

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x)[1])


class IdentityRemoval(nn.Module):
    """Teacher and student (section 3.1); :meth:`change_maps` gives the identity-removed scales."""

    def __init__(self, width: int = 32, teacher_blocks: int = 4, in_chans: int = 1) -> None:
        super().__init__()
        self.teacher = TeacherAutoencoder(width, teacher_blocks, in_chans)
        self.student = StudentAutoencoder(width, in_chans)

    @property
    def map_channels(self) -> tuple[int, int, int]:
        first = self.student.layer1[0]
        return (first.in_channels, first.out_channels, 2 * first.out_channels)


class ScaleTransformer(nn.Module):
    """One scale's ViT (eq. (5), (6), (8)): a map (B, C, H, W) -> output tokens (B, 1 + k, dim),
    class token first, and the class token's last-layer attention to the k = (H / patch)^2 patches,
    heads averaged and renormalised over the patches: (B, k), rows summing to 1."""

    def __init__(self, in_ch: int, patch: int, tokens: int, dim: int, depth: int, heads: int,
                 mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.patch, self.tokens = patch, tokens
        self.norm_in = nn.BatchNorm2d(in_ch)
        self.embed = nn.Conv2d(in_ch, dim, patch, stride=patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position = nn.Parameter(torch.zeros(1, tokens, dim))
        nn.init.trunc_normal_(self.class_token, std=0.02)
        nn.init.trunc_normal_(self.position, std=0.02)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        patches = self.embed(self.norm_in(x)).flatten(2).transpose(1, 2)  # (B, k, dim)
        if patches.shape[1] != self.tokens:
            raise ValueError(f"map of {tuple(x.shape[-2:])} with patch {self.patch} gives {patches.shape[1]} "
                             f"tokens, expected {self.tokens}")
        tokens = torch.cat([self.class_token.expand(len(x), -1, -1), patches + self.position], dim=1)
        for layer in self.layers:
            tokens, weights = layer(tokens)
        to_patches = weights[:, :, 0, 1:].mean(dim=1)
        return self.norm(tokens), to_patches / to_patches.sum(dim=1, keepdim=True)


class MFVAN(nn.Module):
    """See the module docstring. ``forward(faces)`` -> logits (B, num_classes); ``faces`` (B, 2 C,
    H, W), C = ``in_chans`` channels per frame (3 colour, 1 gray), the onset's then the apex's.

    With ``identity_source="student"`` (the default, section 3.1) the prediction reads the apex
    channels only: the onset's are read in training, as the target of eq. (2)-(3), and nowhere
    else. ``"onset"`` (not the paper's) subtracts the true onset frame instead."""

    def __init__(self, num_classes: int = 3, identity_removal: bool = True, scales: int = 3, theta: float = 1.0,
                 identity_source: str = "student", image_size: int = 224, tokens_per_side: int = 14, dim: int = 192,
                 depth: int = 4, heads: int = 3, mlp_ratio: float = 4.0, width: int = 32, teacher_blocks: int = 4,
                 dropout: float = 0.1, in_chans: int = 1) -> None:
        super().__init__()
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1 channels per frame, got {in_chans}")
        if scales not in (1, 2, 3):
            raise ValueError(f"scales must be 1, 2 or 3 (image, + first, + second conv map), got {scales}")
        if identity_source not in IDENTITY_SOURCES:
            raise ValueError(f"identity_source must be one of {', '.join(IDENTITY_SOURCES)}, got {identity_source!r}")
        if image_size % (STRIDE * tokens_per_side):
            raise ValueError(f"image_size {image_size} must be a multiple of 4 x tokens_per_side = "
                             f"{STRIDE * tokens_per_side}")
        if not theta >= 0:
            raise ValueError(f"theta must be >= 0 (in units of the uniform weight 1/k), got {theta}")
        self.num_classes, self.identity_removal, self.scales = num_classes, identity_removal, scales
        self.theta, self.identity_source, self.image_size = theta, identity_source, image_size
        self.in_chans = in_chans
        self.tokens = tokens_per_side ** 2
        self.removal = IdentityRemoval(width, teacher_blocks, in_chans)
        self.transformers = nn.ModuleList(
            ScaleTransformer(channels, image_size // (tokens_per_side * 2 ** index), self.tokens, dim, depth, heads,
                             mlp_ratio, dropout)
            for index, channels in enumerate(self.removal.map_channels[:scales]))
        self.scale_heads = nn.ModuleList(nn.Linear(dim, num_classes) for _ in range(scales))
        self.fusion = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout),
                                    nn.Linear(dim, num_classes))

    def _check_input(self, faces: Tensor) -> None:
        channels = 2 * self.in_chans
        if faces.ndim != 4 or faces.shape[1] != channels or tuple(faces.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"MFVAN expects (onset, apex) faces of shape (B, {channels}, {self.image_size}, "
                             f"{self.image_size}), got {tuple(faces.shape)}")

    def scale_maps(self, faces: Tensor) -> tuple[list[Tensor], dict[str, Tensor]]:
        """The maps the transformers read (section 3.1 and the module docstring's table) and the
        teacher's and student's onset reconstructions of the apex (B, C, H, W)."""
        self._check_input(faces)
        c = self.in_chans
        onset, apex = faces[:, :c], faces[:, c:2 * c]
        apex_maps = [apex, *self.removal.student.encode(apex)]
        student_onset = self.removal.student.decode(apex_maps[2])
        reconstructions = {"student": student_onset}
        if self.training:  # the teacher only trains (eq. (2)); inference never needs it
            reconstructions["teacher"] = self.removal.teacher(apex)
        if not self.identity_removal:
            return apex_maps[:self.scales], reconstructions
        identity = onset if self.identity_source == "onset" else student_onset
        identity_maps = [identity, *self.removal.student.encode(identity)]
        return [a - i for a, i in zip(apex_maps[:self.scales], identity_maps)], reconstructions

    def forward_outputs(self, faces: Tensor) -> dict[str, Tensor | list[Tensor]]:
        """Everything eq. (9) needs: ``logits`` (B, classes) of the fused prediction, ``scale_logits``
        (one (B, classes) per scale), ``attention`` (one (B, k) f_c per scale), ``kept`` (one (B, k)
        bool mask per scale), ``features`` (B, dim) fused, and the onset ``reconstructions``."""
        maps, reconstructions = self.scale_maps(faces)
        threshold = self.theta / self.tokens
        scale_logits, attentions, kept_masks, pooled = [], [], [], []
        for transformer, head, scale_map in zip(self.transformers, self.scale_heads, maps):
            tokens, attention = transformer(scale_map)
            kept = attention >= threshold
            # The most attended patch always stays: a threshold above every weight must not empty the fusion.
            kept = kept | (attention == attention.amax(dim=1, keepdim=True))
            weights = kept.to(tokens.dtype)
            pooled.append((tokens[:, 1:] * weights[..., None]).sum(1) / weights.sum(1, keepdim=True))
            scale_logits.append(head(tokens[:, 0]))
            attentions.append(attention)
            kept_masks.append(kept)
        features = torch.stack(pooled).mean(0)
        return {"logits": self.fusion(features), "scale_logits": scale_logits, "attention": attentions,
                "kept": kept_masks, "features": features, "reconstructions": reconstructions}

    def forward_features(self, faces: Tensor) -> Tensor:
        """(B, dim): the fused masked tokens before MLP_f."""
        return self.forward_outputs(faces)["features"]

    def forward(self, faces: Tensor) -> Tensor:
        return self.forward_outputs(faces)["logits"]

    def inference_parameters(self) -> int:
        """Parameters used to predict: all but the teacher's, which only trains; the student's
        decoder also only trains where its reconstruction is not the identity image
        (``identity_source="onset"`` or no identity removal)."""
        unused = set(map(id, self.removal.teacher.parameters()))
        if self.identity_source != "student" or not self.identity_removal:
            unused |= set(map(id, self.removal.student.decoder.parameters()))
        return sum(p.numel() for p in self.parameters() if id(p) not in unused)


def focal_loss(logits: Tensor, targets: Tensor, alpha: Tensor | None = None, gamma: float = 2.0) -> Tensor:
    """Eq. (10), -alpha_t (1 - p_t)^r log p_t, averaged over the batch. logits (B, C), targets (B,)
    class indices, alpha (C,) class weights or None for 1; gamma is the paper's r."""
    log_p = F.log_softmax(logits, dim=1).gather(1, targets[:, None])[:, 0]
    loss = -(1 - log_p.exp()).pow(gamma) * log_p
    if alpha is not None:
        loss = loss * alpha.to(logits.device)[targets]
    return loss.mean()


def mask_loss(attentions: list[Tensor], kept: list[Tensor]) -> Tensor:
    """Eq. (11): the kept patches' weights f_c summed, averaged over scales and batch."""
    return torch.stack([(a * k).sum(1).mean() for a, k in zip(attentions, kept)]).mean()


def reconstruction_losses(model: MFVAN, faces: Tensor, outputs: dict) -> dict[str, Tensor]:
    """L_teacher and L_student, eq. (2)-(3): mean squared error of each onset reconstruction."""
    onset = faces[:, :model.in_chans]
    return {name: F.mse_loss(image, onset) for name, image in outputs["reconstructions"].items()}


def distillation_loss(outputs: dict) -> Tensor:
    """The teacher-to-student term of section 3.1 (the teacher "as a soft target to guide shallow
    student networks"), in the form of eq. (2)-(3): 1/(N M) sum |x'_onset - x''_onset|^2, the mean
    squared difference between the teacher's (B, C, H, W) onset reconstruction of the apex, x',
    and the student's, x''. The teacher's is detached: a target for the student, which alone this
    term trains (the teacher learns from eq. (2)). ``outputs`` of :meth:`MFVAN.forward_outputs` in
    training mode (the teacher runs only then); a scalar."""
    reconstructions = outputs["reconstructions"]
    if "teacher" not in reconstructions:
        raise ValueError("the teacher-to-student term needs the teacher's reconstruction: call forward_outputs "
                         "in training mode")
    return F.mse_loss(reconstructions["student"], reconstructions["teacher"].detach())


def mfvan(num_classes: int = 3, identity_removal: bool = True, scales: int = 3, theta: float = 1.0,
          identity_source: str = "student", **kwargs) -> MFVAN:
    """MFVAN at the paper's input size (224) with our sizes for what it leaves open (module docstring)."""
    return MFVAN(num_classes=num_classes, identity_removal=identity_removal, scales=scales, theta=theta,
                 identity_source=identity_source, **kwargs)
