"""The log-Mel front end (docs/design.md, "Front end") as a torch module built only from ops that export to
plain ONNX (Conv, MatMul, GatherElements, Log, ReduceMax, Where, ...), for `s2i-export onnx
--frontend-in-graph`.

Why not `torch.stft` or ONNX's STFT/DFT ops: TensorRT's ONNX parser does not take them, and ONNX Runtime
runs a 400-point DFT (not a power of two) as a naive transform anyway. The DFT here is a Conv1d whose
kernels are the windowed cos and sin rows of the real DFT with stride = hop: framing and transform in one
matrix product that every backend runs well.

The definition stays `s2i_runtime.frontend.logmel` (numpy, float64 inside); this module runs in float32,
the only float type TensorRT has, and matches it within the tolerance the tests state.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from s2i_runtime.frontend import FrontendSpec, mel_filterbank, padded_window


def dft_kernels(spec: FrontendSpec) -> np.ndarray:
    """(2 * n_freqs, 1, n_fft) float32: window x cos rows, then window x (-sin) rows of the real DFT.

    The angle is reduced modulo n_fft in integers first, so large k * n lose no digits in float64.
    """
    n = np.arange(spec.n_fft)
    k = np.arange(spec.n_freqs)
    angle = 2.0 * np.pi * ((k[:, None] * n[None, :]) % spec.n_fft) / spec.n_fft
    window = padded_window(spec)
    rows = np.concatenate([np.cos(angle) * window, -np.sin(angle) * window])
    return rows[:, None, :].astype(np.float32)


def reflect_index(index: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Reflect indices into [0, length) per row, repeating the reflection for clips shorter than the pad
    (as `s2i_runtime.frontend._reflect_index` does). All operands are non-negative where `%` is taken."""
    period = (2 * (length - 1)).clamp(min=1)
    folded = index.abs() % period
    folded = torch.where(folded >= length, period - folded, folded)
    return torch.where(length == 1, torch.zeros_like(folded), folded)


