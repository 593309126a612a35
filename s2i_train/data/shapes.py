"""Generate Spoken-Shapes (docs/design.md): images, spoken captions, split files, captions.jsonl and a dataset card.

Every image and caption is decided by a generator seeded from (seed, class id, image index, stream), so
the dataset does not depend on how work is spread over processes. Each class is built in its own fresh
process because espeak-ng's output depends on what the process spoke before (see `speech`). Same seed and
options give byte-identical files.
"""

from __future__ import annotations

import dataclasses
import io
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from s2i_runtime.errors import InputError
from s2i_runtime.fsutil import atomic_write_bytes, atomic_write_text

from . import captions, recorded_voices, render, speech, vocabulary

GENERATOR_VERSION = 2
# Default: 60 images per class (what calibration trained on) x 2 spoken captions, drawn at 256 px so the
# 64/128/256 branches can all train from it.
DEFAULT_IMAGES_PER_CLASS = 60
DEFAULT_CAPTIONS_PER_IMAGE = 2
DEFAULT_IMAGE_SIZE = 256
TINY = {"images_per_class": 2, "captions_per_image": 1, "image_size": 64}

# Everything this generator writes at the top of a dataset folder; `overwrite` removes only these.
OWNED_PATHS = ("images", "audio", "train", "test", "captions.jsonl", "dataset.json", "vocabulary.json", "README.md")


@dataclasses.dataclass(frozen=True)
class ShapesConfig:
    images_per_class: int = DEFAULT_IMAGES_PER_CLASS
    captions_per_image: int = DEFAULT_CAPTIONS_PER_IMAGE
    image_size: int = DEFAULT_IMAGE_SIZE
    seed: int = 0
    # Share of training captions spoken by the voices built from recordings (the rest by espeak-ng): half, so
    # neither kind of synthesis is what the encoder mostly learns.
    recorded_fraction: float = 0.5
    # Training captions per image that name colour and size but not the shape (captions.SHAPE_OPEN_TEMPLATES),
    # beside the captions_per_image full ones; the test split has none.
    shape_open_per_image: int = 0

    def __post_init__(self) -> None:
        if self.images_per_class < 1:
            raise InputError("--images-per-class must be at least 1")
        if not 1 <= self.captions_per_image <= 100:
            raise InputError("--captions-per-image must be between 1 and 100")
        if not 32 <= self.image_size <= 1024:
            raise InputError("--image-size must be between 32 and 1024 pixels")
        if self.seed < 0:
            raise InputError("--seed must not be negative")
        if not 0.0 <= self.recorded_fraction <= 1.0:
            raise InputError("--recorded-fraction must be between 0 and 1")
        if not 0 <= self.shape_open_per_image <= 100:
            raise InputError("--shape-open-per-image must be between 0 and 100")


@dataclasses.dataclass(frozen=True)
class GenerationSummary:
    root: Path
    images: dict[str, int]
    captions: dict[str, int]
    seconds: float
    bytes_on_disk: int

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "images": self.images,
            "captions": self.captions,
            "seconds": round(self.seconds, 2),
            "bytes_on_disk": self.bytes_on_disk,
        }


# Random streams of the shape-open captions start here, past any full caption's (1 + 2 * captions_per_image).
_SHAPE_OPEN_STREAM = 1000


def image_key(class_name: str, index: int) -> str:
    return f"{class_name}/{index:04d}"


def item_rng(seed: int, class_id: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, class_id, index, stream])


def png_bytes(image) -> bytes:
    # Pillow writes no timestamp or other metadata unless asked: the bytes depend only on the pixels.
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def generate(
    out: str | os.PathLike,
    config: ShapesConfig = ShapesConfig(),
    *,
    workers: int | None = None,
    overwrite: bool = False,
    on_class_done: Callable[[str], None] | None = None,
) -> GenerationSummary:
    """Write the dataset under `out`. Refuses a folder holding other files unless `overwrite` (which removes
    only what this generator writes)."""
    root = Path(out)
    try:
        recorded_voices.check_available((*recorded_voices.TRAIN_VOICES, *recorded_voices.TEST_VOICES))
    except speech.SpeechError as exc:
        raise InputError(str(exc)) from None
    _prepare_folder(root, overwrite)
    started = time.perf_counter()
    workers = max(1, workers or min(os.cpu_count() or 1, 8))
    jobs = [(str(root), c.name, dataclasses.asdict(config)) for c in vocabulary.CLASSES]
    by_class: dict[str, list[dict]] = {}
    # A fresh process per class (maxtasksperchild=1), started by spawn so it never inherits a parent's
    # espeak-ng state (or torch's threads).
    context = multiprocessing.get_context("spawn")
    with context.Pool(processes=min(workers, len(jobs)), maxtasksperchild=1) as pool:
        for class_name, records in pool.imap_unordered(build_class, jobs):
            by_class[class_name] = records
            if on_class_done is not None:
                on_class_done(class_name)
    records = [r for c in vocabulary.CLASSES for r in by_class[c.name]]
    _write_index(root, config, records)
    seconds = time.perf_counter() - started
    images = {
        split: sum(1 for r in records if r["split"] == split and r["caption_index"] == 0) for split in ("train", "test")
    }
    caption_counts = {split: sum(1 for r in records if r["split"] == split) for split in ("train", "test")}
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return GenerationSummary(root, images, caption_counts, seconds, size)


