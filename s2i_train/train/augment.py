"""SpecAugment-style time and frequency masking of log-Mel batches (Park et al. 2019).

Masked cells are set to the features' pad value (the dB floor, i.e. silence), never to 0 dB, which is the
loudest value. Masks fall inside each utterance's valid frames. A mask that hides one word of a caption
makes the encoder read each attribute from its own word rather than from the whole phrase, which is what
unseen colour-shape pairs need.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class SpecAugmentConfig:
    time_masks: int = 0  # time spans masked per utterance; 0 = off
    time_mask_frames: int = 30  # longest span, frames (10 ms each)
    freq_masks: int = 0  # mel-band spans masked per utterance; 0 = off
    freq_mask_bands: int = 6  # widest span, bands
    # Vocal-tract-length perturbation: each utterance's mel axis is stretched by a factor drawn from
    # [1 - freq_warp, 1 + freq_warp] (a longer or shorter vocal tract moves every formant by one factor),
    # so the encoder meets more voices than the dataset's few. 0 = off.
    freq_warp: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.time_masks > 0 or self.freq_masks > 0 or self.freq_warp > 0


def spec_augment(
    mel: torch.Tensor, lengths: torch.Tensor, config: SpecAugmentConfig, pad_value: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """A masked copy of mel (B, n_mels, T); spans are drawn from `generator` (deterministic per step)."""
    if not config.enabled:
        return mel
    mel = warp_frequency(mel, config.freq_warp, generator) if config.freq_warp > 0 else mel.clone()
    bands = mel.shape[1]
    for row, length in enumerate(lengths.tolist()):
        for _ in range(config.time_masks):
            width = int(torch.randint(0, min(config.time_mask_frames, length) + 1, (), generator=generator))
            start = int(torch.randint(0, length - width + 1, (), generator=generator))
            mel[row, :, start : start + width] = pad_value
        for _ in range(config.freq_masks):
            width = int(torch.randint(0, min(config.freq_mask_bands, bands) + 1, (), generator=generator))
            start = int(torch.randint(0, bands - width + 1, (), generator=generator))
            mel[row, start : start + width, :length] = pad_value
    return mel


def warp_frequency(mel: torch.Tensor, max_warp: float, generator: torch.Generator) -> torch.Tensor:
    """mel (B, n_mels, T) with band f of row b read from band f / alpha_b (linear interpolation, edge bands
    repeated), alpha_b uniform in [1 - max_warp, 1 + max_warp]."""
    batch, bands = mel.shape[:2]
    alpha = 1.0 + (2.0 * torch.rand(batch, generator=generator) - 1.0) * max_warp
    source = (torch.arange(bands, dtype=mel.dtype)[None, :] / alpha[:, None].to(mel.dtype)).clamp(0, bands - 1)
    low = source.floor().long().clamp(max=bands - 2)
    frac = (source - low.to(mel.dtype))[:, :, None]
    below = mel.gather(1, low[:, :, None].expand(-1, -1, mel.shape[2]))
    above = mel.gather(1, (low + 1)[:, :, None].expand(-1, -1, mel.shape[2]))
    return below * (1 - frac) + above * frac
