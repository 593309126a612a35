"""A recording stand-in for `pycuda.driver`, for testing s2i's GPU plumbing on a machine without a GPU.

Host memory plays device memory, so copies, kernel arguments (with an emulation) and TensorRT stand-in
engines (fake_tensorrt.py) see real data. It enforces the pycuda and CUDA rules that s2i's code must keep,
and records what the code did: which thread allocated and freed what, and when.

- Every allocation, copy, launch and stream needs a current context on the calling thread.
- pycuda's freeing rule (cuda.hpp, `scoped_context_activation`): memory and streams are freed only if the
  context object they were made in is current on the freeing thread, or the freeing thread created that
  context object. Otherwise pycuda warns and the memory stays allocated: recorded in `leaks`, and still
  counted by `mem_get_info`, as on the device. This covers explicit `.free()` and garbage collection alike.
- Device allocations are 256-byte aligned, as cuMemAlloc's are.

It tests our logic, nothing more: it says nothing about real pycuda, a driver or a GPU.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from typing import Any

import numpy as np

TOTAL_MEMORY = 1 << 34
ALIGN = 256


@dataclasses.dataclass
class Event:
    op: str  # "alloc", "free", "leak", "htod", "dtoh", "dtod", "launch", "sync", "push", "pop"
    kind: str  # "device", "pinned", "stream", "module", "" for copies and launches
    nbytes: int
    thread: str
    pinned_host: bool | None = None  # for async copies: was the host side page-locked?


class FakeCuda:
    """Use as `cuda` wherever s2i expects `pycuda.driver`."""

    class Error(Exception):
        """pycuda.driver.Error."""

    class LogicError(Error):
        pass

    def __init__(self, *, emulation: Any = None, name: str = "Fake GPU", capability: tuple[int, int] = (8, 6),
                 devices: int = 1, fail_retain: bool = False) -> None:
        self.emulation = emulation  # CpuEmulation: kernels really run (on host memory)
        self.fail_retain = fail_retain
        self.events: list[Event] = []
        self.leaks: list[Event] = []
        # id -> _Record of every allocation not yet freed (leaked ones stay). Records, not the objects, so
        # that dropping an object really garbage-collects it.
        self.live: dict[int, _Record] = {}
        self._lock = threading.RLock()
        self._tls = threading.local()
        self._ids = itertools.count(1)
        fake = self

        class Context:
            def __init__(self) -> None:
                self.creator = threading.current_thread()
                self.detached = False

            def push(self) -> None:
                if self.detached:
                    raise fake.LogicError("cannot push a detached context")
                fake._stack().append(self)
                fake._record("push", "", 0)

            @staticmethod
            def pop() -> None:
                stack = fake._stack()
                if not stack:
                    raise fake.LogicError("cannot pop non-current context")
                stack.pop()
                fake._record("pop", "", 0)

            @staticmethod
            def synchronize() -> None:
                fake._current()

            def detach(self) -> None:
                self.detached = True

        class Device:
            def __init__(self, ordinal: int) -> None:
                if ordinal >= devices:
                    raise fake.LogicError(f"invalid device ordinal {ordinal}")

            @staticmethod
            def count() -> int:
                return devices

            def name(self) -> str:
                return name

            def compute_capability(self) -> tuple[int, int]:
                return capability

            def retain_primary_context(self) -> Context:
                if fake.fail_retain:
                    raise fake.LogicError("cuDevicePrimaryCtxRetain failed: out of memory")
                return Context()

        self.Context, self.Device = Context, Device

    # -- contexts and bookkeeping ------------------------------------------------------------------

    def _stack(self) -> list:
        if not hasattr(self._tls, "stack"):
            self._tls.stack = []
        return self._tls.stack

    def _current(self) -> Any:
        stack = self._stack()
        if not stack:
            raise self.LogicError("no current context on this thread (CUDA_ERROR_INVALID_CONTEXT)")
        return stack[-1]

    def _record(self, op: str, kind: str, nbytes: int, pinned_host: bool | None = None) -> Event:
        event = Event(op, kind, nbytes, threading.current_thread().name, pinned_host)
        with self._lock:
            self.events.append(event)
        return event

    def _release(self, allocation: Any) -> bool:
        """pycuda's rule for freeing; True when the memory is really freed."""
        stack = self._stack()
        current = stack[-1] if stack else None
        if current is not allocation.context and threading.current_thread() is not allocation.context.creator:
            event = self._record("leak", allocation.kind, allocation.nbytes)
            with self._lock:
                self.leaks.append(event)
            return False
        with self._lock:
            self.live.pop(allocation.id, None)
        self._record("free", allocation.kind, allocation.nbytes)
        return True

    def _track(self, allocation: Any, address: int = 0, memory: np.ndarray | None = None) -> None:
        with self._lock:
            self.live[allocation.id] = _Record(allocation.kind, allocation.nbytes, address, memory)
        self._record("alloc", allocation.kind, allocation.nbytes)

    def live_bytes(self, kind: str = "device") -> int:
        with self._lock:
            return sum(a.nbytes for a in self.live.values() if a.kind == kind)

    def count(self, op: str, kind: str | None = None) -> int:
        with self._lock:
            return sum(1 for e in self.events if e.op == op and (kind is None or e.kind == kind))

    # -- pycuda.driver API ---------------------------------------------------------------------------

    def init(self, flags: int = 0) -> None:
        pass

    def mem_get_info(self) -> tuple[int, int]:
        self._current()
        return TOTAL_MEMORY - self.live_bytes("device"), TOTAL_MEMORY

    def mem_alloc(self, nbytes: int) -> _DeviceAllocation:
        return _DeviceAllocation(self, int(nbytes))

    def to_device(self, array: np.ndarray) -> _DeviceAllocation:
        allocation = self.mem_alloc(np.asarray(array).nbytes)
        self.memcpy_htod(allocation, array)
        return allocation

    def pagelocked_empty(self, shape: Any, dtype: Any) -> np.ndarray:
        # The array's base is the allocation, as with pycuda (free it with array.base.free()).
        return np.asarray(_PinnedAllocation(self, shape, dtype))

    def Stream(self, flags: int = 0) -> _Stream:  # noqa: N802 - pycuda's spelling
        return _Stream(self)

    def module_from_buffer(self, data: bytes) -> _Module:
        assert data.endswith(b"\0") and b".entry s2i_power" in data, "expects the shipped NUL-terminated PTX"
        return _Module(self)

    def _device_view(self, address: int, nbytes: int) -> np.ndarray:
        with self._lock:
            for allocation in self.live.values():
                if allocation.kind == "device" and allocation.address <= address and \
                        address + nbytes <= allocation.address + allocation.nbytes:
                    offset = address - allocation.address
                    return allocation.memory[offset : offset + nbytes]
        raise self.LogicError(f"address {address:#x} (+{nbytes}) is in no live device allocation")

    def _is_pinned(self, array: np.ndarray) -> bool:
        start = np.asarray(array).__array_interface__["data"][0]
        with self._lock:
            return any(a.kind == "pinned" and a.address <= start < a.address + a.nbytes for a in self.live.values())

    def memcpy_htod(self, dst: Any, src: np.ndarray) -> None:
        self._htod(dst, src, None)

    def memcpy_htod_async(self, dst: Any, src: np.ndarray, stream: Any = None) -> None:
        self._htod(dst, src, self._is_pinned(src))

    def _htod(self, dst: Any, src: np.ndarray, pinned: bool | None) -> None:
        self._current()
        data = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
        self._device_view(int(dst), data.size)[:] = data
        self._record("htod", "", data.size, pinned)

    def memcpy_dtoh(self, dst: np.ndarray, src: Any) -> None:
        self._dtoh(dst, src, None)

    def memcpy_dtoh_async(self, dst: np.ndarray, src: Any, stream: Any = None) -> None:
        self._dtoh(dst, src, self._is_pinned(dst))

    def _dtoh(self, dst: np.ndarray, src: Any, pinned: bool | None) -> None:
        self._current()
        assert dst.flags.c_contiguous, "pycuda copies into contiguous arrays only"
        flat = dst.reshape(-1).view(np.uint8)
        flat[:] = self._device_view(int(src), flat.size)
        self._record("dtoh", "", flat.size, pinned)

    def memcpy_dtod_async(self, dst: Any, src: Any, nbytes: int, stream: Any = None) -> None:
        self._current()
        data = self._device_view(int(src), int(nbytes)).copy()
        self._device_view(int(dst), int(nbytes))[:] = data
        self._record("dtod", "", int(nbytes))


