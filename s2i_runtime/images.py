"""Generator output to pictures: [-1, 1] tensors to PIL images, grids, and PNG files written atomically."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from .errors import S2IError
from .fsutil import atomic_write_bytes


class NonFiniteOutput(S2IError):
    """The model produced NaN or Inf (typically an FP16 overflow); no image is written for it."""


def check_finite(images: np.ndarray, what: str = "generator output") -> None:
    if not np.isfinite(images).all():
        bad = int(np.count_nonzero(~np.isfinite(images)))
        raise NonFiniteOutput(
            f"{what} contains {bad} NaN/Inf values (an FP16 overflow? try the fp32 model); no image written"
        )


def to_uint8(image: np.ndarray) -> np.ndarray:
    """(3, H, W) float in [-1, 1] -> (H, W, 3) uint8; values outside [-1, 1] are clipped."""
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"expected an image of shape (3, H, W), got {array.shape}")
    check_finite(array)
    scaled = np.rint((np.clip(array, -1.0, 1.0) + 1.0) * 127.5)
    return np.ascontiguousarray(scaled.astype(np.uint8).transpose(1, 2, 0))


def to_pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(to_uint8(image))  # (H, W, 3) uint8 is RGB


def grid(images: Sequence[Image.Image], columns: int | None = None, padding: int = 2,
         background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Tile equally sized images row by row; `columns` defaults to all in one row."""
    if not images:
        raise ValueError("grid needs at least one image")
    columns = len(images) if columns is None else max(1, min(columns, len(images)))
    canvas = GridCanvas(images[0].size, columns, math.ceil(len(images) / columns), padding, background)
    for image in images:
        canvas.add(image)
    return canvas.image()


class GridCanvas:
    """A grid filled tile by tile as images are made, so a long run never holds its images, only the sheet.

    Sized for `max_rows` rows up front; `image()` crops to the rows actually used.
    """

    def __init__(self, tile_size: tuple[int, int], columns: int, max_rows: int, padding: int = 2,
                 background: tuple[int, int, int] = (255, 255, 255)) -> None:
        self.tile_size = tile_size
        self.columns = columns
        self.padding = padding
        width, height = tile_size
        self.sheet = Image.new(
            "RGB",
            (columns * width + (columns - 1) * padding, max_rows * height + (max_rows - 1) * padding),
            background,
        )
        self.count = 0

    def add(self, image: Image.Image) -> None:
        if image.size != self.tile_size:
            raise ValueError("grid images must all have the same size")
        width, height = self.tile_size
        row, col = divmod(self.count, self.columns)
        self.sheet.paste(image, (col * (width + self.padding), row * (height + self.padding)))
        self.count += 1

    def image(self) -> Image.Image:
        rows = math.ceil(self.count / self.columns)
        height = rows * self.tile_size[1] + (rows - 1) * self.padding
        return self.sheet if height == self.sheet.height else self.sheet.crop((0, 0, self.sheet.width, height))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    """Encode first, then write atomically: a failure never leaves a partial PNG behind."""
    atomic_write_bytes(path, png_bytes(image))
