"""The two-stage baseline's pieces after the recogniser: transcripts to the generator's condition, and how well
a transcript says what its caption said.

Two ways from a transcript to the run's generator: the text encoder (trained like the speech encoder, into its
embedding space; the generator reads it like any speech embedding) and the rule-based parse, whose attribute
values become the generator's attribute code directly (one-hot where a word was heard, uniform where none was,
as the generator was trained to read a caption that leaves its background open).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .asr import Transcript
from .data import caption_grammar, caption_parse
from .models import draw_one_hot
from .train.banks import ATTRIBUTES
from .train.common import ATTRIBUTE_CLASSES, SPOKEN_ATTRIBUTES


def can_take_code(generator) -> bool:
    """Whether the generator is conditioned on the colour/shape/size/background code alone (then a parsed
    transcript can drive it directly)."""
    config = generator.config
    return (not config.condition_on_embedding
            and tuple(config.attribute_code) == tuple(ATTRIBUTE_CLASSES[a] for a in ATTRIBUTES))


def parsed_code(texts: list[str]) -> torch.Tensor:
    """(B, 20) attribute codes of the texts' parses: per attribute in ATTRIBUTES order a one-hot block, or a
    uniform one where the text names no value."""
    rows = []
    for text in texts:
        labels = caption_parse.parse_labels(text)
        blocks = []
        for name in ATTRIBUTES:
            count = ATTRIBUTE_CLASSES[name]
            block = torch.full((count,), 1.0 / count)
            if labels[name] >= 0:
                block = torch.nn.functional.one_hot(torch.tensor(labels[name]), count).float()
            blocks.append(block)
        rows.append(torch.cat(blocks))
    return torch.stack(rows) if rows else torch.empty(0, sum(ATTRIBUTE_CLASSES.values()))


def code_drawer(generator) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """(codes (B, 20), z, eps) -> images: the generator with its read-outs replaced by the given code, drawn
    blocks drawn from z as its own forward does."""
    sizes = list(generator.config.attribute_code)

    @torch.no_grad()
    def draw(codes: torch.Tensor, z: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        blocks = list(codes.split(sizes, dim=1))
        for i, block in enumerate(generator.config.sampled_code_blocks):
            blocks[block] = draw_one_hot(blocks[block], z[:, i])
        unused = torch.zeros(len(codes), generator.config.embedding_dim)
        return generator(unused, z, eps, code=blocks).images[-1]

    return draw


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance in words."""
    previous = list(range(len(hypothesis) + 1))
    for i, word in enumerate(reference, 1):
        current = [i]
        for j, heard in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != heard)))
        previous = current
    return previous[-1]


def asr_scores(transcripts: list[Transcript], records: list[dict]) -> dict[str, float]:
    """How well the transcripts carry their captions: per spoken attribute, the share whose parse names the
    caption's value (a synonym counts: it means the same); the word error rate against the caption's words; the
    share with no words at all; decoding time over audio time."""
    scores: dict[str, float] = {}
    parses = [caption_parse.parse_labels(t.text) for t in transcripts]
    for name in SPOKEN_ATTRIBUTES:
        hits = sum(p[name] == r["attributes"][name] for p, r in zip(parses, records, strict=True))
        scores[name] = hits / max(len(records), 1)
    errors = sum(word_errors(caption_grammar.tokens(r["text"]), caption_grammar.tokens(t.text))
                 for t, r in zip(transcripts, records, strict=True))
    scores["word_error_rate"] = errors / max(sum(len(caption_grammar.tokens(r["text"])) for r in records), 1)
    scores["empty"] = sum(not t.text for t in transcripts) / max(len(transcripts), 1)
    scores["real_time_factor"] = sum(t.seconds for t in transcripts) / max(sum(t.audio_seconds for t in transcripts),
                                                                           1e-9)
    return scores
