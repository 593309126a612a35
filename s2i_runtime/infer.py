"""What `s2i-run infer` and `s2i-run interpolate` do, as library functions the CLI wraps."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import InputError, S2IError
from .images import grid, save_png, to_pil
from .pipeline import Pipeline, StageTimer

GRID_NAME = "grid.png"


def output_paths(inputs: Sequence[str], out_dir: Path, num_images: int) -> list[list[Path]]:
    """OUT/<stem>_<k>.png per input; two inputs with the same stem would overwrite each other: refused."""
    seen: dict[str, str] = {}
    paths = []
    for source in inputs:
        stem = Path(source).stem or "input"
        if stem in seen and seen[stem] != source:
            raise InputError(
                f"{seen[stem]} and {source} would both be written as {stem}_<k>.png; rename one or run them apart"
            )
        seen[stem] = source
        paths.append([out_dir / f"{stem}_{k}.png" for k in range(num_images)])
    return paths


@dataclasses.dataclass
class InferResult:
    outputs: list[dict[str, Any]]  # per input: {"input", "images": [paths]} or {"input", "error"}
    grid: str | None
    input_errors: int
    model_errors: int

    @property
    def exit_code(self) -> int:
        """0 all written; 2 some input unusable; 1 the model failed (NaN/Inf) on some input."""
        if self.model_errors:
            return 1
        return 2 if self.input_errors else 0


def infer_files(pipe: Pipeline, inputs: Sequence[str], out_dir: str | os.PathLike, *, seed: int = 0,
                num_images: int = 1, make_grid: bool = False, fail_fast: bool = False,
                timer: StageTimer | None = None,
                on_error: Callable[[str], None] | None = None,
                on_progress: Callable[[int, int], None] | None = None) -> InferResult:
    """Images for every input into `out_dir`; an unusable input is reported and skipped (or, with
    `fail_fast`, raises before anything is written). PNGs are written atomically."""
    out_dir = Path(out_dir)
    paths = output_paths(inputs, out_dir, num_images)
    outputs: list[dict[str, Any]] = []
    rows = []
    input_errors = model_errors = 0
    chunk = max(1, pipe.batch_size * 4)
    if fail_fast:  # every input is checked before any model runs or any file is written
        chunk = len(inputs)
    for start in range(0, len(inputs), chunk):
        part = list(inputs[start : start + chunk])
        outcomes = pipe.generate_outcomes(part, seed, num_images, timer=timer, fail_fast=fail_fast,
                                          start_index=start)
        for offset, outcome in enumerate(outcomes):
            index = start + offset
            if isinstance(outcome, S2IError):
                if isinstance(outcome, InputError):
                    input_errors += 1
                else:
                    model_errors += 1
                outputs.append({"input": inputs[index], "error": str(outcome)})
                if on_error is not None:
                    on_error(str(outcome))
                continue
            images = [to_pil(image) for image in outcome]
            with _measure(timer, "encode_png"):
                for image, path in zip(images, paths[index], strict=True):
                    save_png(image, path)
            rows.append(images)
            outputs.append({"input": inputs[index], "images": [str(p) for p in paths[index]]})
        if on_progress is not None:
            on_progress(min(len(inputs), start + chunk), len(inputs))
    grid_path = None
    if make_grid and rows:
        grid_path = out_dir / GRID_NAME
        with _measure(timer, "encode_png"):
            save_png(grid([im for row in rows for im in row], columns=num_images), grid_path)
    return InferResult(outputs, str(grid_path) if grid_path else None, input_errors, model_errors)


def interpolate_files(pipe: Pipeline, source_a: str, source_b: str, out: str | os.PathLike, *,
                      steps: int = 9, seed: int = 0) -> list[str]:
    """One strip image (A on the left, B on the right) at `out`; returns the path written."""
    if Path(out).suffix.lower() != ".png":
        raise InputError(f"{out}: the strip is written as PNG; give a path ending in .png")
    images = pipe.interpolate(source_a, source_b, steps=steps, seed=seed)
    save_png(grid(images, columns=len(images)), out)
    return [str(out)]


def _measure(timer: StageTimer | None, stage: str):
    import contextlib

    return timer.measure(stage) if timer is not None else contextlib.nullcontext()
