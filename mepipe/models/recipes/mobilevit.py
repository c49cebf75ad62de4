"""MobileViT's recipe: macro-expression transfer, progressive unfreezing, grid search, SVM head."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mepipe.datasets.macro_frames import MOBILEVIT_PROTOCOL, PAPER_SOURCES, counts_table, frame_indices
from mepipe.models.recipes.base import (FoldData, FoldOutput, OptionError, Recipe, RunContext, TrainedModel,
                                        apex_frames, epoch_logger, fit_svm, fit_with_validation, resize)
from mepipe.models.svm_head import SVMHead
from mepipe.models.training import TrainConfig, extract_features, fit, subject_split
from mepipe.pipeline.load import LoadedData, load
from mepipe.pipeline.store import datasets_in, open_store
from mepipe.pipeline.variants import ModelInputs, Source, Variant

MACRO_DATASETS = ("ckplus", "oulu", "jaffe", "mug")

_PREPROCESSING = "section Micro-Expression Recognition Model Design, Pre-processing"

#: What MobileViT reads (Liu et al. 2022, ``/work/shared/papers/mobilevit-transfer-svm.md``).
INPUTS = ModelInputs(
    model="mobilevit",
    paper="Liu, Li, Yi, Hu, Zhang & Liu 2022",
    variant=Variant(size=256, colour=False, eye_fill="zero"),
    artifacts=("face",),
    frames="apex",
    sources={
        "artifact": Source(
            "face: the aligned face crop (its apex image)",
            "After that, the facial region is first extracted using OpenCV and Dlib toolkit and modified in size to "
            "256 × 256 pixels and marked with facial marker points.",
            _PREPROCESSING),
        "size": Source(
            "256 x 256",
            "After that, the facial region is first extracted using OpenCV and Dlib toolkit and modified in size to "
            "256 × 256 pixels and marked with facial marker points.",
            _PREPROCESSING),
        "colour": Source(
            "gray",
            "In this study, the complete micro-expression image sequence is a continuous image including the start "
            "frame, apex frame, and the end frame, where the vertex frame is the image of the most prominent moment "
            "of micro-expression, so the vertex frame of each expression sample is first taken out and converted to "
            "grayscale image in the pre-processing step.",
            _PREPROCESSING),
        "eyes": Source(
            "masked (zero fill)",
            "Finally, the eyes are masked to avoid extraneous noise from eye movements.",
            f"{_PREPROCESSING}; the fill is not stated: zero (a black mask) is our choice"),
        "frames": Source(
            "apex",
            "In this study, the complete micro-expression image sequence is a continuous image including the start "
            "frame, apex frame, and the end frame, where the vertex frame is the image of the most prominent moment "
            "of micro-expression, so the vertex frame of each expression sample is first taken out and converted to "
            "grayscale image in the pre-processing step.",
            _PREPROCESSING),
        "macro": Source(
            "the macro-expression groups made as the micro ones: 256 px, gray, eyes masked",
            "In pre-processing, to achieve better results in transfer learning, we used the same pre-processing "
            "approach for macro-expression and microexpression samples.",
            "section Micro-Expression Recognition Model Design"),
        "macro_frames": Source(
            "the last frames of each macro clip (CK+ and Oulu-CASIA: the last three; MUG: 6 to 10 near the apex)",
            "The last three frames were selected from the corresponding video clips of the three types of emotions "
            "desired in the experiment.",
            "section Experiments, Datasets, Macro-Expression Dataset Datasets (CK+; Oulu-CASIA: the last three "
            "frames of each visible-light video; MUG: six to 10 frames close to the vertex; JAFFE: its images)"),
    },
    macro=MACRO_DATASETS,
    macro_artifacts=("frames", "eye_mask"),
)


@dataclass(frozen=True)
class MobileViTOptions:
    """Liu et al. 2022 ("Lightweight ViT Model for Micro-Expression Recognition Enhanced by Transfer Learning").

    Input: the aligned apex frame, grayscale, eyes masked, at ``size`` = 256.

    Transfer (``transfer``): the whole network is trained on the macro-expression groups of the
    store (``macro``: those present are used), on the frames the paper takes from each sequence
    (the last three of CK+ and Oulu-CASIA, JAFFE's image, 6-10 around MUG's peak), eyes zeroed,
    under the paper's classes (protocol ``mobilevit``: contempt, fear and neutral left out; see
    :mod:`mepipe.datasets.macro_frames`) with SGD, momentum 0.9,
    learning rate 0.01, batch 32 (the paper's first part); the weights of the best epoch on a
    validation split of ``macro_validation`` of the macro subjects are kept. Its convolutional part
    (stem and MV2 blocks) then starts the micro-expression network.

    Fine-tuning: Adam at ``lr`` (the paper's 0.007 and batch 64 came from its grid search), L2 on
    the convolution and linear weights (``weight_decay`` 0.02 is Keras' ``l2(0.01)``: the paper's
    best decay rate 0.01, whose gradient is 2 x 0.01 w), dropout 0.5. The transferred layers start
    frozen; after ``frozen_epochs`` one is unfrozen every ``unfreeze_every`` epochs, deepest first.

    Grid search (``grid``): every (batch size, learning rate) of ``grid_batch`` x ``grid_lr`` is
    trained on the fold's training subjects less a ``grid_validation`` share of them, scored by
    UF1 on those held-out training subjects after each of ``grid_epochs``; the best triple
    trains the fold's model on all its training subjects. The test subject is never seen.

    Head (``svm``): an SVM (scikit-learn's ``SVC``, RBF kernel, standardised features) on the
    640-d pooled features of the training samples, its C chosen from ``svm_c`` by
    leave-subjects-out cross-validation on the training subjects; without it, the softmax layer.
    """

    size: int = 256
    transfer: bool = True
    macro: tuple[str, ...] = MACRO_DATASETS
    macro_epochs: int = 100
    macro_lr: float = 0.01
    macro_batch_size: int = 32
    macro_validation: float = 0.2
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.007
    weight_decay: float = 0.02
    dropout: float = 0.5
    frozen_epochs: int = 8
    unfreeze_every: int = 3
    balance: str = "augment"
    max_shift: float = 0.04
    grid: bool = True
    grid_batch: tuple[int, ...] = (32, 64)
    grid_lr: tuple[float, ...] = (0.007, 0.001)
    grid_epochs: tuple[int, ...] = (10, 20, 30)
    grid_validation: float = 0.25
    svm: bool = True
    svm_c: tuple[float, ...] = (0.1, 1.0, 10.0)


@dataclass
class MacroSet:
    """MobileViT's transfer set: images (N, 1, size, size) in 0..1, labels, LOSO groups, and what was taken.

    ``taken`` maps (group, class) to (frames, sequences).
    """

    x: torch.Tensor
    y: np.ndarray
    groups: np.ndarray
    names: list[str]
    classes: tuple[str, ...]
    taken: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)


@dataclass
class Pretrained:
    """The macro-expression stage's result: the convolutional weights and how they were got."""

    state: dict[str, torch.Tensor]
    history: dict
    samples: int
    seconds: float


class MobileViTRecipe(Recipe):
    name = "mobilevit"
    artifacts = INPUTS.artifacts
    Options = MobileViTOptions
    inputs_spec = INPUTS

    def inputs(self, data: LoadedData, options: MobileViTOptions) -> torch.Tensor:
        """(N, 1, size, size) float in 0..1: the gray apex frame (the variant's eyes masked)."""
        apex = apex_frames(data, options.size, "MobileViT")
        if apex.shape[1] != 1:
            raise ValueError(f"sample {data.meta['sample_id'][0]}: face is colour {tuple(np.shape(data.arrays['face'])[1:])}; "
                             f"MobileViT reads gray (2, S, S) onset and apex (variant {INPUTS.variant.name})")
        return apex

    # ---------------------------------------------------------------- transfer

    def prepare(self, context: RunContext, options: MobileViTOptions, seed: int) -> Pretrained | None:
        if not options.transfer:
            return None
        from mepipe.models.mobilevit import mobilevit_s

        macro = self._macro_samples(context.store, options, context.variant)
        x, y, groups = macro.x, macro.y, macro.groups
        sequences = sum(count for _, count in macro.taken.values())
        context.log(f"macro-expression transfer: {len(y)} frames of {sequences} sequences of {', '.join(macro.names)} "
                    f"({', '.join(f'{c} {int((y == i).sum())}' for i, c in enumerate(macro.classes))}), "
                    f"protocol {MOBILEVIT_PROTOCOL}: the paper's frames per sequence and classes")
        for line in counts_table(macro.taken, macro.classes):
            context.log(f"  {line}")
        context.log("  (frames of sequences) the paper's 9,342 are of the real CK+, Oulu-CASIA (VIS), JAFFE and MUG, "
                    "with no count per source; a synthetic or partial store cannot match them, only the frames "
                    "per sequence. The paper's sets:")
        for name, text in PAPER_SOURCES.items():
            context.log(f"    {name}: {text}")
        model = mobilevit_s(num_classes=len(context.classes), in_chans=1, dropout=options.dropout)
        config = TrainConfig(epochs=options.macro_epochs, batch_size=options.macro_batch_size, lr=options.macro_lr,
                             optimizer="sgd", momentum=0.9, weight_decay=options.weight_decay,
                             balance=options.balance, max_shift=20 / options.size,
                             validation=options.macro_validation, patience=options.macro_epochs)
        start = time.perf_counter()
        history = fit_with_validation(model, x, y, groups, config, seed=seed, device=context.device,
                                       parameters=_decay_groups,
                                       progress=epoch_logger(context.log, "macro", options.macro_epochs))
        context.log(f"macro-expression transfer: best validation UF1 {max(history.val_uf1):.3f} "
                    f"at epoch {history.best_epoch + 1}, {time.perf_counter() - start:.0f} s")
        return Pretrained({k: v.detach().cpu().clone() for k, v in model.transfer_state_dict().items()},
                          history.to_dict(), len(y), time.perf_counter() - start)

    def _macro_samples(self, store: Path, options: MobileViTOptions, variant=None) -> MacroSet:
        """The frames the paper takes from each macro-expression sequence of the store, eyes zeroed.

        ``variant``: the input variant read from each group (the run's: MobileViT's own,
        256 px gray eyes zero-filled, unless ``mepipe train --variant``); None reads each group's
        own (a build without ``--for``), as small test stores hold.
        """
        frames, labels, groups, names, taken = [], [], [], [], {}
        classes: tuple[str, ...] = ()
        root = open_store(store)
        present = datasets_in(root)
        for name in options.macro:
            if name not in present:
                continue
            # the clips stay in the store: only the frames the rule picks are read (a MUG group at 256 px
            # holds gigabytes of clips)
            data = load(store, name, ["frames", "eye_mask"], MOBILEVIT_PROTOCOL, variant=variant, for_model="mobilevit",
                        lazy_clips=True)
            if not len(data):
                continue
            images, rows = transfer_frames(data, str(root[name].attrs.get("adapter", name)))
            del data.arrays["frames"]  # whole clips; only the chosen frames are kept
            frames.append(resize(torch.from_numpy(images[:, None].astype(np.float32) / 255.0), options.size))
            labels.append(data.meta["label"][rows])
            groups.append(data.meta["group"][rows])
            names.append(name)
            classes = data.classes
            for index, label in enumerate(data.classes):
                chosen = rows[data.meta["label"][rows] == index]
                taken[(name, label)] = (len(chosen), len(set(chosen.tolist())))
        if not frames:
            raise OptionError(
                f"MobileViT's transfer needs a macro-expression group ({', '.join(options.macro)}) with a built "
                f"aligned clip in {store}; build one (mepipe build --dataset ckplus --root ... --for mobilevit) "
                "or train with -s transfer=false")
        return MacroSet(torch.cat(frames), np.concatenate(labels), np.concatenate(groups), names, classes, taken)

    # ---------------------------------------------------------------- one fold

    def train_fold(self, context: RunContext, options: MobileViTOptions, prepared: Pretrained | None,
                   fold: FoldData, seed: int) -> FoldOutput:
        notes: dict = {}
        batch_size, lr, epochs = options.batch_size, options.lr, options.epochs
        if options.grid:
            (batch_size, lr, epochs), notes["grid"] = self._grid_search(context, options, prepared, fold, seed)
            context.log(f"  grid search chose batch {batch_size}, lr {lr}, {epochs} epochs")
        model, history = self._train(context, options, prepared, fold.x_train, fold.y_train, None, None,
                                     batch_size, lr, epochs, seed)
        notes.update(batch_size=batch_size, lr=lr, epochs=epochs)
        head = None
        if options.svm:
            pipeline, notes["svm_c"] = fit_svm(extract_features(model, fold.x_train, device=context.device),
                                               fold.y_train, fold.groups_train, options.svm_c)
            # kept as arrays: the checkpoint loads without unpickling, and predicts as the fold did
            head = SVMHead.from_pipeline(pipeline)
        trained = TrainedModel(model, len(context.classes), head=head)
        return FoldOutput.of(trained, fold.x_test, context, history, notes)

    def network(self, options: MobileViTOptions, num_classes: int, **shape):
        from mepipe.models.mobilevit import mobilevit_s

        return mobilevit_s(num_classes=num_classes, in_chans=1, dropout=options.dropout)

    def _train(self, context, options, prepared, x, y, x_val, y_val, batch_size, lr, epochs, seed):
        torch.manual_seed(seed)
        model = self.network(options, len(context.classes))
        schedule = None
        if prepared is not None:
            model.load_transfer_state_dict(prepared.state)
            schedule = _progressive_unfreezing(model, options.frozen_epochs, options.unfreeze_every)
        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam",
                             weight_decay=options.weight_decay, balance=options.balance,
                             max_shift=options.max_shift, patience=epochs)
        history = fit(model, x, y, config, seed=seed, device=context.device, x_val=x_val, y_val=y_val,
                      before_epoch=schedule, parameters=_decay_groups,
                      progress=None if x_val is not None else epoch_logger(context.log, "  fine-tune", epochs))
        return model, history

    def _grid_search(self, context, options, prepared, fold: FoldData, seed: int):
        train, val = subject_split(fold.groups_train, options.grid_validation, np.random.default_rng([seed, 11]))
        longest = max(options.grid_epochs)
        table, best = [], None
        for batch_size in options.grid_batch:
            for lr in options.grid_lr:
                _, history = self._train(context, options, prepared, fold.x_train[train], fold.y_train[train],
                                         fold.x_train[val], fold.y_train[val], batch_size, lr, longest, seed)
                for epochs in sorted(options.grid_epochs):
                    score = history.val_uf1[epochs - 1]
                    table.append({"batch_size": batch_size, "lr": lr, "epochs": epochs, "val_uf1": score})
                    if best is None or score > best[0] + 1e-9:
                        best = (score, (batch_size, lr, epochs))
        return best[1], table


def transfer_frames(data: LoadedData, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """The paper's frames of every loaded sequence (``frames`` and ``eye_mask`` loaded), eyes zeroed.

    Returns (M, S, S) uint8 images and (M,) the row of ``data`` each came from, sequence by
    sequence in row order, frames in clip order. The indices are
    :func:`mepipe.datasets.macro_frames.frame_indices` of ``dataset`` on the stored clip (its
    length) and the apex the build used; the stored clip keeps the eyes, and the pixels of the
    sample's ``eye_mask`` are set to 0, as the paper masks the eyes.
    """
    clips, masks = data.arrays["frames"], np.asarray(data.arrays["eye_mask"])
    images, rows = [], []
    for row, clip in enumerate(clips):
        indices = list(frame_indices(dataset, clip.shape[0], int(data.meta["apex_used"][row])))
        # a lazy clip (load(..., lazy_clips=True)) reads only the chunks of the chosen frames
        chosen = (clip.get_orthogonal_selection((np.asarray(indices),)) if hasattr(clip, "get_orthogonal_selection")
                  else np.asarray(clip)[indices])
        chosen[:, masks[row, 0].astype(bool)] = 0
        images.append(chosen)
        rows.extend([row] * len(indices))
    size = masks.shape[-2:] if masks.ndim == 4 else (0, 0)
    if not images:
        return np.zeros((0, *size), np.uint8), np.zeros(0, np.int64)
    return np.concatenate(images), np.asarray(rows, dtype=np.int64)


def _decay_groups(model) -> tuple[list, list]:
    return list(model.decay_parameters()), list(model.no_decay_parameters())


def _progressive_unfreezing(model, frozen_epochs: int, every: int) -> Callable[[int, nn.Module], bool]:
    """Freeze the transferred modules, then unfreeze them deepest first: one every ``every`` epochs."""
    modules = [module for _, module in model.transfer_modules()][::-1]
    for module in modules:
        module.requires_grad_(False)

    def before_epoch(epoch: int, _model) -> bool:
        if epoch < frozen_epochs:
            return False
        count = min(len(modules), 1 + (epoch - frozen_epochs) // max(every, 1))
        changed = False
        for module in modules[:count]:
            if not next(module.parameters()).requires_grad:
                module.requires_grad_(True)
                changed = True
        return changed

    return before_epoch