@dataclasses.dataclass
class _Record:
    kind: str
    nbytes: int
    address: int
    memory: np.ndarray | None


class _Owned:
    """Something made in the current context and freed by pycuda's rule (explicitly or when collected)."""

    kind = "?"

    def __init__(self, fake: FakeCuda, nbytes: int, address: int = 0, memory: np.ndarray | None = None) -> None:
        self.fake = fake
        self.context = fake._current()
        self.nbytes = nbytes
        self.id = next(fake._ids)
        self.valid = True
        fake._track(self, address, memory)

    def free(self) -> None:
        if not self.valid:
            raise self.fake.LogicError("already freed")
        self.valid = False
        self.fake._release(self)

    def __del__(self) -> None:
        if getattr(self, "valid", False):
            self.valid = False
            self.fake._release(self)


class _DeviceAllocation(_Owned):
    kind = "device"

    def __init__(self, fake: FakeCuda, nbytes: int) -> None:
        self._raw = np.zeros(nbytes + ALIGN, dtype=np.uint8)
        offset = (-self._raw.ctypes.data) % ALIGN
        self.memory = self._raw[offset : offset + nbytes]
        self.address = self.memory.ctypes.data
        super().__init__(fake, nbytes, self.address, self.memory)

    def __int__(self) -> int:
        return self.address

    __index__ = __int__


