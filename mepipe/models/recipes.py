"""How each paper trains its model: inputs from the store, options with the paper's defaults, one fold.

A recipe turns the loaded artifacts into the network's input tensor, optionally prepares
something once per seed (MobileViT's macro-expression transfer), and trains and tests one LOSO
fold. The LOSO runner (:mod:`mepipe.models.loso`) owns the folds, seeds, metrics and the run
directory; a recipe only ever sees one fold's training and test samples.

Options are frozen dataclasses. ``mepipe train -s name=value`` overrides them
(:func:`apply_settings`); tuples are written comma-separated (``-s grid_lr=0.007,0.001``).
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mepipe.models.training import History, TrainConfig, extract_features, fit, predict_logits, subject_split
from mepipe.pipeline.load import LoadedData, load
from mepipe.pipeline.store import datasets_in, open_store


class OptionError(ValueError):
    """A ``-s name=value`` setting a recipe does not have, or of the wrong type."""


@dataclass
class RunContext:
    """What a recipe may know of the run: never the test labels of another fold."""

    store: Path
    classes: tuple[str, ...]
    device: torch.device
    out: Path
    log: Callable[[str], None]


@dataclass
class FoldData:
    x_train: torch.Tensor
    y_train: np.ndarray
    groups_train: np.ndarray
    x_test: torch.Tensor


@dataclass
class FoldOutput:
    """A fold's predictions (test order), per-class scores, training curves and choices made."""

    predicted: np.ndarray
    scores: np.ndarray
    history: dict
    notes: dict = field(default_factory=dict)
    predict_one: Callable[[torch.Tensor], int] | None = None


class Recipe(ABC):
    """A paper's training procedure; subclasses set ``name``, ``artifacts`` and ``Options``."""

    name: str = ""
    artifacts: tuple[str, ...] = ()
    Options: type = object

    @abstractmethod
    def inputs(self, data: LoadedData, options) -> torch.Tensor:
        """(N, C, H, W) float network input of every loaded sample, in ``data``'s order."""

    def prepare(self, context: RunContext, options, seed: int):
        """Work done once per seed and shared by its folds (none by default)."""
        return None

    @abstractmethod
    def train_fold(self, context: RunContext, options, prepared, fold: FoldData, seed: int) -> FoldOutput:
        """Train on ``fold``'s training samples and predict its test samples."""


# ---------------------------------------------------------------- shared pieces

def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) to (N, C, size, size), bilinear, antialiased when shrinking."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < min(images.shape[-2:]))


def standardiser(x_train: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-channel standardisation fitted on the training samples only (no test statistics leak in)."""
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return lambda x: (x - mean) / std


def _batch_one_predictor(model: nn.Module, device: torch.device, prepare=lambda x: x, head=None):
    def predict_one(x: torch.Tensor) -> int:
        with torch.inference_mode():
            model.eval()
            batch = prepare(x[None]).to(device)
            if head is None:
                return int(model(batch).argmax(1)[0])
            return int(head.predict(model.forward_features(batch).float().cpu().numpy())[0])
    return predict_one


# ---------------------------------------------------------------- STSTNet

@dataclass(frozen=True)
class STSTNetOptions:
    """STSTNet's training (Liong et al. 2019 train with Adam on the composite's LOSO folds).

    The flow and strain are standardised per channel with the training fold's statistics; classes
    are balanced by augmented copies of the smaller classes (shifts up to ``max_shift`` of the side
    and horizontal flips that negate ``u``).
    """

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    dropout: float = 0.5
    balance: str = "augment"
    max_shift: float = 0.07
    validation: float = 0.0


class STSTNetRecipe(Recipe):
    name = "ststnet"
    artifacts = ("flow", "strain")
    Options = STSTNetOptions

    def inputs(self, data: LoadedData, options: STSTNetOptions) -> torch.Tensor:
        from mepipe.models.ststnet import STSTNET_SIZE

        flow = torch.from_numpy(np.asarray(data.arrays["flow"], dtype=np.float32))
        strain = torch.from_numpy(np.asarray(data.arrays["strain"], dtype=np.float32))
        stored = flow.shape[-1]
        # displacements are in pixels of the stored grid: they shrink with it
        flow = resize(flow, STSTNET_SIZE) * (STSTNET_SIZE / stored)
        return torch.cat([flow, resize(strain, STSTNET_SIZE)], dim=1)

    def train_fold(self, context: RunContext, options: STSTNetOptions, prepared, fold: FoldData, seed: int) -> FoldOutput:
        from mepipe.models.ststnet import ststnet

        normalise = standardiser(fold.x_train)
        config = TrainConfig(epochs=options.epochs, batch_size=options.batch_size, lr=options.lr,
                             weight_decay=options.weight_decay, balance=options.balance,
                             max_shift=options.max_shift, flip_negates=(0,), validation=options.validation)
        model = ststnet(num_classes=len(context.classes), dropout=options.dropout)
        history = _fit_with_validation(model, normalise(fold.x_train), fold.y_train, fold.groups_train, config,
                                       seed=seed, device=context.device)
        logits = predict_logits(model, normalise(fold.x_test), device=context.device)
        return FoldOutput(logits.argmax(1).numpy(), logits.numpy(), history.to_dict(),
                          predict_one=_batch_one_predictor(model, context.device, normalise))


def _fit_with_validation(model, x, y, groups, config: TrainConfig, *, seed: int, device, **kwargs) -> History:
    if config.validation > 0:
        train, val = subject_split(groups, config.validation, np.random.default_rng([seed, 7]))
        return fit(model, x[train], y[train], config, seed=seed, device=device, x_val=x[val], y_val=y[val], **kwargs)
    return fit(model, x, y, config, seed=seed, device=device, **kwargs)


# ---------------------------------------------------------------- MobileViT

MACRO_DATASETS = ("ckplus", "oulu", "jaffe", "mug")


@dataclass(frozen=True)
class MobileViTOptions:
    """Liu et al. 2022 ("Lightweight ViT Model for Micro-Expression Recognition Enhanced by Transfer Learning").

    Input: the aligned apex frame, grayscale, eyes masked, at ``size`` = 256.

    Transfer (``transfer``): the whole network is trained on the macro-expression groups of the
    store (``macro``: those present are used) under their 3-class protocol with SGD, momentum 0.9,
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
class Pretrained:
    """The macro-expression stage's result: the convolutional weights and how they were got."""

    state: dict[str, torch.Tensor]
    history: dict
    samples: int
    seconds: float


