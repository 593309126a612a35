"""How much of the judge-feature spread of real images each rendering factor makes.

`s2i-train eval` compares the spread of a caption's samples with the spread of real images. This says what that
real spread is made of: real images of one colour, shape, size and background are rendered afresh, once with every
factor free and once per factor held fixed (position at the centre, rotation at 0, one background texture and
level, colour without jitter, the figure's scale at the middle of its size's range), and read by the run's judge
at its own image size.
A factor whose fixing shrinks the spread most is what a generator must vary to look like real data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from rich.progress import track

from .checkpoint import load_judge
from .data import render
from .data.vocabulary import BACKGROUNDS, COLOURS, SHAPES, SIZES
from .eval import judge_read
from .metrics import mean_pairwise_distance

Fix = Callable[[render.ImageSpec], render.ImageSpec]


def _position(spec: render.ImageSpec) -> render.ImageSpec:
    return dataclasses.replace(spec, cx=0.5, cy=0.5)


def _rotation(spec: render.ImageSpec) -> render.ImageSpec:
    return dataclasses.replace(spec, rotation=0.0)


def _texture(spec: render.ImageSpec) -> render.ImageSpec:
    low, high = render.BACKGROUND_LEVELS[spec.background]
    return dataclasses.replace(spec, texture_seed=1, background_level=(low + high) // 2)


def _colour_jitter(spec: render.ImageSpec) -> render.ImageSpec:
    saturation = float(np.mean(render.saturation_range(spec.colour)))
    return dataclasses.replace(spec, hue=render.HUES[spec.colour], saturation=saturation,
                               value=float(np.mean(render.VALUE_RANGE)))


def _scale(spec: render.ImageSpec) -> render.ImageSpec:
    low, high = render.SIZE_RANGES[spec.size]
    return dataclasses.replace(spec, scale=(low + high) / 2)


FACTORS: dict[str, Fix] = {
    "position": _position,
    "rotation": _rotation,
    "texture": _texture,
    "colour_jitter": _colour_jitter,
    "scale": _scale,
}


def _fix_all(spec: render.ImageSpec) -> render.ImageSpec:
    for fix in FACTORS.values():
        spec = fix(spec)
    return spec


def _specs(rng: np.random.Generator, colour: str, shape: str, size: str, background: str,
           count: int) -> list[render.ImageSpec]:
    specs: list[render.ImageSpec] = []
    while len(specs) < count:  # the sampler draws size and background itself: keep the ones asked for
        spec = render.sample_image_spec(rng, colour, shape)
        if spec.size == size and spec.background == background:
            specs.append(spec)
    return specs


def factor_spread(run_dir: str | Path, images_per_group: int = 24, seed: int = 0, progress: bool = True) -> dict:
    """Mean pairwise judge-feature distance of real images of one colour, shape, size and background, with
    nothing fixed, with each factor of `FACTORS` fixed in turn, and with all of them fixed (0: one image).

    Groups: the eight colours each paired with one shape (colour i with shape i), both sizes, both backgrounds.
    The same random specs are used for every variant, so the differences are the fixed factor's alone."""
    if images_per_group < 2:
        raise ValueError("images_per_group must be at least 2")
    judge = load_judge(run_dir).eval()
    image_size = judge.config.image_size  # drawn at the size the judge reads, not drawn and then resized
    rng = np.random.default_rng(seed)
    groups = [_specs(rng, colour, shape, size, background, images_per_group)
              for colour, shape in zip(COLOURS, SHAPES, strict=True) for size in SIZES for background in BACKGROUNDS]
    variants: dict[str, Fix | None] = {"nothing": None, **FACTORS, "all": _fix_all}

    def features(specs: list[render.ImageSpec]) -> np.ndarray:
        pixels = np.stack([np.asarray(render.render(s, image_size), dtype=np.float32) for s in specs])
        images = torch.from_numpy(pixels / 127.5 - 1.0).permute(0, 3, 1, 2)
        with torch.no_grad():
            return judge_read(judge, images)[1].numpy()

    spread = {}
    for name, fix in track(list(variants.items()), description="rendering and reading", disable=not progress):
        spread[name] = mean_pairwise_distance([features([fix(s) if fix else s for s in g]) for g in groups])
    free = spread["nothing"]
    return {
        "groups": len(groups),
        "images_per_group": images_per_group,
        "spread_with_factor_fixed": spread,
        "share_of_spread_left": {name: (value / free if free else None) for name, value in spread.items()},
    }
