"""Speech encoders: log-Mel features (B, n_mels, T) + lengths -> one embedding per utterance.

Two architectures:
- "cnn-rnn" (Li et al.): per-band input BN, a conv over all mel bands, strided 1-D convs with BN/ReLU and
  two max-pools (time shrinks 64x), a bidirectional RNN, mean over valid steps. No L2 normalisation.
- "s2igan" (Wang et al.): two Conv1d k6 s2 + BN, 2-layer BiGRU, self-attention pooling, L2-normalised.
  With rnn = "none" the BiGRU gives way to stride-1 convolutions whose reach is about one word, so every step
  describes its own stretch of speech and nothing further.

Both differ from the reference code where it was broken: lengths are carried and everything beyond them is
masked (padding never changes an embedding), the backward RNN direction starts at each utterance's own last
step (sequences are reversed inside their lengths with a gather, no pack_padded_sequence), batch size 1
works, and the whole forward traces into ONNX with dynamic batch and time.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from s2i_runtime.frontend import FrontendSpec

from .configutil import config_from_dict, config_to_dict
from .masking import (
    MaskedBatchNorm1d,
    conv_out_lengths,
    masked_instance_norm,
    masked_mean,
    masked_softmax,
    reverse_within_lengths,
    time_mask,
)
from .pcen import PCEN

ARCHS = ("cnn-rnn", "s2igan")
RNNS = ("gru", "lstm", "none")
CENTERINGS = ("none", "speech_mean", "speech_mean_std")
COMPRESSIONS = ("log", "pcen")

# Li et al.'s conv stack as (kind, out-channel index, kernel, stride): kind "conv" or "pool".
_CNN_RNN_LAYERS = (
    ("conv", 0, 1, 1),  # the (40, 1) kernel over all mel bands = a 1x1 Conv1d over the band channels
    ("conv", 1, 3, 1),
    ("pool", None, 3, 2),
    ("conv", 2, 17, 2),
    ("conv", 3, 13, 2),
    ("conv", 4, 3, 1),
    ("conv", 5, 9, 2),
    ("pool", None, 3, 2),
    ("conv", 6, 3, 1),
    ("conv", 7, 5, 2),
)
_DEFAULT_CHANNELS = {
    "cnn-rnn": (64, 64, 128, 256, 256, 512, 512, 1024),
    "s2igan": (64, 128),
}
_DEFAULT_RNN = {"cnn-rnn": ("lstm", 1), "s2igan": ("gru", 2)}


@dataclasses.dataclass(frozen=True)
class SpeechEncoderConfig:
    """Settings of a speech encoder. "auto"/0/() mean the chosen architecture's paper value."""

    arch: str = "cnn-rnn"
    n_mels: int = 40
    embedding_dim: int = 1024
    rnn: str = "auto"  # "gru" | "lstm" | "none" (s2igan only) | "auto" (cnn-rnn: lstm, s2igan: gru)
    hidden: int = 512  # per direction; a Linear projects 2*hidden to embedding_dim when they differ
    rnn_layers: int = 0  # 0 = auto (cnn-rnn: 1, s2igan: 2)
    conv_channels: tuple[int, ...] = ()  # () = paper widths; cnn-rnn takes 8 values, s2igan 2
    attention_dim: int = 128  # s2igan self-attention pooling
    # rnn = "none": kernels of the stride-1 conv + BN + ReLU layers (2 * hidden channels) that replace the RNN.
    # After the two strided convs a step is 4 frames, so (5, 3) reaches 40 frames (0.4 s): about one word, which
    # keeps a colour word's steps from hearing the shape word beside it.
    context_kernels: tuple[int, ...] = (5, 3)
    normalize: str = "auto"  # "l2" | "none" | "auto" (cnn-rnn: none, s2igan: l2)
    pad_value: float = FrontendSpec().pad_value  # feature value of padding (the dB floor)
    # "speech_mean" subtracts each utterance's mean log-Mel over its speech frames, band by band (cepstral mean
    # normalisation): a microphone's, a room's or a voice's fixed spectral colouring is a constant per band in dB.
    # "speech_mean_std" also divides each band by its standard deviation over those frames (CMVN): noise and
    # reverberation fill a band's valleys and shrink its range in dB; the division gives it its range back.
    input_centering: str = "none"
    speech_floor_db: float = 30.0  # a frame is speech when its mean level is within this of the loudest frame's
    # Keep only the first N cepstral coefficients (DCT-II over the bands) of every frame, 0 = all: a high voice's
    # harmonics, resolved by the narrow low bands, ripple across them at its pitch; the vocal tract's envelope
    # varies slowly from band to band and stays.
    cepstral_lifter: int = 0
    # Instance normalisation after each conv (each utterance's channels to zero mean, unit variance over its own
    # steps, before the batch norm): what stays constant through an utterance, as a speaker's timbre does, is
    # taken off at every conv rather than only at the input.
    instance_norm: bool = False
    # "pcen": the log-Mels become per-channel energy normalised features (models/pcen.py) before everything else:
    # a gain control per band over the last fraction of a second and a root instead of the logarithm, so that
    # the quiet cells a room's noise and reverberation fill weigh less. "log" feeds the log-Mels as they are.
    input_compression: str = "log"

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"speech encoder arch must be one of {ARCHS}, got {self.arch!r}")
        if self.rnn not in RNNS + ("auto",):
            raise ValueError(f"rnn must be 'gru', 'lstm', 'none' or 'auto', got {self.rnn!r}")
        if self.rnn == "none" and self.arch != "s2igan":
            raise ValueError("rnn = 'none' (convolutions instead) is only built for the s2igan encoder")
        if self.rnn == "none" and not self.context_kernels:
            raise ValueError("rnn = 'none' needs at least one context_kernels entry")
        if any(kernel < 1 or kernel % 2 == 0 for kernel in self.context_kernels):
            raise ValueError("context_kernels must be odd and positive, so that every step keeps its place")
        if self.input_centering not in CENTERINGS:
            raise ValueError(f"input_centering must be one of {CENTERINGS}, got {self.input_centering!r}")
        if self.input_compression not in COMPRESSIONS:
            raise ValueError(f"input_compression must be one of {COMPRESSIONS}, got {self.input_compression!r}")
        if self.input_compression != "log" and self.cepstral_lifter:
            raise ValueError("cepstral_lifter works on log-Mels; it cannot follow input_compression = 'pcen'")
        if self.speech_floor_db <= 0:
            raise ValueError("speech_floor_db must be positive")
        if not 0 <= self.cepstral_lifter <= self.n_mels:
            raise ValueError(f"cepstral_lifter must be between 0 (off) and n_mels ({self.n_mels})")
        if self.normalize not in ("l2", "none", "auto"):
            raise ValueError(f"normalize must be 'l2', 'none' or 'auto', got {self.normalize!r}")
        expected = len(_DEFAULT_CHANNELS[self.arch])
        if self.conv_channels and len(self.conv_channels) != expected:
            raise ValueError(f"{self.arch} takes {expected} conv_channels, got {len(self.conv_channels)}")
        for name in ("n_mels", "embedding_dim", "hidden", "attention_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.rnn_layers < 0:
            raise ValueError("rnn_layers must be >= 0 (0 = the architecture's default)")

    def resolved(self) -> SpeechEncoderConfig:
        """The same config with every "auto" replaced by its concrete value (what checkpoints store)."""
        rnn, layers = _DEFAULT_RNN[self.arch]
        return dataclasses.replace(
            self,
            rnn=rnn if self.rnn == "auto" else self.rnn,
            rnn_layers=self.rnn_layers or layers,
            conv_channels=tuple(self.conv_channels) or _DEFAULT_CHANNELS[self.arch],
            normalize=("l2" if self.arch == "s2igan" else "none") if self.normalize == "auto" else self.normalize,
        )

    @property
    def time_reduction(self) -> int:
        return 64 if self.arch == "cnn-rnn" else 4

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SpeechEncoderConfig:
        return config_from_dict(cls, data)


class _ConvBlock(nn.Module):
    """Conv1d (no bias) (+ masked instance norm) + masked BN (+ ReLU); outputs beyond the new valid length are 0."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, relu: bool,
                 instance_norm: bool = False) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding = kernel, stride, (kernel - 1) // 2
        self.conv = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, padding=self.padding, bias=False)
        self.norm = MaskedBatchNorm1d(out_ch)
        self.relu = relu
        self.instance_norm = instance_norm
        nn.init.normal_(self.conv.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(x)
        lengths = conv_out_lengths(lengths, self.kernel, self.stride, self.padding)
        mask = time_mask(x, lengths)
        if self.instance_norm:
            x = masked_instance_norm(x, mask)
        x = self.norm(x, mask)
        if self.relu:
            x = F.relu(x)
        return x * mask.to(x.dtype), lengths


class _MaxPoolBlock(nn.Module):
    """Max-pool over time. Inputs are post-ReLU (>= 0) with zeros beyond the valid length, so a window
    reaching into padding sees the same maximum as one reaching past the tensor's edge."""

    def __init__(self, kernel: int, stride: int) -> None:
        super().__init__()
        self.kernel, self.stride, self.padding = kernel, stride, (kernel - 1) // 2
        self.pool = nn.MaxPool1d(kernel, stride=stride, padding=self.padding)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool(x)
        lengths = conv_out_lengths(lengths, self.kernel, self.stride, self.padding)
        return x * time_mask(x, lengths).to(x.dtype), lengths


class BiRNN(nn.Module):
    """Stacked bidirectional GRU/LSTM over (B, T, C) without packing.

    The backward direction is a forward-direction RNN run on each sequence reversed within its own
    length, then reversed back: it starts at the last valid step, so padding never leaks in."""

    def __init__(self, kind: str, input_size: int, hidden: int, layers: int) -> None:
        super().__init__()
        rnn_class = nn.GRU if kind == "gru" else nn.LSTM
        self.kind, self.hidden = kind, hidden
        self.forward_rnns = nn.ModuleList()
        self.backward_rnns = nn.ModuleList()
        for layer in range(layers):
            size = input_size if layer == 0 else 2 * hidden
            self.forward_rnns.append(rnn_class(size, hidden, batch_first=True))
            self.backward_rnns.append(rnn_class(size, hidden, batch_first=True))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = time_mask(x.transpose(1, 2), lengths).transpose(1, 2).to(x.dtype)  # (B, T, 1)
        # Explicit zero initial states shaped from the input: without them the ONNX exporter bakes the
        # example batch size into the RNN's state and warns that other batch sizes may fail.
        zeros = torch.zeros_like(x[:, 0, :1]).expand(-1, self.hidden)[None].contiguous()
        state = zeros if self.kind == "gru" else (zeros, zeros)
        for forward_rnn, backward_rnn in zip(self.forward_rnns, self.backward_rnns, strict=True):
            ahead, _ = forward_rnn(x, state)
            behind, _ = backward_rnn(reverse_within_lengths(x, lengths), state)
            x = torch.cat([ahead, reverse_within_lengths(behind, lengths)], dim=2) * valid
        return x


class LocalContext(nn.Module):
    """Stride-1 conv + BN + ReLU layers over (B, T, C): the RNN's place with a bounded reach in time."""

    def __init__(self, input_size: int, width: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        sizes = [input_size] + [width] * len(kernels)
        self.blocks = nn.ModuleList(
            _ConvBlock(sizes[index], width, kernel, 1, relu=True) for index, kernel in enumerate(kernels))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)
        for block in self.blocks:
            x, lengths = block(x, lengths)
        return x.transpose(1, 2)


class SpeechEncoder(nn.Module):
    """forward(mel (B, n_mels, T) float32, lengths (B,) int64 frames) -> (B, embedding_dim)."""

    def __init__(self, config: SpeechEncoderConfig) -> None:
        super().__init__()
        self.config = config = config.resolved()
        channels = config.conv_channels
        self.input_norm = MaskedBatchNorm1d(config.n_mels)
        self.pcen = PCEN(config.n_mels) if config.input_compression == "pcen" else None
        if 0 < config.cepstral_lifter < config.n_mels:
            # Derived from the config, so not stored with the weights.
            self.register_buffer("lifter", cepstral_lifter(config.n_mels, config.cepstral_lifter), persistent=False)
        else:
            self.lifter = None
        blocks: list[nn.Module] = []
        if config.arch == "cnn-rnn":
            in_ch = config.n_mels
            for kind, index, kernel, stride in _CNN_RNN_LAYERS:
                if kind == "pool":
                    blocks.append(_MaxPoolBlock(kernel, stride))
                else:
                    blocks.append(_ConvBlock(in_ch, channels[index], kernel, stride, relu=True,
                                             instance_norm=config.instance_norm))
                    in_ch = channels[index]
        else:
            for in_ch, out_ch in ((config.n_mels, channels[0]), (channels[0], channels[1])):
                blocks.append(_ConvBlock(in_ch, out_ch, 6, 2, relu=False, instance_norm=config.instance_norm))
        self.convs = nn.ModuleList(blocks)
        if config.rnn == "none":
            self.rnn = LocalContext(channels[-1], 2 * config.hidden, config.context_kernels)
        else:
            self.rnn = BiRNN(config.rnn, channels[-1], config.hidden, config.rnn_layers)
        width = 2 * config.hidden
        if config.arch == "s2igan":
            self.attention = nn.Sequential(
                nn.Linear(width, config.attention_dim), nn.Tanh(), nn.Linear(config.attention_dim, width)
            )
        else:
            self.attention = None
        self.projection = nn.Linear(width, config.embedding_dim) if width != config.embedding_dim else None

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.pool(*self.steps(mel, lengths))

    def pool(self, steps: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """One embedding per utterance from what `steps` returns."""
        if self.attention is None:
            pooled = masked_mean(steps, valid, dim=1)
        else:
            # One softmax over time per feature (S2IGAN), restricted to valid steps.
            weights = masked_softmax(self.attention(steps), valid, dim=1)
            pooled = (weights * steps).sum(dim=1)
        if self.projection is not None:
            pooled = self.projection(pooled)
        if self.config.normalize == "l2":
            pooled = F.normalize(pooled, dim=1, eps=1e-12)
        return pooled

    def steps(self, mel: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the pooling reads: (features per step (B, T', 2 * hidden), valid steps (B, T', 1) bool)."""
        # A length beyond the tensor means "all of it"; read T from the tensor so the graph stays dynamic.
        frames = torch.ones_like(mel[:, 0, :], dtype=torch.int64).sum(dim=1)
        lengths = torch.minimum(lengths.to(torch.int64), frames).clamp(min=1)
        # Frames beyond a length count as silence whatever the caller padded with.
        mask = time_mask(mel, lengths)
        # Which frames are speech is judged on the dB levels, whatever the features become.
        level_db, pad_value = mel, self.config.pad_value
        if self.pcen is not None:
            mel, pad_value = self.pcen(mel), 0.0  # PCEN reads silence as 0
        if self.config.input_centering == "speech_mean":
            mel = mel - speech_mean(mel, mask, self.config.speech_floor_db, level_db=level_db)
        elif self.config.input_centering == "speech_mean_std":
            mean, spread = speech_mean_std(mel, mask, self.config.speech_floor_db, level_db=level_db)
            mel = (mel - mean) / spread
        if self.lifter is not None:
            # In float32 under any autocast: features span 80 dB, which bf16 would round by a third of a dB.
            with torch.autocast(mel.device.type, enabled=False):
                mel = torch.matmul(self.lifter, mel.float())
        x = torch.where(mask, mel, torch.full_like(mel, pad_value))
        x = self.input_norm(x, mask) * mask.to(x.dtype)
        for block in self.convs:
            x, lengths = block(x, lengths)
        steps = self.rnn(x.transpose(1, 2), lengths)  # (B, T', 2*hidden)
        return steps, time_mask(x, lengths).transpose(1, 2)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Number of RNN steps each utterance gets (>= 1)."""
        lengths = lengths.to(torch.int64).clamp(min=1)
        for block in self.convs:
            lengths = conv_out_lengths(lengths, block.kernel, block.stride, block.padding)
        return lengths


def speech_mean_std(mel: torch.Tensor, mask: torch.Tensor, floor_db: float, level_db: torch.Tensor | None = None,
                    min_std: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """speech_mean and the standard deviation per band over the same frames, each (B, n_mels, 1); the deviation
    is at least min_std (a band flat through the utterance, e.g. at the floor, is not blown up)."""
    speech = speech_frames(mel if level_db is None else level_db, mask, floor_db)
    mean = masked_mean(mel, speech, dim=2).unsqueeze(2)
    centred = (mel - mean) * speech.to(mel.dtype)
    spread = torch.sqrt(masked_mean(centred * centred, speech, dim=2).unsqueeze(2)).clamp(min=min_std)
    return mean, spread


def speech_frames(level_db: torch.Tensor, mask: torch.Tensor, floor_db: float) -> torch.Tensor:
    """(B, 1, T) bool: valid frames whose mean level over the bands is within floor_db of the loudest valid one."""
    level = level_db.mean(dim=1, keepdim=True)
    loudest = level.masked_fill(~mask, -1e9).amax(dim=2, keepdim=True)
    return mask & (level >= loudest - floor_db)


def speech_mean(mel: torch.Tensor, mask: torch.Tensor, floor_db: float,
                level_db: torch.Tensor | None = None) -> torch.Tensor:
    """(B, n_mels, 1): each utterance's mean feature per band over its speech frames (features other than the
    log-Mels, e.g. PCEN's, name the log-Mels they came from as level_db).

    Silence is left out so that leading or trailing pauses do not move the mean; a frame counts as speech when its
    level (mean over bands) is within floor_db of the utterance's loudest valid frame. That frame always counts, so
    the mean is never over nothing. An offset per band shifts every frame's level alike, so the same frames count
    as speech with it as without."""
    speech = speech_frames(mel if level_db is None else level_db, mask, floor_db)
    return masked_mean(mel, speech, dim=2).unsqueeze(2)


def cepstral_lifter(n_mels: int, keep: int) -> torch.Tensor:
    """(n_mels, n_mels) float32: the projection that keeps a frame's first `keep` orthonormal DCT-II coefficients
    over its bands. Coefficient 0 (the frame's mean level) is always kept, so a frame equal in every band (padding,
    silence at the floor) passes unchanged, and the projection commutes with speech_mean's offsets per band."""
    bands = torch.arange(n_mels, dtype=torch.float64)
    order = torch.arange(keep, dtype=torch.float64)[:, None]
    basis = torch.cos(torch.pi * order * (bands + 0.5) / n_mels)  # (keep, n_mels)
    basis[0] *= 0.5**0.5
    basis *= (2.0 / n_mels) ** 0.5
    return (basis.T @ basis).to(torch.float32)


def build_speech_encoder(config: SpeechEncoderConfig) -> SpeechEncoder:
    return SpeechEncoder(config)
