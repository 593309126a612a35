"""Evaluation figures: retrieval, Fréchet distance, Inception-style score, diversity."""

import numpy as np
import pytest

from s2i_train.metrics import (
    frechet_distance,
    inception_style_score,
    linear_probe_accuracy,
    mean_pairwise_distance,
    retrieval_scores,
)


def test_retrieval_perfect_and_reversed():
    gallery = np.eye(3)
    labels = np.array([0, 1, 2])
    perfect = retrieval_scores(np.eye(3), labels, gallery, labels)
    assert perfect == {"mAP": 1.0, "R@1": 1.0}
    # Each query points at the wrong item first; the right one comes second of three: AP = 1/2.
    queries = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=float) + 0.1 * np.eye(3)
    scores = retrieval_scores(queries, labels, gallery, labels)
    assert scores["R@1"] == 0.0
    assert scores["mAP"] == pytest.approx(0.5)


def test_retrieval_average_precision_with_two_relevant():
    # Ranking: relevant, irrelevant, relevant -> AP = (1/1 + 2/3) / 2.
    gallery = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    scores = retrieval_scores(np.array([[1.0, 0.0]]), np.array([0]), gallery, np.array([0, 1, 0]))
    assert scores["mAP"] == pytest.approx((1 + 2 / 3) / 2)


def test_retrieval_exclude_self():
    x = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0], [0.01, 1.0]])
    labels = np.array([0, 0, 1, 1])
    assert retrieval_scores(x, labels, x, labels, exclude_self=True) == {"mAP": 1.0, "R@1": 1.0}


def test_frechet_distance_of_shifted_gaussians():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    b = a + np.array([2.0, 0.0, 0.0])
    assert frechet_distance(a, b) == pytest.approx(4.0, rel=1e-3)


def test_inception_style_score_bounds():
    confident = np.eye(4)[np.arange(400) % 4]
    assert inception_style_score(confident)[0] == pytest.approx(4.0, rel=1e-6)
    uniform = np.full((100, 4), 0.25)
    assert inception_style_score(uniform)[0] == pytest.approx(1.0)


def test_mean_pairwise_distance():
    groups = [np.array([[0.0, 0.0], [3.0, 4.0]]), np.array([[1.0, 1.0]])]
    assert mean_pairwise_distance(groups) == pytest.approx(5.0)


def test_linear_probe_reads_a_linearly_coded_attribute_and_not_noise():
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(4, 16))
    train_y, test_y = rng.integers(0, 4, 400), rng.integers(0, 4, 200)
    noise = 0.3
    train_x = directions[train_y] + noise * rng.normal(size=(400, 16))
    test_x = directions[test_y] + noise * rng.normal(size=(200, 16))
    assert linear_probe_accuracy(train_x, train_y, test_x, test_y) == 1.0
    # Labels unrelated to the features: about chance.
    assert linear_probe_accuracy(rng.normal(size=(400, 16)), train_y, rng.normal(size=(200, 16)), test_y) < 0.4


def test_linear_probe_is_deterministic():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(100, 8)), rng.integers(0, 3, 100)
    assert linear_probe_accuracy(x, y, x, y) == linear_probe_accuracy(x, y, x, y)


def test_condition_cells_pick_voice_groups_by_seed_alone():
    from s2i_train.eval_conditions import cell_captions, table_lines

    records = [{"engine": "espeak-ng"}, {"engine": "flite"}, {}, {"engine": "festival"}] * 10
    espeak = cell_captions(records, "espeak", 0, seed=0)
    recorded = cell_captions(records, "recorded", 0, seed=0)
    # A record without an engine predates the recorded voices: espeak-ng.
    assert len(espeak) == 20 and len(recorded) == 20 and set(espeak.tolist()).isdisjoint(recorded.tolist())
    picked = cell_captions(records, "recorded", 5, seed=3)
    assert len(picked) == 5 and set(picked.tolist()) <= set(recorded.tolist())
    assert picked.tolist() == sorted(picked.tolist()) and picked.equal(cell_captions(records, "recorded", 5, seed=3))
    cell = {"captions": 5, "colour": 1.0, "shape": 0.5, "size": 1.0, "silhouette_shape": 0.75,
            "shape_judges_disagree": True, "probe": {"colour": 1.0, "shape": 0.8, "size": 1.0}}
    lines = table_lines({"recorded": {"clean": cell}})
    assert "1.00/0.50/1.00 (0.75)!" in lines[1] and "1.00/0.80/1.00" in lines[2] and lines[1].count("-") == 2


