"""Spoken-Shapes held in memory for fast CPU training: every image of a split at the sizes needed
(uint8) and every caption's log-Mel features, read once from the dataset's layout (`captions.jsonl`,
`images/`, `audio/`; docs/design.md, "Spoken-Shapes") and cached in the run directory (safetensors, keyed
by the dataset's and front end's fingerprints).

The training loops index these banks with `StepSampler` indices; the models never see the text (only the
optional word-recognition term reads the transcripts, in training: `transcripts.py`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from s2i_runtime.audio import load_audio
from s2i_runtime.errors import InputError
from s2i_runtime.frontend import FrontendSpec, logmel
from s2i_runtime.fsutil import atomic_path

from ..data.captions import names_background

ATTRIBUTES = ("colour", "shape", "size", "background")
CACHE_DIR = "cache"


def read_records(root: str | Path) -> list[dict]:
    path = Path(root) / "captions.jsonl"
    if not path.is_file():
        raise InputError(f"{root}: not a Spoken-Shapes dataset (no captions.jsonl); make one with "
                         "`s2i-train data shapes --out DIR`")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not JSON ({exc})") from None
    return records


def says_shape(record: dict) -> bool:
    """Whether a caption names its shape: all do but the training captions made to leave it open."""
    return bool(record.get("shape_said", True))


def _fingerprint(root: Path, extra: str) -> str:
    digest = hashlib.sha256((root / "captions.jsonl").read_bytes())
    digest.update(extra.encode())
    return digest.hexdigest()[:16]


def _cached(run_dir: Path | None, name: str, build) -> dict[str, torch.Tensor]:
    if run_dir is None:
        return build()
    path = run_dir / CACHE_DIR / f"{name}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))
        except (OSError, ValueError):
            path.unlink(missing_ok=True)
    tensors = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    return tensors


@dataclass
class ImageBank:
    """One row per image of a split: pixels per size (uint8, N x 3 x s x s) and integer labels."""

    keys: list[str]
    pixels: dict[int, torch.Tensor]
    attributes: torch.Tensor  # (N, 4) long: colour, shape, size, background
    class_ids: torch.Tensor  # (N,) long, the (colour, shape) class 0..63

    def __len__(self) -> int:
        return len(self.keys)

    def images(self, indices, size: int) -> torch.Tensor:
        """Float images in [-1, 1], (B, 3, size, size)."""
        return self.pixels[size][torch.as_tensor(indices)].float().div_(127.5).sub_(1.0)

    def wrong_indices(self, indices, generator: torch.Generator | None = None) -> torch.Tensor:
        """For each index, a random image of a different class (StackGAN's mismatched real images)."""
        indices = torch.as_tensor(indices)
        n = len(self.keys)
        picks = torch.randint(0, n, (len(indices),), generator=generator)
        for _ in range(32):  # redraw the few that hit the same class; 63 of 64 classes differ
            same = self.class_ids[picks] == self.class_ids[indices]
            if not same.any():
                break
            picks[same] = torch.randint(0, n, (int(same.sum()),), generator=generator)
        return picks

    def partner_indices(self, indices, columns: tuple[int, ...], generator: torch.Generator | None = None
                        ) -> torch.Tensor:
        """For each index, another image that agrees with it on the attribute `columns` (itself when it is the
        only one): the relation supervisor's "similar" images."""
        indices = torch.as_tensor(indices)
        keys = self.attributes[:, list(columns)]
        picks = indices.clone()
        for row, image in enumerate(indices.tolist()):
            candidates = torch.nonzero((keys == keys[image]).all(dim=1)).flatten()
            candidates = candidates[candidates != image]
            if len(candidates):
                picks[row] = candidates[torch.randint(len(candidates), (1,), generator=generator)]
        return picks


@dataclass
class CaptionBank:
    """One row per spoken caption of a split: features stored ragged (frames concatenated), lengths, and
    what the caption describes."""

    frames: torch.Tensor  # (sum of lengths, n_mels) float32: every caption's features, one after another
    offsets: torch.Tensor  # (N,) long, first row of each caption in `frames`
    lengths: torch.Tensor  # (N,) long, frames
    image_index: torch.Tensor  # (N,) long, row in the split's ImageBank
    attributes: torch.Tensor  # (N, 4) long
    class_ids: torch.Tensor  # (N,) long
    records: list[dict]  # the captions.jsonl rows (text, voice, ...), for evaluation and humans
    pad_value: float
    min_frames: int
    spoken: torch.Tensor  # (N, 4) bool: which ATTRIBUTES the caption names (the background only sometimes)

    def __len__(self) -> int:
        return len(self.records)

    def fully_said_rows(self) -> torch.Tensor:
        """Rows of the captions that name colour, shape and size (all but those made to leave the shape open)."""
        columns = [ATTRIBUTES.index(name) for name in ("colour", "shape", "size")]
        return torch.nonzero(self.spoken[:, columns].all(dim=1)).reshape(-1)

    def fully_said(self) -> CaptionBank:
        return self.subset(self.fully_said_rows())

    def named_attributes(self, rows: torch.Tensor) -> torch.Tensor:
        """Attributes of the captions at `rows`, -100 (ignored by the attribute losses) where a caption leaves
        one unsaid."""
        labels = self.attributes[rows]
        return torch.where(self.spoken[rows], labels, torch.full_like(labels, -100))

    def subset(self, rows: torch.Tensor) -> CaptionBank:
        """The captions at `rows` (sharing this bank's frames)."""
        return CaptionBank(self.frames, self.offsets[rows], self.lengths[rows], self.image_index[rows],
                           self.attributes[rows], self.class_ids[rows], [self.records[i] for i in rows.tolist()],
                           self.pad_value, self.min_frames, self.spoken[rows])

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """(mel (B, n_mels, T) float32 padded with the pad value to the longest in the batch and at least
        min_frames; lengths (B,) long)."""
        indices = torch.as_tensor(indices).reshape(-1)
        lengths = self.lengths[indices]
        frames = max(int(lengths.max()), self.min_frames)
        mel = torch.full((len(indices), self.frames.shape[1], frames), self.pad_value)
        for row, (index, length) in enumerate(zip(indices.tolist(), lengths.tolist(), strict=True)):
            start = int(self.offsets[index])
            mel[row, :, :length] = self.frames[start : start + length].T
        return mel, lengths.clone()


def load_image_bank(root: str | Path, split: str, sizes: tuple[int, ...], run_dir: Path | None = None) -> ImageBank:
    root = Path(root)
    records = [r for r in read_records(root) if r["split"] == split and r["caption_index"] == 0]
    if not records:
        raise InputError(f"{root}: no {split} images")
    keys = [r["key"] for r in records]
    attributes = torch.tensor([[r["attributes"][a] for a in ATTRIBUTES] for r in records], dtype=torch.long)
    class_ids = torch.tensor([r["class_id"] for r in records], dtype=torch.long)
    pixels = {}
    for size in sizes:

        def build(size=size):
            out = np.empty((len(records), 3, size, size), dtype=np.uint8)
            for i, record in enumerate(records):
                with Image.open(root / record["image"]) as image:
                    image = image.convert("RGB")
                    if image.size != (size, size):
                        image = image.resize((size, size), Image.Resampling.LANCZOS)
                    out[i] = np.asarray(image).transpose(2, 0, 1)
            return {"pixels": torch.from_numpy(out)}

        name = f"images-{split}-{size}-{_fingerprint(root, str(size))}"
        pixels[size] = _cached(run_dir, name, build)["pixels"]
    return ImageBank(keys, pixels, attributes, class_ids)


def load_caption_bank(
    root: str | Path, split: str, images: ImageBank, spec: FrontendSpec = FrontendSpec(),
    run_dir: Path | None = None,
) -> CaptionBank:
    root = Path(root)
    records = [r for r in read_records(root) if r["split"] == split]
    if not records:
        raise InputError(f"{root}: no {split} captions")
    row_of = {key: i for i, key in enumerate(images.keys)}

    def build():
        feats = []
        for record in records:
            audio = load_audio(root / record["audio"], max_seconds=spec.max_frames * spec.hop_length
                               / spec.sample_rate)
            feats.append(logmel(audio, spec))
        lengths = torch.tensor([f.shape[1] for f in feats], dtype=torch.long)
        frames = torch.from_numpy(np.concatenate([f.T for f in feats], axis=0).astype(np.float32))
        return {"frames": frames, "lengths": lengths}

    name = f"mels-{split}-{_fingerprint(root, spec.to_json())}"
    cached = _cached(run_dir, name, build)
    try:
        image_index = torch.tensor([row_of[r["key"]] for r in records], dtype=torch.long)
    except KeyError as exc:
        raise InputError(f"{root}: caption of unknown image {exc}") from None
    attributes = torch.tensor([[r["attributes"][a] for a in ATTRIBUTES] for r in records], dtype=torch.long)
    class_ids = torch.tensor([r["class_id"] for r in records], dtype=torch.long)
    lengths = cached["lengths"]
    offsets = torch.cumsum(lengths, 0) - lengths
    spoken = torch.ones(len(records), len(ATTRIBUTES), dtype=torch.bool)
    spoken[:, ATTRIBUTES.index("background")] = torch.tensor([names_background(r["text"]) for r in records])
    spoken[:, ATTRIBUTES.index("shape")] = torch.tensor([says_shape(r) for r in records])
    return CaptionBank(cached["frames"], offsets, lengths, image_index, attributes, class_ids, records,
                       spec.pad_value, spec.min_frames, spoken)


@dataclass
class WaveBank:
    """Every caption's waveform of a split, in the caption bank's order (int16, one after another), so a
    training step can augment the sound itself rather than its features."""

    samples: torch.Tensor  # (sum of lengths,) int16
    offsets: torch.Tensor  # (N,) long
    lengths: torch.Tensor  # (N,) long, samples
    sample_rate: int

    def __len__(self) -> int:
        return len(self.lengths)

    def subset(self, rows: torch.Tensor) -> WaveBank:
        """The waveforms at `rows` (sharing this bank's samples)."""
        return WaveBank(self.samples, self.offsets[rows], self.lengths[rows], self.sample_rate)

    def wave(self, index: int) -> np.ndarray:
        start, length = int(self.offsets[index]), int(self.lengths[index])
        return self.samples[start : start + length].numpy().astype(np.float32) / 32768.0


def load_wave_bank(root: str | Path, split: str, spec: FrontendSpec = FrontendSpec(),
                   run_dir: Path | None = None) -> WaveBank:
    root = Path(root)
    records = [r for r in read_records(root) if r["split"] == split]
    if not records:
        raise InputError(f"{root}: no {split} captions")

    def build():
        waves = [load_audio(root / r["audio"], target_rate=spec.sample_rate,
                            max_seconds=spec.max_frames * spec.hop_length / spec.sample_rate) for r in records]
        pcm = [np.clip(np.rint(w * 32768.0), -32768, 32767).astype(np.int16) for w in waves]
        return {"samples": torch.from_numpy(np.concatenate(pcm)),
                "lengths": torch.tensor([len(w) for w in pcm], dtype=torch.long)}

    cached = _cached(run_dir, f"waves-{split}-{_fingerprint(root, str(spec.sample_rate))}", build)
    lengths = cached["lengths"]
    return WaveBank(cached["samples"], torch.cumsum(lengths, 0) - lengths, lengths, spec.sample_rate)


@torch.no_grad()
def caption_embeddings(encoder: torch.nn.Module, captions: CaptionBank, batch_size: int = 128) -> torch.Tensor:
    """The frozen encoder's embedding of every caption, (N, D), batched by similar length."""
    encoder.eval()
    order = torch.argsort(captions.lengths)
    out = torch.empty(len(captions), encoder.config.embedding_dim)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        mel, lengths = captions.batch(rows)
        out[rows] = encoder(mel, lengths)
    return out
