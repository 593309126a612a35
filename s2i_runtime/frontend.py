"""The log-Mel front end (docs/design.md, "Front end"), in numpy.

This is the one definition of the features every model in s2i sees. Training (`s2i_train.frontend`),
the CUDA kernel and any in-graph version must agree with it within 1e-3 dB.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache

import numpy as np


@dataclasses.dataclass(frozen=True)
class FrontendSpec:
    """Paper values (Li et al.): 25 ms Hamming window, 10 ms hop, 40 Slaney mel bands, dB re max."""

    sample_rate: int = 16000
    remove_dc: bool = True
    preemphasis: float = 0.97
    n_fft: int = 400
    win_length: int = 400
    hop_length: int = 160
    window: str = "hamming"  # symmetric, as scipy.signal.windows.hamming(400)
    center: bool = True
    pad_mode: str = "reflect"
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 8000.0
    mel_scale: str = "slaney"
    mel_norm: str = "slaney"
    amin: float = 1e-10
    top_db: float = 80.0
    min_frames: int = 64
    max_frames: int = 3000

    def __post_init__(self) -> None:
        if self.window != "hamming" or self.mel_scale != "slaney" or self.mel_norm != "slaney":
            raise ValueError("only the symmetric Hamming window and the Slaney mel scale/norm are implemented")
        if self.pad_mode != "reflect":
            raise ValueError("only reflect padding is implemented")
        if self.win_length > self.n_fft:
            raise ValueError("win_length must not exceed n_fft")

    @property
    def pad_value(self) -> float:
        """Feature value of padding: the dB floor, i.e. silence (not 0 dB, the reference code's bug)."""
        return -self.top_db

    @property
    def n_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples: int) -> int:
        if self.center:
            return 1 + num_samples // self.hop_length
        return 1 + max(0, num_samples - self.n_fft) // self.hop_length

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FrontendSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown front-end spec fields: {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FrontendSpec:
        return cls.from_dict(json.loads(text))


def hamming_window(length: int) -> np.ndarray:
    """Symmetric Hamming window (float64), zero-padded to centre it in n_fft like librosa does."""
    if length == 1:
        return np.ones(1)
    n = np.arange(length)
    return 0.54 - 0.46 * np.cos(2.0 * np.pi * n / (length - 1))


@lru_cache(maxsize=8)
def padded_window(spec: FrontendSpec) -> np.ndarray:
    """The analysis window centred in n_fft samples (float64, read-only)."""
    window = hamming_window(spec.win_length)
    left = (spec.n_fft - spec.win_length) // 2
    window = np.pad(window, (left, spec.n_fft - spec.win_length - left))
    window.setflags(write=False)
    return window


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney: linear below 1 kHz, logarithmic above.
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    mels = hz / f_sp
    return np.where(hz >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(hz, 1e-12) / min_log_hz) / logstep, mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


@lru_cache(maxsize=8)
def mel_filterbank(spec: FrontendSpec) -> np.ndarray:
    """(n_mels, n_freqs) float64 triangular filters, Slaney scale, each normalised to unit area."""
    fft_freqs = np.linspace(0.0, spec.sample_rate / 2, spec.n_freqs)
    mel_points = np.linspace(_hz_to_mel(spec.fmin), _hz_to_mel(spec.fmax), spec.n_mels + 2)
    hz_points = _mel_to_hz(mel_points)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]
    weights.setflags(write=False)
    return weights


