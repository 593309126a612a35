"""A tiny Spoken-Shapes folder for training tests, written in well under a second: real rendered images,
but noise bursts instead of espeak speech (the loops only need audio of some length, not words). The caption
text is what the real dataset would say, for what reads it (whether the background is named)."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import numpy as np

from s2i_train.data import captions, render, vocabulary


def _wav(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes((np.clip(samples, -1, 1) * 32767).astype(np.int16).tobytes())
    return buffer.getvalue()


def make_tiny_shapes(root: Path, images_per_class: int = 2, size: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    text_rng = np.random.default_rng(seed + 1)  # its own stream: the images and audio stay as they were
    records = []
    for shape_class in vocabulary.CLASSES:
        split = vocabulary.split_of(shape_class.name)
        for index in range(images_per_class):
            key = f"{shape_class.name}/{index:04d}"
            spec = render.sample_image_spec(rng, shape_class.colour, shape_class.shape)
            image_path = root / "images" / f"{key}.png"
            image_path.parent.mkdir(parents=True, exist_ok=True)
            render.render(spec, size).save(image_path)
            audio_path = root / "audio" / f"{key}_0.wav"
            audio_path.parent.mkdir(parents=True, exist_ok=True)
            seconds = rng.uniform(0.3, 0.9)
            audio_path.write_bytes(_wav(rng.normal(0, 0.1, int(16000 * seconds))))
            record = {
                "key": key, "caption_index": 0, "split": split, "class": shape_class.name,
                "class_id": shape_class.class_id, "image": f"images/{key}.png", "audio": f"audio/{key}_0.wav",
                "text": captions.make_caption(text_rng, spec.colour, spec.shape, spec.size, spec.background)[0],
                "voice": "none", "engine": "espeak-ng",
                "attributes": vocabulary.attribute_labels(spec.colour, spec.shape, spec.size, spec.background),
            }
            records.append(record)
            if split == "test":
                # As in the real layout: the same caption once more by a held-out recorded voice, next index.
                again = root / "audio" / f"{key}_1.wav"
                again.write_bytes(_wav(rng.normal(0, 0.1, int(16000 * seconds))))
                records.append({**record, "caption_index": 1, "audio": f"audio/{key}_1.wav", "engine": "flite",
                                "voice": "flite:none"})
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for split in ("train", "test"):
        (root / split).mkdir(exist_ok=True)
        keys = [r["key"] for r in records if r["split"] == split]
        (root / split / "filenames.json").write_text(json.dumps(keys))
    return root