class MobileViTRecipe(Recipe):
    name = "mobilevit"
    artifacts = ("face",)
    Options = MobileViTOptions

    def inputs(self, data: LoadedData, options: MobileViTOptions) -> torch.Tensor:
        return _apex_frames(data, options.size)

    # ---------------------------------------------------------------- transfer

    def prepare(self, context: RunContext, options: MobileViTOptions, seed: int) -> Pretrained | None:
        if not options.transfer:
            return None
        from mepipe.models.mobilevit import mobilevit_s

        x, y, groups, names = self._macro_samples(context.store, options)
        context.log(f"macro-expression transfer: {len(y)} apex frames of {', '.join(names)} "
                    f"({', '.join(f'{c} {int((y == i).sum())}' for i, c in enumerate(context.classes))})")
        model = mobilevit_s(num_classes=len(context.classes), in_chans=1, dropout=options.dropout)
        config = TrainConfig(epochs=options.macro_epochs, batch_size=options.macro_batch_size, lr=options.macro_lr,
                             optimizer="sgd", momentum=0.9, weight_decay=options.weight_decay,
                             balance=options.balance, max_shift=20 / options.size,
                             validation=options.macro_validation, patience=options.macro_epochs)
        start = time.perf_counter()
        history = _fit_with_validation(model, x, y, groups, config, seed=seed, device=context.device,
                                       parameters=_decay_groups,
                                       progress=_epoch_logger(context.log, "macro", options.macro_epochs))
        context.log(f"macro-expression transfer: best validation UF1 {max(history.val_uf1):.3f} "
                    f"at epoch {history.best_epoch + 1}, {time.perf_counter() - start:.0f} s")
        return Pretrained({k: v.detach().cpu().clone() for k, v in model.transfer_state_dict().items()},
                          history.to_dict(), len(y), time.perf_counter() - start)

    def _macro_samples(self, store: Path, options: MobileViTOptions):
        frames, labels, groups, names = [], [], [], []
        present = datasets_in(open_store(store))
        for name in options.macro:
            if name not in present:
                continue
            data = load(store, name, ["face"], "3class")
            if not len(data):
                continue
            frames.append(_apex_frames(data, options.size))
            labels.append(data.meta["label"])
            groups.append(data.meta["group"])
            names.append(name)
        if not frames:
            raise OptionError(
                f"MobileViT's transfer needs a macro-expression group ({', '.join(options.macro)}) with a built "
                f"face in {store}; build one (mepipe build --dataset ckplus --root ... --artifacts face) "
                "or train with -s transfer=false")
        return torch.cat(frames), np.concatenate(labels), np.concatenate(groups), names

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
        if not options.svm:
            logits = predict_logits(model, fold.x_test, device=context.device)
            return FoldOutput(logits.argmax(1).numpy(), logits.numpy(), history.to_dict(), notes,
                              _batch_one_predictor(model, context.device))
        head, notes["svm_c"] = _fit_svm(extract_features(model, fold.x_train, device=context.device),
                                        fold.y_train, fold.groups_train, options.svm_c)
        features = extract_features(model, fold.x_test, device=context.device)
        scores = head.decision_function(features)
        if scores.ndim == 1:  # two classes in the training fold: one signed distance
            scores = np.stack([-scores, scores], axis=1)
        return FoldOutput(head.predict(features), _full_scores(scores, head.classes_, len(context.classes)),
                          history.to_dict(), notes, _batch_one_predictor(model, context.device, head=head))

    def _train(self, context, options, prepared, x, y, x_val, y_val, batch_size, lr, epochs, seed):
        from mepipe.models.mobilevit import mobilevit_s

        torch.manual_seed(seed)
        model = mobilevit_s(num_classes=len(context.classes), in_chans=1, dropout=options.dropout)
        schedule = None
        if prepared is not None:
            model.load_transfer_state_dict(prepared.state)
            schedule = _progressive_unfreezing(model, options.frozen_epochs, options.unfreeze_every)
        config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adam",
                             weight_decay=options.weight_decay, balance=options.balance,
                             max_shift=options.max_shift, patience=epochs)
        history = fit(model, x, y, config, seed=seed, device=context.device, x_val=x_val, y_val=y_val,
                      before_epoch=schedule, parameters=_decay_groups,
                      progress=None if x_val is not None else _epoch_logger(context.log, "  fine-tune", epochs))
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


