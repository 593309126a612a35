"""What every dataset loader produces: a list of `Record`s (one image, its spoken captions, its class).

The torch Dataset works on records alone, so training runs on Spoken-Shapes and the papers' datasets alike.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from s2i_runtime.errors import InputError


class DatasetError(InputError):
    """A dataset on disk is missing files or disagrees with itself. The message names the first bad path."""


@dataclasses.dataclass(frozen=True)
class Record:
    key: str  # "<class>/<id>", unique within a split
    image: Path
    audio: tuple[Path, ...]  # one or more spoken captions of the image
    class_name: str
    class_id: int
    attributes: dict[str, int] = dataclasses.field(default_factory=dict)  # e.g. colour/shape/size/background
    bbox: tuple[float, float, float, float] | None = None  # x, y, width, height in pixels (CUB)


@dataclasses.dataclass(frozen=True)
class LoadedSplit:
    name: str  # dataset name, e.g. "spoken-shapes", "cub-200"
    split: str
    records: list[Record]
    class_names: list[str]  # class_id -> name, shared by the train and test splits
    skipped: list[str]  # one line per skipped item ("path: why"), with --skip-bad

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class Problems:
    """Collects bad items: raises on the first one, or records it when skipping is allowed."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.skipped: list[str] = []

    def report(self, path: Path | str, why: str) -> None:
        message = f"{path}: {why}"
        if not self.skip_bad:
            raise DatasetError(message + " (pass --skip-bad to skip bad items)")
        self.skipped.append(message)


def check_audio_file(path: Path) -> str | None:
    """Why this audio file cannot be used, or None when it decodes to non-empty audio."""
    from s2i_runtime.audio import load_audio

    try:
        load_audio(path, max_seconds=None)
    except InputError as exc:
        text = str(exc)
        prefix = f"{path}: "
        return text[len(prefix) :] if text.startswith(prefix) else text
    return None


def validate_record(record: Record, problems: Problems, verify_audio: bool) -> bool:
    """True when the record's files are all there (and decode, with verify_audio); else report it."""
    if not record.image.is_file():
        problems.report(record.image, "image file is missing")
        return False
    if not record.audio:
        problems.report(record.image, "image has no spoken captions")
        return False
    for audio in record.audio:
        if not audio.is_file():
            problems.report(audio, "audio file is missing")
            return False
        if verify_audio:
            why = check_audio_file(audio)
            if why is not None:
                problems.report(audio, f"unreadable audio ({why})")
                return False
    return True