class _PinnedAllocation(_Owned):
    kind = "pinned"

    def __init__(self, fake: FakeCuda, shape: Any, dtype: Any) -> None:
        dtype = np.dtype(dtype)
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        self.memory = np.zeros(max(nbytes, 1), dtype=np.uint8)
        self.address = self.memory.ctypes.data
        self.__array_interface__ = {"shape": shape, "typestr": dtype.str, "data": (self.address, False),
                                    "version": 3}
        super().__init__(fake, nbytes, self.address, self.memory)


class _Stream(_Owned):
    kind = "stream"

    def __init__(self, fake: FakeCuda) -> None:
        super().__init__(fake, 0)
        self.handle = 0x5000 + self.id

    def synchronize(self) -> None:
        self.fake._current()
        self.fake._record("sync", "", 0)


class _Module(_Owned):
    kind = "module"

    def __init__(self, fake: FakeCuda) -> None:
        super().__init__(fake, 0)

    def get_function(self, name: str) -> _Function:
        return _Function(self.fake, name)


class _Function:
    def __init__(self, fake: FakeCuda, name: str) -> None:
        self.fake, self.name = fake, name

    def prepare(self, signature: str) -> _Function:
        from s2i_runtime.cuda.plan import KERNEL_SIGNATURES

        assert signature == KERNEL_SIGNATURES[self.name]
        return self

    def prepared_async_call(self, grid: tuple, block: tuple, stream: Any, *args: Any) -> None:
        self.fake._current()
        self.fake._record("launch", "", 0)
        if self.fake.emulation is not None:
            self.fake.emulation.launch(self.name, grid[0], block[0], args)
