"""The log-Mel front end (DESIGN §2), in numpy.

This is the one definition of the features every model in s2i sees. Training (`s2i_train.frontend`),
the CUDA kernel and any in-graph version must agree with it within 1e-3 dB.
"""

from __future__ import annotations

import dataclasses
import json
import os
from concurrent.futures import ThreadPoolExecutor
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


@lru_cache(maxsize=8)
def mel_filterbank_t(spec: FrontendSpec) -> np.ndarray:
    """The filterbank transposed, contiguous: (n_freqs, n_mels), for row-major frame blocks."""
    weights = np.ascontiguousarray(mel_filterbank(spec).T)
    weights.setflags(write=False)
    return weights


def _prepare(audio: np.ndarray, spec: FrontendSpec) -> np.ndarray:
    """DC removal and pre-emphasis in one pass, in float64 so long clips keep their precision."""
    samples = np.asarray(audio).reshape(-1)
    if samples.size == 0:
        raise ValueError("cannot compute features of empty audio")
    signal = np.empty(samples.size, dtype=np.float64)
    signal[:] = samples
    if spec.preemphasis:
        signal[1:] -= spec.preemphasis * signal[:-1]
    if spec.remove_dc:
        # Pre-emphasis is linear: removing the mean first equals subtracting its filtered constant after.
        mean = samples.mean(dtype=np.float64)
        signal[0] -= mean
        signal[1:] -= mean * (1.0 - spec.preemphasis)
    return signal


def _reflect_pad(signal: np.ndarray, pad: int) -> np.ndarray:
    if signal.size > pad:
        return np.pad(signal, pad, mode="reflect")
    # Clips shorter than half a window: reflect repeatedly, as the index arithmetic of every other
    # implementation (torch, CUDA) does.
    index = _reflect_index(np.arange(-pad, signal.size + pad), signal.size)
    return signal[index]


def _reflect_index(index: np.ndarray, length: int) -> np.ndarray:
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    folded = np.abs(index) % period
    return np.where(folded >= length, period - folded, folded)


def _power_to_db(mel: np.ndarray, spec: FrontendSpec) -> np.ndarray:
    db = 10.0 * np.log10(np.maximum(mel, spec.amin))
    db -= db.max()
    return np.maximum(db, -spec.top_db)


# Frames are transformed in blocks so a minute of audio never materialises all its complex spectra at once.
_FRAMES_PER_FFT_BLOCK = 256
# The mel projection runs in small blocks: OpenBLAS keeps products this size on the calling thread, so
# logmel_batch's worker threads don't fight over BLAS threads.
_FRAMES_PER_MEL_BLOCK = 32


@lru_cache(maxsize=8)
def _interleaved_filterbank(spec: FrontendSpec) -> np.ndarray:
    """(2 * n_freqs, n_mels): each filter weight twice, for the (re, im) pairs of a complex spectrum.

    Squaring the interleaved spectrum and projecting with this sums re² + im² inside the matrix product.
    """
    weights = np.repeat(mel_filterbank_t(spec), 2, axis=0)
    weights.setflags(write=False)
    return weights


def logmel(audio: np.ndarray, spec: FrontendSpec = FrontendSpec()) -> np.ndarray:
    """Log-Mel features of one utterance at spec.sample_rate: (n_mels, frames) float32 in [-top_db, 0]."""
    signal = _prepare(audio, spec)
    if spec.center:
        signal = _reflect_pad(signal, spec.n_fft // 2)
    if signal.size < spec.n_fft:
        signal = np.pad(signal, (0, spec.n_fft - signal.size))
    frames = np.lib.stride_tricks.sliding_window_view(signal, spec.n_fft)[:: spec.hop_length]
    count = frames.shape[0]
    window = padded_window(spec)
    squared = np.empty((count, 2 * spec.n_freqs))
    for start in range(0, count, _FRAMES_PER_FFT_BLOCK):
        stop = min(start + _FRAMES_PER_FFT_BLOCK, count)
        pairs = np.fft.rfft(frames[start:stop] * window, axis=-1).view(np.float64)
        np.multiply(pairs, pairs, out=squared[start:stop])
    filters = _interleaved_filterbank(spec)
    mel = np.empty((count, spec.n_mels))
    for start in range(0, count, _FRAMES_PER_MEL_BLOCK):
        block = slice(start, start + _FRAMES_PER_MEL_BLOCK)
        np.matmul(squared[block], filters, out=mel[block])
    return _power_to_db(mel.T, spec).astype(np.float32)


def logmel_batch(
    audios: list[np.ndarray], spec: FrontendSpec = FrontendSpec()
) -> tuple[np.ndarray, np.ndarray]:
    """Features of several utterances, padded with the dB floor to a common length of at least min_frames.

    Returns (features (B, n_mels, T) float32, lengths (B,) int64 in frames).
    """
    if not audios:
        raise ValueError("logmel_batch needs at least one utterance")
    if len(audios) > 1:
        # numpy's FFT and small matrix products release the GIL: utterances run in parallel on the cores.
        with ThreadPoolExecutor(max_workers=min(len(audios), os.cpu_count() or 1)) as pool:
            features = list(pool.map(lambda audio: logmel(audio, spec), audios))
    else:
        features = [logmel(audios[0], spec)]
    lengths = np.array([f.shape[1] for f in features], dtype=np.int64)
    width = max(int(lengths.max()), spec.min_frames)
    batch = np.full((len(features), spec.n_mels, width), spec.pad_value, dtype=np.float32)
    for row, feat in zip(batch, features, strict=True):
        row[:, : feat.shape[1]] = feat
    return batch, lengths