def _prepare_folder(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise InputError(f"{root}: exists and is not a folder")
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise InputError(f"{root}: folder is not empty (pass --overwrite to replace a generated dataset)")
        foreign = sorted(p.name for p in root.iterdir() if p.name not in OWNED_PATHS and p.name != "cache")
        if foreign:
            raise InputError(f"{root}: holds files this generator did not write ({foreign[0]}); not overwriting")
        for name in (*OWNED_PATHS, "cache"):
            path = root / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    root.mkdir(parents=True, exist_ok=True)


def build_class(job: tuple[str, str, dict]) -> tuple[str, list[dict]]:
    """Render and speak every item of one class (runs in a fresh worker process).

    Training captions are spoken by espeak-ng or, with probability `recorded_fraction`, by a training voice
    built from recordings. Test captions are spoken once by a held-out espeak-ng voice and once more, the same
    text, by a held-out recorded voice (caption indices after the espeak-ng ones), so the two kinds of voice are
    compared on the same sentences.
    """
    root_text, class_name, config_dict = job
    root = Path(root_text)
    config = ShapesConfig(**config_dict)
    shape_class = vocabulary.class_by_name(class_name)
    split = vocabulary.split_of(class_name)
    test = split == "test"
    espeak_voices = speech.TEST_VOICES if test else speech.TRAIN_VOICES
    recorded = recorded_voices.TEST_VOICES if test else recorded_voices.TRAIN_VOICES
    synthesizer = speech.Synthesizer()
    records: list[dict] = []
    espeak_waves: dict[int, np.ndarray] = {}
    recorded_rows: list[tuple[int, recorded_voices.RecordedUtterance]] = []

    def add(base: dict, caption_index: int, rng: np.random.Generator, voice_rng: np.random.Generator) -> None:
        record = {**base, "caption_index": caption_index, "audio": f"audio/{base['key']}_{caption_index}.wav"}
        use_recorded = caption_index >= config.captions_per_image if test else (
            float(rng.random()) < config.recorded_fraction)
        if use_recorded:
            voice = recorded[int(voice_rng.integers(len(recorded)))]
            utterance = recorded_voices.sample_utterance(base["text"], voice, voice_rng)
            record.update(engine=voice.engine, voice=voice.label, **utterance.prosody())
            recorded_rows.append((len(records), utterance))
        else:
            voice = espeak_voices[int(voice_rng.integers(len(espeak_voices)))]
            rate, pitch = speech.sample_prosody(voice_rng)
            raw = synthesizer.speak(speech.Utterance(base["text"], voice, rate, pitch),
                                    seed=int(voice_rng.integers(2**31)))
            espeak_waves[len(records)] = speech.resample_to_16k(raw, synthesizer.sample_rate)
            record.update(engine="espeak-ng", voice=voice.name, rate=rate, pitch=pitch)
        records.append(record)

    drawn = []  # (key, image path, spec) of every image, for the shape-open captions
    for index in range(config.images_per_class):
        key = image_key(class_name, index)
        spec = render.sample_image_spec(
            item_rng(config.seed, shape_class.class_id, index, 0), shape_class.colour, shape_class.shape
        )
        image_path = f"images/{key}.png"
        drawn.append((key, image_path, spec))
        atomic_write_bytes(root / image_path, png_bytes(render.render(spec, config.image_size)))
        for k in range(config.captions_per_image):
            rng = item_rng(config.seed, shape_class.class_id, index, 1 + k)
            text, template = captions.make_caption(rng, spec.colour, spec.shape, spec.size, spec.background)
            base = _caption_record(key, split, shape_class, image_path, text, template, spec)
            add(base, k, rng, rng)
            if test:
                add(base, config.captions_per_image + k,
                    rng, item_rng(config.seed, shape_class.class_id, index, 1 + config.captions_per_image + k))
    # After every full caption, and from streams of their own: espeak-ng's output depends on what the process
    # spoke before, so the full captions come out the same with or without these.
    for index, (key, image_path, spec) in enumerate(drawn if not test else ()):
        for k in range(config.shape_open_per_image):
            rng = item_rng(config.seed, shape_class.class_id, index, _SHAPE_OPEN_STREAM + k)
            text, template = captions.make_caption(rng, spec.colour, spec.shape, spec.size, spec.background,
                                                   say_shape=False)
            base = _caption_record(key, split, shape_class, image_path, text, template, spec)
            add({**base, "shape_said": False}, config.captions_per_image + k, rng, rng)
    waves = dict(espeak_waves)
    if recorded_rows:
        spoken = recorded_voices.synthesize([u for _, u in recorded_rows])
        waves.update({row: audio for (row, _), audio in zip(recorded_rows, spoken, strict=True)})
    for row, record in enumerate(records):
        audio = waves[row]
        atomic_write_bytes(root / record["audio"], speech.wav_bytes(audio))
        record["duration_s"] = round(audio.size / speech.OUTPUT_RATE, 4)
    return class_name, records


def _caption_record(key: str, split: str, shape_class, image_path: str, text: str, template: int, spec) -> dict:
    return {
        "key": key,
        "split": split,
        "class": shape_class.name,
        "class_id": shape_class.class_id,
        "image": image_path,
        "text": text,
        "template": template,
        "colour": spec.colour,
        "shape": spec.shape,
        "size": spec.size,
        "background": spec.background,
        "attributes": vocabulary.attribute_labels(spec.colour, spec.shape, spec.size, spec.background),
        "geometry": {
            "hue": round(spec.hue, 3),
            "saturation": round(spec.saturation, 4),
            "value": round(spec.value, 4),
            "scale": round(spec.scale, 4),
            "rotation": round(spec.rotation, 3),
            "cx": round(spec.cx, 4),
            "cy": round(spec.cy, 4),
            "background_level": spec.background_level,
        },
    }


def _write_index(root: Path, config: ShapesConfig, records: list[dict]) -> None:
    for split in ("train", "test"):
        keys = [r["key"] for r in records if r["split"] == split and r["caption_index"] == 0]
        atomic_write_text(root / split / "filenames.json", json.dumps(keys, indent=0) + "\n")
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    atomic_write_text(root / "captions.jsonl", lines)
    vocab = vocabulary.vocabulary_dict()
    atomic_write_text(root / "vocabulary.json", json.dumps(vocab, indent=2, sort_keys=True) + "\n")
    meta = dataset_metadata(config, records)
    atomic_write_text(root / "dataset.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    atomic_write_text(root / "README.md", dataset_card(meta))


def dataset_metadata(config: ShapesConfig, records: list[dict]) -> dict:
    def count(split: str, first_only: bool) -> int:
        return sum(1 for r in records if r["split"] == split and (r["caption_index"] == 0 or not first_only))

    durations = [r["duration_s"] for r in records]
    return {
        "name": "spoken-shapes",
        "generator_version": GENERATOR_VERSION,
        "config": dataclasses.asdict(config),
        "counts": {
            "classes": {"train": len(vocabulary.TRAIN_CLASSES), "test": len(vocabulary.TEST_CLASSES)},
            "images": {"train": count("train", True), "test": count("test", True)},
            "captions": {"train": count("train", False), "test": count("test", False)},
        },
        "audio": {
            "sample_rate": speech.OUTPUT_RATE,
            "format": "WAV, 16-bit PCM, mono",
            "duration_s": {
                "min": min(durations),
                "mean": round(float(np.mean(durations)), 3),
                "max": max(durations),
            },
            "rate_wpm": list(speech.RATE_RANGE),
            "pitch": list(speech.PITCH_RANGE),
            "duration_stretch": list(recorded_voices.STRETCH_RANGE),
            "f0_mean_hz": list(recorded_voices.F0_RANGE),
        },
        "voices": {
            "train": [v.name for v in speech.TRAIN_VOICES] + [v.label for v in recorded_voices.TRAIN_VOICES],
            "test": [v.name for v in speech.TEST_VOICES] + [v.label for v in recorded_voices.TEST_VOICES],
        },
        "engines": {split: {engine: sum(1 for r in records if r["split"] == split and r["engine"] == engine)
                            for engine in ("espeak-ng", "flite", "festival")} for split in ("train", "test")},
        "templates": list(captions.TEMPLATES),
        **({"shape_open_templates": list(captions.SHAPE_OPEN_TEMPLATES)} if config.shape_open_per_image else {}),
        "synonyms": {
            "size": captions.SIZE_WORDS,
            "colour": captions.COLOUR_WORDS,
            "shape": captions.SHAPE_WORDS,
            "background": captions.BACKGROUND_WORDS,
        },
        "vocabulary": vocabulary.vocabulary_dict(),
    }


def dataset_card(meta: dict) -> str:
    config, counts, audio = meta["config"], meta["counts"], meta["audio"]
    vocab = meta["vocabulary"]
    voice_list = lambda names: ", ".join(f"`{n}`" for n in names)  # noqa: E731
    lines = [
        "# Spoken-Shapes",
        "",
        "Synthetic speech-to-image data generated by `s2i-train data shapes` "
        f"(generator version {meta['generator_version']}). Images are drawn with pillow; captions are spoken by",
        "espeak-ng (through espeakng-loader) or by flite and festival voices built from recordings of real",
        "speakers, and resampled to 16 kHz. The text in `captions.jsonl` is for humans and evaluation only: no",
        "model reads it.",
        "",
        "## This copy",
        "",
        f"- seed {config['seed']}, {config['images_per_class']} images per class, "
        f"{config['captions_per_image']} spoken caption(s) per image, images {config['image_size']}x"
        f"{config['image_size']} px (PNG)",
        *([f"- {config['shape_open_per_image']} more training caption(s) per image that leave the shape unsaid "
           '(`"shape_said": false` in `captions.jsonl`)'] if config.get("shape_open_per_image") else []),
        f"- train: {counts['classes']['train']} classes, {counts['images']['train']} images, "
        f"{counts['captions']['train']} captions",
        f"- test: {counts['classes']['test']} classes, {counts['images']['test']} images, "
        f"{counts['captions']['test']} captions",
        f"- audio: {audio['format']}, {audio['sample_rate']} Hz, duration {audio['duration_s']['min']:.2f}-"
        f"{audio['duration_s']['max']:.2f} s (mean {audio['duration_s']['mean']:.2f} s); espeak-ng speaking rate "
        f"{audio['rate_wpm'][0]}-{audio['rate_wpm'][1]} words/min, pitch {audio['pitch'][0]}-{audio['pitch'][1]};"
        f" recorded voices' duration stretch {audio['duration_stretch'][0]}-{audio['duration_stretch'][1]},"
        f" mean F0 {audio['f0_mean_hz'][0]:g}-{audio['f0_mean_hz'][1]:g} Hz where the voice takes one",
        "",
        f"The default size ({DEFAULT_IMAGES_PER_CLASS} images per class x {DEFAULT_CAPTIONS_PER_IMAGE} captions, "
        f"{DEFAULT_IMAGE_SIZE} px) is what the default model is trained on; calibration trained a 64x64 generator",
        "on 60 images per class. The tiny size (`--images-per-class 2 --captions-per-image 1 --image-size 64`) is",
        "for tests.",
        "",
        "## Vocabulary",
        "",
        f"- colours: {', '.join(vocab['colours'])} (hue buckets of +-{vocab['hue_half_width']:g} degrees around "
        + ", ".join(f"{c} {h:g}" for c, h in vocab["hues"].items())
        + ")",
        f"- shapes: {', '.join(vocab['shapes'])}",
        f"- sizes: {', '.join(vocab['sizes'])} (bounding box "
        + ", ".join(f"{k} {lo:.0%}-{hi:.0%}" for k, (lo, hi) in render.SIZE_RANGES.items())
        + " of the image side)",
        f"- backgrounds: neutral grey, {' or '.join(vocab['backgrounds'])}, with a mild low-frequency texture",
        f"- jitter: position anywhere inside the image, rotation +-{render.ROTATION_RANGE:g} degrees, hue "
        f"+-{render.HUE_JITTER:g} degrees, saturation and brightness",
        "",
        "## Split (class-disjoint)",
        "",
        f"A class is a (colour, shape) pair: 64 classes. {len(vocab['test_classes'])} are held out for test, "
        f"each colour and each shape exactly twice ({vocab['test_rule']}):",
        "",
        ", ".join(f"`{c}`" for c in vocab["test_classes"]),
        "",
        "Test captions are spoken only by held-out voices: each once by an espeak-ng voice and once more, the",
        "same text, by a voice built from recordings (caption indices after the espeak-ng ones).",
        "",
        "## Voices",
        "",
        f"- train ({len(meta['voices']['train'])}; {config['recorded_fraction']:.0%} of captions by the recorded"
        f" ones): {voice_list(meta['voices']['train'])}",
        f"- test only ({len(meta['voices']['test'])}): {voice_list(meta['voices']['test'])}",
        "",
        "## Caption templates",
        "",
        *[f"{i}. `{t}`" for i, t in enumerate(meta["templates"])],
        "",
        "Synonyms: "
        + "; ".join(
            f"{word} = {'/'.join(options)}"
            for group in meta["synonyms"].values()
            for word, options in group.items()
            if len(options) > 1
        ),
        "",
        "## Layout",
        "",
        "```",
        "images/<colour>_<shape>/<id>.png        audio/<colour>_<shape>/<id>_<k>.wav",
        'train/filenames.json  test/filenames.json   JSON lists of "<class>/<id>" keys',
        "captions.jsonl         one line per caption: text, voice, attributes, geometry",
        "dataset.json           this card as data;  vocabulary.json   the vocabulary (copied into s2i.json)",
        "```",
        "",
    ]
    return "\n".join(lines)
