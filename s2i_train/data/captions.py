"""Caption text for Spoken-Shapes: templates and synonyms. Text is for speech synthesis, humans and
evaluation; no model reads it (training only asks it whether the background is named)."""

from __future__ import annotations

import re

import numpy as np

# Every template names size, colour and shape; some also name the background.
TEMPLATES: tuple[str, ...] = (
    "{a} {size} {colour} {shape} on {a_bg} {background} background",
    "{a} {size} {colour} {shape}",
    "there is {a} {size} {colour} {shape} on {a_bg} {background} background",
    "this picture shows {a} {size} {colour} {shape}",
    "{a} {size} {shape} coloured {colour}",
    "I see {a} {size} {colour} {shape} in front of {a_bg} {background} background",
    "{a_colour} {colour} {shape}, quite {size}, on {a_bg} {background} background",
    "{a_bg} {background} background with {a} {size} {colour} {shape}",
    "draw {a} {size} {colour} {shape}",
    "one {size} {colour} {shape} against {a_bg} {background} backdrop",
    "it is {a} {size} {colour} {shape}",
    "a picture of {a} {size} {colour} {shape} on {background} grey",
)

# Extra training captions that name colour and size but leave the shape open: with every shape word heard beside
# only some colour words, an encoder can learn a colour-shape phrase as a unit; these ask for the colour word alone.
# Half name the background, as the full templates do, so the background word is heard as often.
SHAPE_OPEN_TEMPLATES: tuple[str, ...] = (
    "{a} {size} {colour} one",
    "something {size} and {colour} on {a_bg} {background} background",
    "{a} {size} {colour} thing on {a_bg} {background} background",
    "I see something {colour}, quite {size}",
    "draw {a} {size} {colour} figure against {a_bg} {background} backdrop",
    "it is {colour} and {size}",
)

SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"), "large": ("large", "big", "huge")}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red",),
    "orange": ("orange",),
    "yellow": ("yellow",),
    "green": ("green",),
    "cyan": ("cyan", "turquoise"),
    "blue": ("blue",),
    "purple": ("purple", "violet"),
    "pink": ("pink",),
}
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "disc"),
    "square": ("square",),
    "triangle": ("triangle",),
    "star": ("star",),
    "diamond": ("diamond", "rhombus"),
    "cross": ("cross", "plus sign"),
    "heart": ("heart",),
    "hexagon": ("hexagon",),
}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {"light": ("light", "pale", "bright"), "dark": ("dark", "dim")}


def names_background(text: str) -> bool:
    """Whether a caption says its background: half the templates do, and the other half leave it open."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    return any(word in words for options in BACKGROUND_WORDS.values() for word in options)


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def make_caption(rng: np.random.Generator, colour: str, shape: str, size: str, background: str,
                 say_shape: bool = True) -> tuple[str, int]:
    """A random caption for these attributes, and the index of the template used (in SHAPE_OPEN_TEMPLATES when
    `say_shape` is False)."""
    templates = TEMPLATES if say_shape else SHAPE_OPEN_TEMPLATES
    template_index = int(rng.integers(len(templates)))

    def pick(options: tuple[str, ...]) -> str:
        return options[int(rng.integers(len(options)))]

    words = {
        "size": pick(SIZE_WORDS[size]),
        "colour": pick(COLOUR_WORDS[colour]),
        "shape": pick(SHAPE_WORDS[shape]),
        "background": pick(BACKGROUND_WORDS[background]),
    }
    words["a"] = article(words["size"])
    words["a_bg"] = article(words["background"])
    words["a_colour"] = article(words["colour"]).capitalize()
    text = templates[template_index].format(**words)
    return text[0].upper() + text[1:], template_index
