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
