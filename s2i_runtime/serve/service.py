"""The model behind the routes: admission to a bounded queue, decoding, one shared `Pipeline`, PNG encoding.

Every request runs in a worker thread: decoding and the front end there use the cores in parallel, and
the thread then waits on the pipeline's dynamic batcher, which merges all clients' inputs into shared model
batches. No HTTP here: the app maps the exceptions below to status codes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..audio import load_audio
from ..errors import S2IError
from ..images import grid, png_bytes, to_pil
from ..pipeline import Pipeline, StageTimer
from .admission import Admission, Refused
from .config import ServeConfig
from .metrics import Metrics


class QueueFull(S2IError):
    """No place for the request: the queue is full, or it could not finish in time behind it (429)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestTimeout(S2IError):
    """The request did not finish within `timeout_s` of its admission (504)."""


@dataclasses.dataclass
class Generated:
    pngs: list[bytes]  # one per image, or one grid of all of them
    image_size: tuple[int, int]  # (width, height) of one image
    audio_seconds: float
    timings_s: dict[str, float]


class Slot:
    """One admitted request's place in the queue; given back exactly once, whichever path ends it."""

    def __init__(self, admission: Admission, timeout_s: float) -> None:
        self._admission = admission
        self._lock = threading.Lock()
        self._released = False
        self.deadline = time.monotonic() + timeout_s

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def release(self, completed: bool = False) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._admission.leave(completed)

    def finished(self, future: Future) -> None:
        """Done callback of the request's work: it counts as a completion unless it never ran."""
        self.release(completed=not future.cancelled())


class ImageService:
    def __init__(self, pipe: Pipeline, config: ServeConfig, metrics: Metrics | None = None) -> None:
        self.pipe = pipe
        self.config = config
        self.metrics = metrics or Metrics()
        self.admission = Admission(config.max_queue, config.timeout_s, config.retry_after_s)
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="s2i-request")
        spec = pipe.bundle.frontend
        # The longest clip whose frame count stays within the model's maximum (frames = 1 + samples // hop).
        self.max_seconds = (spec.max_frames * spec.hop_length - 1) / spec.sample_rate
        self._info: dict[str, Any] | None = None

    @classmethod
    def open(cls, config: ServeConfig) -> ImageService:
        """Load the model once; every request shares it through the dynamic batcher."""
        pipe = Pipeline.load(config.bundle, backend=config.backend, device=config.device,
                             batch_size=config.batch_size, max_wait_ms=config.max_wait_ms, threads=config.threads,
                             precision=config.precision)
        service = cls(pipe, config)
        service.warm_up()
        return service

    def warm_up(self) -> None:
        """One silent clip through every stage, so the first client does not pay for the sessions' first
        run and the image encoder's first use."""
        spec = self.pipe.bundle.frontend
        silence = np.zeros(spec.sample_rate, dtype=np.float32)
        (block,) = self.pipe.generate_arrays([silence])
        png_bytes(to_pil(block[0]))

    # -- admission --------------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight

    def admit(self) -> Slot:
        """A place in the queue, or QueueFull. Taken before the body is read, so a busy server spends
        nothing on a request it refuses."""
        try:
            self.admission.enter()
        except Refused as exc:
            raise QueueFull(str(exc), exc.retry_after_s) from None
        return Slot(self.admission, self.config.timeout_s)

    # -- the work ---------------------------------------------------------------------------------------

    async def generate(self, slot: Slot, audio: bytes, label: str, *, seed: int, num_images: int,
                       as_grid: bool = False) -> Generated:
        """Images for one upload. The slot is released when the worker is done with it, not when the client
        gives up, so the queue bound holds for the work really under way."""
        try:
            future: Future = self._pool.submit(self.run, audio, label, seed, num_images, as_grid)
        except BaseException:
            slot.release()
            raise
        future.add_done_callback(slot.finished)
        try:
            # On timeout the wrapper cancels the thread's future: dropped if it never started, left to finish
            # (and to release its slot) if it is running.
            return await asyncio.wait_for(asyncio.wrap_future(future), slot.remaining())
        except asyncio.TimeoutError:
            raise RequestTimeout(f"{label}: no result within {self.config.timeout_s:g} s") from None

    def run(self, audio: bytes, label: str, seed: int = 0, num_images: int = 1, as_grid: bool = False) -> Generated:
        """One request's work in the calling thread, without admission or time limit (the load test calls
        this to time the same work in-process)."""
        spec = self.pipe.bundle.frontend
        timer = StageTimer()
        with timer.measure("load_audio"):
            samples = load_audio(audio, max_seconds=self.max_seconds, target_rate=spec.sample_rate, name=label)
        (block,) = self.pipe.generate_arrays([samples], seed=seed, num_images=num_images, timer=timer)
        with timer.measure("encode_png"):
            pictures = [to_pil(image) for image in block]
            pngs = [png_bytes(grid(pictures))] if as_grid else [png_bytes(p) for p in pictures]
        timings = {stage: s for stage, s in timer.as_dict().items() if stage != "load_model"}
        return Generated(pngs, pictures[0].size, samples.size / spec.sample_rate, timings)

    # -- what the other routes show ----------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """`s2i-run info --json` for the served bundle (gathered once: it re-reads and hashes the bundle)."""
        if self._info is None:
            from ..info import gather

            self._info = gather(self.config.bundle)
        return self._info

    def vocabulary(self) -> dict[str, Any]:
        dataset = self.pipe.bundle.dataset
        return {"dataset": dataset.get("name"), "vocabulary": dataset.get("vocabulary", [])}

    def batch_counts(self) -> list[int]:
        batcher = self.pipe.batcher
        return list(batcher.size_counts) if batcher is not None else []

    def describe(self) -> dict[str, Any]:
        return {**self.pipe.describe(), **self.config.public()}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.pipe.close()
