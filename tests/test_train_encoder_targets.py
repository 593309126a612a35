"""The teacher-student target options: the caption's own image, or the mean over images that agree with it."""

from types import SimpleNamespace

import pytest
import torch

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


def test_unknown_teacher_target_is_an_input_error(tmp_path):
    from s2i_runtime.errors import InputError
    from s2i_train.train.runner import train_stage

    with pytest.raises(InputError, match="teacher_target"):
        train_stage("encoder", tmp_path / "run", data=tmp_path, overrides=["encoder.teacher_target=centroid"],
                    progress=False)


def test_teacher_candidates_name_the_modules_to_compare():
    from s2i_runtime.errors import InputError
    from s2i_train.train.encoder import teacher_candidates

    assert teacher_candidates("best", 2) == ["teacher", "critic-1", "critic-2"]
    assert teacher_candidates("best", 0) == ["teacher"]
    assert teacher_candidates("critic-2", 2) == ["critic-2"]
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
