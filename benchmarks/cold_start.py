"""Cold start: a whole new process that turns one WAV into one PNG, runtime CLI against the torch script,
and against a process that only imports torch.

    runtime:      s2i-run infer one.wav --bundle BUNDLE --out DIR --threads N
    baseline:     python -m benchmarks.torch_baseline one.wav --run RUN --out one.png --threads N
    import torch: python -c "import torch"

Wall time is perf_counter around the child's whole life; peak RSS is that child's own ru_maxrss from
GNU time (`%M`) or a small spawning helper — not RUSAGE_CHILDREN of the benchmark, which is the maximum
over every child reaped so far and starts from the benchmark's own RSS at fork. The commands
alternate, after one untimed run each so that both read their files from a warm page cache (and the runtime
has its optimised graphs cached, as after its first run on any machine): this measures interpreter start,
imports, model loading and one inference — not disk speed.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import THREAD_ENV_VARS, paired_ratios

RUNTIME = "runtime: s2i-run infer"
BASELINE = "pytorch baseline script"
IMPORT_TORCH = "python -c 'import torch'"
REPO_ROOT = Path(__file__).resolve().parent.parent


def runtime_command(wav: Path, bundle: Path | str, out_dir: Path, threads: int) -> list[str]:
    script = Path(sys.executable).with_name("s2i-run")
    launcher = [str(script)] if script.is_file() else [sys.executable, "-c", "from s2i_runtime.cli import main; main()"]
    return [*launcher, "infer", str(wav), "--bundle", str(bundle), "--out", str(out_dir), "--threads", str(threads)]


def baseline_command(wav: Path, run_dir: Path | str, out_png: Path, threads: int) -> list[str]:
    return [sys.executable, "-m", "benchmarks.torch_baseline", str(wav), "--run", str(run_dir),
            "--out", str(out_png), "--threads", str(threads)]


TIME_BINARY = "/usr/bin/time"
# Fallback when GNU time is missing: a small Python (no site) that spawns the command and reports the
# child's own ru_maxrss. Spawning straight from the benchmark process would not do: on Linux a child's
# ru_maxrss starts at the RSS of the process it was forked from (the benchmark has torch loaded).
_SPAWN_HELPER = (
    "import os,sys\n"
    "pid=os.posix_spawn(sys.argv[2],sys.argv[2:],os.environ)\n"
    "_,status,usage=os.wait4(pid,0)\n"
    "open(sys.argv[1],'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def rss_method() -> str:
    if Path(TIME_BINARY).is_file() and sys.platform.startswith("linux"):
        return "GNU time %M (the child's own peak RSS)"
    return "wait4 ru_maxrss via a small spawning helper (its own ~10 MB RSS is a floor)"


def run_child(command: list[str], env: dict[str, str], scratch: Path) -> tuple[float, int]:
    """(wall seconds, peak RSS in bytes) of one child process; RuntimeError when it fails."""
    report = scratch / "maxrss.txt"
    report.unlink(missing_ok=True)
    executable = shutil.which(command[0], path=env.get("PATH")) or command[0]
    if rss_method().startswith("GNU"):
        wrapped = [TIME_BINARY, "-f", "%M", "-o", str(report), executable, *command[1:]]
    else:
        wrapped = [sys.executable, "-S", "-c", _SPAWN_HELPER, str(report), executable, *command[1:]]
    started = time.perf_counter()
    done = subprocess.run(wrapped, env=env, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace").strip()[-2000:]
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}: {stderr}")
    kilobytes = int(report.read_text().split()[-1])  # GNU time and Linux ru_maxrss: kilobytes
    return wall, kilobytes * 1024


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in THREAD_ENV_VARS:
        env[name] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
    return env


def run_cold_start(run_dir: Path | str, bundle: Path | str, wav: Path, work_dir: Path, *, repeats: int = 5,
                   threads: int = 2, progress: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    work_dir.mkdir(parents=True, exist_ok=True)
    env = child_env(threads)
    # The runtime's optimised graphs go to a cache of this run's own; the untimed first run fills it.
    env["S2I_CACHE_DIR"] = str(work_dir / "graph-cache")
    commands = {
        RUNTIME: runtime_command(wav, bundle, work_dir / "runtime-out", threads),
        BASELINE: baseline_command(wav, run_dir, work_dir / "baseline.png", threads),
        IMPORT_TORCH: [sys.executable, "-c", "import torch"],
    }
    for command in commands.values():  # warm the page cache (and fail early on a broken command)
        run_child(command, env, work_dir)
    walls: dict[str, list[float]] = {name: [] for name in commands}
    peaks: dict[str, list[int]] = {name: [] for name in commands}
    for round_index in range(repeats):
        progress(f"cold start, round {round_index + 1}/{repeats}")
        for name, command in commands.items():
            wall, peak = run_child(command, env, work_dir)
            walls[name].append(wall)
            peaks[name].append(peak)
    rows = {
        name: {
            "wall_p50_s": statistics.median(walls[name]),
            "wall_min_s": min(walls[name]),
            "peak_rss_p50_mb": statistics.median(peaks[name]) / 2**20,
            "command": " ".join(commands[name]),
        }
        for name in commands
    }
    return {
        "repeats": repeats,
        "threads": threads,
        "graph_cache": env["S2I_CACHE_DIR"],
        "walls_s": walls,
        "peak_rss_mb": {name: [p / 2**20 for p in values] for name, values in peaks.items()},
        "rss_method": rss_method(),
        "contenders": rows,
        "ratios": {
            "wall_runtime_over_baseline": rows[RUNTIME]["wall_p50_s"] / rows[BASELINE]["wall_p50_s"],
            "rss_runtime_over_baseline": rows[RUNTIME]["peak_rss_p50_mb"] / rows[BASELINE]["peak_rss_p50_mb"],
            "wall_spread": paired_ratios(walls[RUNTIME], walls[BASELINE]),
            "rss_spread": paired_ratios(peaks[RUNTIME], peaks[BASELINE]),
            "wall_runtime_over_import_torch": rows[RUNTIME]["wall_p50_s"] / rows[IMPORT_TORCH]["wall_p50_s"],
            "rss_runtime_over_import_torch": rows[RUNTIME]["peak_rss_p50_mb"] / rows[IMPORT_TORCH]["peak_rss_p50_mb"],
            "wall_import_torch_spread": paired_ratios(walls[RUNTIME], walls[IMPORT_TORCH]),
            "rss_import_torch_spread": paired_ratios(peaks[RUNTIME], peaks[IMPORT_TORCH]),
        },
    }
