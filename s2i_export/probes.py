"""The inputs export's checks run on (synthetic and real features, noise) and ONNX Runtime CPU sessions."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

import s2i_runtime
from s2i_runtime.batching import pad_waveforms
from s2i_runtime.bundle import WAVEFORM_INPUT, Bundle
from s2i_runtime.errors import InputError
from s2i_runtime.frontend import FrontendSpec, logmel_batch
from s2i_runtime.noise import draw_noise

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
EXAMPLES_DIR = Path(s2i_runtime.__file__).resolve().parent / "examples"  # shipped real utterances


@dataclasses.dataclass(frozen=True)
class FeatureBatch:
    """One encoder input: mel (B, n_mels, T) float32 padded with the spec's pad value, lengths (B,) int64."""

    label: str
    mel: np.ndarray
    lengths: np.ndarray

    @property
    def batch(self) -> int:
        return int(self.mel.shape[0])

    @property
    def frames(self) -> int:
        return int(self.mel.shape[2])


def batch_lengths(batch: int, frames: int, spec: FrontendSpec) -> np.ndarray:
    """Lengths from `frames` down to about half of it: one full row, the rest padded (masking is exercised)."""
    low = max(spec.min_frames, frames // 2)
    return np.linspace(frames, low, num=batch).round().astype(np.int64)


def synthetic_features(batch: int, frames: int, spec: FrontendSpec, seed: int = 0) -> FeatureBatch:
    """Random features in the front end's range (-80..0 dB), padding set to the pad value."""
    if frames < spec.min_frames:
        raise InputError(f"{frames} frames is below the front end's minimum of {spec.min_frames}")
    rng = np.random.default_rng([seed, batch, frames])
    mel = np.clip(rng.normal(-40.0, 15.0, size=(batch, spec.n_mels, frames)), -spec.top_db, 0.0).astype(np.float32)
    lengths = batch_lengths(batch, frames, spec)
    steps = np.arange(frames)[None, None, :]
    mel = np.where(steps < lengths[:, None, None], mel, np.float32(spec.pad_value)).astype(np.float32)
    return FeatureBatch(f"synthetic B={batch} T={frames}", mel, lengths)


@dataclasses.dataclass(frozen=True)
class WaveBatch:
    """One input of an encoder that holds the front end: clips zero-padded into waveform (B, N) float32,
    with num_samples (B,) int64."""

    label: str
    waveform: np.ndarray
    num_samples: np.ndarray

    @property
    def batch(self) -> int:
        return int(self.waveform.shape[0])

    def clips(self) -> list[np.ndarray]:
        return [row[: int(n)] for row, n in zip(self.waveform, self.num_samples, strict=True)]

    def features(self, spec: FrontendSpec) -> FeatureBatch:
        """The same clips through the numpy front end: what the graph's own front end must reproduce."""
        mel, lengths = logmel_batch(self.clips(), spec)
        return FeatureBatch(self.label, mel.astype(np.float32), lengths.astype(np.int64))


def wave_batch(label: str, clips: Sequence[np.ndarray]) -> WaveBatch:
    return WaveBatch(label, *pad_waveforms(clips, 0))


def synthetic_waveforms(batch: int, frames: int, spec: FrontendSpec, seed: int = 0) -> WaveBatch:
    """Clips of `frames` frames down to about half of it (as `batch_lengths`), each a few gliding tones in
    noise under a syllable-like envelope, at gains from -60 to 0 dBFS (the dB reference must follow each)."""
    if frames < 1:
        raise InputError(f"{frames} frames: at least one is needed")
    rng = np.random.default_rng([seed, batch, frames, 1])
    clips = []
    for row, length in enumerate(batch_lengths(batch, frames, spec)):
        samples = max(1, (int(length) - 1) * spec.hop_length + int(rng.integers(spec.hop_length)))
        t = np.arange(samples) / spec.sample_rate
        tones = sum(np.sin(2 * np.pi * (f0 + 300.0 * t) * t) for f0 in rng.uniform(100.0, 3000.0, size=3))
        envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, np.pi))
        gain = 10.0 ** (-3.0 * row / max(1, batch - 1))
        clip = gain * (envelope * tones / 3.0 + 0.05 * rng.standard_normal(samples))
        clips.append(clip.astype(np.float32))
    return wave_batch(f"synthetic waveforms B={batch} T={frames}", clips)


