"""A small closed-loop load generator: N clients, each with one keep-alive HTTP/1.1 connection, each sending
its next request as soon as the last one is answered. Bounded by time and by a request count, and only
ever aimed at a loopback address.

Its own client (asyncio streams, ~100 lines) rather than a library: the load test must count exactly what
happened to every request (answered with which status, or lost: no complete response), and a client
library's retries and pools would hide that.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import itertools
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

LOST = 0  # the status of a request that got no complete response (connection error or client timeout)


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: int
    seconds: float
    started: float  # monotonic time the request was sent
    error: str = ""


def loopback_target(url: str) -> tuple[str, int]:
    """(host, port) of an http:// URL on this machine; anything else is refused."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme != "http" or not (host == "localhost" or ipaddress.ip_address(host).is_loopback):
        raise ValueError(f"the load generator only targets http:// on a loopback address, not {url!r}")
    return host, parts.port or 80


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"",
                      headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await self._writer.drain()
        status_line = await self._reader.readline()
        if not status_line:
            raise ConnectionError("connection closed before a response")
        status = int(status_line.split()[1])
        length, close = None, False
        while (line := await self._reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.lower() == "close":
                close = True
            elif name == "transfer-encoding" and value.lower() != "identity":
                raise ConnectionError(f"unexpected transfer-encoding {value}")
        payload = await self._reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
        self._reader = self._writer = None


async def closed_loop(url: str, clients: int, seconds: float, max_requests: int,
                      make_request: Callable[[int], tuple[str, bytes, dict[str, str]]],
                      timeout_s: float = 60.0) -> list[Outcome]:
    """Run `clients` closed-loop clients for `seconds` (or until `max_requests` were sent, in all);
    `make_request(i)` gives the i-th request's (path, body, headers). Every request sent is in the result."""
    host, port = loopback_target(url)
    numbers = itertools.count()
    deadline = time.monotonic() + seconds
    outcomes: list[Outcome] = []

    async def client() -> None:
        connection = Connection(host, port)
        try:
            while time.monotonic() < deadline:
                index = next(numbers)
                if index >= max_requests:
                    return
                path, body, headers = make_request(index)
                started = time.monotonic()
                try:
                    status, _ = await asyncio.wait_for(connection.request("POST", path, body, headers), timeout_s)
                    outcomes.append(Outcome(status, time.monotonic() - started, started))
                except (OSError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                    outcomes.append(Outcome(LOST, time.monotonic() - started, started, f"{type(exc).__name__}: {exc}"))
                    await connection.close()  # a fresh connection for the next request
        finally:
            await connection.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return outcomes


def run_closed_loop(url: str, clients: int, seconds: float, max_requests: int,
                    make_request: Callable[[int], tuple[str, bytes, dict[str, str]]],
                    timeout_s: float = 60.0) -> list[Outcome]:
    return asyncio.run(closed_loop(url, clients, seconds, max_requests, make_request, timeout_s))


def statuses(outcomes: Sequence[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        key = "lost" if outcome.status == LOST else str(outcome.status)
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
