"""The recipe interface, and the pieces several recipes share (resizing, standardising, the SVM head)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mepipe.models.svm_head import SVMHead
from mepipe.models.training import History, Inputs, TrainConfig, fit, subject_split
from mepipe.pipeline.load import LoadedData
from mepipe.pipeline.variants import ModelInputs


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
    #: the input variant the run reads (the model's own unless ``mepipe train --variant``); None:
    #: each dataset group's own (a build without ``--for``)
    variant: object = None


@dataclass
class FoldData:
    x_train: torch.Tensor | Inputs
    y_train: np.ndarray
    groups_train: np.ndarray
    x_test: torch.Tensor | Inputs


class Normaliser(nn.Module):
    """``(x - mean) / scale``, its statistics fitted on a fold's training samples and kept as
    buffers, so that a checkpoint holds them. For :class:`Inputs` it maps the image tensor only."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32).clone())

    def forward(self, x: torch.Tensor | Inputs) -> torch.Tensor | Inputs:
        if isinstance(x, Inputs):
            return x.map_images(self)
        return (x - self.mean) / self.scale


@dataclass
class TrainedModel:
    """What a fold's training leaves to predict any sample with, and what a checkpoint saves.

    network : the trained network (in eval mode to predict).
    num_classes : the protocol's classes (the scores' columns).
    shape : the arguments of :meth:`Recipe.network` beyond the options and the number of classes
        (``{"in_chans": 3}``), found from the training inputs: what rebuilds the same network.
    normaliser : the recipe's input scaling, fitted on the training samples (None: none).
    head : an SVM on ``network.forward_features`` in place of the network's own classifier.
    images_only : the network reads only the image tensor of the recipe's :class:`Inputs`
        (MFVAN: the clip frames are for its teacher's pre-training, not for prediction).
    """

    network: nn.Module
    num_classes: int
    shape: dict = field(default_factory=dict)
    normaliser: Normaliser | None = None
    head: SVMHead | None = None
    images_only: bool = False

    def network_input(self, x: torch.Tensor | Inputs) -> torch.Tensor | Inputs:
        if self.normaliser is not None:
            x = self.normaliser(x)
        return x.images if self.images_only and isinstance(x, Inputs) else x

    @torch.inference_mode()
    def predict(self, x: torch.Tensor | Inputs, device: torch.device,
                batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(N,) predicted class and (N, num_classes) scores of the recipe's inputs ``x``: the
        network's logits, or the SVM head's decision values (classes the fold's SVM did not see
        score -inf)."""
        from mepipe.models.training import extract_features, predict_logits

        x = self.network_input(x)
        if not len(x):
            return np.zeros(0, np.int64), np.zeros((0, self.num_classes))
        if self.head is None:
            logits = predict_logits(self.network, x, device=device, batch_size=batch_size)
            return logits.argmax(1).numpy(), logits.numpy()
        features = extract_features(self.network, x, device=device, batch_size=batch_size)
        scores = self.head.decision_function(features)
        if scores.ndim == 1:  # two classes in the training fold: one signed distance
            scores = np.stack([-scores, scores], axis=1)
        return self.head.predict(features), full_scores(scores, self.head.classes, self.num_classes)

    def predict_one(self, device: torch.device) -> Callable[[torch.Tensor | Inputs], int]:
        """The class of one sample (without the batch axis), for the inference timing."""
        def predict_one(x: torch.Tensor | Inputs) -> int:
            return int(self.predict(x[None], device)[0][0])
        return predict_one


@dataclass
class FoldOutput:
    """A fold's predictions (test order), per-class scores, training curves and choices made.

    ``trained``: the fold's model, kept by ``mepipe train`` as a checkpoint (see
    :mod:`mepipe.models.checkpoint`); None for a recipe that has no model to keep.
    """

    predicted: np.ndarray
    scores: np.ndarray
    history: dict
    notes: dict = field(default_factory=dict)
    predict_one: Callable[[torch.Tensor], int] | None = None
    trained: TrainedModel | None = None

    @classmethod
    def of(cls, trained: TrainedModel, x_test, context: RunContext, history: History | dict,
           notes: dict | None = None) -> FoldOutput:
        """The fold's output from its trained model: the same code predicts the test samples here
        and any new sample from its checkpoint (``mepipe predict``)."""
        predicted, scores = trained.predict(x_test, context.device)
        return cls(predicted, scores, history if isinstance(history, dict) else history.to_dict(), notes or {},
                   trained.predict_one(context.device), trained)


class Recipe(ABC):
    """A paper's training procedure; subclasses set ``name``, ``artifacts``, ``Options`` and
    ``inputs_spec``, the :class:`~mepipe.pipeline.variants.ModelInputs` its paper describes (its
    ``artifacts`` are the recipe's)."""

    name: str = ""
    artifacts: tuple[str, ...] = ()
    Options: type = object
    inputs_spec: ModelInputs | None = None
    #: names of the input tensor's channels, for pictures (empty: numbered)
    input_channels: tuple[str, ...] = ()

    @abstractmethod
    def inputs(self, data: LoadedData, options) -> torch.Tensor | Inputs:
        """(N, C, H, W) float network input of every loaded sample, in ``data``'s order (or
        :class:`~mepipe.models.training.Inputs` for a model of several inputs)."""

    def prepare(self, context: RunContext, options, seed: int):
        """Work done once per seed and shared by its folds (none by default)."""
        return None

    @abstractmethod
    def train_fold(self, context: RunContext, options, prepared, fold: FoldData, seed: int) -> FoldOutput:
        """Train on ``fold``'s training samples and predict its test samples."""

    @abstractmethod
    def network(self, options, num_classes: int, **shape) -> nn.Module:
        """A new (untrained) network at ``options`` and ``shape`` (``TrainedModel.shape``): what
        a checkpoint's weights are loaded into. The recipe's ``train_fold`` builds its network here."""


# ---------------------------------------------------------------- shared pieces

def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) to (N, C, size, size), bilinear, antialiased when shrinking."""
    if tuple(images.shape[-2:]) == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < min(images.shape[-2:]))


def standardiser(x_train: torch.Tensor) -> Normaliser:
    """Per-channel standardisation fitted on the training samples only (no test statistics leak in)."""
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return Normaliser(mean, std)


# ---------------------------------------------------------------- shared by several recipes

def fit_with_validation(model, x, y, groups, config: TrainConfig, *, seed: int, device, **kwargs) -> History:
    if config.validation > 0:
        train, val = subject_split(groups, config.validation, np.random.default_rng([seed, 7]))
        return fit(model, x[train], y[train], config, seed=seed, device=device, x_val=x[val], y_val=y[val], **kwargs)
    return fit(model, x, y, config, seed=seed, device=device, **kwargs)


#: Images stacked in one sample of each fixed-size image artifact: face (onset, apex), residual
#: (ARS, RRS), dynamic (one image). A colour variant stores each image as 3 channels (R, G, B),
#: image by image: face (onset_r, onset_g, onset_b, apex_r, apex_g, apex_b).
IMAGES_PER_SAMPLE = {"face": 2, "residual": 2, "dynamic": 1}


def _first_sample(data: LoadedData, index: int = 0) -> str:
    ids = data.meta.get("sample_id")
    return str(ids[index]) if ids is not None and len(ids) > index else f"(no samples of {data.dataset})"


def image_channels(data: LoadedData, name: str, model: str, what: str) -> int:
    """Channels of each image of the fixed-size artifact ``name``: 1 (gray) or 3 (colour, RGB).

    The layout is read from ``data.channels`` where the store names the channels, else from the
    array's channel count (``IMAGES_PER_SAMPLE`` images of 1 or 3 channels). Anything else is a
    ValueError of one line naming the sample, the shape found and the shapes ``model`` reads.
    """
    images = IMAGES_PER_SAMPLE[name]
    array = np.asarray(data.arrays[name])
    named = (getattr(data, "channels", None) or {}).get(name)
    count = len(named) if named else (array.shape[1] if array.ndim == 4 else -1)
    square = array.ndim == 4 and array.shape[2] == array.shape[3]
    if not square or count != array.shape[1] or count not in (images, 3 * images):
        found = tuple(array.shape[1:]) if array.ndim >= 1 else ()
        raise ValueError(f"sample {_first_sample(data)}: {name} is {found}; {model} reads {what} as "
                         f"({images}, S, S) gray or ({3 * images}, S, S) colour")
    return count // images


def clip_channels(data: LoadedData, name: str, model: str) -> int:
    """Channels of the ragged clips ``name`` (``frames``): 1 for gray (T, S, S), 3 for colour
    (T, S, S, 3) RGB; ValueError of one line naming the first sample whose clip is neither, or
    whose layout differs from the first clip's."""
    clips = data.arrays[name]
    layout = None
    for index, clip in enumerate(clips):
        shape = np.shape(clip)
        square = len(shape) >= 3 and shape[1] == shape[2] and shape[0] >= 1
        kind = 1 if square and len(shape) == 3 else 3 if square and len(shape) == 4 and shape[3] == 3 else None
        if kind is None or (layout is not None and kind != layout):
            expected = {None: "(T, S, S) gray or (T, S, S, 3) colour", 1: "(T, S, S) gray, as the clips before it",
                        3: "(T, S, S, 3) colour, as the clips before it"}[layout]
            raise ValueError(f"sample {_first_sample(data, index)}: its {name} clip is {tuple(shape)}; "
                             f"{model} reads {expected}, T >= 1")
        layout = kind
    return layout or 1


