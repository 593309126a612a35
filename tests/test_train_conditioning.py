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
