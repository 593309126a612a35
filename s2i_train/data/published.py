"""Loaders for the papers' dataset layouts, producing the same records as Spoken-Shapes.

- S2IGAN style (CUB-200, Oxford-102): `<images>/<class>/<img>.jpg`, `audio/<class>/<img>/*.wav`,
  `{train,test}/filenames.pickle` (keys "<class>/<img>"), `class_info.pickle` (a class label per key, in the
  split folder as StackGAN keeps it, or at the root). Optional CUB `bounding_boxes.txt` + `images.txt`.
- Li et al. style: `{train,test}.json` with `data[]` entries {image, class, text[], audio[]}
  (the flowers variant spells them {img, class, text, wav}).
- Places audio captions: a JSON with `data[]` entries {wav, image, uttid, speaker, asr_text}, optional
  `image_base_path` / `audio_base_path`; one caption per image, the class is the image's folder.

Class ids index `class_names`, the sorted class names of both splits, so train and test agree.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from . import safe_pickle
from .records import DatasetError, LoadedSplit, Problems, Record, validate_record
from .shapes_loader import read_json

SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Where S2IGAN-style trees keep images, tried in order.
S2IGAN_IMAGE_DIRS = ("CUB_200_2011/images", "Oxford102/images", "images", "jpg")
BBOX_RATIO = 0.75  # StackGAN: crop so the object covers more than 0.75 of the image


def crop_to_bbox(image_size: tuple[int, int], bbox: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """StackGAN's crop: a square of side 1.5 x the box's longer side around its centre, clipped to the image."""
    width, height = image_size
    x, y, w, h = bbox
    r = int(max(w, h) * BBOX_RATIO)
    cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
    return max(0, cx - r), max(0, cy - r), min(width, cx + r), min(height, cy + r)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} (expected one of {', '.join(SPLITS)})")


def _find_image(folder: Path, key: str) -> Path:
    """`folder/<key>.<ext>`, or the flat layout `folder/<image name>.<ext>` (StackGAN's flowers)."""
    for stem in (folder / key, folder / key.split("/")[-1]):
        for suffix in IMAGE_SUFFIXES:
            candidate = stem.with_name(stem.name + suffix)
            if candidate.is_file():
                return candidate
    return folder / f"{key}.jpg"


def _bounding_boxes(root: Path) -> dict[str, tuple[float, float, float, float]]:
    """CUB: "<class>/<img>" -> (x, y, w, h), when bounding_boxes.txt and images.txt are present."""
    for base in (root / "CUB_200_2011", root):
        boxes_file, images_file = base / "bounding_boxes.txt", base / "images.txt"
        if boxes_file.is_file():
            if not images_file.is_file():
                raise DatasetError(f"{images_file}: file is missing (needed to read {boxes_file.name})")
            names = {}
            for number, line in enumerate(images_file.read_text(encoding="utf-8").splitlines(), 1):
                parts = line.split()
                if len(parts) != 2:
                    if line.strip():
                        raise DatasetError(f"{images_file}:{number}: expected '<id> <class>/<image>.jpg'")
                    continue
                names[parts[0]] = os.path.splitext(parts[1])[0]
            boxes = {}
            for number, line in enumerate(boxes_file.read_text(encoding="utf-8").splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                try:
                    x, y, w, h = (float(v) for v in parts[1:5])
                    if len(parts) != 5 or not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
                        raise ValueError
                except ValueError:
                    raise DatasetError(f"{boxes_file}:{number}: expected '<id> x y width height'") from None
                if parts[0] in names:
                    boxes[names[parts[0]]] = (x, y, w, h)
            return boxes
    return {}


def _s2igan_keys(root: Path, split: str) -> tuple[list[str], Path]:
    path = root / split / "filenames.pickle"
    keys = safe_pickle.load(path)
    if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) for k in keys):
        raise DatasetError(f'{path}: expected a list of "<class>/<image>" strings')
    return [k.strip("/") for k in keys], path


def _s2igan_labels(root: Path, split: str, count: int) -> tuple[list | None, Path | None]:
    for path in (root / split / "class_info.pickle", root / "class_info.pickle"):
        if path.is_file():
            labels = safe_pickle.load(path)
            if isinstance(labels, dict):  # some copies map key -> label
                return labels, path
            if not isinstance(labels, (list, tuple)) or len(labels) != count:
                raise DatasetError(f"{path}: expected {count} class labels, one per entry of {split}/filenames.pickle")
            return list(labels), path
    return None, None


