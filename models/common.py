"""Helpers the zoo builders share."""

from __future__ import annotations

import torch
from torch import nn


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randomize_batchnorm(module: nn.Module, gen: torch.Generator) -> None:
    """Give every batch-norm layer non-trivial statistics, as a trained network would have."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            assert m.running_mean is not None and m.running_var is not None  # track_running_stats (the default)
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(c, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


IMAGE_32 = {"kind": "image", "shape": [3, 32, 32], "dtype": "float32", "low": 0.0, "high": 1.0}


def build_cnn(cls, seed: int):
    """A randomly initialised CNN with realistic batch-norm statistics, for 3x32x32 images."""
    torch.manual_seed(seed)
    model = cls()
    randomize_batchnorm(model, seeded(seed + 1))
    return model.eval(), dict(IMAGE_32), {}
