import json
from collections import Counter

import numpy as np
import pytest

from s2i_train.data import render, vocabulary
from s2i_train.data.vocabulary import COLOURS, HUES, SHAPES


def test_classes_and_ids():
    assert len(vocabulary.CLASSES) == 64
    assert sorted(c.class_id for c in vocabulary.CLASSES) == list(range(64))
    assert vocabulary.class_id("red_star") == COLOURS.index("red") * 8 + SHAPES.index("star")
    with pytest.raises(KeyError):
        vocabulary.class_by_name("mauve_star")


def test_split_holds_out_each_colour_and_shape_twice():
    test = vocabulary.TEST_CLASSES
    assert len(test) == 16 and len(vocabulary.TRAIN_CLASSES) == 48
    assert set(test).isdisjoint(vocabulary.TRAIN_CLASSES)
    assert Counter(c.colour for c in test) == {c: 2 for c in COLOURS}
    assert Counter(c.shape for c in test) == {s: 2 for s in SHAPES}
    # Every held-out colour and shape is still seen in training.
    assert {c.colour for c in vocabulary.TRAIN_CLASSES} == set(COLOURS)
    assert {c.shape for c in vocabulary.TRAIN_CLASSES} == set(SHAPES)


def test_vocabulary_dict_is_json():
    vocab = json.loads(json.dumps(vocabulary.vocabulary_dict()))
    assert vocab["classes"][vocab["class_ids"]["blue_heart"]] == "blue_heart"
    assert len(vocab["test_classes"]) == 16


def test_hue_buckets_are_disjoint():
    for colour, hue in HUES.items():
        assert vocabulary.hue_bucket(hue) == colour
        assert vocabulary.hue_bucket(hue + vocabulary.HUE_HALF_WIDTH - 0.01) == colour
    assert vocabulary.hue_bucket(90.0) is None


def _hue_of_mean(pixels: np.ndarray) -> float:
    import colorsys

    r, g, b = pixels.reshape(-1, 3).mean(axis=0) / 255.0
    return colorsys.rgb_to_hsv(r, g, b)[0] * 360.0


@pytest.mark.parametrize("colour", COLOURS)
def test_drawn_shape_colour_lies_in_its_hue_bucket(colour):
    rng = np.random.default_rng(7)
    for shape in SHAPES:
        for _ in range(3):
            spec = render.sample_image_spec(rng, colour, shape)
            image = np.asarray(render.render(spec, 64))
            alpha = render.shape_alpha(spec, 64)
            inside = image[alpha > 0.999]
            assert inside.shape[0] > 30, (shape, spec.size)
            assert vocabulary.hue_bucket(_hue_of_mean(inside)) == colour
            # Background is neutral grey: no saturated colour outside the shape.
            outside = image[alpha == 0].astype(int)
            assert np.abs(outside.max(axis=1) - outside.min(axis=1)).max() <= 1


def test_shapes_fit_the_image_and_sizes_differ():
    rng = np.random.default_rng(3)
    areas = {(shape, size): [] for shape in SHAPES for size in ("small", "large")}
    for i in range(200):
        spec = render.sample_image_spec(rng, COLOURS[i % 8], SHAPES[(i // 8) % 8])
        alpha = render.shape_alpha(spec, 64)
        assert alpha[0].max() == alpha[-1].max() == alpha[:, 0].max() == alpha[:, -1].max() == 0.0
        side = np.sqrt(alpha.sum())
        areas[spec.shape, spec.size].append(side / 64)
    for shape in SHAPES:  # the same shape drawn small is always smaller than drawn large
        assert max(areas[shape, "small"]) < min(areas[shape, "large"]), shape


def test_render_is_deterministic_and_resolution_independent():
    spec = render.sample_image_spec(np.random.default_rng(1), "green", "hexagon")
    a, b = render.render(spec, 128), render.render(spec, 128)
    assert a.tobytes() == b.tobytes()
    small = np.asarray(render.render(spec, 32), dtype=float)
    down = np.asarray(a.resize((32, 32), resample=4), dtype=float)  # BOX
    assert np.abs(small - down).mean() < 3.0
