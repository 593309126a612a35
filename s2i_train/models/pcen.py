"""Per-channel energy normalisation (PCEN) of log-Mel features, inside the encoder.

Each band's power is divided by a smoothed copy of itself (a causal exponential average over the last frames)
raised to alpha, then compressed by a root instead of a logarithm:

    pcen = (E / (eps + M) ** alpha + delta) ** r - delta ** r,   M[t] = weighted mean of E[t - k], w_k = s (1 - s) ** k

The division is an automatic gain control per band that follows the signal over a fraction of a second, so a
room's stationary noise floor and a microphone's colouring both become a level near one; the root with its offset
delta keeps quiet time-frequency cells, the ones noise and reverberation fill, from spreading over tens of dB as
the logarithm spreads them. alpha, delta and r are learnt per band (kept positive through their logarithms).

It works on the bundle's log-Mel features, so the front end and its spec do not change. The average is causal:
a frame never sees frames after it, so padding after an utterance's end never changes its valid frames. It runs
in float32 under any autocast: the power spans 80 dB, which bf16 would not hold.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PCEN(nn.Module):
    """forward(mel_db (B, n_mels, T)) -> (B, n_mels, T) float32, ~0 for silence at the dB floor."""

    def __init__(self, n_mels: int, smoothing: float = 0.04, frames: int = 128, alpha: float = 0.98,
                 delta: float = 2.0, root: float = 0.5, eps: float = 1e-6) -> None:
        super().__init__()
        if not 0.0 < smoothing < 1.0:
            raise ValueError("PCEN smoothing must be in (0, 1)")
        self.frames, self.eps = frames, eps
        self.log_alpha = nn.Parameter(torch.full((n_mels, 1), math.log(alpha)))
        self.log_delta = nn.Parameter(torch.full((n_mels, 1), math.log(delta)))
        self.log_root = nn.Parameter(torch.full((n_mels, 1), math.log(root)))
        lags = torch.arange(frames, dtype=torch.float64)
        weights = smoothing * (1.0 - smoothing) ** lags
        # conv1d correlates, so the weight of lag k sits at position frames - 1 - k; derived, not stored.
        self.register_buffer("smoother", weights.flip(0).reshape(1, 1, frames).float(), persistent=False)

    def smoothed(self, power: torch.Tensor) -> torch.Tensor:
        """Causal weighted mean of each band's power over the last `frames` frames; the first frames average
        over what there is (the weights are renormalised), not over zeros before the utterance."""
        batch, bands = power.shape[0], power.shape[1]
        flat = power.reshape(batch * bands, 1, -1)
        total = F.conv1d(F.pad(flat, (self.frames - 1, 0)), self.smoother)
        weight = F.conv1d(F.pad(torch.ones_like(flat[:1]), (self.frames - 1, 0)), self.smoother)
        return (total / weight).reshape(batch, bands, -1)

    def forward(self, mel_db: torch.Tensor) -> torch.Tensor:
        with torch.autocast(mel_db.device.type, enabled=False):
            power = torch.exp(mel_db.float() * (math.log(10.0) / 10.0))
            alpha = self.log_alpha.exp().clamp(max=1.0)
            delta = self.log_delta.exp()
            root = self.log_root.exp().clamp(max=1.0)
            gained = power / (self.eps + self.smoothed(power)) ** alpha
            return (gained + delta) ** root - delta**root
