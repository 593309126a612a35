"""Length bookkeeping for padded time series, written so it traces into ONNX with dynamic batch and time.

Padding invariance rests on one rule: before any layer that mixes time steps, every position beyond a
sequence's valid length holds 0 — the same value the layer's own zero padding uses at the tensor's edge —
so a valid output never depends on how much padding follows it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_out_lengths(lengths: torch.Tensor, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """Valid output length of a conv/pool: the standard output-size formula applied to the valid length,
    never below 1 (a 1-frame utterance keeps one step). Monotone in the length, so it never exceeds the
    output size of the padded tensor."""
    # Clamp before dividing: the division is then of non-negative integers, where ONNX's truncating Div
    # and torch's floor division agree.
    return torch.clamp(lengths + (2 * padding - kernel), min=0) // stride + 1


def time_mask(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, 1, T) bool mask of valid steps for x laid out (B, C, T).

    Built from a cumulative sum instead of `arange(T)`, so the exported graph reads T from the tensor."""
    steps = torch.cumsum(torch.ones_like(x[:, :1, :]), dim=-1)  # 1..T
    return steps <= lengths.to(x.dtype)[:, None, None]


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence of x (B, T, C) inside its own valid length; padding stays where it is.

    Applying it twice gives x back, so the same call undoes it."""
    steps = torch.cumsum(torch.ones_like(x[:, :, 0], dtype=torch.int64), dim=1) - 1  # (B, T): 0..T-1
    last = lengths[:, None] - 1
    index = torch.where(steps <= last, last - steps, steps)
    return torch.gather(x, 1, index[:, :, None].expand(-1, -1, x.shape[2]))


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics come from valid steps only, so the amount of padding in a
    batch does not shift them. In eval mode it is plain BatchNorm (one affine op per channel in ONNX)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        if not self.training or mask is None:
            return super().forward(x)
        x = x.float()  # statistics in fp32 under bf16 autocast too, as autocast does for BatchNorm itself
        weights = mask.to(x.dtype)  # (B, 1, T)
        count = weights.sum().clamp(min=1.0)
        mean = (x * weights).sum(dim=(0, 2)) / count
        centred = (x - mean[None, :, None]) * weights
        var = (centred * centred).sum(dim=(0, 2)) / count
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                momentum = 0.1 if self.momentum is None else self.momentum
                unbiased = var * count / (count - 1.0).clamp(min=1.0)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(unbiased.detach(), momentum)
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
        out = (x - mean[None, :, None]) / torch.sqrt(var[None, :, None] + self.eps)
        if self.affine:
            out = out * self.weight[None, :, None] + self.bias[None, :, None]
        return out


def masked_instance_norm(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each utterance's channels of x (B, C, T) to zero mean and unit variance over its own valid steps (no affine);
    steps beyond the length come out 0. Statistics in fp32 under bf16 autocast too, as for the batch norm."""
    x = x.float()
    centred = (x - masked_mean(x, mask, dim=2).unsqueeze(2)) * mask.to(x.dtype)
    var = masked_mean(centred * centred, mask, dim=2).unsqueeze(2)
    return centred / torch.sqrt(var + eps)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    weights = mask.to(x.dtype)
    return (x * weights).sum(dim=dim) / weights.sum(dim=dim).clamp(min=1.0)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    # A large finite negative rather than -inf: no NaN if a row were ever fully masked, and exp() is 0.
    return F.softmax(scores.masked_fill(~mask, -1e9), dim=dim)
