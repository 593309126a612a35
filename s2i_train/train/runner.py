"""What the `s2i-train judge|teacher|checkers|encoder|generator` commands do: settle the config, build the stage,
run the shared loop. The CLI is a thin layer over `train_stage`."""

from __future__ import annotations

import gc
import time
from dataclasses import replace
from pathlib import Path

import torch

from s2i_runtime.errors import InputError

from ..checkpoint import checker_index, checker_name
from . import distributed
from .config import CONFIG_FILE, TrainConfig, load_config, save_config
from .loop import LoopResult, LoopSettings, run_stage
from .precision import require_hardware, resolve_precision
from .state import latest_step, stage_state_dirs

STAGES = ("judge", "teacher", "checkers", "encoder", "generator", "text-encoder")


def resolve_config(
    run_dir: Path, config_path: str | Path | None, overrides: list[str], data: str | Path | None
) -> TrainConfig:
    """--config wins, else the run's own config.toml, else the defaults; then --set and --data."""
    run_config = run_dir / CONFIG_FILE
    if config_path is None and run_config.is_file():
        config_path = run_config
    config = load_config(config_path, overrides)
    if data is None and not config.data.root and run_config.is_file():
        data = load_config(run_config).data.root or None  # a new config for a run that knows its data
    if data is not None:
        config = replace(config, data=replace(config.data, root=str(Path(data).resolve())))
    if not config.data.root:
        raise InputError("no dataset: pass --data DIR (or set data.root in the config)")
    if not Path(config.data.root).is_dir():
        raise InputError(f"{config.data.root}: dataset directory does not exist")
    # Saved concrete: the run's config.toml says what arithmetic it trained in, and its later stages (on any
    # machine) keep it.
    return replace(config, run=replace(config.run, precision=resolve_precision(config.run.precision)))


def stage_members(name: str, config: TrainConfig) -> list[str]:
    """The trained modules behind a command: one, except `checkers` (checker-1, checker-2, ...; none configured:
    nothing to do)."""
    if name == "checkers":
        return [checker_name(i) for i in range(1, len(config.teacher.checker_widths) + 1)]
    return [name]


def build_stage(name: str, config: TrainConfig, run_dir: Path):
    if checker_index(name):
        from .teacher import TeacherStage

        return TeacherStage(config, run_dir, member=checker_index(name))
    if name == "judge":
        from .judge import JudgeStage

        return JudgeStage(config, run_dir)
    if name == "teacher":
        from .teacher import TeacherStage

        return TeacherStage(config, run_dir)
    if name == "encoder":
        from .encoder import EncoderStage

        return EncoderStage(config, run_dir)
    if name == "generator":
        from .generator import GeneratorStage

        return GeneratorStage(config, run_dir)
    if name == "text-encoder":
        from .text_encoder import TextEncoderStage

        return TextEncoderStage(config, run_dir)
    raise InputError(f"unknown stage {name!r} (one of {', '.join(STAGES)})")


def stage_steps(config: TrainConfig, name: str) -> int:
    # The text encoder's budget is the speech encoder's.
    section = "teacher" if checker_index(name) else "encoder" if name == "text-encoder" else name
    return int(getattr(config, section).steps)


def _stage_seed(config: TrainConfig, name: str) -> int:
    """Initial weights and per-step draws come from this seed: checker i's from run.seed + i, so each differs
    from the teacher's."""
    return config.run.seed + checker_index(name)


def train_stage(
    name: str,
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    config_path: str | Path | None = None,
    overrides: list[str] | None = None,
    resume: bool = False,
    progress: bool = True,
) -> LoopResult:
    """Train one stage into `run_dir` (creating it), resuming its last checkpoint when `resume`. `checkers`
    trains checker-1, checker-2, ... in turn, each resumable on its own."""
    run_dir = Path(run_dir)
    distributed.init()
    try:
        config = resolve_config(run_dir, config_path, list(overrides or []), data)
        members = stage_members(name, config)
        saved = [m for m in members if latest_step(run_dir, m) is not None]
        if resume and not saved:
            raise InputError(f"{run_dir}: no saved {name} state to resume from (drop --resume to start)")
        if config.run.threads > 0:
            torch.set_num_threads(config.run.threads)
        require_hardware(config.run.precision)
        if distributed.is_main():
            run_dir.mkdir(parents=True, exist_ok=True)
            save_config(run_dir, config)
        distributed.barrier()
        results = []
        began = time.perf_counter()
        for member in members:
            member_resume = resume and member in saved
            if not member_resume and member in saved and distributed.is_main():
                # A fresh start must not silently continue from, or mix with, an earlier run of the stage.
                import shutil

                for folder in stage_state_dirs(run_dir, member):
                    shutil.rmtree(folder, ignore_errors=True)
            distributed.barrier()
            result = _train_member(member, config, run_dir, member_resume, progress)
            results.append(result)
            if result.interrupted:
                break
        if not results:
            result = LoopResult(name, 0, 0, False, 0.0, {})
        elif len(results) > 1:  # steps summed over the members, so seconds per step stays per step
            result = LoopResult(name, sum(r.start_step for r in results), sum(r.end_step for r in results),
                                results[-1].interrupted, 0.0, results[-1].last_metrics)
        result.seconds = time.perf_counter() - began
        # Leave together: a rank tearing down gloo while its peer still talks to it can abort the process.
        distributed.barrier()
        return result
    finally:
        # DistributedDataParallel wrappers sit in reference cycles that hold the process group; left to the
        # collector at interpreter exit, gloo's threads can die with the interpreter half torn down (SIGABRT).
        gc.collect()
        distributed.shutdown()


def _train_member(member: str, config: TrainConfig, run_dir: Path, resume: bool, progress: bool) -> LoopResult:
    """Build one member's stage and run the loop; the stage goes out of scope on return."""
    torch.manual_seed(_stage_seed(config, member))  # model initialisation: identical on every rank
    stage = build_stage(member, config, run_dir)
    settings = LoopSettings(
        steps=stage_steps(config, member),
        log_every=config.run.log_every,
        checkpoint_every=config.run.checkpoint_every,
        resume=resume,
        progress=progress,
        seed=_stage_seed(config, member),
        precision=config.run.precision,
    )
    result = run_stage(stage, run_dir, settings)
    if hasattr(stage, "finish") and not result.interrupted:
        stage.finish(result)
    return result
