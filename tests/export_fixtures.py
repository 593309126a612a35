"""Tiny run directories for the export tests: randomly initialised small models saved with `save_module`.

Batch-norm running statistics are randomised too, so eval-mode normalisation is not an identity and a
wrong export of it would show in the parity checks.
"""

from __future__ import annotations

from pathlib import Path

import torch

from s2i_train.checkpoint import save_module
from s2i_train.models.generator import GeneratorConfig, build_generator
from s2i_train.models.speech_encoder import SpeechEncoderConfig, build_speech_encoder

EMBEDDING_DIM = 32
Z_DIM = 16
CA_DIM = 8


def _randomise_norms(module: torch.nn.Module, generator: torch.Generator) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)


def make_tiny_run(run_dir: Path, arch: str = "s2igan", branches: int = 2, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    gen_rng = torch.Generator().manual_seed(seed)
    if arch == "s2igan":
        enc_cfg = SpeechEncoderConfig(arch="s2igan", embedding_dim=EMBEDDING_DIM, hidden=16, conv_channels=(16, 32),
                                      attention_dim=8)
    else:
        enc_cfg = SpeechEncoderConfig(arch="cnn-rnn", embedding_dim=EMBEDDING_DIM, hidden=16,
                                      conv_channels=(8, 8, 16, 16, 16, 32, 32, 32))
    gen_cfg = GeneratorConfig(embedding_dim=EMBEDDING_DIM, z_dim=Z_DIM, ca_dim=CA_DIM, ngf=8, init_mult=4,
                              branches=branches, residual_blocks=1, layout_shift=0.3)
    encoder, generator = build_speech_encoder(enc_cfg), build_generator(gen_cfg)
    with torch.no_grad():
        _randomise_norms(encoder, gen_rng)
        _randomise_norms(generator, gen_rng)
        # Non-trivial conditioning statistics, so parity covers the centring and scaling of the embedding.
        generator.ca.set_embedding_statistics(torch.randn(32, EMBEDDING_DIM, generator=gen_rng) * 0.1 + 0.05)
        # Some inputs move the layout by fractions of a pixel, some to the clamped border: the shift is in the graph.
        generator.init_stage.shift.gate.bias.fill_(2.0)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_module(run_dir, "encoder", encoder, enc_cfg, summary={"steps": 1, "note": "random init (tests)"})
    save_module(run_dir, "generator", generator, gen_cfg, summary={"steps": 1})
    return run_dir
