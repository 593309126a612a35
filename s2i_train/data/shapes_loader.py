"""Read a generated Spoken-Shapes folder into records (no torch)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import vocabulary
from .records import DatasetError, LoadedSplit, Problems, Record, validate_record

SPLITS = ("train", "test")


def read_json(path: Path):
    if not path.is_file():
        raise DatasetError(f"{path}: file is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not readable JSON ({exc})") from None


def _caption_index(root: Path) -> dict[str, list[dict]]:
    path = root / "captions.jsonl"
    if not path.is_file():
        raise DatasetError(f"{path}: file is missing")
    by_key: dict[str, list[dict]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                by_key.setdefault(entry["key"], []).append(entry)
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DatasetError(f"{path}:{number}: not a caption record") from None
    return by_key


def load_spoken_shapes(
    root: str | os.PathLike, split: str = "train", *, skip_bad: bool = False, verify_audio: bool = False
) -> LoadedSplit:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    split_file = root / split / "filenames.json"
    keys = read_json(split_file)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise DatasetError(f'{split_file}: expected a JSON list of "<class>/<id>" keys')
    captions = _caption_index(root)
    problems = Problems(skip_bad)
    records = []
    for key in keys:
        class_name = key.split("/", 1)[0]
        try:
            shape_class = vocabulary.class_by_name(class_name)
        except KeyError:
            problems.report(root / "images" / class_name, f"{split_file.name} lists an unknown class folder")
            continue
        if vocabulary.split_of(class_name) != split:
            other = vocabulary.split_of(class_name)
            problems.report(root / "images" / class_name, f"class is a {other} class but {split_file} lists it")
            continue
        entries = sorted(captions.get(key, []), key=lambda e: e.get("caption_index", 0))
        if not entries:
            problems.report(root / "images" / f"{key}.png", "no captions in captions.jsonl")
            continue
        first = entries[0]
        record = Record(
            key=key,
            image=root / first.get("image", f"images/{key}.png"),
            audio=tuple(root / e["audio"] for e in entries),
            class_name=class_name,
            class_id=shape_class.class_id,
            attributes=dict(first.get("attributes", {})),
        )
        if validate_record(record, problems, verify_audio):
            records.append(record)
    return LoadedSplit("spoken-shapes", split, records, list(vocabulary.CLASS_NAMES), problems.skipped)
