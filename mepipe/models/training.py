"""The training loop every model shares: balancing, augmentation, early stopping, prediction.

Inputs are in-memory tensors (N, C, H, W): the MER sets are small (the whole composite is 442
samples), so a fold's data are indexed, not streamed. What the MER papers do and this module does:

- **Class balancing** (:func:`balanced_order`): each epoch takes every training sample once and
  tops each smaller class up to the largest one with samples of that class drawn again. Only the
  drawn-again copies are transformed (:func:`random_spatial`: a small shift and a horizontal flip),
  as Liu et al. 2022 balance their classes ("a small random horizontal or vertical shift ... or a
  horizontal flip"). ``balance="sampler"`` draws the copies without transforming them;
  ``balance="none"`` trains on the samples as they are.
- **No model selection on the test fold.** Training runs a fixed number of epochs, or with
  ``validation`` > 0 stops early on a validation split of whole *training* subjects
  (:func:`subject_split`) and keeps the weights of the best validation epoch.
- **Several inputs.** A model that takes more than an image (the onset and apex frames and an
  action-unit vector, say) gets :class:`Inputs`: aligned per-sample tensors, the first of which
  is the image tensor the augmentation applies to; the model is called ``model(*tensors)``.
- **Other losses.** ``criterion(model, inputs, targets) -> (loss, logits)`` replaces the
  cross-entropy for a model trained with auxiliary losses (focal, contrastive, reconstruction).
- **Seeds.** :func:`seed_everything` seeds Python, NumPy and torch; every random draw of a run
  (initialisation, order, augmentation) follows from the seed.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mepipe.models.metrics import uf1

BALANCE_MODES = ("augment", "sampler", "none")


class Inputs:
    """A model's several per-sample inputs, indexed together: ``Inputs(images, au_vectors)``.

    Every tensor has the samples on its first axis. The first is the image tensor (N, C, H, W)
    that :func:`fit` augments (its channels move together, so onset and apex stacked as channels
    get the same shift and flip); the others (action-unit vectors, a second image scale) are
    passed beside it unchanged. Indexing (an int, a slice, an index array, ``None``) indexes
    every tensor, as a tensor would be indexed.
    """

    def __init__(self, *tensors: torch.Tensor) -> None:
        if not tensors:
            raise ValueError("Inputs needs at least one tensor")
        if any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError(f"Inputs' tensors differ in their number of samples: {[len(t) for t in tensors]}")
        self.tensors = tuple(tensors)

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index) -> Inputs:
        picked = object.__new__(Inputs)  # an int index drops the sample axis: lengths no longer agree
        picked.tensors = tuple(tensor[index] for tensor in self.tensors)
        return picked

    @property
    def images(self) -> torch.Tensor:
        return self.tensors[0]

    def to(self, device) -> Inputs:
        moved = object.__new__(Inputs)
        moved.tensors = tuple(tensor.to(device) for tensor in self.tensors)
        return moved

    def map_images(self, function: Callable[[torch.Tensor], torch.Tensor]) -> Inputs:
        """The same inputs with ``function`` applied to the image tensor (e.g. a standardiser)."""
        mapped = object.__new__(Inputs)
        mapped.tensors = (function(self.tensors[0]), *self.tensors[1:])
        return mapped


def images_of(x: torch.Tensor | Inputs) -> torch.Tensor:
    return x.images if isinstance(x, Inputs) else x


def call_model(model: nn.Module, x: torch.Tensor | Inputs, method: str = "forward") -> torch.Tensor:
    """``model(x)``, or ``model(*x.tensors)`` for :class:`Inputs` (``method`` e.g. ``forward_features``)."""
    function = model if method == "forward" else getattr(model, method)
    return function(*x.tensors) if isinstance(x, Inputs) else function(x)


def cross_entropy_criterion(label_smoothing: float = 0.0):
    """The default ``criterion``: the model's logits and their cross-entropy."""
    loss_function = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def criterion(model: nn.Module, inputs, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = call_model(model, inputs)
        return loss_function(logits, targets), logits
    return criterion


@dataclass(frozen=True)
class TrainConfig:
    """How one network is trained.

    epochs : passes over the (balanced) training set.
    batch_size, lr : as named. optimizer : ``adam``, ``adamw`` or ``sgd`` (with ``momentum``).
    weight_decay : L2 penalty added to the gradient of the weights :func:`fit` is told to decay.
    balance : ``augment``, ``sampler`` or ``none`` (module docstring).
    max_shift : largest shift of an augmented copy, as a fraction of the image side.
    flip_negates : channels whose sign flips with a horizontal flip (the ``u`` of a flow).
    validation : fraction of the training subjects held out for early stopping; 0 runs all epochs.
    patience : epochs without a better validation score before stopping.
    label_smoothing : of the cross-entropy loss.
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    balance: str = "augment"
    max_shift: float = 0.05
    flip_negates: tuple[int, ...] = ()
    validation: float = 0.0
    patience: int = 10
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.balance not in BALANCE_MODES:
            raise ValueError(f"balance must be one of {', '.join(BALANCE_MODES)}, got {self.balance!r}")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer must be adam, adamw or sgd, got {self.optimizer!r}")
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {self.epochs}, {self.batch_size}, {self.lr}")
        if not 0 <= self.validation < 1:
            raise ValueError(f"validation must be a fraction in [0, 1), got {self.validation}")


@dataclass
class History:
    """Per-epoch figures of one training run (the curves of the run directory)."""

    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    val_uf1: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {key: value for key, value in self.__dict__.items()}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: the GPU when torch sees one, else the CPU; or any torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {name!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA GPU on this machine")
    return device


def subject_split(groups: Sequence[str], fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) positions: ``fraction`` of the subjects (at least one) held out whole."""
    groups = np.asarray(groups, dtype=object)
    subjects = np.array(sorted(set(groups)), dtype=object)
    if len(subjects) < 2:
        raise ValueError(f"a validation split of whole subjects needs 2 or more training subjects, got {len(subjects)}")
    count = min(len(subjects) - 1, max(1, int(round(fraction * len(subjects)))))
    held = set(rng.choice(subjects, size=count, replace=False))
    mask = np.array([group in held for group in groups])
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def balanced_order(labels: np.ndarray, rng: np.random.Generator, mode: str = "augment") -> tuple[np.ndarray, np.ndarray]:
    """One epoch's sample order and which entries are drawn-again copies (to be augmented).

    Every sample appears once; with ``mode`` other than ``none`` each class is topped up to the
    size of the largest with draws (with replacement) from its own samples.
    """
    labels = np.asarray(labels)
    order = [np.arange(len(labels))]
    copies = [np.zeros(len(labels), dtype=bool)]
    if mode != "none" and len(labels):
        counts = np.bincount(labels)
        largest = counts.max()
        for label, count in enumerate(counts):
            if 0 < count < largest:
                members = np.flatnonzero(labels == label)
                order.append(rng.choice(members, size=largest - count, replace=True))
                copies.append(np.full(largest - count, mode == "augment"))
    order_array, copy_array = np.concatenate(order), np.concatenate(copies)
    permutation = rng.permutation(len(order_array))
    return order_array[permutation], copy_array[permutation]


def random_spatial(images: torch.Tensor, rng: np.random.Generator, max_shift: float = 0.05,
                   flip_negates: Sequence[int] = ()) -> torch.Tensor:
    """A random whole-pixel shift (up to ``max_shift`` of the side, zeros shifted in) and a 50 % flip.

    images: (B, C, H, W). A horizontal flip mirrors displacement fields too, so the channels in
    ``flip_negates`` (a flow's ``u``) change sign with it.
    """
    out = images.clone()
    height, width = images.shape[-2:]
    for index in range(images.shape[0]):
        limit_y, limit_x = int(round(max_shift * height)), int(round(max_shift * width))
        dy, dx = int(rng.integers(-limit_y, limit_y + 1)), int(rng.integers(-limit_x, limit_x + 1))
        image = torch.roll(images[index], shifts=(dy, dx), dims=(-2, -1))
        # torch.roll wraps around; the wrapped rows and columns are blanked, as a shift would leave them
        if dy > 0:
            image[..., :dy, :] = 0
        elif dy < 0:
            image[..., dy:, :] = 0
        if dx > 0:
            image[..., :, :dx] = 0
        elif dx < 0:
            image[..., :, dx:] = 0
        if rng.random() < 0.5:
            image = image.flip(-1)
            for channel in flip_negates:
                image[channel] = -image[channel]
        out[index] = image
    return out


def make_optimizer(config: TrainConfig, decay: Iterable[nn.Parameter], no_decay: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    groups = [{"params": [p for p in decay if p.requires_grad], "weight_decay": config.weight_decay},
              {"params": [p for p in no_decay if p.requires_grad], "weight_decay": 0.0}]
    groups = [group for group in groups if group["params"]]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.lr)
    return torch.optim.Adam(groups, lr=config.lr)


def split_decay(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Weights of convolutions and linear layers (L2 applies) and the rest (norms, biases)."""
    decay, no_decay = [], []
    for module in model.modules():
        for name, parameter in module.named_parameters(recurse=False):
            weighted = isinstance(module, (nn.Conv2d, nn.Linear)) and name == "weight"
            (decay if weighted else no_decay).append(parameter)
    return decay, no_decay


def fit(
    model: nn.Module,
    x: torch.Tensor | Inputs,
    y: np.ndarray,
    config: TrainConfig,
    *,
    seed: int,
    device: torch.device,
    x_val: torch.Tensor | Inputs | None = None,
    y_val: np.ndarray | None = None,
    before_epoch: Callable[[int, nn.Module], bool] | None = None,
    parameters: Callable[[nn.Module], tuple[list, list]] | None = None,
    progress: Callable[[int, History], None] | None = None,
    criterion: Callable[[nn.Module, object, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> History:
    """Train ``model`` in place on (x, y); with a validation set, keep its best epoch's weights.

    before_epoch(epoch, model) may change which parameters train (progressive unfreezing); when
    it returns True the optimizer is made again for the parameters that now require gradients.
    parameters(model) gives (decay, no_decay) lists; by default :func:`split_decay`.
    criterion(model, inputs, targets) gives (loss, logits) of a training batch; by default the
    cross-entropy of the logits with ``config.label_smoothing``. Validation always scores logits.
    """
    if len(x) != len(y):
        raise ValueError(f"{len(x)} inputs but {len(y)} labels")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model.to(device)
    labels = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    criterion = criterion or cross_entropy_criterion(config.label_smoothing)
    split = parameters or split_decay
    optimizer = make_optimizer(config, *split(model))
    history, best_state, best_score, stale = History(), None, -np.inf, 0
    start = time.perf_counter()
    for epoch in range(config.epochs):
        if before_epoch is not None and before_epoch(epoch, model):
            optimizer = make_optimizer(config, *split(model))
        model.train()
        _hold_frozen_norms(model)
        order, copies = balanced_order(np.asarray(y), rng, config.balance)
        total_loss, correct = 0.0, 0
        for begin in range(0, len(order), config.batch_size):
            batch = order[begin:begin + config.batch_size]
            inputs = x[batch]
            augment = copies[begin:begin + config.batch_size]
            if augment.any():
                images = images_of(inputs)
                images[augment] = random_spatial(images[augment], rng, config.max_shift, config.flip_negates)
            inputs, targets = inputs.to(device), labels[batch].to(device)
            if len(batch) == 1 and _has_batch_norm(model):
                continue  # batch norm cannot train on a batch of one; the sample comes again next epoch
            loss, logits = criterion(model, inputs, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
            correct += int((logits.argmax(1) == targets).sum())
        history.train_loss.append(total_loss / len(order))
        history.train_accuracy.append(correct / len(order))
        if x_val is not None and len(x_val):
            val_logits = predict_logits(model, x_val, device=device, batch_size=max(config.batch_size, 64))
            val_labels = torch.as_tensor(np.asarray(y_val), dtype=torch.int64)
            history.val_loss.append(float(F.cross_entropy(val_logits, val_labels)))
            predicted = val_logits.argmax(1).numpy()
            history.val_accuracy.append(float((predicted == np.asarray(y_val)).mean()))
            score = _macro_f1(np.asarray(y_val), predicted)
            history.val_uf1.append(score)
            if score > best_score + 1e-9:
                best_score, stale, history.best_epoch = score, 0, epoch
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
        if progress is not None:
            progress(epoch, history)
        if best_state is not None and stale >= config.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    history.seconds = time.perf_counter() - start
    return history


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor | Inputs, *, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """(N, classes) logits on the CPU, the model in eval mode (restored after)."""
    was_training = model.training
    model.eval()
    out = [call_model(model, x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, 0))


@torch.inference_mode()
def extract_features(model: nn.Module, x: torch.Tensor | Inputs, *, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """(N, F) ``model.forward_features`` in eval mode, as a NumPy array (for an SVM head)."""
    was_training = model.training
    model.eval()
    out = [call_model(model, x[i:i + batch_size].to(device), "forward_features").float().cpu()
           for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out).numpy()


def _hold_frozen_norms(model: nn.Module) -> None:
    """Keep the running statistics of frozen batch norms: a frozen layer must compute as it was trained."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            parameters = list(module.parameters(recurse=False))
            if parameters and not any(p.requires_grad for p in parameters):
                module.eval()


def _has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules())


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return uf1(y_true, y_pred, int(max(y_true.max(initial=0), y_pred.max(initial=0))) + 1)
