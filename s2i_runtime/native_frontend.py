"""The front end's compiled path: s2i_runtime/native/logmel.c, called through ctypes.

`frontend` uses it when the package was built with its C extension (`s2i_runtime._logmel`, compiled at install
when a C compiler is there) and falls back to numpy otherwise; `S2I_FRONTEND=numpy` forces numpy. The C code
computes mel-band power; `frontend` turns it into dB, so the spec's last steps have one implementation. ctypes
releases the GIL for the call, which is what lets threads share a batch (docs/performance.md).
"""

from __future__ import annotations

import ctypes
import importlib.util
import math
import os
from functools import lru_cache

import numpy as np

from .frontend import mel_filterbank, padded_window

ENV_SWITCH = "S2I_FRONTEND"  # "numpy": never use the C path

_P = ctypes.c_void_p


def _library_path() -> str | None:
    spec = importlib.util.find_spec("s2i_runtime._logmel")
    return spec.origin if spec is not None and spec.origin else None


@lru_cache(maxsize=1)
def _loaded() -> tuple[ctypes.CDLL | None, str]:
    """(the library, "") or (None, why not)."""
    path = _library_path()
    if path is None:
        return None, "s2i_runtime._logmel was not built (the package was installed without a C compiler)"
    try:
        lib = ctypes.CDLL(path)
        lib.s2i_lanes.restype = ctypes.c_int
        for prepare in (lib.s2i_prepare_f32, lib.s2i_prepare_f64):
            prepare.restype = ctypes.c_int
            prepare.argtypes = [_P, ctypes.c_int64, ctypes.c_int64, ctypes.c_int, ctypes.c_double, _P,
                                ctypes.c_int64]
        lib.s2i_mel_power.restype = ctypes.c_int
        lib.s2i_mel_power.argtypes = [_P, ctypes.c_int64, ctypes.c_int64, ctypes.c_int, ctypes.c_int, _P,
                                      ctypes.c_int, _P, _P, _P, ctypes.c_int, _P, _P, _P, _P, ctypes.c_int64, _P]
    except OSError as exc:
        return None, f"{path} does not load: {exc}"
    except AttributeError as exc:  # built from an older logmel.c: reinstall to rebuild it
        return None, f"{path} is out of date ({exc}); reinstall the package"
    return lib, ""


def _radices(n: int) -> list[int]:
    """n's factors, fours first (the cheapest butterfly per point), then twos, then odd primes."""
    radices = []
    while n % 4 == 0:
        radices.append(4)
        n //= 4
    factor = 2
    while n > 1:
        if n % factor == 0:
            radices.append(factor)
            n //= factor
        else:
            factor += 1
    return radices


