"""STSTNet's recipe: optical flow and strain at 28 x 28, Adam, augmented class balance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mepipe.models.recipes.base import (FoldData, FoldOutput, Recipe, RunContext, batch_one_predictor,
                                        fit_with_validation, resize, standardiser)
from mepipe.models.training import TrainConfig, predict_logits
from mepipe.pipeline.load import LoadedData

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
        history = fit_with_validation(model, normalise(fold.x_train), fold.y_train, fold.groups_train, config,
                                       seed=seed, device=context.device)
        logits = predict_logits(model, normalise(fold.x_test), device=context.device)
        return FoldOutput(logits.argmax(1).numpy(), logits.numpy(), history.to_dict(),
                          predict_one=batch_one_predictor(model, context.device, normalise))
