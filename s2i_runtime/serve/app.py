"""The HTTP routes (Starlette): POST /v1/images, the page at /, /healthz, /v1/info, /v1/vocabulary,
/v1/limits, /metrics.

Every refusal is one JSON line `{"error": "..."}` with a status that says whose fault it is: 400 unusable
input (the runtime's own one-line message), 413 too large, 429 queue full (with Retry-After), 504 too slow.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InputError, S2IError
from ..noise import MAX_SEED
from .metrics import process_memory
from .service import ImageService, QueueFull, RequestTimeout
from .uploads import UploadTooLarge, audio_from_body, read_limited

STATIC = Path(__file__).resolve().parent / "static"
IMAGES_ROUTE = "/v1/images"
# The page loads nothing from anywhere else; the policy makes a stray CDN link fail loudly in the browser.
PAGE_POLICY = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
               "connect-src 'self'; object-src 'none'; base-uri 'none'")
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

log = logging.getLogger("s2i.serve")


def create_app(service: ImageService) -> Starlette:
    """The ASGI app around an opened service; the app closes the service when it shuts down."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette):
        try:
            yield
        finally:
            service.close()

    async def page(_request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY,
                                                            "Cache-Control": "no-cache"})

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "in_flight": service.in_flight})

    async def info(_request: Request) -> Response:
        return JSONResponse(service.info())

    async def vocabulary(_request: Request) -> Response:
        return JSONResponse(service.vocabulary())

    async def limits(_request: Request) -> Response:
        return JSONResponse({**service.config.public(), "max_audio_seconds": round(service.max_seconds, 3)})

    async def metrics(_request: Request) -> Response:
        text = service.metrics.render(in_flight=service.in_flight, max_queue=service.config.max_queue,
                                      batch_counts=service.batch_counts(), memory=process_memory())
        return PlainTextResponse(text, media_type=PROMETHEUS_TEXT)

    async def images(request: Request) -> Response:
        started = time.perf_counter()
        try:
            seed = _int_param(request, "seed", 0, 0, MAX_SEED)
            num_images = _int_param(request, "num_images", 1, 1, service.config.max_images)
            as_json = _wants_json(request)
            slot = service.admit()
            try:
                body = await _within(slot.remaining(), read_limited(
                    request.headers.get("content-length"), request.stream(), service.config.max_upload_bytes))
                audio, label = audio_from_body(request.headers.get("content-type"), body)
            except BaseException:
                slot.release()
                raise
            result = await service.generate(slot, audio, label, seed=seed, num_images=num_images,
                                            as_grid=not as_json)
        except UploadTooLarge as exc:
            return _refuse(service, 413, "too_large", exc)
        except InputError as exc:
            return _refuse(service, 400, "bad_input", exc)
        except QueueFull as exc:
            return _refuse(service, 429, "queue_full", exc, {"Retry-After": str(exc.retry_after_s)})
        except RequestTimeout as exc:
            return _refuse(service, 504, "timeout", exc)
        except S2IError as exc:  # the model failed (NaN output): the server's problem, said in one line
            return _refuse(service, 500, "model", exc)
        wall = time.perf_counter() - started
        service.metrics.generated(num_images, wall)
        timings = {**result.timings_s, "total": round(wall, 6)}
        if not as_json:
            return Response(result.pngs[0], media_type="image/png", headers={"Server-Timing": _server_timing(timings)})
        return JSONResponse({
            "images": [base64.b64encode(png).decode("ascii") for png in result.pngs],
            "media_type": "image/png",
            "image_size": list(result.image_size),
            "num_images": num_images,
            "seed": seed,
            "input": {"name": label, "seconds": round(result.audio_seconds, 3)},
            "timings_s": timings,
        })

    async def internal_error(_request: Request, exc: Exception) -> Response:
        log.exception("internal error", exc_info=exc)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server log"}, 500)

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/healthz", healthz),
            Route("/v1/info", info),
            Route("/v1/vocabulary", vocabulary),
            Route("/v1/limits", limits),
            Route(IMAGES_ROUTE, images, methods=["POST"]),
            Route("/metrics", metrics),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=lifespan,
        exception_handlers={Exception: internal_error},
    )
    app.add_middleware(_CountRequests, service=service)
    return app


class _CountRequests:
    """Counts every answered request by method, route and status (unknown paths as one label, so a
    scanner cannot grow the metrics)."""

    KNOWN = ("/", "/healthz", "/v1/info", "/v1/vocabulary", "/v1/limits", IMAGES_ROUTE, "/metrics")

    def __init__(self, app: ASGIApp, service: ImageService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in self.KNOWN else "/static" if path.startswith("/static/") else "other"
        status = 500  # if the app dies before it answers

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            self.service.metrics.request(scope["method"], route, status)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InputError(f"{name} must be an integer, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise InputError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _wants_json(request: Request) -> bool:
    """`format=json|png` decides; without it, JSON when the client accepts JSON but not PNG."""
    chosen = request.query_params.get("format", "").lower()
    if chosen in ("json", "png"):
        return chosen == "json"
    if chosen:
        raise InputError(f"format must be json or png, got {chosen[:20]!r}")
    accept = request.headers.get("accept", "").lower()
    return "application/json" in accept and "image/png" not in accept


async def _within(seconds: float, awaitable):
    try:
        return await asyncio.wait_for(awaitable, seconds)
    except asyncio.TimeoutError:
        raise RequestTimeout(f"upload not received within {seconds:.0f} s") from None


def _refuse(service: ImageService, status: int, kind: str, exc: Exception,
            headers: dict[str, str] | None = None) -> Response:
    service.metrics.error(kind)
    return JSONResponse({"error": str(exc)}, status, headers=headers)


def _server_timing(timings: dict[str, float]) -> str:
    """The standard header for per-stage timings (milliseconds), which browsers' developer tools show."""
    return ", ".join(f"{stage};dur={seconds * 1e3:.2f}" for stage, seconds in timings.items())
