"""What `s2i-run infer` and `s2i-run interpolate` do, as library functions the CLI wraps.

Everything that can be checked without the model (output names and location, stdin) is checked by
`plan_outputs` / `check_strip_path` first, so the CLI refuses a bad command before loading anything.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import InputError, S2IError
from .fsutil import check_writable_dir, check_writable_file
from .images import GridCanvas, grid, save_png, to_pil
from .limits import MAX_NUM_IMAGES, check_int
from .pipeline import AudioInput, Pipeline, StageTimer, input_label

GRID_NAME = "grid.png"
STDIN = "-"
STDIN_STEM = "stdin"
# Images held in memory at once by infer_files: each chunk of inputs is written before the next is made.
IMAGES_PER_CHUNK = 64
# A grid is one picture of every image of the run: bounded, since it is built in memory.
MAX_GRID_IMAGES = 4096
# stdin is read once, into memory (a --fail-fast run reads every input twice); beyond this it is refused.
MAX_STDIN_BYTES = 1 << 27


def output_paths(inputs: Sequence[str], out_dir: Path, num_images: int) -> list[list[Path]]:
    """OUT/<stem>_<k>.png per input; two inputs with the same stem would overwrite each other: refused."""
    seen: dict[str, str] = {}
    paths = []
    for source in inputs:
        stem = STDIN_STEM if source == STDIN else (Path(source).stem or "input")
        if stem in seen:
            if source == STDIN:
                raise InputError("stdin (-) can be read only once; give it once")
            if seen[stem] == source:
                raise InputError(f"{source} is given twice; its images would overwrite each other "
                                 "(ask for more with --num-images)")
            raise InputError(
                f"{seen[stem]} and {source} would both be written as {stem}_<k>.png; rename one or run them apart"
            )
        seen[stem] = source
        paths.append([out_dir / f"{stem}_{k}.png" for k in range(num_images)])
    return paths


def plan_outputs(inputs: Sequence[str], out_dir: str | os.PathLike, num_images: int,
                 make_grid: bool = False) -> list[list[Path]]:
    """The PNG paths of every input, after checking everything that needs no model: the image count, that
    the names are distinct, stdin, and that `out_dir` can be written."""
    num_images = check_int("--num-images", num_images, 1, MAX_NUM_IMAGES)
    if not inputs:
        raise InputError("no inputs given")
    if make_grid and len(inputs) * num_images > MAX_GRID_IMAGES:
        raise InputError(f"--grid holds at most {MAX_GRID_IMAGES} images; {len(inputs)} inputs x {num_images} "
                         "images is more (leave out --grid)")
    paths = output_paths(inputs, Path(out_dir), num_images)
    if STDIN in inputs and sys.stdin.isatty():
        raise InputError("stdin (-) is a terminal; pipe audio into it, e.g. s2i-run infer - < speech.wav")
    check_writable_dir(out_dir)
    return paths


def check_strip_path(out: str | os.PathLike) -> None:
    if Path(out).suffix.lower() != ".png":
        raise InputError(f"{out}: the strip is written as PNG; give a path ending in .png")
    check_writable_file(out)


class _NamedStream:
    """Bytes read from stdin, as a stream under the name errors should show."""

    def __init__(self, data: bytes, name: str) -> None:
        self._stream = io.BytesIO(data)
        self.name = name

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._stream.seek(offset, whence)

    def tell(self) -> int:
        return self._stream.tell()


class CommandLineSources:
    """Command-line inputs as audio sources: paths, and `-` for stdin (read once, on first use)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self._stdin: bytes | None = None

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> AudioInput:
        name = self.names[index]
        if name != STDIN:
            return name
        if self._stdin is None:
            self._stdin = sys.stdin.buffer.read(MAX_STDIN_BYTES + 1)
            if len(self._stdin) > MAX_STDIN_BYTES:
                raise InputError(f"stdin: more than {MAX_STDIN_BYTES >> 20} MiB; give a file instead")
        return _NamedStream(self._stdin, STDIN_STEM)

    def chunk(self, start: int, stop: int) -> list[AudioInput]:
        return [self[i] for i in range(start, min(stop, len(self)))]


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
    `fail_fast`, raises before anything is written). PNGs are written atomically, chunk by chunk, as
    they are made."""
    out_dir = Path(out_dir)
    paths = plan_outputs(inputs, out_dir, num_images, make_grid)
    sources = CommandLineSources(inputs)
    if fail_fast:  # every input is read before any model runs or any file is written; memory stays one input's
        for index in range(len(sources)):
            pipe.features(sources[index], input_label(sources[index], index))
    outputs: list[dict[str, Any]] = []
    canvas = None
    input_errors = model_errors = 0
    chunk = max(1, min(pipe.batch_size * 4, IMAGES_PER_CHUNK // num_images))
    for start in range(0, len(inputs), chunk):
        outcomes = pipe.generate_outcomes(sources.chunk(start, start + chunk), seed, num_images, timer=timer,
                                          fail_fast=fail_fast, start_index=start)
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
                    _save(image, path)
            if make_grid:
                canvas = canvas or GridCanvas(images[0].size, num_images, len(inputs))
                for image in images:
                    canvas.add(image)
            outputs.append({"input": inputs[index], "images": [str(p) for p in paths[index]]})
        if on_progress is not None:
            on_progress(min(len(inputs), start + chunk), len(inputs))
    grid_path = None
    if canvas is not None:
        grid_path = out_dir / GRID_NAME
        with _measure(timer, "encode_png"):
            _save(canvas.image(), grid_path)
    return InferResult(outputs, str(grid_path) if grid_path else None, input_errors, model_errors)


def interpolate_files(pipe: Pipeline, source_a: str, source_b: str, out: str | os.PathLike, *,
                      steps: int = 9, seed: int = 0) -> list[str]:
    """One strip image (A on the left, B on the right) at `out`; returns the path written."""
    check_strip_path(out)
    if source_a == STDIN and source_b == STDIN:
        raise InputError("stdin (-) can be read only once; give it for A or B, not both")
    sources = CommandLineSources([source_a, source_b])
    images = pipe.interpolate(sources[0], sources[1], steps=steps, seed=seed)
    _save(grid(images, columns=len(images)), out)
    return [str(out)]


def _save(image, path: Path) -> None:
    try:
        save_png(image, path)
    except OSError as exc:  # checked up front, so only a full disk or a changed folder gets here
        raise InputError(f"{path}: cannot write ({exc.strerror or exc})") from None


def _measure(timer: StageTimer | None, stage: str):
    import contextlib

    return timer.measure(stage) if timer is not None else contextlib.nullcontext()
