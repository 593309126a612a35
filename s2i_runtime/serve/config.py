"""The service's settings, one dataclass shared by the command line, the app and the tests."""

from __future__ import annotations

import dataclasses
import os

from ..errors import InputError

MIB = 1 << 20


@dataclasses.dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    bundle: str | os.PathLike | None = None  # None: the model shipped with the runtime
    backend: str = "auto"
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | fp16 | int8, as for `s2i-run infer`
    threads: int = 0  # ONNX Runtime intra-op threads (0 = all physical cores)
    # The dynamic batcher: requests from all clients share batches of up to `batch_size` inputs, each
    # batch waiting at most `max_wait_ms` for company after its first request arrived.
    batch_size: int = 32
    max_wait_ms: float = 5.0
    # Requests admitted at once (decoding, queued or in a batch); one more gets 429 with Retry-After.
    # Together with the upload limit this bounds the memory that requests can hold.
    max_queue: int = 256
    max_upload_bytes: int = 10 * MIB
    max_images: int = 8  # per request
    timeout_s: float = 30.0  # per request, from admission to the images; then 504
    retry_after_s: int = 1
    access_log: bool = False

    def __post_init__(self) -> None:
        checks = [
            (0 <= self.port <= 65535, f"port must be 0-65535, got {self.port}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.max_wait_ms >= 0, f"max wait must not be negative, got {self.max_wait_ms}"),
            (self.max_queue >= 1, f"queue length must be at least 1, got {self.max_queue}"),
            (self.max_upload_bytes >= 1024, f"upload limit must be at least 1 KiB, got {self.max_upload_bytes}"),
            (self.max_images >= 1, f"max images must be at least 1, got {self.max_images}"),
            (self.timeout_s > 0, f"timeout must be positive, got {self.timeout_s}"),
            (self.retry_after_s >= 1, f"Retry-After must be at least 1 s, got {self.retry_after_s}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    @property
    def workers(self) -> int:
        """Threads that decode audio and wait on the batcher: enough to fill two batches, never more than
        can be admitted (a request that waits for a thread still counts against the queue)."""
        return max(1, min(self.max_queue, 2 * self.batch_size))

    def public(self) -> dict:
        """The settings a client may see (in --json and /v1/limits)."""
        return {
            "batch_size": self.batch_size,
            "max_wait_ms": self.max_wait_ms,
            "max_queue": self.max_queue,
            "max_upload_bytes": self.max_upload_bytes,
            "max_images": self.max_images,
            "timeout_s": self.timeout_s,
        }
