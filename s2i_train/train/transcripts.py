"""What each training caption says, word by word, for the encoder's optional word-recognition term.

The term (`encoder.word_weight`) asks the encoder's steps, before pooling, to spell out the caption's words in order
(CTC). Served models never see text; only training does, and only when the term is on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from s2i_runtime.errors import InputError

from ..data.caption_grammar import tokens

BLANK = 0  # CTC's "no word here" class; word k of the vocabulary is class k + 1


@dataclass(frozen=True)
class Transcripts:
    """Every caption's words as class indices: (N, longest) long, padded with BLANK, and (N,) lengths."""

    vocabulary: tuple[str, ...]
    words: torch.Tensor
    lengths: torch.Tensor

    @property
    def num_classes(self) -> int:
        return len(self.vocabulary) + 1

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The captions at `rows`: (words (B, longest in the batch), lengths (B,))."""
        lengths = self.lengths[rows]
        return self.words[rows, : int(lengths.max())], lengths


def transcripts(records: Sequence[dict], source: str) -> Transcripts:
    """The captions' words over a vocabulary of every word the captions use (sorted, so the same captions give the
    same classes); `source` names the data in the error for captions without text."""
    said = []
    for record in records:
        text = record.get("text")
        words = tokens(text) if isinstance(text, str) else []
        if not words:
            raise InputError(f"{source}: caption {record.get('key', '?')} has no transcript; encoder.word_weight "
                             "needs the text of every training caption (set it to 0)")
        said.append(words)
    vocabulary = tuple(sorted({word for words in said for word in words}))
    index = {word: k + 1 for k, word in enumerate(vocabulary)}
    longest = max(len(words) for words in said)
    table = torch.full((len(said), longest), BLANK, dtype=torch.long)
    for row, words in enumerate(said):
        table[row, : len(words)] = torch.tensor([index[word] for word in words])
    return Transcripts(vocabulary, table, torch.tensor([len(words) for words in said]))
