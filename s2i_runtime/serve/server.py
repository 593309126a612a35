"""Running the app: bind the socket, load the model once, then uvicorn until Ctrl-C or SIGTERM.

The socket is bound before the model loads, so a port in use is one error line at once, and port 0 gets a
free port whose number the ready line reports (tests and the load test start servers that way).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from ..errors import InputError
from .config import ServeConfig


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port, or InputError saying why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(config: ServeConfig, on_ready: Callable[[dict[str, Any]], None]) -> None:
    """Serve until interrupted; `on_ready` gets the URL and settings once requests can be sent."""
    import uvicorn

    from .app import create_app
    from .service import ImageService

    sock = bind(config.host, config.port)
    try:
        service = ImageService.open(config)
        app = create_app(service)
        server = uvicorn.Server(uvicorn.Config(
            app, log_level="warning", access_log=config.access_log, lifespan="on",
            # Requests in progress get this long to finish after Ctrl-C / SIGTERM.
            timeout_graceful_shutdown=max(1, int(config.timeout_s)),
        ))
        host, port = sock.getsockname()[:2]
        on_ready({"url": url_of(sock), "host": host, "port": port, "loopback_only": is_loopback(config.host),
                  **service.describe()})
        server.run(sockets=[sock])
    finally:
        sock.close()


def ready_line(ready: dict[str, Any]) -> str:
    """What `s2i-run serve` prints once it accepts requests (without --json)."""
    line = (f"serving {ready['bundle']} at {ready['url']} ({ready['backend']} {ready.get('device', '')}, "
            f"batches of up to {ready['batch_size']}); Ctrl-C stops")
    if not ready["loopback_only"]:
        line += "\nwarning: reachable from other machines, with no authentication and no TLS"
    return line