class NativeFrontend:
    """The C path for one spec: its tables, and the two calls."""

    def __init__(self, lib: ctypes.CDLL, spec) -> None:
        self._lib = lib
        self.spec = spec
        n = spec.n_fft
        self.lanes = int(lib.s2i_lanes())
        self.radices = np.array(_radices(n), dtype=np.int32)
        twiddles, rotations, length = [], [], n
        for r in self.radices:
            m = length // r
            p, k = np.meshgrid(np.arange(m), np.arange(1, r), indexing="ij")
            twiddles.append(np.exp(-2j * np.pi * p * k / length).reshape(-1))
            if r == 5:
                rotations.append(np.array([math.cos(2 * math.pi / 5), math.cos(4 * math.pi / 5),
                                           math.sin(2 * math.pi / 5), math.sin(4 * math.pi / 5)]))
            elif r not in (2, 4):
                rotations.append(np.exp(-2j * np.pi * np.arange(r) / r).view(np.float64))
            length = m
        self._twiddles = np.ascontiguousarray(np.concatenate(twiddles).view(np.float64))
        self._rotations = np.concatenate(rotations) if rotations else np.zeros(1)
        self._window = np.ascontiguousarray(padded_window(spec), dtype=np.float64)
        weights = mel_filterbank(spec)
        starts, lengths, values = [], [], []
        for row in weights:
            bins = np.flatnonzero(row)
            low, high = (int(bins[0]), int(bins[-1]) + 1) if bins.size else (0, 0)
            starts.append(low)
            lengths.append(high - low)
            values.append(row[low:high])
        self._band_start = np.array(starts, dtype=np.int32)
        self._band_length = np.array(lengths, dtype=np.int32)
        self._band_weights = np.ascontiguousarray(np.concatenate(values), dtype=np.float64)
        self.work_size = 4 * n * self.lanes + (n // 2 + 1) * 2 * self.lanes
        # The tables' addresses, taken once: each `.ctypes.data` costs about a microsecond.
        self._tables = (self._window.ctypes.data, len(self.radices), self.radices.ctypes.data,
                        self._twiddles.ctypes.data, self._rotations.ctypes.data, spec.n_mels,
                        self._band_start.ctypes.data, self._band_length.ctypes.data, self._band_weights.ctypes.data)

    def prepare(self, signal: np.ndarray, samples: np.ndarray) -> None:
        """DC removal, pre-emphasis and padding of `samples` into `signal` (float64, contiguous), as
        frontend._prepare_into does."""
        spec = self.spec
        # float32 as it comes (what the runtime reads); anything else in float64, as numpy's path takes it.
        single = np.asarray(samples).dtype == np.float32
        samples = np.ascontiguousarray(samples, dtype=np.float32 if single else np.float64)
        prepare = self._lib.s2i_prepare_f32 if single else self._lib.s2i_prepare_f64
        if signal.dtype != np.float64 or not signal.flags.c_contiguous:
            raise ValueError("native front end: the signal buffer must be contiguous float64")
        status = prepare(samples.ctypes.data, samples.size, spec.edge_pad, int(spec.remove_dc), float(spec.preemphasis),
                         signal.ctypes.data, signal.size)
        if status != 0:
            raise ValueError("native front end: bad signal buffer")

    def mel_power(self, signal: np.ndarray, first: int, count: int, out: np.ndarray, work: np.ndarray) -> None:
        """Mel-band power of frames first..first+count-1 of a prepared `signal` into out[:, :count] (out: a
        float32 (n_mels, >= count) view whose columns are contiguous frames of one row stride)."""
        spec = self.spec
        if count <= 0:
            return
        # The C code trusts its arguments: every buffer it touches is checked here.
        if (first < 0 or (first + count - 1) * spec.hop_length + spec.n_fft > signal.size
                or signal.dtype != np.float64 or not signal.flags.c_contiguous):
            raise ValueError("native front end: frames past the end of the signal")
        if (out.dtype != np.float32 or out.shape[0] != spec.n_mels or out.shape[1] < count
                or out.strides[1] != out.itemsize or work.size < self.work_size or work.dtype != np.float64):
            raise ValueError("native front end: bad output or work buffer")
        status = self._lib.s2i_mel_power(signal.ctypes.data, first, count, spec.n_fft, spec.hop_length, *self._tables,
                                         out.ctypes.data, out.strides[0] // out.itemsize, work.ctypes.data)
        if status != 0:
            raise ValueError("native front end: bad arguments")


@lru_cache(maxsize=8)
def _for_spec(spec) -> NativeFrontend | None:
    lib, _ = _loaded()
    return None if lib is None else NativeFrontend(lib, spec)


def _switched_off() -> bool:
    return os.environ.get(ENV_SWITCH, "").strip().lower() == "numpy"


def native_frontend(spec) -> NativeFrontend | None:
    """The C path for `spec`, or None (not built, or switched off with S2I_FRONTEND=numpy)."""
    return None if _switched_off() else _for_spec(spec)


def built() -> bool:
    """Whether the C extension is installed and loads (whatever S2I_FRONTEND says)."""
    return _loaded()[0] is not None


def describe() -> dict[str, str]:
    """Which implementation computes the runtime's features here, and why not the C one when it is not."""
    if _switched_off():
        return {"implementation": "numpy", "reason": f"{ENV_SWITCH}=numpy"}
    lib, reason = _loaded()
    if lib is None:
        return {"implementation": "numpy", "reason": reason}
    return {"implementation": "c", "library": str(_library_path())}
