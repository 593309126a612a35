"""Training arithmetic: fp32, or bf16 autocast on CPUs that do bf16 in hardware.

With `run.precision = "bf16"` (or "auto" on such a CPU) each step's forward passes run under CPU
autocast: convolutions and matrix products in bfloat16, reductions, normalisation statistics and losses in
fp32 (autocast's own lists), the weights, gradients, optimiser and EMA state in fp32. Backward passes run
outside autocast, as PyTorch advises; they follow the dtypes the forward pass chose. On CPUs with
AVX512-BF16 or AMX the convolutional stages train faster this way (`python -m benchmarks.train_precision`
times each stage; docs/experiments/training-time-and-precision.md has the measured history). Without
hardware bf16 the same arithmetic would be emulated, several times slower than fp32, so training refuses
it there.
"""

from __future__ import annotations

import contextlib

import torch

from s2i_runtime.errors import InputError

PRECISIONS = ("fp32", "bf16")
# What a config may say: a precision, or "auto" = bf16 where the CPU does it in hardware, fp32 elsewhere.
SETTINGS = (*PRECISIONS, "auto")


def check_precision(precision: str) -> None:
    if precision not in SETTINGS:
        raise ValueError(f"precision must be one of {', '.join(SETTINGS)}; got {precision!r}")


def resolve_precision(precision: str) -> str:
    """The precision a run on this machine uses for the setting `precision`."""
    check_precision(precision)
    if precision != "auto":
        return precision
    return "bf16" if hardware_bf16() else "fp32"


def autocast(precision: str) -> contextlib.AbstractContextManager:
    """The context one training step's forward passes run in."""
    if resolve_precision(precision) == "fp32":
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


def require_hardware(precision: str) -> None:
    """Refuse bf16 training on a CPU that would emulate it: several times slower than fp32 there, and oneDNN
    has no bf16 recurrent layers without AVX-512, so the speech encoders would fail mid-run."""
    if precision == "bf16" and hardware_bf16() is False:
        raise InputError('run.precision = "bf16" needs a CPU with AVX512-BF16 or AMX, and this one has neither: '
                         'use "auto" (bf16 where the CPU has it) or "fp32"')
