"""Rule-based reading of a caption or transcript: which colour, shape, size and background it names.

The second variant of the two-stage baseline: where a text encoder must learn what the words mean, this
knows them from the word lists, so it is what a perfect text model would draw from the same transcript.
"""

from __future__ import annotations

from . import vocabulary
from .caption_grammar import SLOT_WORDS, tokens

ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "colour": vocabulary.COLOURS,
    "shape": vocabulary.SHAPES,
    "size": vocabulary.SIZES,
    "background": vocabulary.BACKGROUNDS,
}


def _phrase_table() -> dict[str, list[tuple[tuple[str, ...], str]]]:
    """Per attribute, (phrase as words, value), longest phrases first so "plus sign" wins over a lone word."""
    table = {}
    for attribute, lists in SLOT_WORDS.items():
        pairs = [(tuple(tokens(phrase)), value) for value, options in lists.items() for phrase in options]
        table[attribute] = sorted(pairs, key=lambda pair: -len(pair[0]))
    return table


PHRASES = _phrase_table()


def parse(text: str) -> dict[str, str | None]:
    """{attribute: value or None}: the first phrase of each attribute's word list found in the text; None where
    the text names none (a caption leaving its background open, or a word the recogniser lost)."""
    words = tokens(text)
    found: dict[str, str | None] = {}
    for attribute, pairs in PHRASES.items():
        hits = [(start, value) for phrase, value in pairs for start in range(len(words) - len(phrase) + 1)
                if tuple(words[start : start + len(phrase)]) == phrase]
        found[attribute] = min(hits)[1] if hits else None
    return found


def parse_labels(text: str) -> dict[str, int]:
    """`parse` as indices into the vocabulary's value lists, -1 where nothing was named."""
    return {attribute: ATTRIBUTE_VALUES[attribute].index(value) if value is not None else -1
            for attribute, value in parse(text).items()}
