"""The teacher-student target options: the caption's own image, or the mean over images that agree with it;
raw or class-whitened teacher features."""

from types import SimpleNamespace

import pytest
import torch

from s2i_train.models import FeatureWhitening
from s2i_train.train.encoder import spoken_mean_targets


def _captions(attributes, spoken):
    return SimpleNamespace(attributes=torch.tensor(attributes), spoken=torch.tensor(spoken))


def test_spoken_mean_averages_over_images_that_agree_with_what_is_said():
    # images: (colour, shape, size, background)
    image_attributes = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [1, 0, 0, 0]])
    features = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0], [0.0, 7.0]])
    captions = _captions(
        [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [1, 0, 0, 1]],
        [[True, True, True, False],  # background open: images 0 and 1
         [True, True, True, True],  # background named: image 1 alone
         [True, True, True, False],  # the only large one: image 2
         [True, True, True, False]],  # colour 1: image 3
    )
    targets = spoken_mean_targets(features, image_attributes, captions)
    assert torch.equal(targets, torch.tensor([[2.0, 0.0], [3.0, 0.0], [0.0, 5.0], [0.0, 7.0]]))


def test_a_caption_that_leaves_the_shape_open_targets_every_shape_of_its_colour_and_size():
    image_attributes = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [1, 1, 0, 0]])
    features = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0], [0.0, 7.0]])
    captions = _captions([[0, 0, 0, 0], [0, 1, 0, 0]], [[True, False, True, False], [True, True, True, False]])
    targets = spoken_mean_targets(features, image_attributes, captions)
    assert torch.equal(targets, torch.tensor([[2.0, 0.0], [3.0, 0.0]]))


def test_unknown_teacher_target_is_an_input_error(tmp_path):
    from s2i_runtime.errors import InputError
    from s2i_train.train.runner import train_stage

    with pytest.raises(InputError, match="teacher_target"):
        train_stage("encoder", tmp_path / "run", data=tmp_path, overrides=["encoder.teacher_target=centroid"],
                    progress=False)


def test_teacher_candidates_name_the_modules_to_compare():
    from s2i_runtime.errors import InputError
    from s2i_train.train.encoder import teacher_candidates

    assert teacher_candidates("best", 2) == ["teacher", "checker-1", "checker-2"]
    assert teacher_candidates("best", 0) == ["teacher"]
    assert teacher_candidates("checker-2", 2) == ["checker-2"]
    assert teacher_candidates("teacher", 2) == ["teacher"]
    with pytest.raises(InputError, match="encoder.teacher must be"):
        teacher_candidates("judge", 2)


def test_class_retrieval_map_ranks_tight_classes_first():
    from s2i_train.train.encoder import class_retrieval_map

    labels = torch.tensor([0, 0, 1, 1])
    tight = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    # Every nearest neighbour is of the other class: the classmate comes third for images 0 and 1 (AP 1/3),
    # second for images 2 and 3 (AP 1/2).
    crossed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    assert class_retrieval_map(tight, labels) == 1.0
    assert class_retrieval_map(crossed, labels) == pytest.approx(5 / 12)


def _two_classes():
    # Each class spreads ±1 along x and ±0.5 along y around its centre: within-class scatter diag(0.5, 0.125).
    spread = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.5], [0.0, -0.5]])
    features = torch.cat([spread + torch.tensor([0.0, 3.0]), spread + torch.tensor([4.0, -3.0])])
    return features, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])


def test_class_whitening_makes_within_class_scatter_round_and_keeps_the_mean_norm():
    features, classes = _two_classes()
    whitening = FeatureWhitening.fit(features, classes, shrink=0.0)
    mean, matrix = whitening.mean, whitening.matrix
    assert torch.allclose(mean, torch.tensor([2.0, 0.0]))
    # rsqrt of diag(0.5, 0.125) is diag(1.414, 2.828): y is stretched twice as much as x
    assert torch.allclose(matrix[1, 1] / matrix[0, 0], torch.tensor(2.0))
    assert matrix[0, 1].abs() < 1e-6 and matrix[1, 0].abs() < 1e-6
    out = whitening(features)
    assert torch.allclose(out, (features - mean) @ matrix)
    assert torch.allclose(out.norm(dim=1).mean(), features.norm(dim=1).mean())
    within = torch.cat([out[:4] - out[:4].mean(0), out[4:] - out[4:].mean(0)])
    scatter = within.T @ within
    assert torch.allclose(scatter, scatter[0, 0] * torch.eye(2), atol=1e-4)


def test_full_shrink_only_centres_and_rescales():
    features, classes = _two_classes()
    matrix = FeatureWhitening.fit(features, classes, shrink=1.0).matrix
    assert torch.allclose(matrix, matrix[0, 0] * torch.eye(2), atol=1e-6)


def test_unknown_teacher_whitening_is_an_input_error(tmp_path):
    from s2i_runtime.errors import InputError
    from s2i_train.train.runner import train_stage

    with pytest.raises(InputError, match="teacher_whiten"):
        train_stage("encoder", tmp_path / "run", data=tmp_path, overrides=["encoder.teacher_whiten=pca"],
                    progress=False)
