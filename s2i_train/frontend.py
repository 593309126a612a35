"""The log-Mel front end of docs/design.md in torch, for training on whole padded batches (CPU or CUDA).

Same numbers as `s2i_runtime.frontend.logmel` (the definition); the tests hold them within 1e-3 dB.
"""

from __future__ import annotations

import torch

from s2i_runtime.frontend import FrontendSpec, mel_filterbank, padded_window

_DEFAULT_SPEC = FrontendSpec()


def _reflect_index(index: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Reflect indices into [0, length) per row, repeating the reflection for very short clips."""
    period = (2 * (length - 1)).clamp(min=1)
    folded = index.abs() % period
    folded = torch.where(folded >= length, period - folded, folded)
    return torch.where(length == 1, torch.zeros_like(folded), folded)


def logmel_torch(
    waves: torch.Tensor, lengths: torch.Tensor, spec: FrontendSpec = _DEFAULT_SPEC
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of a padded batch of waves (B, N) with valid lengths (B,) in samples.

    Returns (features (B, n_mels, T) float32 padded with spec.pad_value, T >= spec.min_frames;
    frame_lengths (B,) int64). Computed in float64 like the numpy definition.
    """
    if waves.dim() != 2 or lengths.dim() != 1 or lengths.shape[0] != waves.shape[0]:
        raise ValueError("expected waves (B, N) and lengths (B,)")
    if not spec.center:
        raise ValueError("logmel_torch implements the centred STFT only")
    device = waves.device
    lengths = lengths.to(device=device, dtype=torch.int64)
    if bool((lengths <= 0).any()) or bool((lengths > waves.shape[1]).any()):
        raise ValueError("every length must be in 1..N")
    x = waves.to(torch.float64)
    valid = torch.arange(x.shape[1], device=device)[None, :] < lengths[:, None]
    x = torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=device))

    if spec.remove_dc:
        mean = x.sum(dim=1, keepdim=True) / lengths[:, None]
        x = torch.where(valid, x - mean, x)
    if spec.preemphasis:
        x = torch.cat([x[:, :1], x[:, 1:] - spec.preemphasis * x[:, :-1]], dim=1)

    pad = spec.n_fft // 2
    frame_lengths = 1 + lengths // spec.hop_length
    frames_max = int(frame_lengths.max())
    # Each utterance reflect-padded at its own length (not at the batch's), then framed as a strided view.
    index = torch.arange(-pad, x.shape[1] + pad, device=device)[None, :]
    padded = torch.gather(x, 1, _reflect_index(index, lengths[:, None]).expand(x.shape[0], -1))
    frames = padded.unfold(1, spec.n_fft, spec.hop_length)[:, :frames_max]

    window = torch.tensor(padded_window(spec), device=device)
    spectrum = torch.fft.rfft(frames * window, dim=-1)
    power = spectrum.real.square() + spectrum.imag.square()
    mel = torch.matmul(torch.tensor(mel_filterbank(spec), device=device), power.transpose(1, 2))

    db = 10.0 * torch.log10(mel.clamp(min=spec.amin))
    frame_valid = torch.arange(frames_max, device=device)[None, :] < frame_lengths[:, None]  # (B, T)
    peak = db.masked_fill(~frame_valid[:, None, :], float("-inf")).amax(dim=(1, 2), keepdim=True)
    db = (db - peak).clamp(min=-spec.top_db)

    width = max(frames_max, spec.min_frames)
    out = torch.full((x.shape[0], spec.n_mels, width), spec.pad_value, dtype=torch.float32, device=device)
    out[:, :, :frames_max] = torch.where(frame_valid[:, None, :], db, spec.pad_value).to(torch.float32)
    return out, frame_lengths
