"""`Pipeline`: audio in, images out (the Python API of docs/design.md).

    pipe = Pipeline.load()                      # the default model, best backend here
    images = pipe.generate(["a.wav"], seed=0)   # [[PIL.Image]] per input

Stages: audio -> log-Mel (numpy, in the caller's thread) -> length buckets -> encoder -> generator ->
PIL. A bundle whose encoder holds the front end (`model.encoder_input` "waveform") skips the log-Mel stage:
its batches are the samples themselves (`encoder_feed.py`). Noise is drawn with numpy per (seed, input
position, image index), see `noise.py`, so batching never changes what is drawn; the models' float
arithmetic may still differ by batch shape, which moves a pixel by at most one level
(docs/runtime-limits.md). Safe to call from several threads; with `max_wait_ms` set, concurrent calls are
merged into shared batches by a dynamic batcher.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np
from PIL import Image

from .backends.base import Backend, open_backend
from .batching import DynamicBatcher, plan_batches
from .bundle import Bundle, load_bundle
from .encoder_feed import encoder_feed
from .errors import InputError, InternalError, PipelineClosed, S2IError
from .images import NonFiniteOutput, check_finite, to_pil
from .interpolate import interpolate
from .limits import MAX_BATCH_SIZE, MAX_NUM_IMAGES, MAX_STEPS, MAX_THREADS, check_int
from .noise import check_seed, noise_block
from .wav import seconds_text

# A runtime alias (typing.Union, not |) so it works on 3.10.
AudioInput = Union[str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, BinaryIO]  # noqa: UP007

STAGES = ("load_model", "load_audio", "front_end", "encoder", "generator", "encode_png")


class StageTimer:
    """Seconds spent per stage, summed; thread-safe."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    @contextlib.contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def as_dict(self) -> dict[str, float]:
        with self._lock:
            return {stage: round(self.seconds.get(stage, 0.0), 6) for stage in STAGES} | {
                k: round(v, 6) for k, v in self.seconds.items() if k not in STAGES
            }


class _Fanout:
    """Times one batch once and credits every caller's timer with it."""

    def __init__(self, timers: Sequence[StageTimer]) -> None:
        self.timers = list(timers)

    @contextlib.contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            for timer in self.timers:
                timer.add(stage, elapsed)


@dataclasses.dataclass
class _Work:
    """One input ready for the models: what the encoder reads of it and the noise of each image."""

    features: np.ndarray  # log-Mel (n_mels, frames), or the samples (N,) for an in-graph front end
    frames: int
    z: np.ndarray  # (K, z_dim)
    eps: np.ndarray  # (K, ca_dim)
    label: str
    timer: StageTimer | None = None


def input_label(source: Any, index: int) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"input #{index} (bytes)"
    if hasattr(source, "read"):
        return str(getattr(source, "name", f"input #{index} (stream)"))
    return f"input #{index} (array)"


def as_input_list(inputs: Sequence[AudioInput] | AudioInput) -> list[AudioInput]:
    """One path, bytes, stream or array is one input (bytes must not be iterated as many)."""
    if isinstance(inputs, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)) or hasattr(inputs, "read"):
        return [inputs]
    return list(inputs)


