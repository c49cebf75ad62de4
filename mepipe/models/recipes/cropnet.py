"""CropNet's recipe: an ARS or RRS residual-sum image, the paper's four augmentations, label
smoothing and AdamP (Zhao, Chen & Luo 2021, sections 3.2.1 and 4.2)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mepipe.models.recipes.base import (FoldData, FoldOutput, Recipe, RunContext, TrainedModel, epoch_logger,
                                        image_channels, resize, standardiser)
from mepipe.models.training import History, balanced_order, split_decay
from mepipe.pipeline.load import LoadedData
from mepipe.pipeline.variants import ModelInputs, Source, Variant

#: The residual artifact's images, in stored order (``mepipe.pipeline.artifacts``): gray (ars, rrs),
#: colour (ars_r, ars_g, ars_b, rrs_r, rrs_g, rrs_b).
RESIDUAL_CHANNELS = ("ars", "rrs")
#: ITU-R BT.601 luma weights, torchvision's ``rgb_to_grayscale``.
LUMA = (0.2989, 0.587, 0.114)

#: What CropNet reads (Zhao, Chen & Luo 2021, ``/work/shared/papers/ars-rrs-cropnet-cgpo.md``).
INPUTS = ModelInputs(
    model="cropnet",
    paper="Zhao, Chen & Luo 2021",
    variant=Variant(size=320, colour=True, eye_fill="none"),
    artifacts=("residual",),
    frames="onset .. end (the apex, or onset + 10 frames when the apex is nearer), N_key = 5 key frames",
    sources={
        "artifact": Source(
            "residual: the ARS (eq. 5) or RRS (eq. 7) image",
            "Therefore, this study proposes two methods based on the residual sum of image pixels to extract salient "
            "features: (1) Absolute Residual Sum (ARS) and (2) Relative Residual Sum (RRS).",
            "section 3.1"),
        "size": Source(
            "320 x 320",
            "First, we require  $320 \\times 320$  resolution of the image input and down-sample it to get an image "
            "with a resolution of  $160 \\times 160$ .",
            "section 3.2.2"),
        "colour": Source(
            "colour: ARS and RRS per RGB channel",
            "Where  $Q_f(x, y, z)$  represents the pixel value of the three-channel image  $(x, y, z)$  of the  "
            "$f_{th}$  frame and  $ares(x, y, z)$  represents the pixel value of the generated ARS image.",
            "section 3.1.1.5, eq. (5) (and section 3.2.1: saturation, hue and a grayscale step augment a colour image)"),
        "eyes": Source(
            "kept",
            "It can separate the mouth, the eyes, the nose, etc.",
            "section 3.2.2; masking is not stated (section 3.1's five stages are clip, feature points, cropping, "
            "five frames and the residual sum): kept, as the CGPO crops are meant to separate the eyes"),
        "frames": Source(
            "onset .. end, five key frames",
            "Therefore, we only recognize the ME from the onset frame to the apex frame.",
            "section 3.1.1.1, eq. (1)-(2); the five key frames: section 3.1.1.4, eq. (3)-(4), N_key = 5"),
    },
)


@dataclass(frozen=True)
class CropNetOptions:
    """Zhao, Chen & Luo 2021 ("Micro-Expression Recognition Based on Pixel Residual Sum and Cropped
    Gaussian Pyramid", Front. Neurobot. 15:746985).

    Input (``residual``): the ARS (``ars``, equation (5)) or RRS (``rrs``, equation (7)) image of the
    store's ``residual`` artifact, in colour (3 channels, the paper's "three-channel image"; its
    variant is 320 px, colour, eyes kept: :data:`INPUTS`) or gray (1 channel) as stored, on its
    0..255 scale divided by 255, resized to ``size`` (320 in section 3.2.2; the CGPO crops are
    ``size``/2 and overlap by ``overlap``, 0.3). After the augmentations it is standardised per
    channel with the training fold's mean and standard deviation.

    Augmentations (section 3.2.1, applied to every training image each time it is drawn, in the
    paper's order): (1) brightness, contrast and saturation factors drawn from ``jitter`` =
    [0.2, 1.8] and a hue offset from [-``hue``, ``hue``] = [-0.5, 0.5] (torchvision's
    ``ColorJitter`` semantics, which the wording follows); (2) grayscale with probability
    ``grayscale`` = 0.2; (3) a horizontal flip with probability ``flip`` = 0.5; (4) a rotation
    by an angle uniform in [-``rotation``, ``rotation``] = [-15, 15] degrees (bilinear, zeros
    shifted in: zero is "no motion" in a residual image). On a colour image the four jitters apply in
    random order and the grayscale step replaces R, G and B by the BT.601 luma, as torchvision's
    ``ColorJitter`` and ``RandomGrayscale`` do. A one-channel (gray) image has no chroma, so there
    saturation, hue and the grayscale step leave it unchanged, and brightness and contrast apply
    in random order. ``augment=false`` trains on the images as they are.

    Training (section 4.2): the label-smoothing loss (Lukasik et al. 2020; the paper gives no
    smoothing value, ``label_smoothing`` = 0.1 is the usual one) and AdamP (Heo et al. 2021) with
    its reference defaults (betas 0.9, 0.999; ``weight_decay`` 0.01 decoupled, on convolution and
    fully connected weights; delta 0.1, wd_ratio 0.1). The paper states neither epochs, batch size
    nor learning rate: ``epochs`` = 50, ``batch_size`` = 32 and ``lr`` = 0.0003 are ours (AdamP's
    default 0.001 made the from-scratch network's loss jump, 0.65 -> 3.5 in one step on a fixed
    batch, where 0.0003 descends steadily), as is ``balance`` = ``sampler`` (each epoch tops the smaller classes up with repeated
    draws; the augmentations above already vary every draw; ``none`` trains on the samples as
    they are). The ImageNet pre-training of the extractor (section 3.2.3) is not done: no weights
    are downloaded; the network starts from random weights.

    Batch-norm statistics (``precise_bn``, ours): after the last epoch every BatchNorm's running
    mean and variance are estimated again as plain averages over the (unaugmented) training
    images, the weights fixed. With ~100 training samples and a fast-moving from-scratch network,
    the exponential running averages lag the weights, and the eval-mode network then predicted
    one class for the whole training set (seen in calibration on the composite).

    Memory (``micro_batch``, ours): at 320 px a training sample costs about 0.74 GB of activations
    (its 10 crops of 160 px through the extractor, kept for the backward pass), so a batch of 32
    needs ~24 GB. Each batch is therefore run in micro-batches of at most ``micro_batch`` = 8
    samples whose gradients are summed, weighted by their share of the batch, before the one
    optimiser step: the same step as the whole batch at once, except that the BatchNorm layers
    normalise over each micro-batch (as data-parallel training on several GPUs does). Set it to
    ``batch_size`` to run whole batches.

    Ablation: ``cgpo=false`` is Table 4's "CropNet without CGPO" (the extractor sees the whole image).
    """

    residual: str = "ars"
    size: int = 320
    cgpo: bool = True
    overlap: float = 0.3
    dropout: float = 0.2
    epochs: int = 50
    batch_size: int = 32
    micro_batch: int = 8
    lr: float = 3e-4
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    balance: str = "sampler"
    augment: bool = True
    jitter: tuple[float, ...] = (0.2, 1.8)
    hue: float = 0.5
    grayscale: float = 0.2
    flip: float = 0.5
    rotation: float = 15.0
    precise_bn: bool = True

    def __post_init__(self) -> None:
        if self.residual not in RESIDUAL_CHANNELS:
            raise ValueError(f"residual must be one of {', '.join(RESIDUAL_CHANNELS)}, got {self.residual!r}")
        if self.balance not in ("sampler", "none"):
            raise ValueError(f"balance must be sampler or none (every draw is augmented already), got {self.balance!r}")
        if len(self.jitter) != 2 or not 0 <= self.jitter[0] <= self.jitter[1]:
            raise ValueError(f"jitter must be two factors low,high with 0 <= low <= high, got {self.jitter}")
        if not 0 <= self.hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5] (an offset of at most half the colour circle), got {self.hue}")
        for name in ("grayscale", "flip"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.epochs < 1 or self.batch_size < 2 or self.micro_batch < 2 or not self.lr > 0:
            raise ValueError(f"epochs must be >= 1, batch_size and micro_batch >= 2 (batch norm) and lr > 0, "
                             f"got {self.epochs}, {self.batch_size}, {self.micro_batch}, {self.lr}")


class CropNetRecipe(Recipe):
    name = "cropnet"
    artifacts = INPUTS.artifacts
    Options = CropNetOptions
    inputs_spec = INPUTS

    def inputs(self, data: LoadedData, options: CropNetOptions) -> torch.Tensor:
        """(N, C, size, size) float in 0..1: the chosen residual-sum image, resized; C = 3 (R, G, B)
        for a colour variant's residual, 1 for a gray one."""
        channels = image_channels(data, "residual", "CropNet", "ARS and RRS")
        residual = np.asarray(data.arrays["residual"])
        first = RESIDUAL_CHANNELS.index(options.residual) * channels
        image = torch.from_numpy(residual[:, first:first + channels].astype(np.float32) / 255.0)
        bad = ~torch.isfinite(image).flatten(1).all(1)
        if bad.any():
            first = int(bad.nonzero()[0, 0])
            raise ValueError(f"sample {data.meta['sample_id'][first]}: its {options.residual} image has "
                             "non-finite values")
        return resize(image, options.size)

    def network(self, options: CropNetOptions, num_classes: int, in_chans: int = 1, **shape):
        from mepipe.models.cropnet import cropnet

        return cropnet(num_classes=num_classes, in_chans=in_chans, cgpo=options.cgpo, size=options.size,
                       overlap=options.overlap, dropout=options.dropout)

    def train_fold(self, context: RunContext, options: CropNetOptions, prepared, fold: FoldData, seed: int) -> FoldOutput:
        torch.manual_seed(seed)
        shape = {"in_chans": int(fold.x_train.shape[1])}
        model = self.network(options, len(context.classes), **shape)
        normalise = standardiser(fold.x_train)
        history = train_cropnet(model, fold.x_train, fold.y_train, options, normalise, seed=seed,
                                device=context.device,
                                progress=epoch_logger(context.log, "  train", options.epochs))
        trained = TrainedModel(model, len(context.classes), shape, normalise)
        return FoldOutput.of(trained, fold.x_test, context, history)


# ---------------------------------------------------------------- training

def train_cropnet(model: nn.Module, x: torch.Tensor, y: np.ndarray, options: CropNetOptions, normalise, *,
                  seed: int, device: torch.device, progress=None) -> History:
    """Train ``model`` in place for ``options.epochs`` on images ``x`` (N, C, S, S) in 0..1, C 1 or 3.

    Every drawn image is augmented (:func:`paper_augment`) and then ``normalise``-d; the loss is
    the label-smoothed cross-entropy, the optimiser AdamP. A last batch of one sample is skipped
    (batch norm cannot train on it); it is drawn again next epoch. Each batch's gradient is
    accumulated over :func:`micro_batches` of it (``options.micro_batch``) to bound memory.
    """
    if len(x) != len(y):
        raise ValueError(f"{len(x)} images but {len(y)} labels")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model.to(device)
    labels = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    decay, no_decay = split_decay(model)
    optimizer = AdamP([{"params": decay, "weight_decay": options.weight_decay},
                       {"params": no_decay, "weight_decay": 0.0}], lr=options.lr)
    history = History()
    start = time.perf_counter()
    for epoch in range(options.epochs):
        model.train()
        order, _ = balanced_order(np.asarray(y), rng, options.balance)
        total_loss, correct, seen = 0.0, 0, 0
        for begin in range(0, len(order), options.batch_size):
            batch = order[begin:begin + options.batch_size]
            if len(batch) < 2:
                continue
            images = x[batch]
            if options.augment:
                images = paper_augment(images, rng, options)
            images, targets = normalise(images), labels[batch]
            optimizer.zero_grad(set_to_none=True)
            for part in micro_batches(len(batch), options.micro_batch):
                logits = model(images[part].to(device))
                part_targets = targets[part].to(device)
                loss = F.cross_entropy(logits, part_targets, label_smoothing=options.label_smoothing)
                # weighted by its share, the micro-batches' gradients sum to the batch mean's
                share = (part.stop - part.start) / len(batch)
                (loss * share).backward()
                total_loss += loss.item() * share * len(batch)
                correct += int((logits.argmax(1) == part_targets).sum())
            optimizer.step()
            seen += len(batch)
        history.train_loss.append(total_loss / max(seen, 1))
        history.train_accuracy.append(correct / max(seen, 1))
        if progress is not None:
            progress(epoch, history)
    if options.precise_bn:
        recalibrate_batch_norm(model, x, normalise, options.batch_size, device)
    history.seconds = time.perf_counter() - start
    return history


def micro_batches(size: int, most: int) -> list[slice]:
    """Consecutive slices covering ``range(size)``, as few as hold at most ``most`` samples each,
    of near-equal sizes, and none of one sample (batch norm cannot train on one) unless ``size``
    is 1. Avoiding single samples can take one more than ``most`` when ``most`` is 2: a batch of
    5 becomes 2 + 3."""
    parts = max(1, min(-(-size // most), size // 2))
    bounds = np.linspace(0, size, parts + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, x: torch.Tensor, normalise, batch_size: int, device: torch.device) -> None:
    """Every BatchNorm's running statistics re-estimated as the equal-weight average over the
    batches of ``x`` (N, C, H, W), the weights unchanged; the model is left in train mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or len(x) < 2:
        return
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the batches seen
    model.train()
    # batches of at least two samples: a batch norm in train mode cannot take one
    for batch in np.array_split(np.arange(len(x)), max(1, len(x) // batch_size)):
        model(normalise(x[batch]).to(device))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def paper_augment(images: torch.Tensor, rng: np.random.Generator, options: CropNetOptions) -> torch.Tensor:
    """Section 3.2.1's four augmentations, in turn, each sample drawn independently.

    images: (B, C, H, W) in 0..1, C = 3 (RGB residual images) or 1 (gray); returns a new tensor,
    same shape, in 0..1. See :class:`CropNetOptions` for the reading of each step. A gray image
    draws from ``rng`` exactly as before colour existed (the four factors, an order of its two
    jitters, the grayscale and flip draws), so gray runs repeat bit for bit.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"paper_augment expects colour (B, 3, H, W) or gray (B, 1, H, W) images, "
                         f"got shape {tuple(images.shape)}")
    colour = images.shape[1] == 3
    low, high = options.jitter
    out = images.clone()
    for index in range(out.shape[0]):
        image = out[index]
        # (1) colour jitter in random order, as torchvision's ColorJitter. On one channel,
        # saturation (a blend with the image's own grayscale) and the hue offset change nothing:
        # only brightness and contrast are ordered, their factors still drawn.
        brightness, contrast, saturation = (rng.uniform(low, high) for _ in range(3))
        hue = rng.uniform(-options.hue, options.hue)
        for step in rng.permutation(4 if colour else 2):
            if step == 0:
                image = (image * brightness).clamp(0.0, 1.0)
            elif step == 1:
                mean = grayscale(image).mean() if colour else image.mean()
                image = (contrast * image + (1.0 - contrast) * mean).clamp(0.0, 1.0)
            elif step == 2:
                image = (saturation * image + (1.0 - saturation) * grayscale(image)).clamp(0.0, 1.0)
            else:
                image = adjust_hue(image, hue)
        # (2) grayscale with probability options.grayscale (drawn for a gray image too).
        if rng.random() < options.grayscale and colour:
            image = grayscale(image).expand(3, -1, -1).clone()
        # (3) horizontal flip.
        if rng.random() < options.flip:
            image = image.flip(-1)
        out[index] = image
    # (4) rotation, batched: one affine grid per sample.
    if options.rotation > 0:
        angles = torch.from_numpy(rng.uniform(-options.rotation, options.rotation, size=out.shape[0])).float()
        out = rotate(out, angles)
    return out


def grayscale(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB -> (1, H, W) BT.601 luma (torchvision's ``rgb_to_grayscale``)."""
    r, g, b = image.unbind(-3)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(-3)


def adjust_hue(image: torch.Tensor, offset: float) -> torch.Tensor:
    """(3, H, W) RGB in 0..1 with its hue turned by ``offset`` in [-0.5, 0.5] of the colour circle:
    to HSV, H + offset modulo 1, back (torchvision's ``adjust_hue`` on float tensors)."""
    if not -0.5 <= offset <= 0.5:
        raise ValueError(f"hue offset must be in [-0.5, 0.5], got {offset}")
    hue, saturation, value = _rgb_to_hsv(image).unbind(-3)
    return _hsv_to_rgb(torch.stack([(hue + offset) % 1.0, saturation, value], dim=-3))


def _rgb_to_hsv(image: torch.Tensor) -> torch.Tensor:
    r, g, b = image.unbind(-3)
    top, bottom = image.amax(dim=-3), image.amin(dim=-3)
    flat = top == bottom
    spread = top - bottom
    ones = torch.ones_like(top)
    saturation = spread / torch.where(flat, ones, top)
    divisor = torch.where(flat, ones, spread)
    rc, gc, bc = (top - r) / divisor, (top - g) / divisor, (top - b) / divisor
    hue = ((top == r) * (bc - gc) + ((top == g) & (top != r)) * (2.0 + rc - bc)
           + ((top != g) & (top != r)) * (4.0 + gc - rc))
    return torch.stack([torch.fmod(hue / 6.0 + 1.0, 1.0), saturation, top], dim=-3)


def _hsv_to_rgb(image: torch.Tensor) -> torch.Tensor:
    hue, saturation, value = image.unbind(-3)
    sector = torch.floor(hue * 6.0)
    fraction = hue * 6.0 - sector
    sector = sector.to(torch.int64) % 6
    p = (value * (1.0 - saturation)).clamp(0.0, 1.0)
    q = (value * (1.0 - saturation * fraction)).clamp(0.0, 1.0)
    t = (value * (1.0 - saturation * (1.0 - fraction))).clamp(0.0, 1.0)
    red = torch.stack([value, q, p, p, t, value])
    green = torch.stack([t, value, value, q, p, p])
    blue = torch.stack([p, p, t, value, value, q])
    pick = sector.unsqueeze(0)
    return torch.cat([channel.gather(0, pick) for channel in (red, green, blue)], dim=0)


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) each rotated clockwise by ``degrees[b]`` about its centre, bilinear, zeros outside."""
    radians = degrees.to(images.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(radians), torch.sin(radians)
    zeros = torch.zeros_like(cos)
    # The grid maps output to input coordinates: an image turned clockwise samples counter-clockwise.
    theta = torch.stack([torch.stack([cos, sin, zeros], 1), torch.stack([-sin, cos, zeros], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class AdamP(torch.optim.Optimizer):
    """AdamP (Heo et al. 2021, "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
    Scale-invariant Weights", ICLR), the optimiser of section 4.2, after its reference code.

    Adam, except that for a weight whose gradient is (nearly) orthogonal to it, per output channel
    or as a whole (cosine below ``delta`` / sqrt(dim), i.e. a weight a BatchNorm makes scale
    invariant), the update's radial component is removed, and its decoupled weight decay is
    scaled by ``wd_ratio``. Weight decay is decoupled: w <- w (1 - lr wd).
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, delta: float = 0.1, wd_ratio: float = 0.1, nesterov: bool = False) -> None:
        if not lr > 0:
            raise ValueError(f"AdamP lr must be > 0, got {lr}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, delta=delta,
                                      wd_ratio=wd_ratio, nesterov=nesterov))

    @staticmethod
    def _projection(weight: torch.Tensor, grad: torch.Tensor, perturb: torch.Tensor, delta: float, wd_ratio: float,
                    eps: float) -> tuple[torch.Tensor, float]:
        expand = [-1] + [1] * (weight.ndim - 1)
        for view in (lambda t: t.reshape(t.shape[0], -1), lambda t: t.reshape(1, -1)):
            cosine = F.cosine_similarity(view(grad), view(weight), dim=1, eps=eps).abs()
            if cosine.max() < delta / math.sqrt(view(weight).shape[1]):
                unit = weight / view(weight).norm(dim=1).view(expand).add(eps)
                perturb = perturb - unit * view(unit * perturb).sum(dim=1).view(expand)
                return perturb, wd_ratio
        return perturb, 1.0

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for weight in group["params"]:
                if weight.grad is None:
                    continue
                grad = weight.grad
                state = self.state[weight]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(weight)
                    state["exp_avg_sq"] = torch.zeros_like(weight)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                correction1 = 1 - beta1 ** state["step"]
                correction2 = 1 - beta2 ** state["step"]
                exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (exp_avg_sq.sqrt() / math.sqrt(correction2)).add_(group["eps"])
                if group["nesterov"]:
                    perturb = (beta1 * exp_avg + (1 - beta1) * grad) / denom
                else:
                    perturb = exp_avg / denom
                ratio = 1.0
                if weight.ndim > 1:
                    perturb, ratio = self._projection(weight, grad, perturb, group["delta"], group["wd_ratio"],
                                                      group["eps"])
                if group["weight_decay"] > 0:
                    weight.mul_(1 - group["lr"] * group["weight_decay"] * ratio)
                weight.add_(perturb, alpha=-group["lr"] / correction1)
        return loss
