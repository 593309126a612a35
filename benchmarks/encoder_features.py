"""The encoder stage's step with its two ways to the features of augmented captions, seconds per step.

    python -m benchmarks.encoder_features --run RUN [--rounds 3] [--steps 9] [--json]

RUN is a run directory with a teacher (the make run's, say), on data with waveforms. Contenders:
- `torch, padded batch` (before): every caption augmented on the stage's thread pool, the waves padded into one
  batch and `logmel_torch` run on it;
- `runtime front end, per caption` (now): each augmenting thread also computes its caption's features with the
  runtime's front end (`EncoderStage.augmented_batch`; its C extension when built, `S2I_FRONTEND=numpy` for numpy).
One stage, the same steps for both; contenders take turns in blocks of `--steps` training steps (the first two of a
block untimed), `--rounds` times, so a slow spell on a shared machine hits both. Figures: median, min and max over
the timed steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from .common import machine_info, pin_thread_env, pin_torch_threads


def _torch_padded_batch(stage):
    """The stage's augmented batch as it was computed before: torch's front end on the padded waves."""
    import numpy as np
    import torch

    from s2i_train.frontend import logmel_torch

    def batch(idx: torch.Tensor, step: int):
        waves = list(stage._augment_pool.map(lambda row, caption: stage.augmented_wave(caption, step, row),
                                             range(len(idx)), idx.tolist()))
        padded = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(np.asarray(w, dtype=np.float32)) for w in waves],
                                                 batch_first=True)
        return logmel_torch(padded, torch.tensor([len(w) for w in waves]))

    return batch


def run_encoder_features(run_dir: Path, rounds: int = 3, steps: int = 9) -> dict[str, Any]:
    import torch

    from s2i_train.train.config import load_run_config
    from s2i_train.train.encoder import EncoderStage

    torch.manual_seed(0)
    stage = EncoderStage(load_run_config(run_dir), run_dir)
    if stage.waves is None:
        raise SystemExit("error: the run's config has no waveform augmentation (encoder.wave_augment)")
    stage.augmented_batch(torch.tensor(stage.sampler.indices(0)), 0)  # makes the stage's thread pool
    contenders = {"torch, padded batch": _torch_padded_batch(stage),
                  "runtime front end, per caption": stage.augmented_batch}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    step = 0
    for _ in range(rounds):
        for name, batch in contenders.items():
            stage.augmented_batch = batch
            for i in range(steps):
                start = time.perf_counter()
                stage.train_step(step)
                if i >= 2:
                    times[name].append(time.perf_counter() - start)
                step += 1
    return {"machine": machine_info(torch.get_num_threads()),
            "seconds_per_step": {name: {"median": statistics.median(t), "min": min(t), "max": max(t)}
                                 for name, t in times.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.steps < 3 or args.rounds < 1:
        print("error: --steps must be at least 3 and --rounds at least 1", file=sys.stderr)
        return 2
    pin_thread_env(args.threads)
    pin_torch_threads(args.threads)
    result = run_encoder_features(args.run, args.rounds, args.steps)
    if args.json:
        print(json.dumps(result))
    else:
        for name, t in result["seconds_per_step"].items():
            print(f"{name:<22} {t['median']:.3f} s/step (min {t['min']:.3f}, max {t['max']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
