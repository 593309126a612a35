"""What a Spoken-Shapes caption can say, built from the caption templates and word lists alone.

The two-stage baseline's recogniser and text encoder may know the language of the captions but no caption in
particular: everything here comes from `captions` (templates, synonyms), never from a dataset's text, so no
test caption can leak into the grammar, the word list or the parse.
"""

from __future__ import annotations

import re
import string

from . import captions

# Template slots and the word lists that fill them; the articles are spoken as "a" or "an".
SLOT_WORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "size": captions.SIZE_WORDS,
    "colour": captions.COLOUR_WORDS,
    "shape": captions.SHAPE_WORDS,
    "background": captions.BACKGROUND_WORDS,
}
ARTICLES = ("a", "an")
ARTICLE_SLOTS = ("a", "a_bg", "a_colour")
ATTRIBUTE_SLOTS = ("colour", "shape", "size", "background")


def tokens(text: str) -> list[str]:
    """Lower-case words, punctuation dropped: how captions and transcripts are compared."""
    return re.findall(r"[a-z]+", text.lower())


def _template_parts(template: str) -> list[tuple[str, str]]:
    """A template as (kind, value) pieces: ("word", w) or ("slot", name), in order."""
    parts: list[tuple[str, str]] = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts += [("word", word) for word in tokens(literal)]
        if field is not None:
            parts.append(("slot", field))
    return parts


def _slot_options(slot: str) -> tuple[str, ...]:
    if slot in ARTICLE_SLOTS:
        return ARTICLES
    if slot not in SLOT_WORDS:
        raise ValueError(f"caption template slot {slot!r} has no word list")
    return tuple(phrase for options in SLOT_WORDS[slot].values() for phrase in options)


def vocabulary() -> tuple[str, ...]:
    """Every word a caption can contain, sorted."""
    words: set[str] = set()
    for template in captions.TEMPLATES:
        for kind, value in _template_parts(template):
            phrases = (value,) if kind == "word" else _slot_options(value)
            for phrase in phrases:
                words.update(tokens(phrase))
    return tuple(sorted(words))


def jsgf(name: str = "caption") -> str:
    """A JSGF grammar accepting exactly the sentences the templates can make (any slot filler in any template,
    so every colour-shape pair is as likely as any other: the grammar knows nothing of the split)."""
    rule = lambda slot: "article" if slot in ARTICLE_SLOTS else slot  # noqa: E731
    lines = ["#JSGF V1.0;", f"grammar {name};"]
    alternatives = []
    for index, template in enumerate(captions.TEMPLATES):
        body = " ".join(value if kind == "word" else f"<{rule(value)}>" for kind, value in _template_parts(template))
        lines.append(f"<template{index}> = {body};")
        alternatives.append(f"<template{index}>")
    lines.append(f"public <{name}> = {' | '.join(alternatives)};")
    lines.append(f"<article> = {' | '.join(ARTICLES)};")
    for slot in ATTRIBUTE_SLOTS:
        lines.append(f"<{slot}> = {' | '.join(_slot_options(slot))};")
    return "\n".join(lines) + "\n"
