"""`s2i-run serve` in a child process: start it, wait for its ready line, stop it with Ctrl-C's signal.

For programs that want the service beside them rather than inside them (and for the tests and the load
test, which need a real server on a real socket).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

from ..errors import S2IError


class ServerExited(S2IError):
    """The server stopped (or never became ready); carries its stderr."""


class ServerProcess:
    """`with ServerProcess(["--bundle", b]) as server: urlopen(server.url + "healthz")`.

    The server listens on 127.0.0.1 and a free port unless the arguments say otherwise.
    """

    def __init__(self, args: Sequence[str] = (), *, ready_timeout_s: float = 120.0,
                 env: dict[str, str] | None = None) -> None:
        self.args = ["--host", "127.0.0.1", "--port", "0", *map(str, args), "--json"]
        self.ready_timeout_s = ready_timeout_s
        self.env = env
        self.ready: dict[str, Any] = {}
        self._proc: subprocess.Popen | None = None
        self._stderr: list[str] = []

    @property
    def url(self) -> str:
        return self.ready["url"]

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> ServerProcess:
        command = [sys.executable, "-c", "from s2i_runtime.cli import main; main()", "serve", *self.args]
        self._proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, **(self.env or {})})
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(self._proc.stdout, lines.put, True), daemon=True).start()
        threading.Thread(target=_pump, args=(self._proc.stderr, self._stderr.append, False), daemon=True).start()
        try:
            line = lines.get(timeout=self.ready_timeout_s)
        except queue.Empty:
            self.stop()
            raise ServerExited(f"server not ready within {self.ready_timeout_s:g} s: {self.stderr}") from None
        if line is None:
            self._proc.wait()
            raise ServerExited(f"server exited with {self._proc.returncode}: {self.stderr}")
        self.ready = json.loads(line)
        return self

    @property
    def stderr(self) -> str:
        return "".join(self._stderr).strip()

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGINT (as Ctrl-C), then the exit code; SIGKILL if it does not stop in time."""
        if self._proc is None:
            return 0
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        return self._proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _pump(stream, put, mark_end: bool) -> None:
    """Read a child's pipe to its end (so the child never blocks on a full pipe); None marks the end."""
    for line in stream:
        put(line)
    if mark_end:
        put(None)
