"""Admission: how many requests the service holds at once, and whether a new one can still finish in time.

Two limits. A hard one: at most `max_queue` admitted requests. And an estimate: the expected wait of a new
request is the number already admitted times the recent time between completions while the service was busy
(an average that already includes what batching buys). When that wait would eat most of the per-request time
limit, the request is refused at once with 429 and a Retry-After, instead of being admitted only to end in
a 504 many seconds later: on a machine that is starved of CPU, clients learn to back off rather than pile up.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class Refused(Exception):
    """No place: the message says why; `retry_after_s` is what to tell the client."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Admission:
    SMOOTHING = 0.05  # weight of the newest interval in the average (about the last 20 completions)
    BUDGET = 0.8  # share of the time limit that a new request's expected wait may use

    def __init__(self, max_queue: int, timeout_s: float, retry_after_s: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.clock = clock
        self.in_flight = 0
        self.interval_s: float | None = None  # average time between completions while busy
        self._last_mark: float | None = None  # the last completion, or the start of the busy spell
        self._lock = threading.Lock()

    def expected_wait_s(self) -> float:
        """How long a request admitted now would wait for the ones before it (0 while nothing is known)."""
        return 0.0 if self.interval_s is None else (self.in_flight + 1) * self.interval_s

    def enter(self) -> None:
        with self._lock:
            if self.in_flight >= self.max_queue:
                raise Refused(f"the server is busy ({self.max_queue} requests queued); retry shortly",
                              self.retry_after_s)
            wait = self.expected_wait_s()
            if self.in_flight > 0 and wait > self.BUDGET * self.timeout_s:
                backoff = max(self.retry_after_s, min(60, math.ceil(wait - self.BUDGET * self.timeout_s)))
                raise Refused(f"the server is overloaded (about {wait:.0f} s of work queued); retry shortly",
                              backoff)
            if self.in_flight == 0:
                self._last_mark = self.clock()  # a busy spell starts: idle time is not service time
            self.in_flight += 1

    def leave(self, completed: bool) -> None:
        """A request is done with its place; `completed` when the service produced its answer (its interval
        then counts), False when it never ran (cancelled, refused after admission)."""
        with self._lock:
            self.in_flight -= 1
            if not completed or self._last_mark is None:
                return
            now = self.clock()
            interval = now - self._last_mark
            self._last_mark = now
            self.interval_s = interval if self.interval_s is None else (
                (1 - self.SMOOTHING) * self.interval_s + self.SMOOTHING * interval)
