"""What every benchmark shares: fixed thread counts, interleaved timing, percentiles, machine facts.

Methodology (the same for every section): each contender is warmed up first, then the contenders take
turns (A B C A B C ...) so that a slow spell on a shared machine hits all of them alike; figures are
medians (and p95) over the repeats.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
LIBRARIES = ("numpy", "scipy", "onnxruntime", "onnxruntime-gpu", "onnx", "torch", "torchaudio", "librosa",
             "soxr", "pillow", "tensorrt", "pycuda")


def pin_thread_env(threads: int) -> None:
    """Set the BLAS/OpenMP pools' sizes. Only effective before numpy/torch are first imported."""
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(threads)


def pin_torch_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable once per process, before any parallel work
        pass


def interleaved(runs: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                on_round: Callable[[int], None] | None = None, settle: int = 0) -> dict[str, list[float]]:
    """Seconds per call of each contender: `warmup` untimed calls each, then `repeats` rounds A B C ...

    `settle`: untimed calls a contender makes right before each of its timed ones. Two libraries on the same
    cores disturb each other at every switch (the one that just ran still has threads spinning, and its data
    in the caches), so without them the first call after a switch pays for the other contender.
    """
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(repeats):
        for name, run in runs.items():
            for _ in range(settle):
                run()
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
        if on_round is not None:
            on_round(round_index + 1)
    return times


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def spread(values: list[float]) -> dict[str, float]:
    """min / median / max of a non-empty list."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def paired_ratios(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """Spread of numerator[i] / denominator[i] over the rounds of one interleaved run: each round's two
    figures were taken moments apart, so a slow spell on a shared machine cancels out of its ratio."""
    return spread([a / b for a, b in zip(numerator, denominator, strict=True)])


def summarise(seconds: list[float]) -> dict[str, float]:
    return {
        "p50_ms": statistics.median(seconds) * 1e3,
        "p95_ms": percentile(seconds, 95) * 1e3,
        "min_ms": min(seconds) * 1e3,
        "max_ms": max(seconds) * 1e3,
        "repeats": len(seconds),
        "times_ms": [t * 1e3 for t in seconds],
    }


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def library_versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_info(threads: int) -> dict[str, Any]:
    """What a reader needs to judge the numbers: CPU, cores, threads used, load, versions."""
    return {
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": threads,
        "thread_env": {name: os.environ.get(name, "unset") for name in THREAD_ENV_VARS},
        "load_average_1_5_15": load_average(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "libraries": library_versions(),
    }


def results_dir_name(host: str | None = None, when: _dt.datetime | None = None) -> str:
    """<date>-<host>, e.g. 2025-01-31-buildbox (host reduced to filename-safe characters)."""
    host = host or socket.gethostname()
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in host).strip("-") or "host"
    return f"{(when or _dt.datetime.now()).strftime('%Y-%m-%d')}-{safe}"
