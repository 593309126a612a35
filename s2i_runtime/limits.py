"""The runtime's documented limits (docs/runtime-limits.md), and the one check that enforces a range.

Every number a caller can choose has a maximum here, so no option can ask for unbounded memory or threads.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

# Audio: rates soxr resamples well and real recorders write; longer clips are refused before their samples
# are read.
MIN_RATE, MAX_RATE = 8000, 192000
DEFAULT_MAX_SECONDS = 30.0

# Per call: images are held in memory one chunk of inputs at a time, at most this many per input.
MAX_NUM_IMAGES = 256
MAX_STEPS = 256  # interpolation strip, both ends included
MAX_BATCH_SIZE = 256
# ONNX Runtime crashes (rather than refusing) when asked for absurd thread pools.
MAX_THREADS = 256


def check_int(name: str, value: object, low: int, high: int) -> int:
    """`value` as an int in [low, high], or an InputError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if not low <= int(value) <= high:
        raise InputError(f"{name} must be between {low} and {high}, got {value}")
    return int(value)
