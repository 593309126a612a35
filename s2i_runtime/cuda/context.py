"""The device's primary context, pushed around GPU work from whichever thread does it (pycuda).

TensorRT and PyTorch run in the device's primary context, so pycuda must too: `retain_primary_context`,
never `pycuda.autoinit` (which makes a second context whose buffers TensorRT cannot use).

The rule that shapes every GPU class here (docs/gpu.md): pycuda frees a device allocation, a page-locked
host buffer or a stream only while the context object it was made in is current in the freeing thread,
or from the thread that created that context object; anywhere else it warns "out-of-thread context could
not be cleaned up" and the memory stays allocated. Callers arrive from thread pools and the dynamic
batcher's worker, so buffers are made once, reused, and freed explicitly inside `active()` of the same
`PrimaryContext` object, never left to the garbage collector.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..errors import BackendUnavailable


class PrimaryContext:
    """One retained reference to a device's primary context (one per owner of buffers)."""

    def __init__(self, cuda: Any, device_index: int) -> None:
        self._cuda = cuda
        try:
            self._context = cuda.Device(device_index).retain_primary_context()
        except cuda.Error as exc:
            raise BackendUnavailable(f"cannot retain the primary context of device {device_index}: {exc}") from None
        self._released = False

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """This context current on the calling thread for the duration."""
        self._context.push()
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def release(self) -> None:
        """Give the retained reference back; every buffer made in it must be freed before."""
        if not self._released:
            self._released = True
            self._context.detach()


def free_pinned(array: Any) -> None:
    """Free a `pagelocked_empty` array's page-locked memory now (its `base` is pycuda's HostAllocation).

    Call it inside `active()`; the array must not be used afterwards.
    """
    array.base.free()
