"""Differentiable jitter of generated images for the teacher-consistency term."""

import torch

from s2i_train.train.image_augment import jitter_images


def _draws(seed, batch):
    gen = torch.Generator().manual_seed(seed)
    shift = (2.0 * torch.rand(batch, 2, generator=gen) - 1.0) * 0.25
    mirror = torch.rand(batch, generator=gen) < 0.5
    return shift, mirror


def test_a_square_moves_by_the_drawn_shift_and_mirrors_with_the_drawn_flag():
    images = torch.full((6, 1, 32, 32), -1.0)
    images[:, :, 12:16, 4:8] = 1.0  # a 4x4 square left of centre
    out = jitter_images(images, 0.125, torch.Generator().manual_seed(5))
    shift, mirror = _draws(5, 6)
    for row in range(6):
        mass = (out[row, 0] + 1.0) / 2.0
        ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
        cy, cx = float((mass * ys).sum() / mass.sum()), float((mass * xs).sum() / mass.sum())
        # output pixel p reads input p + shift * 16 (half the side per unit of affine coordinates), then the
        # mirror: the square's centre 5.5 goes to 5.5 - 16 shift, or to its mirror image.
        x_shifted = 5.5 - float(shift[row, 0]) * 16
        assert abs(cx - (31.0 - x_shifted if mirror[row] else x_shifted)) < 0.6
        assert abs(cy - (13.5 - float(shift[row, 1]) * 16)) < 0.6
        assert abs(float(mass.sum()) - 16.0) < 1.0


def test_no_shift_only_mirrors_and_gradients_reach_the_images():
    images = torch.randn(4, 3, 16, 16, requires_grad=True)
    out = jitter_images(images, 0.0, torch.Generator().manual_seed(1))
    _, mirror = _draws(1, 4)
    for row in range(4):
        expected = images[row].flip(-1) if mirror[row] else images[row]
        assert torch.allclose(out[row], expected, atol=1e-5)
    out.sum().backward()
    assert images.grad is not None and torch.allclose(images.grad, torch.ones_like(images), atol=1e-5)