class _Scratch:
    """Working arrays kept between calls.

    A 10 s clip needs a few MB of frames and spectra; allocated afresh each call they are fresh pages from
    the kernel (malloc hands blocks this size back on free), and faulting them in costs more than the FFT.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def array(self, name: str, shape: tuple[int, ...], dtype: type) -> np.ndarray:
        size = int(np.prod(shape))
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.size < size:
            buffer = self._buffers[name] = np.empty(size, dtype=dtype)
        return buffer[:size].reshape(shape)


_spare_scratch: list[_Scratch] = []
_scratch_lock = threading.Lock()


@contextmanager
def _scratch() -> Iterator[_Scratch]:
    """A _Scratch for this call alone; at most one per core is kept for later calls."""
    with _scratch_lock:
        scratch = _spare_scratch.pop() if _spare_scratch else _Scratch()
    try:
        yield scratch
    finally:
        with _scratch_lock:
            if len(_spare_scratch) < (os.cpu_count() or 1):
                _spare_scratch.append(scratch)


def _prepared_signal(samples: np.ndarray, spec: FrontendSpec, scratch: _Scratch) -> np.ndarray:
    """DC removal, pre-emphasis and padding, in float64 so that long clips keep their precision."""
    pad = spec.n_fft // 2 if spec.center else 0
    size = samples.size
    signal = scratch.array("signal", (max(size + 2 * pad, spec.n_fft),), np.float64)
    signal[size + 2 * pad :] = 0.0  # center=False and shorter than one window: zeros complete it
    body = signal[pad : pad + size]
    # Converted first: numpy's ufuncs on mixed float32/float64 operands run several times slower.
    np.copyto(body, samples)
    if spec.remove_dc:
        body -= body.mean()
    if spec.preemphasis:
        previous = scratch.array("previous", (size - 1,), np.float64)
        np.multiply(body[:-1], spec.preemphasis, out=previous)
        body[1:] -= previous
    if pad and size > pad:
        signal[:pad] = body[pad:0:-1]
        signal[pad + size :] = body[-2 : -pad - 2 : -1]
    elif pad:
        # Clips shorter than half a window: reflect repeatedly, as the index arithmetic of every other
        # implementation (torch, CUDA) does.
        signal[:] = body[_reflect_index(np.arange(-pad, size + pad), size)]
    return signal


def _reflect_index(index: np.ndarray, length: int) -> np.ndarray:
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    folded = np.abs(index) % period
    return np.where(folded >= length, period - folded, folded)


@lru_cache(maxsize=8)
def _band_groups(spec: FrontendSpec) -> tuple[tuple[slice, slice, np.ndarray], ...]:
    """The filterbank cut into runs of neighbouring bands, each with the bins it touches: (bands, bins,
    float32 weights (bins, bands)).

    Each bin feeds at most two of the 40 triangles, so a dense product wastes 95% of its work; one product
    per run skips most of that, and a few runs (not one per band) keep the number of BLAS calls small: a
    run grows while the zeros it adds cost less than another call.
    """
    weights = mel_filterbank(spec)
    nonzero = [np.flatnonzero(row) for row in weights]
    low = [int(bins[0]) if bins.size else 0 for bins in nonzero]
    high = [int(bins[-1]) + 1 if bins.size else 0 for bins in nonzero]
    groups, first = [], 0
    while first < spec.n_mels:
        last = first + 1
        while last < spec.n_mels:
            joined = (max(high[first : last + 1]) - low[first]) * (last + 1 - first)
            apart = (max(high[first:last]) - low[first]) * (last - first) + high[last] - low[last]
            if joined > apart + _BINS_PER_CALL:
                break
            last += 1
        lo, hi = min(low[first:last]), max(high[first:last])
        block = np.ascontiguousarray(weights[first:last, lo:hi].T, dtype=np.float32)
        block.setflags(write=False)
        groups.append((slice(first, last), slice(lo, hi), block))
        first = last
    return tuple(groups)


# What one more small matrix product costs, in multiply-adds per frame: numpy's call overhead.
_BINS_PER_CALL = 64
# Frames go through in blocks that stay in the core's cache. The block's products also stay small enough
# for OpenBLAS to run them on the calling thread: its own threads would spin against the front end's.
_FRAMES_PER_BLOCK = 256
# Power of two: scaling by it is exact, so a retry after float32 overflow changes nothing else.
_OVERFLOW_SCALE = 2.0**-64


def logmel(audio: np.ndarray, spec: FrontendSpec = FrontendSpec(), threads: int = 1) -> np.ndarray:
    """Log-Mel features of one utterance at spec.sample_rate: (n_mels, frames) float32 in [-top_db, 0].

    `threads`: how many cores this one clip may use (0 = all usable ones); a long clip's frames are then
    cut into that many runs. Inside logmel_batch's workers it is always 1.
    """
    samples = np.asarray(audio).reshape(-1)
    if samples.size == 0:
        raise ValueError("cannot compute features of empty audio")
    with _scratch() as scratch:
        signal = _prepared_signal(samples, spec, scratch)
        frames = np.lib.stride_tricks.sliding_window_view(signal, spec.n_fft)[:: spec.hop_length]
        mel = np.empty((frames.shape[0], spec.n_mels), dtype=np.float32)
        count = frames.shape[0]
        runs = max(1, min(_thread_count(threads), count // _FRAMES_PER_BLOCK))
        step = -(-count // (runs * _FRAMES_PER_BLOCK)) * _FRAMES_PER_BLOCK  # whole blocks per run
        others = [_shared_pool().submit(_mel_power, frames, mel, start, min(start + step, count), spec)
                  for start in range(step, count, step)]
        _mel_power(frames, mel, 0, min(step, count), spec)
        for run in others:
            run.result()
    loudest = mel.max()
    if not np.isfinite(loudest):
        # Power went past float32's range (samples above ~1e16). The floor is then far above amin, and
        # dB are relative to the loudest band, so a copy scaled exactly gives the same features.
        return logmel(samples.astype(np.float64) * _OVERFLOW_SCALE, spec, threads)
    np.maximum(mel, spec.amin, out=mel)
    np.log10(mel, out=mel)
    mel *= 10.0
    mel -= mel.max()
    np.maximum(mel, -spec.top_db, out=mel)
    return mel.T


def _mel_power(frames: np.ndarray, mel: np.ndarray, start: int, stop: int, spec: FrontendSpec) -> None:
    """Mel-band power of frames[start:stop] into mel[start:stop] (float32).

    The FFT runs in float64 (numpy's float32 transform is slower here, and quiet bins would lose digits);
    the power is rounded to float32 once, which costs ~1e-6 dB and halves the bytes the products read.
    """
    window = padded_window(spec)
    with _scratch() as scratch, np.errstate(over="ignore", invalid="ignore"):  # overflow: logmel retries
        block = min(stop - start, _FRAMES_PER_BLOCK)
        windowed = scratch.array("windowed", (block, spec.n_fft), np.float64)
        spectrum = scratch.array("spectrum", (block, spec.n_freqs), np.complex128)
        power = scratch.array("power", (block, spec.n_freqs), np.float32)
        for first in range(start, stop, _FRAMES_PER_BLOCK):
            rows = slice(0, min(first + _FRAMES_PER_BLOCK, stop) - first)
            np.multiply(frames[first : first + rows.stop], window, out=windowed[rows])
            np.fft.rfft(windowed[rows], axis=-1, out=spectrum[rows])
            pairs = spectrum[rows].view(np.float64)
            np.multiply(pairs, pairs, out=pairs)
            np.add(pairs[:, 0::2], pairs[:, 1::2], out=power[rows], casting="same_kind")
            for bands, bins, weights in _band_groups(spec):
                np.matmul(power[rows, bins], weights, out=mel[first : first + rows.stop, bands])


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_in_pool = threading.local()


def _mark_worker() -> None:
    _in_pool.worker = True


def _thread_count(threads: int) -> int:
    if getattr(_in_pool, "worker", False):
        return 1  # a worker that waited on its own pool could deadlock it
    return _usable_cores() if threads <= 0 else threads


def _shared_pool() -> ThreadPoolExecutor:
    """One pool per process for the front end, made on first use (threads cost ~0.1 ms each to start)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_usable_cores(), thread_name_prefix="s2i-frontend", initializer=_mark_worker)
        return _pool


