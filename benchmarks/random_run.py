"""A stand-in run directory: randomly initialised models with a training config's architecture.

Speed does not depend on the weights, so until the trained default model exists the benchmarks run on
these (exported with the real exporter). Batch-norm statistics are randomised so that eval-mode
normalisation is not an identity (and the images are not flat).

    python -m benchmarks.random_run --out build/bench-run [--config shapes64] [--bundle build/bench-run/bundle]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path


def make_random_run(run_dir: str | Path, config: str = "shapes64", seed: int = 0) -> Path:
    """encoder + generator checkpoints (safetensors + json) with `config`'s model sizes, random weights."""
    import torch

    from s2i_train.checkpoint import save_module
    from s2i_train.models.generator import build_generator
    from s2i_train.models.speech_encoder import build_speech_encoder
    from s2i_train.train.config import builtin_config_path, load_config

    path = Path(config)
    train_config = load_config(path if path.suffix == ".toml" else builtin_config_path(config))
    encoder_config = train_config.encoder.model
    # Training ties the generator's conditioning width to the encoder's embedding (see train/generator.py).
    generator_config = dataclasses.replace(train_config.generator.model,
                                           embedding_dim=encoder_config.embedding_dim)
    torch.manual_seed(seed)
    norms = torch.Generator().manual_seed(seed)
    encoder, generator = build_speech_encoder(encoder_config), build_generator(generator_config)
    with torch.no_grad():
        for module in (encoder, generator):
            for m in module.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=norms) * 0.1)
                    m.running_var.copy_(torch.rand(m.running_var.shape, generator=norms) + 0.5)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    note = {"note": f"random initialisation with the {config} architecture (benchmark stand-in)"}
    save_module(run_dir, "encoder", encoder.eval(), encoder_config, summary=note)
    save_module(run_dir, "generator", generator.eval(), generator_config, summary=note)
    return run_dir


def make_random_bundle(run_dir: str | Path, bundle_dir: str | Path | None = None, config: str = "shapes64",
                       seed: int = 0) -> tuple[Path, Path]:
    """A random run and its exported bundle (default RUN/bundle); returns (run_dir, bundle_dir)."""
    from s2i_export.onnx_export import export_bundle

    run_dir = make_random_run(run_dir, config, seed)
    bundle_dir = Path(bundle_dir) if bundle_dir is not None else run_dir / "bundle"
    export_bundle(run_dir, bundle_dir)
    return run_dir, bundle_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="run directory to create")
    parser.add_argument("--config", default="shapes64", help="built-in config name or a .toml path")
    parser.add_argument("--bundle", type=Path, default=None, help="bundle directory (default OUT/bundle)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run_dir, bundle_dir = make_random_bundle(args.out, args.bundle, args.config, args.seed)
    print(f"run: {run_dir}\nbundle: {bundle_dir}")


if __name__ == "__main__":
    main()
