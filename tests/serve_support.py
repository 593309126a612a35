"""What the serve tests share: skipping without the serve extra, and a service on a tiny real bundle."""

from __future__ import annotations

import contextlib
import importlib.util
import io

import numpy as np
import pytest
from PIL import Image


def require_serve_extra() -> None:
    """Skip the calling test module when the serve extra (or the ASGI test client) is not installed."""
    for module in ("starlette", "uvicorn", "python_multipart"):
        pytest.importorskip(module, reason=f"{module} is not installed (pip install 's2i[serve]')")
    if not any(importlib.util.find_spec(name) for name in ("httpx2", "httpx")):
        pytest.skip("the ASGI test client needs httpx2 (or httpx)", allow_module_level=True)


@contextlib.contextmanager
def serving(bundle, **settings):
    """A Starlette TestClient around a real service on `bundle` (CPU, one thread, small batches)."""
    from starlette.testclient import TestClient

    from s2i_runtime.serve import ServeConfig
    from s2i_runtime.serve.app import create_app
    from s2i_runtime.serve.service import ImageService

    config = ServeConfig(**{"bundle": bundle, "device": "cpu", "threads": 1, "batch_size": 8, "max_wait_ms": 20.0,
                            **settings})
    service = ImageService.open(config)
    with TestClient(create_app(service)) as client:
        client.service = service
        yield client


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
