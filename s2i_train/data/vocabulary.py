"""The Spoken-Shapes vocabulary (docs/design.md): the one source of colours, shapes, classes and the test split.

Training, evaluation, the judge and export all read it from here; `vocabulary_dict()` is the JSON-able form
that export copies into s2i.json and the dataset generator writes beside the data.
"""

from __future__ import annotations

import dataclasses

COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross", "heart", "hexagon")
SIZES: tuple[str, ...] = ("small", "large")
BACKGROUNDS: tuple[str, ...] = ("light", "dark")

# Centre hue (degrees) of each colour and the half-width of its bucket: drawn colours are jittered inside
# the bucket, and an image's colour is judged by which bucket its hue falls in. Buckets do not overlap.
HUES: dict[str, float] = {
    "red": 0.0,
    "orange": 28.0,
    "yellow": 55.0,
    "green": 120.0,
    "cyan": 182.0,
    "blue": 228.0,
    "purple": 275.0,
    "pink": 325.0,
}
HUE_HALF_WIDTH = 8.0

# Held-out test classes: colour i with shapes (i + a) mod 8 for a in TEST_OFFSETS. Two offsets make a
# two-cell-per-row Latin-square pattern, so each colour and each shape is held out exactly twice, and every
# held-out shape and colour is still seen in training with six other partners.
TEST_OFFSETS: tuple[int, int] = (0, 3)


@dataclasses.dataclass(frozen=True)
class ShapeClass:
    colour: str
    shape: str

    @property
    def name(self) -> str:
        """Folder name, e.g. `red_star`."""
        return f"{self.colour}_{self.shape}"

    @property
    def class_id(self) -> int:
        return COLOURS.index(self.colour) * len(SHAPES) + SHAPES.index(self.shape)


CLASSES: tuple[ShapeClass, ...] = tuple(ShapeClass(c, s) for c in COLOURS for s in SHAPES)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)


def _test_classes() -> tuple[ShapeClass, ...]:
    n = len(SHAPES)
    chosen = [
        ShapeClass(colour, SHAPES[(i + offset) % n]) for i, colour in enumerate(COLOURS) for offset in TEST_OFFSETS
    ]
    return tuple(sorted(chosen, key=lambda c: c.class_id))


TEST_CLASSES: tuple[ShapeClass, ...] = _test_classes()
TRAIN_CLASSES: tuple[ShapeClass, ...] = tuple(c for c in CLASSES if c not in TEST_CLASSES)


def class_by_name(name: str) -> ShapeClass:
    colour, _, shape = name.partition("_")
    if colour not in COLOURS or shape not in SHAPES:
        raise KeyError(f"not a Spoken-Shapes class: {name!r}")
    return ShapeClass(colour, shape)


def class_id(name: str) -> int:
    return class_by_name(name).class_id


def split_of(name: str) -> str:
    return "test" if class_by_name(name) in TEST_CLASSES else "train"


def attribute_labels(colour: str, shape: str, size: str, background: str) -> dict[str, int]:
    """Integer labels per attribute (indices into COLOURS, SHAPES, SIZES, BACKGROUNDS)."""
    return {
        "colour": COLOURS.index(colour),
        "shape": SHAPES.index(shape),
        "size": SIZES.index(size),
        "background": BACKGROUNDS.index(background),
    }


def hue_bucket(hue_degrees: float) -> str | None:
    """The colour whose bucket holds this hue, or None if it falls between buckets."""
    for colour, centre in HUES.items():
        if abs((hue_degrees - centre + 180.0) % 360.0 - 180.0) <= HUE_HALF_WIDTH:
            return colour
    return None


def vocabulary_dict() -> dict:
    """JSON-able vocabulary for s2i.json (`dataset.vocabulary`) and the dataset folder."""
    return {
        "colours": list(COLOURS),
        "shapes": list(SHAPES),
        "sizes": list(SIZES),
        "backgrounds": list(BACKGROUNDS),
        "classes": list(CLASS_NAMES),
        "class_ids": {c.name: c.class_id for c in CLASSES},
        "test_classes": [c.name for c in TEST_CLASSES],
        "train_classes": [c.name for c in TRAIN_CLASSES],
        "hues": dict(HUES),
        "hue_half_width": HUE_HALF_WIDTH,
        "test_rule": f"colour i is held out with shapes (i + a) mod 8 for a in {list(TEST_OFFSETS)}",
    }
