"""Inference backends behind one small interface (`base.Backend`); each imports its library lazily."""

from .base import BACKEND_NAMES, DEVICE_NAMES, Backend, open_backend

__all__ = ["BACKEND_NAMES", "DEVICE_NAMES", "Backend", "open_backend"]