def _after_fork_in_child() -> None:
    # The child has the pool object but none of its threads, and a lock another thread held at the fork
    # would stay held for good.
    global _pool, _pool_lock, _scratch_lock
    _pool, _pool_lock, _scratch_lock = None, threading.Lock(), threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def logmel_batch(
    audios: list[np.ndarray], spec: FrontendSpec = FrontendSpec(), threads: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Features of several utterances, padded with the dB floor to a common length of at least min_frames.

    With `threads` 1 they run one after another in the calling thread; otherwise in parallel on the
    front end's pool, one thread per usable core (numpy's FFT and products release the GIL).
    Returns (features (B, n_mels, T) float32, lengths (B,) int64 in frames).
    """
    if not audios:
        raise ValueError("logmel_batch needs at least one utterance")
    if len(audios) > 1 and _thread_count(threads) > 1:
        features = list(_shared_pool().map(lambda audio: logmel(audio, spec), audios))
    else:
        features = [logmel(audio, spec, threads) for audio in audios]
    lengths = np.array([f.shape[1] for f in features], dtype=np.int64)
    width = max(int(lengths.max()), spec.min_frames)
    batch = np.full((len(features), spec.n_mels, width), spec.pad_value, dtype=np.float32)
    for row, feat in zip(batch, features, strict=True):
        row[:, : feat.shape[1]] = feat
    return batch, lengths

