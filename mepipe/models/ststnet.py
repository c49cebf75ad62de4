"""STSTNet: the shallow triple-stream CNN, the standard baseline of the MEGC2019 composite.

Liong, Gan, See, Khor and Huang, "Shallow Triple Stream Three-dimensional CNN (STSTNet) for
Micro-expression Recognition", FG 2019. The input is one 28 x 28 image of three channels computed
between onset and apex: the horizontal flow u, the vertical flow v and the optical strain. Each
channel set feeds three parallel 3 x 3 convolutions of 3, 5 and 8 filters (the "streams"); each
stream is ReLU, batch-normalised and max-pooled 3 x 3 with stride 3; the 16 maps are concatenated,
average-pooled 2 x 2 and classified by one linear layer. 1,683 parameters for 3 classes.

Readings we chose (the paper gives the layer sizes, not every detail):

- padding 2 before each convolution and padding 1 in the max pool, so 28 x 28 becomes 30 x 30,
  then 10 x 10, then 5 x 5 (the 5 x 5 x 16 = 400 features the paper's figure shows);
- batch normalisation after each stream's ReLU, and dropout 0.5 before the classifier, as in the
  authors' later PyTorch release.
"""

from __future__ import annotations

import torch
from torch import nn

#: The input the network expects: (u, v, strain) at 28 x 28.
STSTNET_SIZE = 28


class STSTNet(nn.Module):
    """Three parallel shallow convolution streams over (u, v, strain), one linear classifier.

    Input (B, in_chans, 28, 28) float; output (B, num_classes) logits. ``forward_features`` gives
    the (B, 400) pooled features the classifier sees.
    """

    def __init__(self, num_classes: int = 3, in_chans: int = 3, filters: tuple[int, ...] = (3, 5, 8),
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.streams = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_chans, width, kernel_size=3, padding=2),
                nn.ReLU(inplace=True),
                nn.BatchNorm2d(width),
                nn.MaxPool2d(kernel_size=3, stride=3, padding=1),
            )
            for width in filters
        )
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)
        self.dropout = nn.Dropout(dropout)
        self.num_features = sum(filters) * 5 * 5
        self.classifier = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or tuple(x.shape[-2:]) != (STSTNET_SIZE, STSTNET_SIZE):
            raise ValueError(f"STSTNet takes (B, C, 28, 28) input, got {tuple(x.shape)}")
        maps = torch.cat([stream(x) for stream in self.streams], dim=1)
        return self.pool(maps).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.forward_features(x)))


def ststnet(num_classes: int = 3, in_chans: int = 3, dropout: float = 0.5) -> STSTNet:
    """STSTNet as in Liong et al. 2019: streams of 3, 5 and 8 filters on 28 x 28 (u, v, strain)."""
    return STSTNet(num_classes=num_classes, in_chans=in_chans, dropout=dropout)
