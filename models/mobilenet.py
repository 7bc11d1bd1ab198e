"""MobileNet-style CNN: depthwise-separable convolutions with ReLU6 and hard-swish."""

from __future__ import annotations

import torch
from torch import nn

from .common import build_cnn, conv_bn


def separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        *conv_bn(cin, cin, 3, stride, groups=cin),
        nn.ReLU6(),
        *conv_bn(cin, cout, 1),
        nn.Hardswish(),
    )


class MobileNetS(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, 16, 3, 2), nn.Hardswish())
        self.blocks = nn.Sequential(
            separable(16, 32, 1), separable(32, 64, 2), separable(64, 64, 1), separable(64, 96, 2)
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(96, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def build(seed: int):
    return build_cnn(MobileNetS, seed)


Model = MobileNetS  # the architecture, for loading saved weights