class Pipeline:
    def __init__(self, bundle: Bundle, backend: Backend, *, batch_size: int = 8,
                 max_wait_ms: float | None = None) -> None:
        batch_size = check_int("batch size", batch_size, 1, MAX_BATCH_SIZE)
        if backend.max_batch is not None:
            batch_size = min(batch_size, backend.max_batch)
        self.bundle = bundle
        self.backend = backend
        self.batch_size = batch_size
        self._feed = encoder_feed(bundle)
        self._batcher: DynamicBatcher | None = None
        self._closed = False
        if max_wait_ms is not None:
            self._batcher = DynamicBatcher(self._run_batch, max_batch=batch_size, max_wait_ms=max_wait_ms)

    @classmethod
    def load(cls, bundle: str | os.PathLike | Bundle | None = None, backend: str = "auto", device: str = "auto",
             *, batch_size: int = 8, max_wait_ms: float | None = None, threads: int = 0,
             precision: str = "auto") -> Pipeline:
        """Open a bundle (None = the default model shipped with the runtime) on a backend.

        `max_wait_ms` turns on the dynamic batcher: requests from concurrent `generate` calls are merged
        into batches of up to `batch_size` inputs, waiting at most that long for company.
        `threads` is ONNX Runtime's intra-op thread count (0 = all physical cores). `precision` "fp32" or
        "fp16" binds the backend (TensorRT engines included); "auto" = TensorRT's best engine, ONNX fp32;
        "int8" = the fp32 encoder and the INT8 generator (`s2i-export int8`) on ONNX Runtime's CPU provider.
        """
        check_int("threads", threads, 0, MAX_THREADS)
        check_int("batch size", batch_size, 1, MAX_BATCH_SIZE)
        loaded = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        return cls(
            loaded,
            open_backend(loaded, backend, device, threads=threads, precision=precision),
            batch_size=batch_size,
            max_wait_ms=max_wait_ms,
        )

    # -- public API ---------------------------------------------------------------------------------

    def generate(self, inputs: Sequence[AudioInput] | AudioInput, seed: int = 0,
                 num_images: int = 1, *, sample_rate: int | None = None) -> list[list[Image.Image]]:
        """Images for each input: a list (one per input) of `num_images` PIL images.

        An input is a path to an audio file, the bytes of one, an open binary stream, or an array of
        samples at `sample_rate` (default: the front end's, 16 kHz); one of these alone is one input.
        Raises InputError for the first unusable input (before any model runs) and NonFiniteOutput when
        the model produces NaN/Inf.
        """
        arrays = self.generate_arrays(inputs, seed, num_images, sample_rate=sample_rate)
        return [[to_pil(image) for image in block] for block in arrays]

    def generate_arrays(self, inputs: Sequence[AudioInput] | AudioInput, seed: int = 0, num_images: int = 1,
                        timer: StageTimer | None = None, *, sample_rate: int | None = None) -> list[np.ndarray]:
        """Like `generate`, but raw (K, 3, H, W) float32 arrays in [-1, 1]."""
        outcomes = self.generate_outcomes(inputs, seed, num_images, timer=timer, fail_fast=True,
                                          sample_rate=sample_rate)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
        return outcomes

    def generate_outcomes(self, inputs: Sequence[AudioInput] | AudioInput, seed: int = 0, num_images: int = 1, *,
                          timer: StageTimer | None = None, fail_fast: bool = False,
                          start_index: int = 0, sample_rate: int | None = None) -> list[np.ndarray | S2IError]:
        """Per input, its (K, 3, H, W) images or the S2IError that stopped it; the others still run.

        With `fail_fast`, the first unusable input raises before any model runs. `start_index` is the
        position of inputs[0] in the caller's whole list (the noise depends on it), for callers that feed
        a long list in chunks and want the same pixels as one call.
        """
        self._require_open()
        inputs = as_input_list(inputs)
        seed = check_seed(seed)
        num_images = check_int("num_images", num_images, 1, MAX_NUM_IMAGES)
        if len(inputs) == 0:
            raise InputError("no inputs given")
        dims = self.bundle.dims
        outcomes: list[Any] = [None] * len(inputs)
        work: dict[int, _Work] = {}
        labels = [input_label(source, start_index + index) for index, source in enumerate(inputs)]
        for index, features in enumerate(self._features_of_all(inputs, labels, timer, sample_rate)):
            if isinstance(features, S2IError):
                if fail_fast:
                    raise features
                outcomes[index] = features
                continue
            label = labels[index]
            z, eps = noise_block(seed, start_index + index, int(num_images), dims.z_dim, dims.ca_dim)
            work[index] = _Work(features, self._feed.frames(features), z, eps, label, timer)
        if work:
            order = list(work)
            items = [work[i] for i in order]
            results = self._batcher.run(items) if self._batcher is not None else self._run_batch(items)
            for index, result in zip(order, results, strict=True):
                outcomes[index] = result
        return outcomes

    def _features_of_all(self, inputs: Sequence[AudioInput], labels: list[str], timer: StageTimer | None,
                         sample_rate: int | None = None) -> list[np.ndarray | S2IError]:
        """What the encoder reads of every input, or the error that stopped it.

        Inputs are decoded in parallel (decoding and resampling release the GIL), then the front end takes
        all the decoded clips in one call, which computes them together in cache-sized groups; a clip's
        features do not depend on its company. Should that call fail, the clips go through one at a time,
        so that an error costs only its own input."""
        audios = self._parallel(self._audio, inputs, labels, timer, sample_rate)
        decoded = [index for index, audio in enumerate(audios) if not isinstance(audio, S2IError)]
        if not decoded:
            return audios
        clips = [audios[index] for index in decoded]
        try:
            with _measure(timer, "front_end"):
                features = self._feed.prepare_each(clips, self.backend)
        except Exception:
            features = [_outcome(self._prepare, labels[index], audios[index], timer)
                        for index in decoded]
        for index, item in zip(decoded, features, strict=True):
            audios[index] = item if isinstance(item, S2IError) else _outcome(self._checked, labels[index], item,
                                                                             labels[index])
        return audios

    def _parallel(self, fn, inputs: Sequence[AudioInput], labels: list[str], *args) -> list[Any]:
        """fn(input, label, *args) for every input, on a thread per core; each result or its S2IError."""
        if len(inputs) == 1:
            return [_outcome(fn, labels[0], inputs[0], labels[0], *args)]
        with ThreadPoolExecutor(max_workers=min(len(inputs), os.cpu_count() or 1)) as pool:
            return list(pool.map(lambda source, label: _outcome(fn, label, source, label, *args), inputs, labels))

    def features(self, source: AudioInput, label: str, timer: StageTimer | None = None,
                 sample_rate: int | None = None) -> np.ndarray:
        """Load one input and make what the encoder reads of it: log-Mel features (n_mels, frames), or the
        samples (N,) float32 when the bundle's encoder holds the front end; InputError if unusable."""
        return self._checked(self._prepare(self._audio(source, label, timer, sample_rate), timer), label)

    def _audio(self, source: AudioInput, label: str, timer: StageTimer | None,
               sample_rate: int | None) -> np.ndarray:
        """The input's samples at the model's rate; InputError if unreadable, too short or too long.

        Audio shorter than one hop gives a single frame: too short to be speech, refused."""
        from .audio import load_audio  # soxr and friends only when audio is actually read

        spec = self.bundle.frontend
        # Every clip shorter than this fits max_frames (frames = 1 + samples // hop); the frame count below
        # refuses the few samples between.
        max_seconds = spec.max_frames * spec.hop_length / spec.sample_rate
        with _measure(timer, "load_audio"):
            audio = load_audio(source, sample_rate, max_seconds=max_seconds, min_samples=spec.hop_length,
                               target_rate=spec.sample_rate, name=label)
        if spec.num_frames(audio.size) > spec.max_frames:
            raise InputError(
                f"{label}: audio is {seconds_text(audio.size / spec.sample_rate)} long; the model takes at most "
                f"{spec.max_frames} frames (less than {seconds_text(max_seconds)})"
            )
        return audio

    def _prepare(self, audio: np.ndarray, timer: StageTimer | None) -> np.ndarray:
        with _measure(timer, "front_end"):
            return self._feed.prepare(audio, self.backend)

    def _checked(self, features: np.ndarray, label: str) -> np.ndarray:
        """The features, if the backend takes that many frames (an engine may take fewer than the model)."""
        self.backend.check_frames(self._feed.frames(features), label)
        return features

    def embed(self, inputs: Sequence[AudioInput] | AudioInput, *, sample_rate: int | None = None) -> np.ndarray:
        """Speech embeddings (N, D) of the inputs, in their order."""
        self._require_open()
        spec = self.bundle.frontend
        inputs = as_input_list(inputs)
        feats = self._features_of_all(inputs, [input_label(s, i) for i, s in enumerate(inputs)], None, sample_rate)
        for item in feats:
            if isinstance(item, S2IError):
                raise item
        out = np.empty((len(feats), self.bundle.dims.embedding_dim), dtype=np.float32)
        frames = [self._feed.frames(f) for f in feats]
        for batch in plan_batches(frames, self.batch_size, spec.min_frames, self._max_width()):
            signal, lengths = self._feed.batch([feats[i] for i in batch.indices], batch.width)
            out[list(batch.indices)] = self.backend.encode(signal, lengths)
        return out

    def render(self, embeddings: np.ndarray, z: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """Generator on given embeddings and noise rows: (N, 3, H, W) float32; NonFiniteOutput on NaN/Inf."""
        chunks = [
            self.backend.generate(embeddings[s : s + self.batch_size], z[s : s + self.batch_size],
                                  eps[s : s + self.batch_size])
            for s in range(0, embeddings.shape[0], self.batch_size)
        ]
        images = np.concatenate(chunks, axis=0)
        check_finite(images)
        return images

    def interpolate(self, source_a: AudioInput, source_b: AudioInput, steps: int = 9,
                    seed: int = 0, *, sample_rate: int | None = None) -> list[Image.Image]:
        """Images along the line between two utterances' embeddings, with the same noise at every step
        (that of image 0 of input 0 for `seed`), so only the speech changes."""
        steps = check_int("steps", steps, 2, MAX_STEPS)
        check_seed(seed)
        emb_a, emb_b = self.embed([source_a, source_b], sample_rate=sample_rate)
        line = interpolate(emb_a, emb_b, steps)
        z, eps = noise_block(seed, 0, 1, self.bundle.dims.z_dim, self.bundle.dims.ca_dim)
        images = self.render(line, np.repeat(z, steps, axis=0), np.repeat(eps, steps, axis=0))
        return [to_pil(image) for image in images]

    @property
    def batcher(self) -> DynamicBatcher | None:
        """The dynamic batcher (with `max_wait_ms`), for its statistics; None without one."""
        return self._batcher

    def describe(self) -> dict[str, Any]:
        return {
            "bundle": str(Path(self.bundle.path).resolve()),
            **self.backend.describe(),
            "encoder_input": self._feed.kind,
            "frontend": self._feed.frontend,
            "batch_size": self.batch_size,
            "dynamic_batching": self._batcher is not None,
        }

    def _require_open(self) -> None:
        if self._closed:
            raise PipelineClosed("this Pipeline is closed; load a new one")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._batcher is not None:
            self._batcher.close()
            self._batcher = None
        self.backend.close()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the models, on any mix of inputs ------------------------------------------------------------

    def _max_width(self) -> int:
        """Widest padded batch: the model's max_frames, or less where the backend's engine profile ends."""
        limit = self.bundle.frontend.max_frames
        return limit if self.backend.frame_range is None else min(limit, self.backend.frame_range[1])

    def _run_batch(self, items: list[_Work]) -> list[np.ndarray | S2IError]:
        spec = self.bundle.frontend
        results: list[Any] = [None] * len(items)
        for batch in plan_batches([w.frames for w in items], self.batch_size, spec.min_frames, self._max_width()):
            chosen = [items[i] for i in batch.indices]
            signal, lengths = self._feed.batch([w.features for w in chosen], batch.width)
            counts = np.array([w.z.shape[0] for w in chosen], dtype=np.int64)
            z = np.concatenate([w.z for w in chosen])
            eps = np.concatenate([w.eps for w in chosen])
            timers = {id(w.timer): w.timer for w in chosen if w.timer is not None}
            images = self.backend.encode_generate(
                signal, lengths, z, eps, counts, self.batch_size, _Fanout(list(timers.values()))
            )
            starts = np.concatenate([[0], np.cumsum(counts)])
            for slot, work, start, stop in zip(batch.indices, chosen, starts[:-1], starts[1:], strict=True):
                block = images[start:stop]
                try:
                    check_finite(block, f"{work.label}: generator output")
                except NonFiniteOutput as exc:
                    results[slot] = exc
                    continue
                results[slot] = block
        return results


def _outcome(fn, label: str, *args) -> Any:
    """fn(*args), or the S2IError it raised; an unexpected exception is reported as this input's internal
    error (a bug must cost this input its images, not its neighbours theirs)."""
    try:
        return fn(*args)
    except S2IError as exc:
        return exc
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [""])[0]
        return InternalError(f"{label}: internal error ({type(exc).__name__}: {detail}); please report it")


def _measure(timer: StageTimer | None, stage: str):
    return timer.measure(stage) if timer is not None else contextlib.nullcontext()
