"""Multi-process training through torchrun: DistributedDataParallel, gloo on CPU, nccl on GPUs.

Launch: `torchrun --nproc-per-node N -m s2i_train.cli encoder --run-dir RUN ...` (`--run-dir`, since
torchrun reads `--run` as its own `--run-path`) (or `--nnodes/--rdzv-endpoint` across
machines). Without torchrun's environment everything here is a no-op for one process, so the same code
trains single-process. Rank 0 alone writes files; every rank sees the same data order (its own stride of
the global batch) and its own random streams.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist
from torch import nn


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def device() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local % torch.cuda.device_count())
    return torch.device("cpu")


def init(backend: str | None = None) -> bool:
    """Join the process group torchrun describes in the environment; False when running alone."""
    if is_initialized():
        return True
    if not launched_by_torchrun():
        return False
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(device())
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return True


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank when any rank says so (a SIGINT on one stops all at the same step)."""
    if not is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def _collective_device() -> torch.device:
    return device() if dist.get_backend() == "nccl" else torch.device("cpu")


def wrap(module: nn.Module) -> nn.Module:
    """DistributedDataParallel around a module trained by one forward and one backward per step."""
    if not is_initialized() or not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [device().index] if device().type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def broadcast_module(module: nn.Module) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if not is_initialized():
        return
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def average_gradients(module: nn.Module) -> None:
    """All-reduce (mean) the gradients of `module`.

    Used for the GAN instead of the DDP wrapper: a discriminator is run several times (real, wrong, fake)
    before one backward, and the generator step back-propagates through it with its gradients discarded,
    which DDP's once-per-forward bookkeeping does not allow.
    """
    if not is_initialized():
        return
    size = float(world_size())
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def mean_scalars(values: dict[str, float]) -> dict[str, float]:
    """Average logged figures over ranks (same keys on every rank)."""
    if not is_initialized() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], device=_collective_device())
    dist.all_reduce(t)
    t /= world_size()
    return dict(zip(keys, t.tolist(), strict=True))


def parameters_in_sync(module: nn.Module) -> bool:
    """True when every rank holds bit-identical parameters (compares checksums across ranks)."""
    if not is_initialized():
        return True
    with torch.no_grad():
        flat = torch.cat([p.detach().reshape(-1).double() for p in module.parameters()])
        weights = torch.arange(1, flat.numel() + 1, dtype=torch.float64) / flat.numel()
        sums = torch.stack([flat.sum(), (flat * weights).sum()]).to(_collective_device())
    high, low = sums.clone(), sums.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return bool(torch.equal(high, low))
