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

from mepipe.models.recipes.base import (FoldData, FoldOutput, Recipe, RunContext, batch_one_predictor, epoch_logger,
                                        resize, standardiser)
from mepipe.models.training import History, balanced_order, predict_logits, split_decay
from mepipe.pipeline.load import LoadedData

#: The residual artifact's channels, in stored order (``mepipe.pipeline.artifacts``).
RESIDUAL_CHANNELS = ("ars", "rrs")


@dataclass(frozen=True)
class CropNetOptions:
    """Zhao, Chen & Luo 2021 ("Micro-Expression Recognition Based on Pixel Residual Sum and Cropped
    Gaussian Pyramid", Front. Neurobot. 15:746985).

    Input (``residual``): the ARS (``ars``, equation (5)) or RRS (``rrs``, equation (7)) image of the
    store's ``residual`` artifact, grayscale, on its 0..255 scale divided by 255, resized to ``size``
    (320 in section 3.2.2; the CGPO crops are ``size``/2 and overlap by ``overlap``, 0.3). After
    the augmentations it is standardised with the training fold's mean and standard deviation.

    Augmentations (section 3.2.1, applied to every training image each time it is drawn, in the
    paper's order): (1) brightness, contrast and saturation factors drawn from ``jitter`` =
    [0.2, 1.8] and a hue offset from [-``hue``, ``hue``] = [-0.5, 0.5] (torchvision's
    ``ColorJitter`` semantics, which the wording follows); (2) grayscale with probability
    ``grayscale`` = 0.2; (3) a horizontal flip with probability ``flip`` = 0.5; (4) a rotation
    by an angle uniform in [-``rotation``, ``rotation``] = [-15, 15] degrees (bilinear, zeros
    shifted in: zero is "no motion" in a residual image). The residual images are grayscale, so
    saturation, hue and the grayscale conversion leave them unchanged (a one-channel image has
    no chroma); brightness and contrast apply as torchvision applies them, in random order.
    ``augment=false`` trains on the images as they are.

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
        for name in ("grayscale", "flip"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.epochs < 1 or self.batch_size < 2 or self.micro_batch < 2 or not self.lr > 0:
            raise ValueError(f"epochs must be >= 1, batch_size and micro_batch >= 2 (batch norm) and lr > 0, "
                             f"got {self.epochs}, {self.batch_size}, {self.micro_batch}, {self.lr}")


class CropNetRecipe(Recipe):
    name = "cropnet"
    artifacts = ("residual",)
    Options = CropNetOptions

    def inputs(self, data: LoadedData, options: CropNetOptions) -> torch.Tensor:
        """(N, 1, size, size) float in 0..1: the chosen residual-sum image, resized."""
        residual = np.asarray(data.arrays["residual"])
        channel = RESIDUAL_CHANNELS.index(options.residual)
        if residual.ndim != 4 or residual.shape[1] != len(RESIDUAL_CHANNELS):
            raise ValueError(f"residual artifact of {data.dataset}: expected (N, 2, S, S) ARS and RRS images, "
                             f"got shape {residual.shape}")
        image = torch.from_numpy(residual[:, channel:channel + 1].astype(np.float32) / 255.0)
        bad = ~torch.isfinite(image).flatten(1).all(1)
        if bad.any():
            first = int(bad.nonzero()[0, 0])
            raise ValueError(f"sample {data.meta['sample_id'][first]}: its {options.residual} image has "
                             "non-finite values")
        return resize(image, options.size)

    def train_fold(self, context: RunContext, options: CropNetOptions, prepared, fold: FoldData, seed: int) -> FoldOutput:
        from mepipe.models.cropnet import cropnet

        torch.manual_seed(seed)
        model = cropnet(num_classes=len(context.classes), in_chans=1, cgpo=options.cgpo, size=options.size,
                        overlap=options.overlap, dropout=options.dropout)
        normalise = standardiser(fold.x_train)
        history = train_cropnet(model, fold.x_train, fold.y_train, options, normalise, seed=seed,
                                device=context.device,
                                progress=epoch_logger(context.log, "  train", options.epochs))
        logits = predict_logits(model, normalise(fold.x_test), device=context.device)
        return FoldOutput(logits.argmax(1).numpy(), logits.numpy(), history.to_dict(),
                          predict_one=batch_one_predictor(model, context.device, normalise))


# ---------------------------------------------------------------- training

def train_cropnet(model: nn.Module, x: torch.Tensor, y: np.ndarray, options: CropNetOptions, normalise, *,
                  seed: int, device: torch.device, progress=None) -> History:
    """Train ``model`` in place for ``options.epochs`` on images ``x`` (N, 1, S, S) in 0..1.

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

    images: (B, 1, H, W) in 0..1 (grayscale residual images); returns a new tensor, same shape,
    in 0..1. See :class:`CropNetOptions` for the reading of each step.
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"paper_augment expects grayscale images (B, 1, H, W), got shape {tuple(images.shape)}; "
                         "saturation, hue and the grayscale step are written for one channel only")
    low, high = options.jitter
    out = images.clone()
    for index in range(out.shape[0]):
        image = out[index]
        # (1) colour jitter: brightness and contrast in random order, as torchvision's ColorJitter.
        # Saturation (a blend with the image's own grayscale), the hue offset and (2) the grayscale
        # conversion change nothing on a one-channel image; their draws are still taken so the
        # random stream does not depend on the channel count.
        brightness, contrast, _saturation = (rng.uniform(low, high) for _ in range(3))
        rng.uniform(-options.hue, options.hue)  # the hue offset's draw
        for step in rng.permutation(2):
            if step == 0:
                image = (image * brightness).clamp(0.0, 1.0)
            else:
                mean = image.mean()
                image = (contrast * image + (1.0 - contrast) * mean).clamp(0.0, 1.0)
        rng.random()  # (2)'s draw against options.grayscale
        # (3) horizontal flip.
        if rng.random() < options.flip:
            image = image.flip(-1)
        out[index] = image
    # (4) rotation, batched: one affine grid per sample.
    if options.rotation > 0:
        angles = torch.from_numpy(rng.uniform(-options.rotation, options.rotation, size=out.shape[0])).float()
        out = rotate(out, angles)
    return out


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
