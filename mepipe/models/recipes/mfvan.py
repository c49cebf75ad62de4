"""MFVAN's recipe: teacher pre-training on the clips' frames, then the joint loss of equation (9)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mepipe.models.recipes.base import (FoldData, FoldOutput, Recipe, RunContext, TrainedModel, clip_channels,
                                        epoch_logger, fit_with_validation, image_channels, resize)
from mepipe.models.training import Inputs, TrainConfig
from mepipe.pipeline.load import LoadedData
from mepipe.pipeline.variants import ModelInputs, Source, Variant

FOCAL_ALPHAS = ("balanced", "none")

#: What MFVAN reads (Pan, Yang, Xie & Wang 2023, ``/work/shared/papers/mfvan-multiscale-attention.md``).
INPUTS = ModelInputs(
    model="mfvan",
    paper="Pan, Yang, Xie & Wang 2023",
    variant=Variant(size=224, colour=True, eye_fill="none"),
    artifacts=("face", "frames"),
    frames="onset and apex (face); frames of the whole clip, evenly spaced, for the teacher's pre-training",
    sources={
        "artifact": Source(
            "face (onset and apex) and frames (the aligned clip)",
            "The micro-expression image (apex frame) is input into the convolutional neural network (CNN) that is "
            "mapped to a calm state image (onset frame) to reduce the effect of individual identity attributes and "
            "obtain multi-scale feature maps.",
            "section 1 (Introduction); the clip's frames: section 3.1"),
        "size": Source(
            "224 x 224",
            "",
            "not stated: 224, the input side of the ViT the paper builds on (Dosovitskiy et al. 2021, section 3.2), "
            "14 x 14 patches of 16 px at the first scale; our choice"),
        "colour": Source(
            "colour",
            "Although GEME has considered the interference of gender, their limitation is that it only considers the "
            "interference of gender, and the individual identity attribute has the influence of other attributes "
            "such as skin color and age in addition to gender.",
            "section 4.2; colour is not stated: the identity the network removes includes skin colour, which a gray "
            "image would not carry; colour is our choice"),
        "eyes": Source(
            "kept",
            "But in the MFVAN model, the class token is not only used for classification, but also used to learn "
            "the attention weight of each patch, and perform mask operation on the patch with low weight.",
            "section 3.2; no eye mask is stated: the paper's only mask is this learned one over patches, made by "
            "the network, so no region is hidden before it and the eyes are kept"),
        "frames": Source(
            "onset and apex; all clip frames for the teacher",
            "Image self-supervised training is performed by feeding all images from the micro-expression video "
            "samples into the teacher model.",
            "section 3.1 (the apex and onset: eq. (2)-(3)); we feed ``pretrain_frames`` evenly spaced frames of "
            "each training clip"),
    },
)


@dataclass(frozen=True)
class MFVANOptions:
    """Pan et al. 2023 ("Multi-scale fusion visual attention network for facial micro-expression
    recognition", Front. Neurosci. 17:1216181); the model's readings are in :mod:`mepipe.models.mfvan`.

    Input: the ``face`` artifact's onset and apex at ``size`` (224, the variant's and ViT's side), in
    0..1, colour (R, G, B per frame) in the 224 px colour variant this model reads (eyes kept; see
    :data:`INPUTS`) or gray; and ``pretrain_frames`` frames of each aligned clip (``frames``),
    evenly spaced from the first to the last, for the teacher's self-supervised pre-training.

    Pre-training (section 3.1, eq. (1)): the teacher autoencoder reconstructs the frames of the
    fold's *training* samples for ``pretrain_epochs`` (Adam, ``pretrain_lr``). The paper feeds "all
    images from the micro-expression video samples"; we keep the test subject's frames out, so the
    pre-training is redone in every fold (it uses no labels, but the held-out subject stays unseen).

    Joint training (section 3.3, eq. (9)): L_remove (eq. (2)-(4)) + focal loss of the fused
    prediction + focal loss of each scale's class token + the mask loss (eq. (11)), all with weight
    1 as in eq. (9). L_remove is the teacher's and the student's onset errors, eq. (2)-(3), plus
    ``distill_weight`` (1, the weight eq. (4) and (9) give every term) times the teacher-to-student
    term of section 3.1 (the teacher "as a soft target to guide shallow student networks"): the
    mean squared difference between the student's onset and the (detached) teacher's, both made
    from the apex frame (:func:`mepipe.models.mfvan.distillation_loss`). ``distill_weight=0``
    leaves eq. (4) as printed, which has no such term. The focal loss's r is ``focal_gamma`` (2,
    Lin et al.'s default; the paper gives no value) and its alpha_t is the inverse frequency of
    class t among the fold's training samples, normalised to mean 1 (``focal_alpha="balanced"``;
    ``"none"`` for 1), which is how the paper weights its unbalanced classes, so no class is
    oversampled (``balance="none"``). The paper
    gives no optimiser, learning rate, batch size or epoch count: Adam at ``lr``, ``batch_size``,
    ``epochs`` are our choices.

    Identity image (section 3.1): ``identity_source="student"`` (default, the paper's) is the
    student's onset reconstruction from the apex frame alone, so a fold's model (and ``mepipe
    predict``) reads only the apex of a clip's face; ``"onset"``, a deviation from the paper, takes
    the sample's true onset frame (an apex-minus-onset network). A checkpoint records the option
    with the others, so its network is rebuilt with the identity image it was trained with.

    Ablations (Table 3): ``identity_removal=false`` (the paper's "Global" without "RI"), ``scales``
    1 or 2 (fewer scales); see :mod:`mepipe.models.mfvan`.
    """

    size: int = 224
    tokens_per_side: int = 14
    dim: int = 192
    depth: int = 4
    heads: int = 3
    mlp_ratio: float = 4.0
    width: int = 32
    teacher_blocks: int = 4
    dropout: float = 0.1
    identity_removal: bool = True
    identity_source: str = "student"
    distill_weight: float = 1.0
    scales: int = 3
    theta: float = 1.0
    focal_gamma: float = 2.0
    focal_alpha: str = "balanced"
    pretrain_frames: int = 8
    pretrain_epochs: int = 10
    pretrain_lr: float = 1e-3
    pretrain_batch_size: int = 64
    epochs: int = 60
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 1e-4
    balance: str = "none"
    max_shift: float = 0.05
    validation: float = 0.0

    def __post_init__(self) -> None:
        if self.focal_alpha not in FOCAL_ALPHAS:
            raise ValueError(f"focal_alpha must be one of {', '.join(FOCAL_ALPHAS)}, got {self.focal_alpha!r}")
        if not self.distill_weight >= 0:
            raise ValueError(f"distill_weight must be >= 0, got {self.distill_weight}")
        if self.pretrain_frames < 1:
            raise ValueError(f"pretrain_frames must be >= 1, got {self.pretrain_frames}")
        if self.size % (4 * self.tokens_per_side):
            raise ValueError(f"size {self.size} must be a multiple of 4 x tokens_per_side = {4 * self.tokens_per_side}")


class MFVANRecipe(Recipe):
    name = "mfvan"
    artifacts = INPUTS.artifacts
    Options = MFVANOptions
    inputs_spec = INPUTS

    def inputs(self, data: LoadedData, options: MFVANOptions) -> Inputs:
        """Inputs((N, 2 C, size, size) float onset then apex in 0..1, clip frames for the teacher's
        pre-training as uint8: (N, pretrain_frames, size, size) gray or (N, pretrain_frames, 3,
        size, size) colour); C = 3 for a colour variant, 1 for a gray one."""
        channels = image_channels(data, "face", "MFVAN", "onset and apex")
        clip_layout = clip_channels(data, "frames", "MFVAN")
        if len(data) and clip_layout != channels:
            kinds = {1: "gray", 3: "colour"}
            raise ValueError(f"sample {data.meta['sample_id'][0]}: face is {kinds[channels]} but its frames clip is "
                             f"{kinds[clip_layout]}; MFVAN reads both from one variant")
        face = torch.from_numpy(np.asarray(data.arrays["face"]).astype(np.float32) / 255.0)
        picked = []
        for clip in data.arrays["frames"]:
            clip = np.asarray(clip)
            positions = np.linspace(0, len(clip) - 1, options.pretrain_frames).round().astype(int)
            frames = torch.from_numpy(clip[positions].astype(np.float32))
            # gray (P, S, S) -> (P, 1, S, S); colour (P, S, S, 3) -> (P, 3, S, S)
            frames = frames[:, None] if frames.ndim == 3 else frames.permute(0, 3, 1, 2)
            frames = resize(frames, options.size).round().clamp(0, 255).to(torch.uint8)
            picked.append(frames[:, 0] if channels == 1 else frames)
        if not picked:
            shape = (0, options.pretrain_frames) + (() if channels == 1 else (3,)) + (options.size, options.size)
            return Inputs(resize(face, options.size), torch.zeros(shape, dtype=torch.uint8))
        return Inputs(resize(face, options.size), torch.stack(picked))

    def network(self, options: MFVANOptions, num_classes: int, in_chans: int = 1, **shape):
        """The network at ``options``; ``in_chans`` channels per frame (3 colour, 1 gray)."""
        from mepipe.models.mfvan import mfvan

        return mfvan(num_classes=num_classes, identity_removal=options.identity_removal, scales=options.scales,
                     theta=options.theta, identity_source=options.identity_source, image_size=options.size,
                     tokens_per_side=options.tokens_per_side, dim=options.dim, depth=options.depth,
                     heads=options.heads, mlp_ratio=options.mlp_ratio, width=options.width,
                     teacher_blocks=options.teacher_blocks, dropout=options.dropout, in_chans=in_chans)

    def train_fold(self, context: RunContext, options: MFVANOptions, prepared, fold: FoldData, seed: int) -> FoldOutput:
        faces, frames = fold.x_train.images, fold.x_train.tensors[1]
        torch.manual_seed(seed)
        shape = {"in_chans": int(faces.shape[1] // 2)}
        model = self.network(options, len(context.classes), **shape).to(context.device)
        start = time.perf_counter()
        pretrain_loss = pretrain_teacher(model.removal.teacher, frames, options, seed=seed, device=context.device)
        pretrain_seconds = time.perf_counter() - start
        if pretrain_loss:
            context.log(f"  teacher pre-training: {len(frames) * frames.shape[1]} frames, reconstruction MSE "
                        f"{pretrain_loss[0]:.4f} -> {pretrain_loss[-1]:.4f}, {pretrain_seconds:.0f} s")
        config = TrainConfig(epochs=options.epochs, batch_size=options.batch_size, lr=options.lr,
                             weight_decay=options.weight_decay, balance=options.balance,
                             max_shift=options.max_shift, validation=options.validation)
        alpha = class_weights(fold.y_train, len(context.classes)) if options.focal_alpha == "balanced" else None
        terms: dict[str, list[float]] = {}
        history = fit_with_validation(model, faces, fold.y_train, fold.groups_train, config, seed=seed,
                                      device=context.device,
                                      criterion=mfvan_criterion(alpha, options.focal_gamma, terms,
                                                                distill_weight=options.distill_weight),
                                      progress=epoch_logger(context.log, "  train", options.epochs))
        notes = {"pretrain_loss": pretrain_loss, "pretrain_seconds": round(pretrain_seconds, 1),
                 "loss_terms_last_epoch": {k: float(np.mean(v[-max(1, len(v) // options.epochs):])) for k, v in terms.items()},
                 "alpha": None if alpha is None else alpha.tolist()}
        trained = TrainedModel(model, len(context.classes), shape, images_only=True)
        return FoldOutput.of(trained, fold.x_test, context, history, notes)


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """alpha_t of eq. (10): inverse class frequency among ``labels``, mean 1 over the present classes
    (an absent class gets 0: it has no sample to weigh)."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    weights *= (counts > 0).sum() / weights.sum()
    return torch.as_tensor(weights, dtype=torch.float32)


def mfvan_criterion(alpha: torch.Tensor | None, gamma: float, terms: dict[str, list[float]] | None = None, *,
                    distill_weight: float = 1.0):
    """The ``criterion`` of :func:`~mepipe.models.training.fit`: eq. (9) on a batch of (onset, apex)
    faces (B, 2 C, H, W), the model in training mode. L_remove is ``remove_teacher`` +
    ``remove_student`` (eq. (2)-(3)) + ``distill_weight`` x ``remove_distill`` (the teacher-to-student
    term of section 3.1; left out at weight 0). ``terms`` collects each term's value per batch,
    unweighted (the run's history)."""
    from mepipe.models.mfvan import distillation_loss, focal_loss, mask_loss, reconstruction_losses

    def criterion(model, faces: torch.Tensor, targets: torch.Tensor):
        outputs = model.forward_outputs(faces)
        parts = {f"remove_{name}": value for name, value in reconstruction_losses(model, faces, outputs).items()}
        weights = {}
        if distill_weight:
            parts["remove_distill"] = distillation_loss(outputs)
            weights["remove_distill"] = distill_weight
        parts["class_global"] = focal_loss(outputs["logits"], targets, alpha, gamma)
        for index, logits in enumerate(outputs["scale_logits"], 1):
            parts[f"class_scale{index}"] = focal_loss(logits, targets, alpha, gamma)
        parts["mask"] = mask_loss(outputs["attention"], outputs["kept"])
        if terms is not None:
            for name, value in parts.items():
                terms.setdefault(name, []).append(float(value.detach()))
        return sum(weights.get(name, 1.0) * value for name, value in parts.items()), outputs["logits"]
    return criterion


def pretrain_teacher(teacher: torch.nn.Module, frames: torch.Tensor, options: MFVANOptions, *, seed: int,
                     device: torch.device) -> list[float]:
    """Eq. (1): the teacher reconstructs every frame of ``frames``, uint8 (N, T, S, S) gray or
    (N, T, 3, S, S) colour; the mean squared error per epoch (empty when ``pretrain_epochs`` is 0)."""
    if options.pretrain_epochs <= 0:
        return []
    channels = 1 if frames.ndim == 4 else frames.shape[2]
    images = frames.reshape(-1, channels, *frames.shape[-2:])
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(teacher.parameters(), lr=options.pretrain_lr)
    teacher.train()
    losses = []
    for _ in range(options.pretrain_epochs):
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for begin in range(0, len(order), options.pretrain_batch_size):
            batch = images[order[begin:begin + options.pretrain_batch_size]].to(device).float() / 255.0
            if len(batch) < 2:
                continue  # batch norm cannot train on a single image
            loss = F.mse_loss(teacher(batch), batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(images))
    return losses
