"""The silhouette judge: its mask against the renderer's own coverage, and a tiny training run."""

import numpy as np
import pytest
import torch
from train_tiny_data import make_tiny_shapes

from s2i_train import checkpoint
from s2i_train.data import render, vocabulary
from s2i_train.silhouette import (
    SILHOUETTE_JUDGE,
    SilhouetteConfig,
    fit_silhouette_judge,
    load_silhouette_judge,
    silhouette,
    silhouette_shape_read,
    train_silhouette_judge,
)

SIZE = 64


def _spec(colour: str, shape: str, size: str, background: str, seed: int) -> render.ImageSpec:
    # Redraw until the size and background come out as asked: sample_image_spec picks them at random.
    rng = np.random.default_rng(seed)
    while True:
        spec = render.sample_image_spec(rng, colour, shape)
        if spec.size == size and spec.background == background:
            return spec


def _as_tensor(image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


@pytest.mark.parametrize("background", vocabulary.BACKGROUNDS)
def test_mask_matches_the_rendered_figure(background):
    specs = [
        _spec(vocabulary.COLOURS[(i + j) % len(vocabulary.COLOURS)], shape, size, background, seed=10 * i + j)
        for i, shape in enumerate(vocabulary.SHAPES)
        for j, size in enumerate(vocabulary.SIZES)
    ]
    images = torch.stack([_as_tensor(render.render(spec, SIZE)) for spec in specs])
    masks = silhouette(images)
    assert masks.shape == (len(specs), 1, SIZE, SIZE)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    fractions = {}
    for spec, mask in zip(specs, masks[:, 0].bool(), strict=True):
        alpha = torch.from_numpy(render.shape_alpha(spec, SIZE))
        figure = alpha >= 0.5
        iou = float((figure & mask).sum() / (figure | mask).sum())
        assert iou > 0.9, (spec.shape, spec.size, iou)
        assert not mask[alpha == 0].any(), "background pixels in the mask"
        fractions[spec.shape, spec.size] = float(mask.float().mean())
    for shape in vocabulary.SHAPES:
        assert fractions[shape, "small"] < 0.5 * fractions[shape, "large"]


def test_pale_pink_and_vivid_yellow_outline_alike_and_grey_is_empty():
    pink = _spec("pink", "square", "large", "light", seed=1)
    yellow = dict(pink.to_dict(), colour="yellow", hue=vocabulary.HUES["yellow"], saturation=1.0, value=1.0)
    images = torch.stack([_as_tensor(render.render(spec, SIZE)) for spec in (pink, render.ImageSpec(**yellow))])
    masks = silhouette(images)
    # The same outline (up to a rounded edge pixel or two): the threshold follows each image's own chroma.
    assert (masks[0] != masks[1]).sum() <= 2 and masks[0].sum() > 0.3 * SIZE * SIZE
    grey = images[:1].mean(dim=1, keepdim=True).expand(1, 3, SIZE, SIZE)
    assert silhouette(grey).sum() == 0


TINY = SilhouetteConfig(steps=6, batch_size=16, image_size=32, width=4, seed=3)


def _renders(count: int):
    rng = np.random.default_rng(0)
    specs = [render.sample_image_spec(rng, vocabulary.COLOURS[i % 8], vocabulary.SHAPES[i // 8 % 8])
             for i in range(count)]
    images = torch.stack([_as_tensor(render.render(spec, SIZE)) for spec in specs])
    shapes = torch.tensor([vocabulary.SHAPES.index(s.shape) for s in specs])
    sizes = torch.tensor([vocabulary.SIZES.index(s.size) for s in specs])
    return images, shapes, sizes


def test_training_is_deterministic_under_a_seed():
    images, shapes, sizes = _renders(24)
    first = fit_silhouette_judge(images, shapes, sizes, TINY).state_dict()
    second = fit_silhouette_judge(images, shapes, sizes, TINY).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = fit_silhouette_judge(images, shapes, sizes, SilhouetteConfig(**{**TINY.to_dict(), "seed": 4}))
    assert not all(torch.equal(first[k], v) for k, v in other.state_dict().items())


def test_stage_trains_saves_and_loads(tmp_path):
    root = make_tiny_shapes(tmp_path / "data", images_per_class=1)
    run = tmp_path / "run"
    summary = train_silhouette_judge(run, root, TINY, progress=False)
    assert summary["train_images"] == 48 and summary["real_test"]["images"] == 16
    assert 0.0 <= summary["real_test"]["shape"] <= 1.0 and summary["train_seconds"] >= 0
    assert set(summary["real_test"]["shape_by_shape"]) == set(vocabulary.SHAPES)
    assert checkpoint.has_module(run, SILHOUETTE_JUDGE)
    model = load_silhouette_judge(run)
    assert model.config == TINY and not model.training
    images, _, _ = _renders(5)
    logits = model(images)
    assert logits["shape"].shape == (5, len(vocabulary.SHAPES)) and logits["size"].shape == (5, len(vocabulary.SIZES))
    probs = silhouette_shape_read(model, images)
    assert probs.shape == (5, len(vocabulary.SHAPES))
    assert torch.allclose(probs.sum(1), torch.ones(5), atol=1e-5)
    # Any input size: the mask is taken at the image's resolution and pooled to the model's.
    assert silhouette_shape_read(model, torch.nn.functional.interpolate(images, size=48)).shape == (5, 8)
