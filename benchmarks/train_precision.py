"""Training speed, fp32 against bf16 autocast (`run.precision`): seconds per step of each stage, on a run's
trained components.

    python -m benchmarks.train_precision --run RUN [--stages judge,teacher,encoder,generator] [--steps 10] [--json]

RUN is a trained run directory (the make run's, say): each stage is built from its config and trained components
twice, once per precision, from the same seed, and the two take turns step by step (fp32, bf16, fp32, ...) after
two untimed steps each, so a slow spell on a shared machine hits both. Figures are medians over the timed steps; the
speed-up is fp32 / bf16. bf16 pays only where the CPU does it in hardware (AMX or AVX512-BF16; reported as
`hardware_bf16`). Whether bf16 trains as well is a question for `s2i-train eval`, not for this script.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from .common import interleaved, machine_info, pin_thread_env, pin_torch_threads

STAGES = ("judge", "teacher", "encoder", "generator")


def _stepper(name: str, run_dir: Path, precision: str):
    import torch

    from s2i_train.train.config import load_run_config
    from s2i_train.train.precision import autocast
    from s2i_train.train.runner import build_stage

    torch.manual_seed(0)
    stage = build_stage(name, load_run_config(run_dir), run_dir)
    step = 0

    def one_step() -> None:
        nonlocal step
        with autocast(precision):
            stage.train_step(step)
        step += 1

    return one_step


def run_train_precision(run_dir: Path, stages: tuple[str, ...] = STAGES, steps: int = 10) -> dict[str, Any]:
    from s2i_train.train.precision import hardware_bf16

    # Training refuses bf16 where the CPU would emulate it, so there only fp32 is timed.
    precisions = ("fp32", "bf16") if hardware_bf16() is not False else ("fp32",)
    figures: dict[str, Any] = {}
    for name in stages:
        times = interleaved({p: _stepper(name, run_dir, p) for p in precisions}, repeats=steps, warmup=2)
        fp32 = statistics.median(times["fp32"])
        bf16 = statistics.median(times["bf16"]) if "bf16" in times else None
        figures[name] = {"fp32_s_per_step": fp32, "bf16_s_per_step": bf16,
                         "speedup": fp32 / bf16 if bf16 is not None else None}
    return {"run": str(run_dir), "steps": steps, "hardware_bf16": hardware_bf16(), "stages": figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run directory")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--steps", type=int, default=10, help="timed steps per precision and stage")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    stages = tuple(s for s in args.stages.split(",") if s)
    unknown = sorted(set(stages) - set(STAGES))
    if unknown or not stages:
        print(f"error: --stages takes a comma list of {', '.join(STAGES)}; got {args.stages!r}", file=sys.stderr)
        return 2
    if not (args.run / "config.toml").is_file():
        print(f"error: {args.run}: not a run directory (no config.toml)", file=sys.stderr)
        return 2
    pin_thread_env(args.threads)
    pin_torch_threads(args.threads)
    result = run_train_precision(args.run, stages, args.steps)
    result["machine"] = machine_info(args.threads)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['machine']['cpu']}, {args.threads} threads, hardware bf16: {result['hardware_bf16']}")
    print(f"{'stage':<10} {'fp32 s/step':>12} {'bf16 s/step':>12} {'speed-up':>9}")
    for name, f in result["stages"].items():
        if f["bf16_s_per_step"] is None:
            print(f"{name:<10} {f['fp32_s_per_step']:>12.3f} {'-':>12} {'-':>9}")
        else:
            print(f"{name:<10} {f['fp32_s_per_step']:>12.3f} {f['bf16_s_per_step']:>12.3f} {f['speedup']:>8.2f}x")
    if result["hardware_bf16"] is False:
        print("bf16 not timed: this CPU has no hardware bf16, and training refuses it there")
    return 0


if __name__ == "__main__":
    sys.exit(main())
