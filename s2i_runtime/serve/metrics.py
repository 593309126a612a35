"""Prometheus text exposition (format 0.0.4) of the service's counters, written by hand: a few counters and
histograms do not justify a client library, and the runtime keeps its dependencies few."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Sequence

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    """Cumulative-bucket histogram, as Prometheus expects (`le` upper bounds, then +Inf)."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # the last slot is +Inf
        self.total = 0.0

    def observe(self, value: float, times: int = 1) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += times
        self.total += value * times

    def lines(self, name: str, labels: str = "") -> list[str]:
        out, running = [], 0
        sep = "," if labels else ""
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            le = "+Inf" if bound == float("inf") else format(bound, "g")
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {running}')
        braces = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{braces} {self.total!r}")
        out.append(f"{name}_count{braces} {running}")
        return out


class Metrics:
    """What the app counts. Updated from the event loop and from worker threads, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, str, int], int] = {}  # (method, route, status) -> count
        self.errors: dict[str, int] = {}  # kind (bad_audio, queue_full, ...) -> count
        self.images = 0
        self.latency = Histogram(LATENCY_BUCKETS_S)  # POST /v1/images answered 200, seconds

    def request(self, method: str, route: str, status: int) -> None:
        with self._lock:
            key = (method, route, status)
            self.requests[key] = self.requests.get(key, 0) + 1

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def generated(self, images: int, seconds: float) -> None:
        with self._lock:
            self.images += images
            self.latency.observe(seconds)

    def render(self, *, in_flight: int, max_queue: int, batch_counts: Sequence[int],
               memory: dict[str, int]) -> str:
        """The whole exposition. `batch_counts[n]` is how many batches of n inputs the model ran."""
        with self._lock:
            requests = sorted(self.requests.items())
            errors = sorted(self.errors.items())
            images = self.images
            latency = _copy(self.latency)
        batches = Histogram((1, 2, 4, 8, 16, 32, 64, 128))
        for size, count in enumerate(batch_counts):
            if count:
                batches.observe(size, count)
        out: list[str] = []
        out += _family("s2i_http_requests_total", "counter", "HTTP requests answered, by route and status.",
                       (f'{{method="{m}",route="{r}",status="{s}"}} {n}' for (m, r, s), n in requests))
        out += _family("s2i_errors_total", "counter", "Requests refused or failed, by kind.",
                       (f'{{kind="{k}"}} {n}' for k, n in errors))
        out += _family("s2i_images_total", "counter", "Images generated and returned.", [f" {images}"])
        out += _family("s2i_request_duration_seconds", "histogram",
                       "POST /v1/images latency (answered 200), from admission to the response body.", [])
        out += latency.lines("s2i_request_duration_seconds")
        out += _family("s2i_batch_size", "histogram", "Inputs per model batch (all clients together).", [])
        out += batches.lines("s2i_batch_size")
        out += _family("s2i_requests_in_flight", "gauge", "Admitted requests not yet answered.", [f" {in_flight}"])
        out += _family("s2i_queue_limit", "gauge", "Admitted requests allowed at once (then 429).",
                       [f" {max_queue}"])
        for name, value in memory.items():
            out += _family(name, "gauge", _MEMORY_HELP.get(name, name), [f" {value}"])
        return "\n".join(out) + "\n"


_MEMORY_HELP = {
    "process_resident_memory_bytes": "Resident set size of the server process.",
    "s2i_process_peak_resident_memory_bytes": "Peak resident set size of the server process since start.",
}


def process_memory() -> dict[str, int]:
    """Current and peak RSS from /proc (Linux); empty elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            fields = dict(line.split(":", 1) for line in handle if ":" in line)
    except OSError:
        return {}
    out = {}
    for field, name in (("VmRSS", "process_resident_memory_bytes"),
                        ("VmHWM", "s2i_process_peak_resident_memory_bytes")):
        if field in fields:
            out[name] = int(fields[field].split()[0]) * 1024  # /proc reports kB
    return out


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *(f"{name}{sample}" for sample in samples)]


def _copy(histogram: Histogram) -> Histogram:
    copy = Histogram(histogram.bounds)
    copy.counts = list(histogram.counts)
    copy.total = histogram.total
    return copy

