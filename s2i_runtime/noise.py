"""Seeded noise for the generator (z and the conditioning-augmentation eps), drawn with numpy.

The noise of image k of the input at position i in the caller's list, in a call with seed s, comes from
`numpy.random.default_rng([s, i, k])`: first z (z_dim standard normals), then eps (ca_dim). It depends on
nothing else, so neither batch size, length bucketing, nor the dynamic batcher merging several callers'
requests changes the noise; and the same (seed, position, k) gives the same noise on every backend.

The pixels are another matter: the models' float arithmetic (GEMM blocking, padded widths) depends on the
batch shape, so the same input and noise in another batch can move a pixel by one level of 255, never
more. docs/runtime-limits.md states that guarantee; the same call twice gives the same pixels.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

MAX_SEED = 2**63 - 1


def check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer, got {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise InputError(f"seed must be between 0 and {MAX_SEED}, got {seed}")
    return int(seed)


def draw_noise(seed: int, index: int, k: int, z_dim: int, ca_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(z (z_dim,), eps (ca_dim,)) float32 for image k of input `index`."""
    rng = np.random.default_rng([check_seed(seed), int(index), int(k)])
    z = rng.standard_normal(z_dim, dtype=np.float32)
    eps = rng.standard_normal(ca_dim, dtype=np.float32)
    return z, eps


def noise_block(seed: int, index: int, num_images: int, z_dim: int, ca_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise of images 0..num_images-1 of one input: (z (K, z_dim), eps (K, ca_dim)) float32."""
    draws = [draw_noise(seed, index, k, z_dim, ca_dim) for k in range(num_images)]
    z = np.stack([d[0] for d in draws]) if draws else np.zeros((0, z_dim), np.float32)
    eps = np.stack([d[1] for d in draws]) if draws else np.zeros((0, ca_dim), np.float32)
    return z, eps
