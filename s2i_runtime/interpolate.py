"""Linear interpolation between two speech embeddings (Li et al., Fig. 5: smooth transitions).

Pure numpy so the runtime can use it; the training side re-exports it for its own figures.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError


def interpolation_weights(steps: int) -> np.ndarray:
    """`steps` weights from 0 to 1 inclusive (float32); step 0 is A, the last is B."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 2:
        raise InputError(f"interpolation needs at least 2 steps, got {steps!r}")
    return np.linspace(0.0, 1.0, int(steps), dtype=np.float64).astype(np.float32)


def interpolate(emb_a: np.ndarray, emb_b: np.ndarray, steps: int) -> np.ndarray:
    """(steps, D) float32: (1 - t) * emb_a + t * emb_b for t evenly spaced in [0, 1].

    Both embeddings are (D,) or (1, D) and must have the same size.
    """
    a = np.asarray(emb_a, dtype=np.float32).reshape(-1)
    b = np.asarray(emb_b, dtype=np.float32).reshape(-1)
    if a.shape != b.shape:
        raise InputError(f"cannot interpolate embeddings of different sizes {a.size} and {b.size}")
    t = interpolation_weights(steps)[:, None]
    # (1 - t) * a + t * b rather than a + t * (b - a): the end points are exactly A and B.
    return ((1.0 - t) * a[None, :] + t * b[None, :]).astype(np.float32)