class LogMelGraph(nn.Module):
    """forward(waveform (B, N) float32, num_samples (B,) int64) -> (features (B, n_mels, T) float32,
    frame_lengths (B,) int64), the same padded batch `logmel_batch` returns for the clips
    waveform[i, :num_samples[i]]: T = max(frames of the longest clip, min_frames) when N is the longest
    clip's length; padding frames hold spec.pad_value.

    Samples beyond each clip's length are ignored, whatever they hold.
    """

    def __init__(self, spec: FrontendSpec = FrontendSpec()) -> None:
        super().__init__()
        if not spec.center:
            raise ValueError("the in-graph front end implements the centred STFT only")
        self.spec = spec
        self.pad = spec.n_fft // 2
        # The shortest signal that still yields min_frames frames; shorter batches are read past their end
        # (the reflection indices never leave each clip, so no sample beyond N is touched).
        self.min_width = (spec.min_frames - 1) * spec.hop_length + spec.n_fft - 2 * self.pad
        self.register_buffer("dft", torch.from_numpy(dft_kernels(spec)), persistent=False)
        self.register_buffer("mel", torch.from_numpy(mel_filterbank(spec).astype(np.float32)), persistent=False)

    def frame_lengths(self, num_samples: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        return 1 + (num_samples + 2 * self.pad - spec.n_fft) // spec.hop_length

    def forward(self, waveform: torch.Tensor, num_samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spec = self.spec
        num_samples = num_samples.to(torch.int64)
        signal = self._prepared(waveform, num_samples)
        power = self._power(self._padded(signal, num_samples))
        mel = torch.matmul(self.mel, power)  # (B, n_mels, T)
        db = (10.0 / np.log(10.0)) * torch.log(mel.clamp(min=spec.amin))
        frame_lengths = self.frame_lengths(num_samples)
        frame_valid = (_positions(db, 2)[None, :] < frame_lengths[:, None])[:, None, :]  # (B, 1, T)
        # dB are relative to each clip's loudest value over its own frames: frames past its end would
        # otherwise lend it their (reflected or foreign) loudness. 10·log10(amin) is the lowest dB possible.
        lowest = torch.full_like(db[:1, :1, :1], 10.0 * np.log10(spec.amin))
        peak = torch.where(frame_valid, db, lowest).amax(dim=(1, 2), keepdim=True)
        db = (db - peak).clamp(min=-spec.top_db)
        features = torch.where(frame_valid, db, torch.full_like(lowest, spec.pad_value))
        return features, frame_lengths

    def _prepared(self, waveform: torch.Tensor, num_samples: torch.Tensor) -> torch.Tensor:
        """DC removal and pre-emphasis, each over the clip's own samples (nothing later reads beyond them)."""
        spec = self.spec
        x = waveform.to(torch.float32)
        valid = _positions(x, 1)[None, :] < num_samples[:, None]
        zero = torch.zeros_like(x[:1, :1])
        x = torch.where(valid, x, zero)
        # Samples this loud would overflow the float32 sums and power. Like logmel's retry, such a clip is
        # scaled by 2^-64 (twice near float32's limit): exact, and dB are relative to the clip's own maximum.
        # Unlike it, the graph cannot wait for the overflow, so it scales from a fixed peak a little below.
        peak = x.abs().amax(dim=1, keepdim=True)
        one = torch.ones_like(zero)
        x = x * torch.where(peak > 2.0**56, one * 2.0**-64, one) * torch.where(peak > 2.0**120, one * 2.0**-64, one)
        if spec.remove_dc:
            count = num_samples[:, None].to(torch.float32)
            mean = x.sum(dim=1, keepdim=True) / count
            # A second pass over what is left: a float32 sum of many samples with a large offset is off by
            # far more than float64's, and pre-emphasis keeps the first sample whole, so the leftover offset
            # would land there as a broadband click in the first frame.
            centred = torch.where(valid, x - mean, zero)
            x = torch.where(valid, centred - centred.sum(dim=1, keepdim=True) / count, zero)
        if spec.preemphasis:
            x = torch.cat([x[:, :1], x[:, 1:] - spec.preemphasis * x[:, :-1]], dim=1)
        return x

    def _padded(self, signal: torch.Tensor, num_samples: torch.Tensor) -> torch.Tensor:
        """Each clip reflect-padded at its own length (not the batch's), at least min_width long."""
        samples = torch._shape_as_tensor(signal)[1]
        width = torch.maximum(samples, torch.full_like(samples, self.min_width))
        index = torch.arange(-self.pad, width + self.pad, dtype=torch.int64)[None, :]  # (1, width + 2·pad)
        gather = reflect_index(index, num_samples[:, None]).expand(signal.shape[0], -1)
        return torch.gather(signal, 1, gather)

    def _power(self, padded: torch.Tensor) -> torch.Tensor:
        """|DFT|² of every frame: (B, n_freqs, T)."""
        spectrum = nn.functional.conv1d(padded[:, None, :], self.dft, stride=self.spec.hop_length)
        real, imag = spectrum[:, : self.spec.n_freqs], spectrum[:, self.spec.n_freqs :]
        return real * real + imag * imag


def _positions(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """0 .. size-1 along `dim` (int64), traced as an ONNX Range over the tensor's runtime shape.

    Not a CumSum of ones: TensorRT's CumSum takes float types only."""
    return torch.arange(torch._shape_as_tensor(tensor)[dim], dtype=torch.int64)


class WaveformEncoder(nn.Module):
    """The speech encoder behind the in-graph front end: forward(waveform (B, N) float32, num_samples (B,)
    int64) -> embedding (B, D), the embedding the encoder gives for `logmel_batch` of the same clips."""

    def __init__(self, encoder: nn.Module, spec: FrontendSpec) -> None:
        super().__init__()
        self.frontend = LogMelGraph(spec)
        self.encoder = encoder

    def forward(self, waveform: torch.Tensor, num_samples: torch.Tensor) -> torch.Tensor:
        features, frame_lengths = self.frontend(waveform, num_samples)
        return self.encoder(features, frame_lengths)