def _apex_frames(data: LoadedData, size: int) -> torch.Tensor:
    """(N, 1, size, size) float in 0..1: the ``face`` artifact's apex channel (eyes masked)."""
    face = np.asarray(data.arrays["face"])
    apex = torch.from_numpy(face[:, 1:2].astype(np.float32) / 255.0)
    return resize(apex, size)


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


def _fit_svm(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, c_values: Sequence[float]):
    """An RBF SVM on standardised features; C by leave-subjects-out CV on the training subjects."""
    from sklearn.model_selection import GridSearchCV, GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    pipeline = make_pipeline(StandardScaler(), SVC(kernel="rbf", class_weight="balanced"))
    subjects = len(set(groups))
    if len(c_values) > 1 and subjects >= 3:
        search = GridSearchCV(pipeline, {"svc__C": list(c_values)}, scoring="f1_macro",
                              cv=GroupKFold(n_splits=min(5, subjects)))
        search.fit(features, labels, groups=groups)
        return search.best_estimator_, float(search.best_params_["svc__C"])
    pipeline.set_params(svc__C=float(c_values[0]))
    return pipeline.fit(features, labels), float(c_values[0])


def _full_scores(scores: np.ndarray, present: np.ndarray, n_classes: int) -> np.ndarray:
    """Scores of the classes a fold's SVM saw, placed in the protocol's class columns (others -inf)."""
    out = np.full((len(scores), n_classes), -np.inf)
    out[:, np.asarray(present, dtype=int)] = scores
    return out


def _epoch_logger(log: Callable[[str], None], what: str, epochs: int):
    step = max(1, epochs // 5)

    def report(epoch: int, history: History) -> None:
        if (epoch + 1) % step == 0 or epoch + 1 == epochs:
            text = f"{what} epoch {epoch + 1}/{epochs}: loss {history.train_loss[-1]:.3f}, accuracy {history.train_accuracy[-1]:.2f}"
            if history.val_uf1:
                text += f", validation UF1 {history.val_uf1[-1]:.2f}"
            log(text)
    return report


# ---------------------------------------------------------------- registry and settings

RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in (STSTNetRecipe(), MobileViTRecipe())}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise OptionError(f"unknown model {name!r}; models: {', '.join(RECIPES)}")
    return RECIPES[name]


def apply_settings(options, settings: Sequence[str]):
    """``options`` with ``name=value`` settings applied, each converted to the field's type."""
    kinds = {f.name: f for f in dataclasses.fields(options)}
    changes = {}
    for text in settings:
        name, sep, raw = text.partition("=")
        name = name.strip()
        if not sep:
            raise OptionError(f"setting {text!r}: expected NAME=VALUE, e.g. epochs=10")
        if name not in kinds:
            raise OptionError(f"setting {text!r}: no option {name!r}; options: {', '.join(kinds)}")
        default = getattr(options, name)
        changes[name] = _convert(name, raw.strip(), default)
    try:
        return dataclasses.replace(options, **changes)
    except ValueError as error:
        raise OptionError(str(error)) from None


def _convert(name: str, raw: str, default):
    try:
        if isinstance(default, bool):
            lowered = raw.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, tuple):
            kind = type(default[0]) if default else str
            return tuple(kind(part.strip()) for part in raw.split(",") if part.strip())
        return type(default)(raw)
    except ValueError:
        raise OptionError(f"setting {name}={raw!r}: expected {type(default).__name__} like {default!r}") from None


def options_dict(options) -> dict:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(options).items()}
