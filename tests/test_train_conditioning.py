"""The generator stage's attribute read-outs: fitted to caption labels, checked against the vocabulary."""

import pytest
import torch

from s2i_runtime.errors import InputError
from s2i_train.models import Generator, GeneratorConfig
from s2i_train.train.generator import fit_attribute_readouts


def _coded_generator(code):
    return Generator(GeneratorConfig(embedding_dim=12, z_dim=4, ca_dim=4, ngf=8, init_mult=4, attribute_code=code,
                                     condition_on_embedding=False))


def test_readouts_fitted_on_separable_embeddings_reproduce_the_labels():
    rng = torch.Generator().manual_seed(0)
    labels = torch.stack([torch.randint(0, 8, (300,), generator=rng), torch.randint(0, 8, (300,), generator=rng)], 1)
    colour_dirs, shape_dirs = torch.randn(8, 12, generator=rng), torch.randn(8, 12, generator=rng)
    embeddings = colour_dirs[labels[:, 0]] + shape_dirs[labels[:, 1]] + 0.05 * torch.randn(300, 12, generator=rng)
    gen = _coded_generator((8, 8))
    gen.ca.set_embedding_statistics(embeddings)
    fit_attribute_readouts(gen.ca, embeddings, labels, (8, 8))
    centred = gen.ca.centred(embeddings)
    for column, readout in enumerate(gen.ca.readouts):
        assert torch.equal(readout(centred).argmax(1), labels[:, column])


def test_a_code_that_does_not_follow_the_vocabulary_is_refused():
    gen = _coded_generator((2, 8))
    with pytest.raises(InputError, match="colour"):
        fit_attribute_readouts(gen.ca, torch.randn(10, 12), torch.zeros(10, 4, dtype=torch.long), (2, 8))


def test_an_unspoken_attribute_reads_uniform_instead_of_a_memorised_guess():
    # Embeddings that carry nothing about the background: fitted to the image's labels, the read-out memorises
    # them; told the captions leave it open, it reads 50/50 on captions it never saw.
    rng = torch.Generator().manual_seed(0)
    labels = torch.stack([torch.randint(0, n, (96,), generator=rng) for n in (8, 8, 2, 2)], 1)
    embeddings, unseen = torch.randn(96, 12, generator=rng), torch.randn(32, 12, generator=rng)
    spoken = torch.ones(96, 4, dtype=torch.bool)
    spoken[:, 3] = False
    confidence = {}
    for name, mask in (("memorised", None), ("open", spoken)):
        gen = _coded_generator((8, 8, 2, 2))
        gen.ca.set_embedding_statistics(embeddings)
        fit_attribute_readouts(gen.ca, embeddings, labels, (8, 8, 2, 2), mask)
        confidence[name] = gen.ca.attribute_code(unseen)[3].max(1).values.mean().item()
    assert confidence["memorised"] > 0.7
    assert confidence["open"] == pytest.approx(0.5, abs=0.02)


def test_cooccurrence_prior_is_the_share_of_each_pair_among_captions_that_name_both():
    from s2i_train.train.common import PRIOR_FLOOR, cooccurrence_log_prior, prior_offsets

    # colour, shape, size, background; the last caption leaves its shape open and does not count.
    labels = torch.tensor([[0, 1, 0, 0], [0, 1, 1, 0], [2, 1, 0, 1], [3, 0, 0, 0], [5, 1, 0, 0]])
    said = torch.ones(5, 4, dtype=torch.bool)
    said[4, 1] = False
    table = cooccurrence_log_prior(labels, said, "colour", "shape")
    assert table.shape == (8, 8)
    shares = table[1].exp()
    assert shares[0].item() == pytest.approx(2 / 3) and shares[2].item() == pytest.approx(1 / 3)
    assert table[1, 5].item() == PRIOR_FLOOR and table[0, 3].item() == pytest.approx(0.0)
    named = torch.tensor([[0, 1, 0, 0], [4, -100, 0, 0], [-100, 1, 0, 0]])
    offsets = prior_offsets({"colour": table}, named)["colour"]
    assert torch.equal(offsets[0], table[1]) and torch.equal(offsets[1:], torch.zeros(2, 8))


def test_readouts_fitted_with_the_cooccurrence_prior_read_colours_of_unseen_pairs_better():
    # Weak colour evidence, strong shape evidence, and two colours per shape that training never pairs with it
    # (as Spoken-Shapes holds out 16 pairs): the plain read-out learns to rule those colours out by the shape.
    rng = torch.Generator().manual_seed(0)
    colour_dirs, shape_dirs = torch.randn(8, 12, generator=rng), torch.randn(8, 12, generator=rng)
    pairs = torch.tensor([(c, s) for c in range(8) for s in range(8)])
    unseen = (pairs[:, 0] == pairs[:, 1]) | (pairs[:, 0] == (pairs[:, 1] + 1) % 8)

    def sample(n, allowed):
        pick = allowed[torch.randint(0, len(allowed), (n,), generator=rng)]
        x = 0.5 * colour_dirs[pick[:, 0]] + shape_dirs[pick[:, 1]] + 0.6 * torch.randn(n, 12, generator=rng)
        return x, torch.cat([pick, torch.zeros(n, 2, dtype=torch.long)], 1)

    train_x, train_y = sample(2000, pairs[~unseen])
    test_x, test_y = sample(1000, pairs[unseen])
    colour = {}
    for prior in (False, True):
        gen = _coded_generator((8, 8))
        gen.ca.set_embedding_statistics(train_x)
        fit_attribute_readouts(gen.ca, train_x, train_y, (8, 8), cooccurrence_prior=prior)
        colour[prior] = (gen.ca.attribute_code(test_x)[0].argmax(1) == test_y[:, 0]).float().mean().item()
    assert colour[True] > colour[False] + 0.05


def test_zero_offsets_fit_the_plain_regression_and_explaining_offsets_leave_nothing_to_learn():
    import numpy as np

    from s2i_train.metrics import fit_softmax_regression

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 5)), rng.integers(0, 3, 200)
    plain = fit_softmax_regression(x, y, 3)
    zero = fit_softmax_regression(x, y, 3, offsets=np.zeros((200, 3)))
    assert np.array_equal(plain[0], zero[0]) and np.array_equal(plain[1], zero[1])
    w, b = fit_softmax_regression(x, y, 3, offsets=30.0 * np.eye(3)[y])
    assert np.abs(w).max() < 1e-3 and np.abs(b - b.mean()).max() < 1e-3
