"""Differentiable geometric jitter for generated images before a frozen network reads them.

A generator trained against one frozen classifier (the teacher) can satisfy it with pixel patterns that only work
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
