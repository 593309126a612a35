"""Drawing Spoken-Shapes images with pillow: one flat-coloured shape on a softly textured grey background.

Shapes are polygons drawn on a 4x supersampled mask and box-filtered down (anti-aliasing that is exact and
deterministic). Outlines are kept crisp and mutually distinct (sharp-cornered squares, a slim diamond, a
fat star) so they stay recognisable at 64x64: calibration found rounded squares read as hexagons.
"""

from __future__ import annotations

import colorsys
import dataclasses
import math
from functools import cache

import numpy as np
from PIL import Image, ImageDraw

from .vocabulary import BACKGROUNDS, COLOURS, HUES, SHAPES, SIZES

SUPERSAMPLE = 4
# Fraction of the image side covered by the shape's (unrotated) bounding box.
SIZE_RANGES: dict[str, tuple[float, float]] = {"small": (0.36, 0.44), "large": (0.66, 0.78)}
ROTATION_RANGE = 15.0  # degrees either way: never enough to turn a square into a diamond
VALUE_RANGE = (0.85, 1.0)  # HSV value of the figure's colour
HUE_JITTER = 5.0  # degrees, inside the vocabulary's +-8 degree buckets
BACKGROUND_LEVELS: dict[str, tuple[int, int]] = {"light": (175, 215), "dark": (35, 75)}
TEXTURE_AMPLITUDE = 7.0  # grey levels of the low-frequency background texture
MARGIN = 0.03  # fraction of the side kept free around the shape


def saturation_range(colour: str) -> tuple[float, float]:
    # Pink is a pale magenta: lower saturation keeps it apart from purple by more than hue alone.
    return (0.45, 0.62) if colour == "pink" else (0.78, 1.0)


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """Everything that decides one image; drawn identically at any resolution."""

    colour: str
    shape: str
    size: str
    background: str
    hue: float  # degrees
    saturation: float
    value: float
    scale: float  # bounding-box side / image side
    rotation: float  # degrees, counter-clockwise
    cx: float  # centre, as fractions of the side
    cy: float
    background_level: int
    texture_seed: int

    @property
    def rgb(self) -> tuple[int, int, int]:
        r, g, b = colorsys.hsv_to_rgb((self.hue % 360.0) / 360.0, self.saturation, self.value)
        return round(r * 255), round(g * 255), round(b * 255)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def sample_image_spec(rng: np.random.Generator, colour: str, shape: str) -> ImageSpec:
    """Random size, background, colour jitter, rotation and position for one (colour, shape) image."""
    if colour not in COLOURS or shape not in SHAPES:
        raise ValueError(f"unknown colour/shape {colour!r}/{shape!r}")
    size = SIZES[int(rng.integers(len(SIZES)))]
    background = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    hue = HUES[colour] + float(rng.uniform(-HUE_JITTER, HUE_JITTER))
    saturation = float(rng.uniform(*saturation_range(colour)))
    value = float(rng.uniform(*VALUE_RANGE))
    scale = float(rng.uniform(*SIZE_RANGES[size]))
    rotation = float(rng.uniform(-ROTATION_RANGE, ROTATION_RANGE))
    # Place the rotated outline fully inside the image with a small margin.
    points = _rotate(unit_outline(shape), rotation) * (scale / 2.0)
    lo, hi = points.min(axis=0), points.max(axis=0)
    fit = (1.0 - 2.0 * MARGIN) / float((hi - lo).max())
    if fit < 1.0:  # a large square turned 15 degrees would not fit: shrink it a little
        scale, lo, hi = scale * fit, lo * fit, hi * fit
    cx = float(rng.uniform(MARGIN - lo[0], 1.0 - MARGIN - hi[0]))
    cy = float(rng.uniform(MARGIN - lo[1], 1.0 - MARGIN - hi[1]))
    level = int(rng.integers(BACKGROUND_LEVELS[background][0], BACKGROUND_LEVELS[background][1] + 1))
    return ImageSpec(
        colour=colour,
        shape=shape,
        size=size,
        background=background,
        hue=hue,
        saturation=saturation,
        value=value,
        scale=scale,
        rotation=rotation,
        cx=cx,
        cy=cy,
        background_level=level,
        texture_seed=int(rng.integers(2**32)),
    )