def apex_frames(data: LoadedData, size: int, model: str = "an apex-frame model") -> torch.Tensor:
    """(N, C, size, size) float in 0..1: the ``face`` artifact's apex image, C = 1 for a gray
    variant (channel 1 of (onset, apex)) and 3 for a colour one (channels 3..5, apex R, G, B).
    Whether its eyes are masked is the variant's (MobileViT's is masked; see ``docs/models/inputs.md``)."""
    channels = image_channels(data, "face", model, "onset and apex")
    face = np.asarray(data.arrays["face"])
    apex = torch.from_numpy(face[:, channels:2 * channels].astype(np.float32) / 255.0)
    return resize(apex, size)


def fit_svm(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, c_values: Sequence[float]):
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


def full_scores(scores: np.ndarray, present: np.ndarray, n_classes: int) -> np.ndarray:
    """Scores of the classes a fold's SVM saw, placed in the protocol's class columns (others -inf)."""
    out = np.full((len(scores), n_classes), -np.inf)
    out[:, np.asarray(present, dtype=int)] = scores
    return out


def epoch_logger(log: Callable[[str], None], what: str, epochs: int):
    """A ``progress`` callback for :func:`fit` that logs about five times a run: the epoch's loss,
    accuracy and validation UF1, the seconds per epoch so far and the time left. Made just before
    training starts, which is when its clock starts."""
    step = max(1, epochs // 5)
    started = time.perf_counter()

    def report(epoch: int, history: History) -> None:
        if (epoch + 1) % step == 0 or epoch + 1 == epochs:
            text = f"{what} epoch {epoch + 1}/{epochs}: loss {history.train_loss[-1]:.3f}, accuracy {history.train_accuracy[-1]:.2f}"
            if history.val_uf1:
                text += f", validation UF1 {history.val_uf1[-1]:.2f}"
            per_epoch = (time.perf_counter() - started) / (epoch + 1)
            text += f", {per_epoch:.1f} s/epoch"
            if epoch + 1 < epochs:
                text += f", ~{per_epoch * (epochs - epoch - 1):.0f} s left"
            log(text)
    return report


