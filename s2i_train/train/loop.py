"""The training loop every stage shares: data order, progress, metrics, checkpoints, resume, SIGINT.

A stage (judge, teacher, encoder, generator) implements `Stage`: one optimisation step, its state as a
tree, and writing its modules. `run_stage` drives it. Resume is exact because everything a step depends
on is either saved (weights, optimiser and EMA state) or a pure function of (seed, rank, step): the data
order (`StepSampler`) and every random stream (reseeded before each step, so z, eps, augmentation and the
dataset's own draws repeat exactly, and ranks differ).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from s2i_runtime.fsutil import atomic_write_text

from . import distributed
from .precision import autocast
from .state import latest_step, load_state, rng_state, save_state, seed_everything

METRICS_FILE = "metrics.jsonl"


class StepSampler:
    """Batch indices as a pure function of the step: epoch permutations seeded by (seed, epoch).

    With several processes each rank takes its own stride of the global batch, so the union over ranks
    is the batch one process would have seen with `batch_size * world_size`.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.global_batch = batch_size * world_size
        if num_items < 1:
            raise ValueError("cannot sample from an empty dataset")
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        # Small datasets: an epoch may be shorter than a batch; then draw from several epochs.
        self.steps_per_epoch = max(1, num_items // self.global_batch)
        self._cache: tuple[int, torch.Tensor] | None = None

    def _permutation(self, epoch: int) -> torch.Tensor:
        if self._cache is None or self._cache[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            repeats = -(-self.global_batch // self.num_items)
            perm = torch.cat([torch.randperm(self.num_items, generator=gen) for _ in range(repeats)])
            self._cache = (epoch, perm)
        return self._cache[1]

    def indices(self, step: int) -> list[int]:
        epoch, offset = divmod(step, self.steps_per_epoch)
        perm = self._permutation(epoch)
        chunk = perm[offset * self.global_batch : (offset + 1) * self.global_batch]
        return chunk[self.rank :: self.world_size].tolist()


class Stage(Protocol):
    name: str

    def train_step(self, step: int) -> dict[str, float]:
        """One optimisation step; returns scalar figures to log."""

    def state(self) -> dict[str, Any]:
        """Everything needed to continue exactly (weights, optimisers, EMA, ...), RNG excluded."""

    def load_state(self, tree: dict[str, Any]) -> None: ...

    def save_outputs(self, step: int) -> None:
        """Write the stage's modules into the run directory (save_module)."""


@dataclass
class LoopSettings:
    steps: int
    log_every: int = 10
    checkpoint_every: int = 200
    resume: bool = False
    progress: bool = True
    seed: int = 0
    precision: str = "fp32"


@dataclass
class LoopResult:
    stage: str
    start_step: int
    end_step: int
    interrupted: bool
    seconds: float
    last_metrics: dict[str, float]

    @property
    def seconds_per_step(self) -> float:
        done = self.end_step - self.start_step
        return self.seconds / done if done else 0.0


class StopFlag:
    """SIGINT/SIGTERM ask the loop to save and stop after the current step; a second SIGINT aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopFlag:
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not the main thread: signals stay with whoever owns them
            self._previous.clear()
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class MetricsLog:
    """metrics.jsonl: one JSON object per logged step, appended (rank 0 only)."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.path = run_dir / METRICS_FILE
        self.enabled = enabled

    def truncate_after(self, stage: str, step: int) -> None:
        """On resume, drop the lines an interrupted run logged past its last checkpoint."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record.get("stage") == stage and record.get("step", 0) > step:
                continue
            kept.append(line)
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")


class Progress:
    """A rich progress bar with live losses on a terminal; plain periodic lines otherwise (logs, nohup)."""

    def __init__(self, stage: str, total: int, start: int, enabled: bool):
        self.stage, self.total = stage, total
        self.enabled = enabled
        self.interactive = enabled and sys.stderr.isatty()
        self._bar = None
        if self.interactive:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn(f"[bold]{stage}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[losses]}"),
                console=Console(stderr=True),
            )
            self._task = self._bar.add_task(stage, total=total, completed=start, losses="")

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def update(self, step: int, metrics: dict[str, float], log_line: bool) -> None:
        text = " ".join(f"{k}={v:.3g}" for k, v in metrics.items() if isinstance(v, (int, float)))
        if self._bar is not None:
            self._bar.update(self._task, completed=step, losses=text)
        elif self.enabled and log_line:
            print(f"[{self.stage}] step {step}/{self.total} {text}", file=sys.stderr, flush=True)


def _checkpoint(stage: Stage, run_dir: Path, step: int) -> None:
    if distributed.is_main():
        stage.save_outputs(step)
        save_state(run_dir, stage.name, step, {"stage": stage.state(), "rng": rng_state()})
    distributed.barrier()


def step_seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**63 - 1)


def run_stage(stage: Stage, run_dir: str | Path, settings: LoopSettings) -> LoopResult:
    """Train `stage` to `settings.steps`, resuming from its last checkpoint when asked."""
    run_dir = Path(run_dir)
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
    metrics = MetricsLog(run_dir, distributed.is_main())
    start = 0
    if settings.resume and latest_step(run_dir, stage.name) is not None:
        start, tree = load_state(run_dir, stage.name)
        stage.load_state(tree["stage"])
        metrics.truncate_after(stage.name, start)
    else:
        metrics.truncate_after(stage.name, 0)  # a fresh start replaces the stage's earlier log
    interrupted = False
    last: dict[str, float] = {}
    began = time.perf_counter()
    tick, tick_step = began, start
    step = start
    with StopFlag() as stop, Progress(stage.name, settings.steps, start, settings.progress and
                                      distributed.is_main()) as bar:
        while step < settings.steps:
            seed_everything(step_seed(settings.seed, distributed.rank(), step))
            with autocast(settings.precision):
                last = stage.train_step(step)
            step += 1
            log_now = step % settings.log_every == 0 or step == settings.steps
            if log_now:
                now = time.perf_counter()
                record = {"stage": stage.name, "step": step, "s_per_step": (now - tick) / (step - tick_step)}
                record.update({k: float(v) for k, v in last.items()})
                metrics.write(record)
                tick, tick_step = now, step
            bar.update(step, last, log_now)
            if distributed.any_rank(stop.requested):
                interrupted = True
                break
            if settings.checkpoint_every and step % settings.checkpoint_every == 0 and step < settings.steps:
                _checkpoint(stage, run_dir, step)
        if step > start or not (run_dir / "state" / stage.name).exists():
            _checkpoint(stage, run_dir, step)
    for module in getattr(stage, "synced_modules", lambda: [])():
        if not distributed.parameters_in_sync(module):
            raise RuntimeError(f"{stage.name}: ranks ended with different weights (gradient sync is broken)")
    return LoopResult(stage.name, start, step, interrupted, time.perf_counter() - began, last)
