"""Differentiable geometric jitter for generated images before a frozen network reads them.

A generator trained against one frozen reader (the teacher) can satisfy it with pixel patterns that only work
at one position; reading a randomly shifted and mirrored copy asks for the attribute itself (the idea of
DiffAugment, Zhao et al. 2020, applied to the consistency term). Shifts and mirroring change none of
Spoken-Shapes' attributes: every shape class is closed under a horizontal flip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def jitter_images(images: torch.Tensor, max_shift: float, generator: torch.Generator) -> torch.Tensor:
    """images (B, C, H, W), each shifted by up to `max_shift` of its side in x and y and mirrored with
    probability 1/2; edge pixels extend into the uncovered border. Gradients flow to `images`."""
    batch = images.shape[0]
    # affine_grid works in [-1, 1] coordinates: a shift of s image sides is 2 s.
    shift = (2.0 * torch.rand(batch, 2, generator=generator) - 1.0) * (2.0 * max_shift)
    mirror = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3)
    theta[:, 0, 0] = mirror
    theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(images), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def blur_images(images: torch.Tensor, max_sigma: float, generator: torch.Generator) -> torch.Tensor:
    """images (B, C, H, W), each blurred by a Gaussian of its own width drawn uniformly from [0, max_sigma]
    pixels (edges replicated). A pattern that only fools a reader while sharp does not survive a blur; the
    outline of a shape does. Gradients flow to `images`."""
    if max_sigma <= 0:
        return images
    batch, channels, height, width = images.shape
    radius = max(1, int(3 * max_sigma + 0.5))
    sigma = torch.rand(batch, generator=generator) * max_sigma
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    # sigma -> 0 tends to the identity kernel; the clamp keeps the division finite.
    kernels = torch.exp(-taps[None] ** 2 / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    kernels = (kernels / kernels.sum(1, keepdim=True)).to(images)
    kernels = kernels.repeat_interleave(channels, 0)  # one 1-D kernel per (image, channel)
    flat = images.reshape(1, batch * channels, height, width)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernels[:, None, None, :],
                    groups=batch * channels)
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernels[:, None, :, None],
                    groups=batch * channels)
    return flat.reshape(batch, channels, height, width)
