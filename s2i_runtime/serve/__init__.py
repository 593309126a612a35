"""`s2i-run serve`: an HTTP service and a browser page on top of one `Pipeline` (needs `s2i[serve]`).

Importing this package is cheap and needs none of the extra's packages: the ASGI stack is imported by
`app` and `server` only, so the runtime stays usable without it.
"""

from __future__ import annotations

import importlib.util

from .config import ServeConfig

# import name -> the distribution that provides it (for the error message)
_EXTRA_MODULES = {"starlette": "starlette", "uvicorn": "uvicorn", "python_multipart": "python-multipart"}


def missing_extra() -> str | None:
    """Why `serve` cannot run here (one line), or None when the serve extra is installed."""
    absent = [dist for module, dist in _EXTRA_MODULES.items() if importlib.util.find_spec(module) is None]
    if not absent:
        return None
    return f"serving needs {', '.join(absent)}: pip install 's2i[serve]'"


__all__ = ["ServeConfig", "missing_extra"]
