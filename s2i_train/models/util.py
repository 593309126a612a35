"""Small helpers the training loops share."""

from __future__ import annotations

from torch import nn


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients: for teachers, judges and other fixed networks. Returns the module."""
    module.eval()
    module.requires_grad_(False)
    return module


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