def load_s2igan(
    root: str | os.PathLike,
    split: str = "train",
    *,
    name: str = "s2igan",
    skip_bad: bool = False,
    verify_audio: bool = True,
    crop: bool = True,
) -> LoadedSplit:
    root = Path(root)
    _check_split(split)
    image_dir = next((root / d for d in S2IGAN_IMAGE_DIRS if (root / d).is_dir()), None)
    if image_dir is None:
        others = ", ".join(S2IGAN_IMAGE_DIRS[1:])
        raise DatasetError(f"{root / S2IGAN_IMAGE_DIRS[0]}: image folder not found (nor {others})")
    all_keys = {s: _s2igan_keys(root, s)[0] for s in SPLITS if (root / s / "filenames.pickle").is_file()}
    keys, keys_path = _s2igan_keys(root, split)
    class_names = sorted({k.split("/")[0] for ks in all_keys.values() for k in ks})
    class_index = {c: i for i, c in enumerate(class_names)}
    labels, labels_path = _s2igan_labels(root, split, len(keys))
    boxes = _bounding_boxes(root) if crop else {}
    problems = Problems(skip_bad)
    label_of_class: dict[str, object] = {}
    class_of_label: dict[object, str] = {}
    records = []
    for position, key in enumerate(keys):
        if "/" not in key:
            problems.report(keys_path, f'entry {key!r} is not "<class>/<image>"')
            continue
        class_name = key.split("/")[0]
        if labels is not None:
            label = labels.get(key) if isinstance(labels, dict) else labels[position]
            # The class folder and class_info must agree one-to-one.
            known_label = label_of_class.setdefault(class_name, label)
            if known_label != label or class_of_label.setdefault(label, class_name) != class_name:
                problems.report(
                    image_dir / class_name,
                    f"class folder disagrees with {labels_path} (label {label!r} for {key!r})",
                )
                continue
        if not (image_dir / class_name).is_dir() and not _find_image(image_dir, key).is_file():
            problems.report(image_dir / class_name, f"class folder listed in {keys_path} is missing")
            continue
        audio_dir = root / "audio" / key
        audio = tuple(sorted(audio_dir.glob("*.wav"))) if audio_dir.is_dir() else ()
        if not audio:
            problems.report(audio_dir, "no spoken captions (*.wav) for this image")
            continue
        record = Record(
            key=key,
            image=_find_image(image_dir, key),
            audio=audio,
            class_name=class_name,
            class_id=class_index[class_name],
            bbox=boxes.get(key),
        )
        if validate_record(record, problems, verify_audio):
            records.append(record)
    return LoadedSplit(name, split, records, class_names, problems.skipped)


def _entries(path: Path) -> tuple[list[dict], dict]:
    document = read_json(path)
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise DatasetError(f'{path}: expected an object with a "data" list of entries')
    return data, document


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _resolve(base: Path, relative: str) -> Path:
    return base / relative


def load_li(
    root: str | os.PathLike,
    split: str = "train",
    *,
    name: str = "li-et-al",
    skip_bad: bool = False,
    verify_audio: bool = True,
) -> LoadedSplit:
    """Li et al.'s JSON: {"data": [{"image"|"img", "class", "text"[], "audio"[]|"wav"[]}]}."""
    root = Path(root)
    _check_split(split)
    documents = {s: _entries(root / f"{s}.json") for s in SPLITS if (root / f"{s}.json").is_file() or s == split}

    def class_of(entry: dict) -> str:
        return str(entry.get("class", ""))

    class_names = sorted({class_of(e) for data, _ in documents.values() for e in data} - {""})
    class_index = {c: i for i, c in enumerate(class_names)}
    data, document = documents[split]
    json_path = root / f"{split}.json"
    image_base = root / document.get("image_base_path", "")
    audio_base = root / document.get("audio_base_path", "")
    problems = Problems(skip_bad)
    records = []
    for number, entry in enumerate(data):
        image = entry.get("image", entry.get("img"))
        audio = _as_list(entry.get("audio", entry.get("wav")))
        if not isinstance(image, str) or not class_of(entry):
            problems.report(json_path, f"entry {number} lacks an image or a class")
            continue
        record = Record(
            key=f"{class_of(entry)}/{Path(image).stem}",
            image=_resolve(image_base, image),
            audio=tuple(_resolve(audio_base, a) for a in audio),
            class_name=class_of(entry),
            class_id=class_index[class_of(entry)],
        )
        if validate_record(record, problems, verify_audio):
            records.append(record)
    return LoadedSplit(name, split, records, class_names, problems.skipped)


