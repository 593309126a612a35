"""Batching: length buckets for one call, and a dynamic batcher that merges concurrent callers' requests.

Padding never changes an embedding beyond float noise (the encoder masks by `lengths`), so grouping by
length only saves work: similar lengths share a batch and pad little. That float noise can still move a
pixel by one level (noise.py, docs/runtime-limits.md).
"""

from __future__ import annotations

import collections
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

import numpy as np

# Batch widths are rounded up to a multiple of this many frames, so a stream of requests reuses a few
# shapes (ONNX Runtime's arena and TensorRT's shape-dependent setup like repeated shapes).
WIDTH_QUANTUM = 32


@dataclasses.dataclass(frozen=True)
class Batch:
    indices: tuple[int, ...]  # positions in the caller's list, shortest first
    width: int  # padded number of frames


def batch_width(max_length: int, min_frames: int, max_frames: int, quantum: int = WIDTH_QUANTUM) -> int:
    """Padded width for a batch whose longest utterance has `max_length` frames."""
    rounded = -(-max_length // quantum) * quantum
    return max(min_frames, max_length, min(rounded, max_frames))


def plan_batches(
    lengths: Sequence[int], batch_size: int, min_frames: int, max_frames: int, quantum: int = WIDTH_QUANTUM
) -> list[Batch]:
    """Sort by length (stable) and cut into batches of at most `batch_size`."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = tuple(order[start : start + batch_size])
        width = batch_width(max(lengths[i] for i in chunk), min_frames, max_frames, quantum)
        batches.append(Batch(chunk, width))
    return batches


def pad_features(features: Sequence[np.ndarray], width: int, pad_value: float) -> tuple[np.ndarray, np.ndarray]:
    """Stack (n_mels, L_i) features into (B, n_mels, width) float32 padded with `pad_value`, plus lengths."""
    n_mels = features[0].shape[0]
    mel = np.full((len(features), n_mels, width), pad_value, dtype=np.float32)
    lengths = np.empty(len(features), dtype=np.int64)
    for row, (out, feat) in enumerate(zip(mel, features, strict=True)):
        if feat.shape[1] > width:
            raise ValueError(f"features of {feat.shape[1]} frames do not fit a batch of width {width}")
        out[:, : feat.shape[1]] = feat
        lengths[row] = feat.shape[1]
    return mel, lengths


def pad_waveforms(waves: Sequence[np.ndarray], min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Stack 1-D clips into (B, max(min_samples, longest)) float32 padded with zeros, plus their lengths."""
    lengths = np.array([w.size for w in waves], dtype=np.int64)
    batch = np.zeros((len(waves), max(int(min_samples), int(lengths.max()))), dtype=np.float32)
    for row, wave in zip(batch, waves, strict=True):
        row[: wave.size] = wave
    return batch, lengths


T = TypeVar("T")
R = TypeVar("R")

_STOP = object()


class DynamicBatcher(Generic[T, R]):
    """Merges items submitted by several threads into batches for one worker thread.

    A batch closes when it holds `max_batch` items or `max_wait_ms` after its first item arrived,
    whichever comes first. `run_batch(items) -> results` (same length, same order) runs on the worker;
    if it raises, every caller with an item in that batch gets the exception.
    """

    def __init__(self, run_batch: Callable[[list[T]], list[R]], max_batch: int, max_wait_ms: float,
                 name: str = "s2i-batcher") -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must not be negative, got {max_wait_ms}")
        self._run_batch = run_batch
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._lock = threading.Lock()
        # What the worker actually ran, for tests and statistics: the recent batches, and a count per batch
        # size since start. Both bounded, so a long-running server does not grow with them.
        self.batch_sizes: collections.deque[int] = collections.deque(maxlen=4096)
        self.size_counts: list[int] = [0] * (self.max_batch + 1)
        self._worker = threading.Thread(target=self._loop, name=name, daemon=True)
        self._worker.start()

    def submit(self, items: Sequence[T]) -> list[Future]:
        """Queue items; returns one Future per item."""
        futures = []
        with self._lock:
            if self._closed:
                raise RuntimeError("the dynamic batcher is closed")
            for item in items:
                future: Future = Future()
                self._queue.put((item, future))
                futures.append(future)
        return futures

    def run(self, items: Sequence[T]) -> list[R]:
        """Submit and wait; raises the first failure among this caller's items."""
        return [f.result() for f in self.submit(items)]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._worker.join()

    def _collect(self, first) -> tuple[list, bool]:
        pending = [first]
        deadline = time.monotonic() + self.max_wait
        while len(pending) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                entry = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is _STOP:
                return pending, True
            pending.append(entry)
        return pending, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is _STOP:
                break
            pending, stop = self._collect(first)
            live = [(item, fut) for item, fut in pending if fut.set_running_or_notify_cancel()]
            if not live:
                continue
            self.batch_sizes.append(len(live))
            self.size_counts[len(live)] += 1
            try:
                results = self._run_batch([item for item, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(live)} items")
            except BaseException as exc:  # handed to the callers, never lost in the worker
                for _, fut in live:
                    fut.set_exception(exc)
                continue
            for (_, fut), result in zip(live, results, strict=True):
                fut.set_result(result)
        # Anything still queued after close() is refused rather than left hanging.
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is not _STOP:
                entry[1].set_exception(RuntimeError("the dynamic batcher was closed"))