def test_read_cell_splits_the_judges_hits_by_voice():
    import torch

    from s2i_train.eval_conditions import read_cell, table_lines

    # Three captions of colour 0..2; a "judge" that reads colour right only for rows whose embedding is positive,
    # so the one voice whose row is negative gets colour 0 and the other 1.
    embeddings = torch.tensor([[1.0], [-1.0], [1.0]])
    labels = torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0], [2, 0, 0, 0]])

    def draw(emb, z, eps):
        return emb

    def read(images):
        right = torch.nn.functional.one_hot(labels[:, 0].repeat_interleave(2), 8).float()
        colour = torch.where(images > 0, right, right.roll(1, 1))
        rest = torch.nn.functional.one_hot(torch.zeros(len(images), dtype=torch.long), 8).float()
        return {"colour": colour, "shape": rest, "size": rest}

    cell = read_cell(embeddings, labels, draw, 4, 4, read, k=2, seed=0, batch_size=8,
                     voices=["flite:awb", "flite:slt", "flite:awb"])
    assert cell["colour"] == pytest.approx(2 / 3)
    assert cell["by_voice"] == {"flite:awb": {"captions": 2, "colour": 1.0, "shape": 1.0, "size": 1.0},
                                "flite:slt": {"captions": 1, "colour": 0.0, "shape": 1.0, "size": 1.0}}
    # The one wrong caption (colour 1, orange) is read as the next colour, yellow, in both its images.
    assert cell["read_as"]["colour"] == {"red": {"red": 1.0}, "orange": {"yellow": 1.0}, "yellow": {"yellow": 1.0}}
    lines = table_lines({"recorded": {"clean": cell}})
    assert [line.split()[:2] for line in lines[3:5]] == [["flite:awb", "1.00/1.00/1.00"],
                                                        ["flite:slt", "0.00/1.00/1.00"]]


def test_probe_only_tables_show_the_probe_per_voice():
    import torch

    from s2i_train.eval_conditions import split_by_voice, table_lines

    hits = {"colour": torch.tensor([True, False, True, True]), "shape": torch.tensor([True, True, False, True]),
            "size": torch.tensor([True, True, True, True])}
    by_voice = split_by_voice(hits, ["a", "b", "a", "b"])
    assert by_voice == {"a": {"captions": 2, "colour": 1.0, "shape": 0.5, "size": 1.0},
                        "b": {"captions": 2, "colour": 0.5, "shape": 1.0, "size": 1.0}}
    cell = {"captions": 4, "probe": {"colour": 0.75, "shape": 0.75, "size": 1.0}, "probe_by_voice": by_voice}
    lines = table_lines({"recorded": {"clean": cell}})
    assert lines[1].split()[:3] == ["recorded", "probe", "0.75/0.75/1.00"]
    assert [line.split()[:2] for line in lines[2:4]] == [["a", "1.00/0.50/1.00"], ["b", "0.50/1.00/1.00"]]


def test_confusion_lines_name_the_words_heard_as_others():
    from s2i_train.eval_conditions import confusion_lines

    cell = {"probe_read_as": {"colour": {"red": {"red": 0.5, "pink": 0.5}, "blue": {"blue": 1.0}},
                              "shape": {"star": {"star": 1.0}}}}
    judged = {"read_as": {"shape": {"star": {"heart": 0.25, "star": 0.75}}}}
    lines = confusion_lines({"recorded": {"noisy_room": cell, "clean": judged},
                             "espeak": {"clean": {"probe_read_as": {}}}})
    assert lines[1:] == ["judge, recorded, clean: shape: star->heart 0.25",
                         "probe, recorded, noisy_room: colour: red->pink 0.50"]
    assert confusion_lines({"espeak": {"clean": {}}}) == []
