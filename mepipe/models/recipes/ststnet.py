"""STSTNet's recipe: optical flow and strain at 28 x 28, Adam, augmented class balance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mepipe.models.recipes.base import (FoldData, FoldOutput, Recipe, RunContext, TrainedModel, fit_with_validation,
                                        resize, standardiser)
from mepipe.models.training import TrainConfig
from mepipe.pipeline.load import LoadedData
from mepipe.pipeline.variants import ModelInputs, Source, Variant

_NOT_IN_FOLDER = "Liong et al. 2019 is not in /work/shared/papers"

#: What STSTNet reads. Its own paper is not in the folder: the artifact and frames are quoted from
#: the CropNet paper's account of it; size, colour and eyes are what is known of it.
INPUTS = ModelInputs(
    model="ststnet",
    paper="Liong, Gan, See, Khor & Huang 2019 (FG), not in /work/shared/papers",
    variant=Variant(size=224, colour=False, eye_fill="none"),
    artifacts=("flow", "strain"),
    frames="onset -> apex",
    sources={
        "artifact": Source(
            "flow (u, v) and strain",
            "Furthermore, Liong et al. (2019) designed a STSTNet, which can be used to learn three features of optical "
            "flow, namely vertical optical flow, optical strain, and horizontal optical flow.",
            f"{_NOT_IN_FOLDER}; the CropNet paper's account of it, ars-rrs-cropnet-cgpo.md section 2.1.2"),
        "size": Source(
            "flow on the 224 x 224 crop, resized to 28 x 28",
            "",
            f"{_NOT_IN_FOLDER}: STSTNet's input is the (u, v, strain) image resized to 28 x 28. Our choice: the flow is "
            "computed on the 224 px crop (the default variant, shared with every flow reader) and the recipe resizes "
            "it to 28 x 28, scaling the displacements with it; a flow of a 28 px crop would lose the sub-pixel motion"),
        "colour": Source(
            "gray",
            "",
            f"{_NOT_IN_FOLDER}: optical flow and strain are computed on intensity (the store's flow-type artifacts "
            "are always made from gray crops)"),
        "eyes": Source(
            "kept",
            "",
            f"{_NOT_IN_FOLDER}: STSTNet is not known to mask the eyes; of the papers in the folder only MobileViT "
            "masks them"),
        "frames": Source(
            "onset -> apex",
            "These features are calculated by the onset frame and apex frame of ME video.",
            f"{_NOT_IN_FOLDER}; the CropNet paper's account of it, ars-rrs-cropnet-cgpo.md section 2.1.2"),
    },
)


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
    artifacts = INPUTS.artifacts
    Options = STSTNetOptions
    inputs_spec = INPUTS
    input_channels = ("u (px at 28)", "v (px at 28)", "strain")

    def inputs(self, data: LoadedData, options: STSTNetOptions) -> torch.Tensor:
        from mepipe.models.ststnet import STSTNET_SIZE

        flow = torch.from_numpy(np.asarray(data.arrays["flow"], dtype=np.float32))
        strain = torch.from_numpy(np.asarray(data.arrays["strain"], dtype=np.float32))
        stored = flow.shape[-1]
        # displacements are in pixels of the stored grid: they shrink with it
        flow = resize(flow, STSTNET_SIZE) * (STSTNET_SIZE / stored)
        return torch.cat([flow, resize(strain, STSTNET_SIZE)], dim=1)

    def network(self, options: STSTNetOptions, num_classes: int, **shape):
        from mepipe.models.ststnet import ststnet

        return ststnet(num_classes=num_classes, dropout=options.dropout)

    def train_fold(self, context: RunContext, options: STSTNetOptions, prepared, fold: FoldData, seed: int) -> FoldOutput:
        normalise = standardiser(fold.x_train)
        config = TrainConfig(epochs=options.epochs, batch_size=options.batch_size, lr=options.lr,
                             weight_decay=options.weight_decay, balance=options.balance,
                             max_shift=options.max_shift, flip_negates=(0,), validation=options.validation)
        model = self.network(options, len(context.classes))
        history = fit_with_validation(model, normalise(fold.x_train), fold.y_train, fold.groups_train, config,
                                       seed=seed, device=context.device)
        trained = TrainedModel(model, len(context.classes), normaliser=normalise)
        return FoldOutput.of(trained, fold.x_test, context, history)
