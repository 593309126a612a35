"""The log-Mel front end (docs/design.md, "Front end"), in numpy.

This is the one definition of the features every model in s2i sees. Training (`s2i_train.frontend`),
the CUDA kernel and any in-graph version must agree with it within 1e-3 dB.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import threading
from collections.abc import Callable, Iterator
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
    def edge_pad(self) -> int:
        """Samples of reflect padding on each side of a clip: half a window when frames are centred."""
        return self.n_fft // 2 if self.center else 0

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
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.size < size:
            buffer = self._buffers[name] = np.empty(size, dtype=dtype)
        return buffer[:size].reshape(shape)


_spare_scratch: list[_Scratch] = []
_SPARE_SCRATCH = os.cpu_count() or 1  # asked once: os.cpu_count() reads /sys at every call
_scratch_lock = threading.Lock()


@contextmanager
def _scratch(given: _Scratch | None = None) -> Iterator[_Scratch]:
    """A _Scratch for this call alone (or `given`, the caller's own); at most one per core is kept for later
    calls."""
    if given is not None:
        yield given
        return
    with _scratch_lock:
        scratch = _spare_scratch.pop() if _spare_scratch else _Scratch()
    try:
        yield scratch
    finally:
        with _scratch_lock:
            if len(_spare_scratch) < _SPARE_SCRATCH:
                _spare_scratch.append(scratch)


def _padded_length(samples: int, spec: FrontendSpec) -> int:
    return max(samples + 2 * spec.edge_pad, spec.n_fft)


def _prepare_into(signal: np.ndarray, samples: np.ndarray, spec: FrontendSpec, scratch: _Scratch) -> None:
    """DC removal, pre-emphasis and padding into `signal` (float64, `_padded_length` long), in float64 so
    that long clips keep their precision."""
    pad = spec.edge_pad
    size = samples.size
    signal[size + 2 * pad :] = 0.0  # center=False and shorter than one window: zeros complete it
    body = signal[pad : pad + size]
    # Converted first: numpy's ufuncs on mixed float32/float64 operands run several times slower.
    np.copyto(body, samples)
    if spec.remove_dc:
        body -= np.add.reduce(body) / size  # body.mean(), without its wrapper's cost on short clips
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


def _reflect_index(index: np.ndarray, length: int) -> np.ndarray:
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    folded = np.abs(index) % period
    return np.where(folded >= length, period - folded, folded)


@lru_cache(maxsize=8)
def _band_groups(spec: FrontendSpec) -> tuple[tuple[slice, slice, np.ndarray, int], ...]:
    """The filterbank cut into runs of neighbouring bands, each with the bins it touches: (bands, bins,
    float32 weights (bins, bands), frames per product call).

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
        # Frames per call: below OpenBLAS's multithreading threshold, so that the product stays on the calling
        # thread instead of waking BLAS threads that would compete with the front end's own; whole blocks, so
        # that a frame's sums are the same whichever clips, runs or threads it was computed with.
        rows = max(1, _SINGLE_THREAD_PRODUCT // block.size // _FRAMES_PER_BLOCK) * _FRAMES_PER_BLOCK
        groups.append((slice(first, last), slice(lo, hi), block, rows))
        first = last
    return tuple(groups)


# What one more small matrix product costs, in multiply-adds per frame: numpy's call overhead.
_BINS_PER_CALL = 64
# Frames go through the FFT in blocks that stay in the core's cache.
_FRAMES_PER_BLOCK = 256
# OpenBLAS runs a product of fewer than 4 * 65536 multiply-adds on the calling thread.
_SINGLE_THREAD_PRODUCT = 4 * 65536
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
    mel, _ = _features([samples], spec, threads)
    return mel


def logmel_batch(
    audios: list[np.ndarray], spec: FrontendSpec = FrontendSpec(), threads: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Features of several utterances, padded with the dB floor to a common length of at least min_frames.

    Clips go through together in groups of a few thousand frames, so that numpy's cost per call is paid per
    cache-sized block rather than per clip; with `threads` other than 1 the groups run in parallel on the
    front end's pool, one thread per usable core (numpy's FFT and products release the GIL). A clip's
    features are the same whatever it is batched with, and the same as `logmel` gives.
    Returns (features (B, n_mels, T) float32, lengths (B,) int64 in frames).
    """
    clips, lengths = _clips_and_frames(audios, spec)
    width = max(int(lengths.max()), spec.min_frames)
    batch = np.full((len(clips), spec.n_mels, width), spec.pad_value, dtype=np.float32)

    def put(row: int, mel: np.ndarray) -> None:
        batch[row, :, : mel.shape[1]] = mel

    _grouped(clips, lengths, spec, threads, put)
    return batch, lengths


def logmel_each(audios: list[np.ndarray], spec: FrontendSpec = FrontendSpec(), threads: int = 0) -> list[np.ndarray]:
    """Features of several utterances, unpadded: each (n_mels, frames) float32, equal to `logmel`'s, computed
    together as in logmel_batch."""
    clips, lengths = _clips_and_frames(audios, spec)
    out: list[np.ndarray | None] = [None] * len(clips)

    def put(row: int, mel: np.ndarray) -> None:
        out[row] = mel.copy()

    _grouped(clips, lengths, spec, threads, put)
    return out


def _clips_and_frames(audios: list[np.ndarray], spec: FrontendSpec) -> tuple[list[np.ndarray], np.ndarray]:
    if not audios:
        raise ValueError("the front end needs at least one utterance")
    clips = [np.asarray(audio).reshape(-1) for audio in audios]
    if any(clip.size == 0 for clip in clips):
        raise ValueError("cannot compute features of empty audio")
    return clips, np.array([spec.num_frames(clip.size) for clip in clips], dtype=np.int64)


def _grouped(clips: list[np.ndarray], lengths: np.ndarray, spec: FrontendSpec, threads: int,
             put: Callable[[int, np.ndarray], None]) -> None:
    """put(row, features (n_mels, frames)) for every clip, computed in groups, in parallel unless threads is 1."""

    def fill(first: int, last: int) -> None:
        mel, starts = _features(clips[first:last], spec)
        for row in range(first, last):
            put(row, mel[:, starts[row - first]: starts[row - first + 1]])

    workers = _thread_count(threads)
    groups = _clip_groups(lengths, workers)
    if workers > 1 and len(groups) > 1:
        for done in [_shared_pool().submit(fill, first, last) for first, last in groups]:
            done.result()
    else:
        for first, last in groups:
            fill(first, last)


# A group of clips is cut at about this many frames: enough to pay numpy's per-call cost once per block
# rather than once per short clip, few enough that the group's band power (800 bytes per frame), which the
# products read back, stays in a core's L2 cache (1 MiB on current x86 server cores).
_FRAMES_PER_GROUP = 1024


def _clip_groups(lengths: np.ndarray, threads: int) -> list[tuple[int, int]]:
    """Consecutive clips cut into groups of about equal frames, a multiple of `threads` of them (as far as
    there are clips) so that the threads finish together, each near _FRAMES_PER_GROUP frames or below
    unless a single clip is longer."""
    rounds = -(-int(lengths.sum()) // (threads * _FRAMES_PER_GROUP))
    count = max(1, min(len(lengths), threads * rounds))
    ends = np.searchsorted(np.cumsum(lengths), np.arange(1, count) * lengths.sum() / count, side="left") + 1
    bounds = sorted({0, len(lengths), *(int(e) for e in ends if 0 < e < len(lengths))})
    return list(zip(bounds[:-1], bounds[1:], strict=False))


def _features(clips: list[np.ndarray], spec: FrontendSpec, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Features of `clips` computed together: (dB (n_mels, frames of all clips) float32, each clip relative to
    its own loudest band and floored; row starts (len(clips) + 1,) int64).

    Band power comes from the C path when the package was built with it (native_frontend), else from numpy;
    dB are computed here either way."""
    native = _native(spec)
    with _scratch() as scratch:
        sizes = [_padded_length(clip.size, spec) for clip in clips]
        signal = scratch.array("signal", (sum(sizes),), np.float64)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        for clip, begin, end in zip(clips, offsets[:-1], offsets[1:], strict=True):
            if native is not None:
                native.prepare(signal[begin:end], clip)
            else:
                _prepare_into(signal[begin:end], clip, spec, scratch)
        counts = [(size - spec.n_fft) // spec.hop_length + 1 for size in sizes]
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        total = int(starts[-1])
        if native is not None:
            mel = np.empty((spec.n_mels, total), dtype=np.float32)
            band_power = functools.partial(_native_mel_power, native, signal, offsets, starts, mel)
        else:
            # Overlapping frames as views (np.ndarray directly: as_strided's wrapper costs more than a short clip).
            size = signal.itemsize
            frames = [np.ndarray((count, spec.n_fft), np.float64, signal, offset=int(begin) * size,
                                 strides=(spec.hop_length * size, size))
                      for begin, count in zip(offsets[:-1], counts, strict=True)]
            rows = np.empty((total, spec.n_mels), dtype=np.float32)
            mel = rows.T
            band_power = functools.partial(_mel_power, frames, starts, rows, spec=spec)
        runs = max(1, min(_thread_count(threads), total // _FRAMES_PER_BLOCK))
        step = -(-total // (runs * _FRAMES_PER_BLOCK)) * _FRAMES_PER_BLOCK  # whole blocks per run
        others = [_shared_pool().submit(band_power, first, min(first + step, total))
                  for first in range(step, total, step)]
        band_power(0, min(step, total), scratch=scratch)
        for run in others:
            run.result()
    overflowed = [index for index in range(len(clips))
                  if not _to_db(mel[:, starts[index] : starts[index + 1]], spec)]
    for index in overflowed:
        # Power past float32's range (samples above ~1e16). The floor is then far above amin, and dB are
        # relative to the loudest band, so a copy scaled exactly gives the same features.
        scaled = clips[index].astype(np.float64) * _OVERFLOW_SCALE
        mel[:, starts[index] : starts[index + 1]] = logmel(scaled, spec, threads)
    return mel, starts


def _native(spec: FrontendSpec):
    from .native_frontend import native_frontend  # here: native_frontend builds on this module's tables

    return native_frontend(spec)


def _native_mel_power(native, signal: np.ndarray, offsets: np.ndarray, starts: np.ndarray, mel: np.ndarray,
                      first: int, last: int, scratch: _Scratch | None = None) -> None:
    """Band power of frames first..last (clips laid end to end) into the same columns of `mel`, by the C path:
    one call per clip, during which other threads run."""
    with _scratch(scratch) as scratch:
        work = scratch.array("native", (native.work_size,), np.float64)
        for clip in range(int(np.searchsorted(starts, first, side="right")) - 1, int(np.searchsorted(starts, last))):
            low, high = max(first, int(starts[clip])), min(last, int(starts[clip + 1]))
            if low < high:
                native.mel_power(signal[offsets[clip] : offsets[clip + 1]], low - int(starts[clip]), high - low,
                                 mel[:, low:high], work)


def _to_db(power: np.ndarray, spec: FrontendSpec) -> bool:
    """One clip's band power (float32) to dB in place: relative to its loudest band, floored top_db below it.

    Clamping the power at the floor before the logarithm, and a natural logarithm scaled afterwards, cost
    fewer passes than librosa's order (log10, then subtract, then floor); numpy's float32 log10 is also
    several times slower than its log. False, with `power` untouched, when the clip's power overflowed.
    """
    loudest = float(power.max())
    if not np.isfinite(loudest):
        return False
    reference = max(loudest, spec.amin)
    np.maximum(power, max(spec.amin, reference * 10.0 ** (-spec.top_db / 10.0)), out=power)
    np.log(power, out=power)
    power -= power.max()  # the loudest band at exactly 0 dB
    power *= np.float32(10.0 / np.log(10.0))
    np.maximum(power, -spec.top_db, out=power)  # rounding may leave the floor a hair below
    return True


def _mel_power(frames: list[np.ndarray], starts: np.ndarray, mel: np.ndarray, first: int, last: int,
               spec: FrontendSpec, scratch: _Scratch | None = None) -> None:
    """Mel-band power of rows first..last of the clips' frames laid end to end (clip i's frames are rows
    starts[i]..starts[i + 1]) into the same rows of `mel` (float32).

    The FFT runs in float64 (numpy's float32 transform is slower here, and quiet bins would lose digits);
    the power is rounded to float32 once, which costs ~1e-6 dB and halves the bytes the products read.
    Windowing, FFT and power go block by block (cache-sized, across clip boundaries); the band products then
    run over each clip's rows at once, because each BLAS call costs a few microseconds that two threads
    cannot overlap.
    """
    window = padded_window(spec)
    clips = range(int(np.searchsorted(starts, first, side="right")) - 1, int(np.searchsorted(starts, last)))
    with _scratch(scratch) as scratch, np.errstate(over="ignore", invalid="ignore"):  # overflow: retried
        block = min(last - first, _FRAMES_PER_BLOCK)
        windowed = scratch.array("windowed", (block, spec.n_fft), np.float64)
        spectrum = scratch.array("spectrum", (block, spec.n_freqs), np.complex128)
        power = scratch.array("power", (last - first, spec.n_freqs), np.float32)
        for begin in range(first, last, _FRAMES_PER_BLOCK):
            end = min(begin + _FRAMES_PER_BLOCK, last)
            for clip in clips:
                low, high = max(begin, starts[clip]), min(end, starts[clip + 1])
                if low < high:
                    np.multiply(frames[clip][low - starts[clip] : high - starts[clip]], window,
                                out=windowed[low - begin : high - begin])
            rows = slice(0, end - begin)
            np.fft.rfft(windowed[rows], axis=-1, out=spectrum[rows])
            pairs = spectrum[rows].view(np.float64)
            np.multiply(pairs, pairs, out=pairs)
            np.add(pairs[:, 0::2], pairs[:, 1::2], out=power[begin - first : end - first], casting="same_kind")
        for clip in clips:
            low, high = max(first, starts[clip]), min(last, starts[clip + 1])
            for bands, bins, weights, step in _band_groups(spec):
                # Cuts counted from the clip's first frame, as logmel of the clip alone makes them.
                inner = range(int(starts[clip]) + step, high, step)
                cuts = [low, *(cut for cut in inner if cut > low), high]
                for begin, end in zip(cuts[:-1], cuts[1:], strict=False):
                    np.matmul(power[begin - first : end - first, bins], weights, out=mel[begin:end, bands])


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

