"""The two-stage baseline's text encoder: caption words -> one embedding in the speech encoder's space.

Word embeddings, the speech encoder's bidirectional GRU (without packing, so padding never leaks in) and
attention pooling over words, projected to the teacher's feature size. It keeps its own word list in its
config, so a checkpoint reads text without the code that made the list; unknown words share one id.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .configutil import config_from_dict, config_to_dict
from .masking import masked_softmax, time_mask
from .speech_encoder import BiRNN

ARCH = "text-gru"
PAD, UNKNOWN = 0, 1  # ids before the first word


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
    words: tuple[str, ...] = ()
    embedding_dim: int = 256
    word_dim: int = 64
    hidden: int = 128
    attention_dim: int = 64
    normalize: str = "l2"  # "l2" | "none": as the speech encoder whose space it joins

    def __post_init__(self) -> None:
        if not self.words:
            raise ValueError("a text encoder needs its word list")
        if self.normalize not in ("l2", "none"):
            raise ValueError(f"normalize must be 'l2' or 'none', got {self.normalize!r}")
        for name in ("embedding_dim", "word_dim", "hidden", "attention_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TextEncoderConfig:
        return config_from_dict(cls, data)


class TextEncoder(nn.Module):
    """forward(ids (B, L) int64, lengths (B,) int64 words) -> (B, embedding_dim)."""

    arch = ARCH

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.index = {word: i + 2 for i, word in enumerate(config.words)}
        self.words = nn.Embedding(len(config.words) + 2, config.word_dim, padding_idx=PAD)
        self.rnn = BiRNN("gru", config.word_dim, config.hidden, 1)
        width = 2 * config.hidden
        self.attention = nn.Sequential(nn.Linear(width, config.attention_dim), nn.Tanh(),
                                       nn.Linear(config.attention_dim, width))
        self.projection = nn.Linear(width, config.embedding_dim)

    def ids(self, words: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Word lists -> (ids (B, L) padded, lengths (B,)); an empty transcript becomes one unknown word."""
        rows = [[self.index.get(w, UNKNOWN) for w in sentence] or [UNKNOWN] for sentence in words]
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        ids = torch.full((len(rows), int(lengths.max())), PAD, dtype=torch.long)
        for row, sentence in enumerate(rows):
            ids[row, : len(sentence)] = torch.tensor(sentence)
        return ids, lengths

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        steps = self.rnn(self.words(ids), lengths)  # (B, L, 2*hidden)
        valid = time_mask(steps.transpose(1, 2), lengths).transpose(1, 2)  # (B, L, 1)
        pooled = (masked_softmax(self.attention(steps), valid, dim=1) * steps).sum(dim=1)
        pooled = self.projection(pooled)
        return F.normalize(pooled, dim=1, eps=1e-12) if self.config.normalize == "l2" else pooled


def build_text_encoder(config: TextEncoderConfig) -> TextEncoder:
    return TextEncoder(config)