def find_audio(paths: Iterable[str | Path], limit: int) -> list[Path]:
    """Audio files among `paths` (files, or directories searched recursively): at most `limit`, spread
    evenly over the sorted list so a dataset contributes several classes, not the first folder's files."""
    found: list[Path] = []
    for path in (Path(p) for p in paths):
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or directory")
    if len(found) <= limit:
        return found
    picks = np.linspace(0, len(found) - 1, num=limit).round().astype(int)
    return [found[i] for i in picks]


def real_features(paths: Sequence[Path], spec: FrontendSpec) -> FeatureBatch | None:
    """Features of real utterances as one batch (None when there are none). Longer than max_frames is cut."""
    if not paths:
        return None
    from s2i_runtime.audio import load_audio

    waves = [load_audio(p, max_seconds=None)[: (spec.max_frames - 1) * spec.hop_length] for p in paths]
    mel, lengths = logmel_batch(waves, spec)
    return FeatureBatch(f"real utterances x{len(paths)}", mel.astype(np.float32), lengths.astype(np.int64))


def real_waveforms(paths: Sequence[Path], spec: FrontendSpec) -> WaveBatch | None:
    """Real utterances as one padded waveform batch (None when there are none), cut like `real_features`."""
    if not paths:
        return None
    from s2i_runtime.audio import load_audio

    clips = [load_audio(p, max_seconds=None)[: (spec.max_frames - 1) * spec.hop_length] for p in paths]
    return wave_batch(f"real utterances x{len(paths)} (waveforms)", clips)


def synthetic_inputs(bundle: Bundle, batch: int, frames: int, seed: int = 0) -> FeatureBatch | WaveBatch:
    """Synthetic input of the kind the bundle's encoder reads (features, or waveforms when the front end is in
    the graph), `frames` clamped to the front end's range."""
    spec = bundle.frontend
    make = synthetic_waveforms if bundle.encoder_input == WAVEFORM_INPUT else synthetic_features
    return make(batch, min(max(frames, spec.min_frames), spec.max_frames), spec, seed=seed)


def real_inputs(bundle: Bundle, paths: Sequence[Path]) -> FeatureBatch | WaveBatch | None:
    """Real utterances as one input of the kind the bundle's encoder reads (None when there are none)."""
    real_of = real_waveforms if bundle.encoder_input == WAVEFORM_INPUT else real_features
    return real_of(list(paths), bundle.frontend)


def encoder_feed(bundle: Bundle, batch: FeatureBatch | WaveBatch) -> dict[str, np.ndarray]:
    """The encoder graph's feed for one input."""
    signal_name, lengths_name = bundle.encoder_inputs
    if isinstance(batch, WaveBatch):
        return {signal_name: batch.waveform, lengths_name: batch.num_samples}
    return {signal_name: batch.mel, lengths_name: batch.lengths}


def probe_batches(bundle: Bundle, real_audio: Sequence[Path]) -> list[FeatureBatch | WaveBatch]:
    """What a converted graph is compared with fp32 on (`fp16`, `int8`): synthetic batches of different sizes and
    lengths, and the real utterances when there are any."""
    batches = [synthetic_inputs(bundle, b, t) for b, t in ((1, 64), (3, 500), (2, 3000))]
    real = real_inputs(bundle, real_audio)
    return batches + ([real] if real is not None else [])


def default_real_sources() -> list[Path]:
    """Utterances shipped with the runtime, when there are any."""
    return [EXAMPLES_DIR] if EXAMPLES_DIR.is_dir() else []


def noise_for(batch: int, z_dim: int, ca_dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """z (B, z_dim), eps (B, ca_dim) exactly as the runtime draws them."""
    draws = [draw_noise(seed, i, 0, z_dim, ca_dim) for i in range(batch)]
    return np.stack([d[0] for d in draws]), np.stack([d[1] for d in draws])


def ort_session(path: str | Path, threads: int = 0):
    """A CPU ONNX Runtime session (the reference every other backend is compared against)."""
    return ort_session_from_bytes(str(path), threads)


def ort_session_from_bytes(model: str | bytes, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def real_audio_sources(audio: Sequence[Path] = (), data: Path | None = None, limit: int = 8) -> list[Path]:
    """Real utterances for the checks: given files/directories, a dataset's audio/ folder, shipped examples."""
    sources: list[Path] = [Path(a) for a in audio]
    if data is not None:
        audio_dir = Path(data) / "audio"
        if not audio_dir.is_dir():
            raise InputError(f"{data}: not a dataset directory (no audio/ folder)")
        sources.append(audio_dir)
    if not sources:
        sources = default_real_sources()
    return find_audio(sources, limit)