@cache
def unit_outline(shape: str) -> np.ndarray:
    """Polygon (N, 2) of a shape, y pointing down, bounding box centred at 0 with its longer side 2."""
    points = _raw_outline(shape)
    lo, hi = points.min(axis=0), points.max(axis=0)
    points = (points - (lo + hi) / 2.0) * (2.0 / float((hi - lo).max()))
    points.setflags(write=False)
    return points


def _raw_outline(shape: str) -> np.ndarray:
    def polar(n: int, radii: list[float], start_deg: float) -> np.ndarray:
        angles = np.deg2rad(start_deg + np.arange(n) * 360.0 / n)
        r = np.resize(np.asarray(radii, dtype=np.float64), n)
        return np.stack([r * np.cos(angles), -r * np.sin(angles)], axis=1)

    if shape == "circle":
        return polar(180, [1.0], 0.0)
    if shape == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    if shape == "triangle":
        return polar(3, [1.0], 90.0)
    if shape == "star":
        return polar(10, [1.0, 0.48], 90.0)
    if shape == "diamond":
        return np.array([[0, -1], [0.62, 0], [0, 1], [-0.62, 0]], dtype=np.float64)
    if shape == "cross":
        a, b = 1.0, 0.32
        return np.array(
            [
                [-b, -a],
                [b, -a],
                [b, -b],
                [a, -b],
                [a, b],
                [b, b],
                [b, a],
                [-b, a],
                [-b, b],
                [-a, b],
                [-a, -b],
                [-b, -b],
            ],
            dtype=np.float64,
        )
    if shape == "heart":
        t = np.linspace(0.0, 2.0 * math.pi, 240, endpoint=False)
        x = 16.0 * np.sin(t) ** 3
        y = 13.0 * np.cos(t) - 5.0 * np.cos(2 * t) - 2.0 * np.cos(3 * t) - np.cos(4 * t)
        return np.stack([x, -y], axis=1)
    if shape == "hexagon":
        return polar(6, [1.0], 0.0)
    raise ValueError(f"unknown shape {shape!r}")


def _rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    # Counter-clockwise on screen, where y points down.
    a = math.radians(degrees)
    rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    return points @ rot.T


def shape_alpha(spec: ImageSpec, image_size: int) -> np.ndarray:
    """Anti-aliased coverage (image_size, image_size) float32 in [0, 1] of the shape."""
    big = image_size * SUPERSAMPLE
    points = _rotate(unit_outline(spec.shape), spec.rotation) * (spec.scale / 2.0)
    points = (points + np.array([spec.cx, spec.cy])) * big
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).polygon([(float(x), float(y)) for x, y in points], fill=255)
    small = mask.reduce(SUPERSAMPLE)  # exact box filter: the area-weighted coverage of each pixel
    return np.asarray(small, dtype=np.float32) / 255.0


def background(spec: ImageSpec, image_size: int) -> np.ndarray:
    """(image_size, image_size) float32 grey with a mild low-frequency texture (resolution-independent)."""
    rng = np.random.default_rng(spec.texture_seed)
    grid = rng.normal(0.0, 1.0, size=(6, 6)).astype(np.float32)
    texture = Image.fromarray(grid, mode="F").resize((image_size, image_size), Image.Resampling.BICUBIC)
    return spec.background_level + TEXTURE_AMPLITUDE * np.asarray(texture, dtype=np.float32)


def render(spec: ImageSpec, image_size: int) -> Image.Image:
    """The RGB image of `spec` at `image_size` x `image_size`."""
    if image_size < 8:
        raise ValueError(f"image size {image_size} is too small")
    alpha = shape_alpha(spec, image_size)[..., None]
    grey = background(spec, image_size)[..., None]
    colour = np.asarray(spec.rgb, dtype=np.float32)[None, None, :]
    pixels = grey * (1.0 - alpha) + colour * alpha
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="RGB")
