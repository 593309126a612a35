"""Exponential moving average of a model's weights (StackGAN-v2 keeps G's average; the average is what
gets saved and sampled)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """`ema = EMA(generator)`; after each optimiser step `ema.update(generator)`; sample with `ema.module`.

    With `warmup` the effective decay is min(decay, (1 + n) / (10 + n)) after n updates, so a short run
    (a few thousand CPU iterations) is not dominated by the random initial weights; it reaches `decay`
    after ~10 000 updates. Buffers (BatchNorm running statistics) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        averaged = dict(self.module.named_parameters())
        for name, param in model.named_parameters():
            averaged[name].lerp_(param.detach(), 1.0 - decay)
        averaged_buffers = dict(self.module.named_buffers())
        for name, buffer in model.named_buffers():
            averaged_buffers[name].copy_(buffer)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "decay": self.decay,
            "warmup": self.warmup,
            "updates": self.updates,
            "module": self.module.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["module"])