def load_places(
    json_path: str | os.PathLike,
    *,
    class_source: str | os.PathLike | None = None,
    name: str = "places-audio",
    split: str = "train",
    skip_bad: bool = False,
    verify_audio: bool = True,
) -> LoadedSplit:
    """Places audio captions: {"image_base_path"?, "audio_base_path"?, "data": [{wav, image, uttid, ...}]}.

    Class = the image's folder inside image_base_path (e.g. "a/airport_terminal"). `class_source` is another
    split's JSON whose classes join the class list, so train and test ids agree.
    """
    json_path = Path(json_path)
    data, document = _entries(json_path)
    root = json_path.parent
    image_base = root / document.get("image_base_path", "")
    audio_base = root / document.get("audio_base_path", "")

    def class_of(entry: dict) -> str:
        image = entry.get("image")
        return str(Path(image).parent.as_posix()) if isinstance(image, str) else ""

    names = {class_of(e) for e in data}
    if class_source is not None:
        names |= {class_of(e) for e in _entries(Path(class_source))[0]}
    class_names = sorted(names - {"", "."})
    class_index = {c: i for i, c in enumerate(class_names)}
    problems = Problems(skip_bad)
    records = []
    for number, entry in enumerate(data):
        image, wav = entry.get("image"), entry.get("wav")
        if not isinstance(image, str) or not isinstance(wav, str) or class_of(entry) not in class_index:
            problems.report(json_path, f"entry {number} lacks an image in a class folder, or a wav")
            continue
        record = Record(
            key=str(entry.get("uttid") or Path(image).with_suffix("").as_posix()),
            image=image_base / image,
            audio=(audio_base / wav,),
            class_name=class_of(entry),
            class_id=class_index[class_of(entry)],
        )
        if validate_record(record, problems, verify_audio):
            records.append(record)
    return LoadedSplit(name, split, records, class_names, problems.skipped)


LAYOUTS = ("shapes", "s2igan", "li", "places")


def detect_layout(root: Path) -> str:
    if (root / "captions.jsonl").is_file() and (root / "train" / "filenames.json").is_file():
        return "shapes"
    if (root / "train" / "filenames.pickle").is_file() or (root / "test" / "filenames.pickle").is_file():
        return "s2igan"
    if (root / "train.json").is_file() or (root / "test.json").is_file():
        for split in SPLITS:
            path = root / f"{split}.json"
            if path.is_file():
                data, _ = _entries(path)
                if data and "uttid" in data[0]:
                    return "places"
        return "li"
    raise DatasetError(f"{root}: not a known dataset layout (no captions.jsonl, filenames.pickle or train.json)")


def load_split(
    root: str | os.PathLike,
    split: str = "train",
    *,
    layout: str = "auto",
    skip_bad: bool = False,
    verify_audio: bool = True,
) -> LoadedSplit:
    """Load one split of any supported layout (auto-detected by default)."""
    from .shapes_loader import load_spoken_shapes

    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: dataset folder not found")
    if layout == "auto":
        layout = detect_layout(root)
    if layout == "shapes":
        return load_spoken_shapes(root, split, skip_bad=skip_bad, verify_audio=verify_audio)
    if layout == "s2igan":
        return load_s2igan(root, split, skip_bad=skip_bad, verify_audio=verify_audio)
    if layout == "li":
        return load_li(root, split, skip_bad=skip_bad, verify_audio=verify_audio)
    if layout == "places":
        _check_split(split)
        other = root / f"{'test' if split == 'train' else 'train'}.json"
        return load_places(
            root / f"{split}.json",
            class_source=other if other.is_file() else None,
            split=split,
            skip_bad=skip_bad,
            verify_audio=verify_audio,
        )
    raise DatasetError(f"unknown layout {layout!r} (expected auto or one of {', '.join(LAYOUTS)})")
