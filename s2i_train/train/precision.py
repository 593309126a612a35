"""Training arithmetic: fp32, or bf16 autocast on CPUs that do bf16 in hardware.

With `run.precision = "bf16"` each step's forward passes run under CPU autocast: convolutions and matrix
products in bfloat16, reductions, normalisation statistics and losses in fp32 (autocast's own lists), the
weights, gradients, optimiser and EMA state in fp32. Backward passes run outside autocast, as PyTorch
advises; they follow the dtypes the forward pass chose. On CPUs with AVX512-BF16 or AMX the convolutional
stages train faster this way (`python -m benchmarks.train_precision` times each stage;
docs/experiments/training-time-and-precision.md has the measured history). Without hardware bf16 the same
arithmetic is emulated and slower than fp32, hence a warning.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")


def autocast(precision: str) -> contextlib.AbstractContextManager:
    """The context one training step's forward passes run in."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def backward(loss: torch.Tensor) -> None:
    """loss.backward() with autocast switched off, whatever the step's precision."""
    with torch.autocast("cpu", enabled=False):
        loss.backward()


def hardware_bf16() -> bool | None:
    """Whether this CPU does bf16 arithmetic natively (AVX512-BF16 or AMX); None when torch cannot say."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [p for p in probes if p is not None]
    if not probes:
        return None
    return any(p() for p in probes)


def warn_if_emulated(precision: str) -> None:
    if precision == "bf16" and hardware_bf16() is False:
        warnings.warn("run.precision = bf16 on a CPU without AVX512-BF16 or AMX: bf16 is emulated there and "
                      "trains slower than fp32", stacklevel=2)
