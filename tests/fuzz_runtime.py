"""Fuzz the runtime as an attacker would. From the repository root:

    python -m tests.fuzz_runtime --n 10000 [--bundle DIR] [--batch 250] [--json out.json]

Cases come from `fuzz_corpus.audio_case(i)` (ten families of malformed and odd audio), so any failure is
reproduced from its number alone. Stages, each asserting the runtime's contract (docs/runtime-limits.md):
  library    every case through Pipeline.generate_outcomes between two good inputs: an image or an
             InputError, the good inputs always get theirs, no warning escapes
  cli        the cases as files, `--batch` per `s2i-run infer` call (a good input first and last), each
             call a fresh interpreter under a 4 GB address-space cap: exit 0 or 2, no traceback, at most
             2 stderr lines per bad input, every good input's PNG written; its peak RSS recorded
  bombs      peak RSS of load_audio on files that declare 7 GB, never end, or are the largest accepted
  manifests  every tampered s2i.json: one line, exit 2, through `s2i-run info`
Prints the counts as one JSON object. The test suite runs small slices of the same checks.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
if str(TESTS) not in sys.path:  # run as `python -m tests.fuzz_runtime`: the helpers import each other flat
    sys.path.insert(0, str(TESTS))

from fuzz_corpus import audio_case, tampered_manifests  # noqa: E402

from s2i_runtime.errors import InputError  # noqa: E402

CLI_MEMORY_CAP_MB = 4096


def check_library(pipe, data: bytes, good: list) -> str:
    """'image' or 'input_error' for `data` between two good inputs; AssertionError for anything else."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning would be a line on a user's stderr
        outcomes = pipe.generate_outcomes([good[0], data, good[1]], seed=1)
    assert isinstance(outcomes[0], np.ndarray) and isinstance(outcomes[2], np.ndarray), outcomes
    outcome = outcomes[1]
    if isinstance(outcome, InputError):
        message = str(outcome)
        assert message and "\n" not in message and len(message) < 400, message
        return "input_error"
    assert isinstance(outcome, np.ndarray) and np.isfinite(outcome).all(), repr(outcome)
    return "image"


# The child reports its own peak (VmHWM: ru_maxrss would keep the forking parent's) into a file at exit,
# since stderr is what is being counted.
_CLI_WITH_PEAK = """
import atexit, os, re
def _peak():
    with open('/proc/self/status') as status:
        kb = re.search(r'VmHWM:\\s+(\\d+) kB', status.read()).group(1)
    with open(os.environ["S2I_FUZZ_PEAK"], "w") as out:
        out.write(kb)
atexit.register(_peak)
from s2i_runtime.cli import main
main()
"""


def run_cli(args: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    """`s2i-run ARGS` in a fresh interpreter under the memory cap: the result and its peak RSS in MB."""
    from test_cli_run import cap_memory

    with tempfile.NamedTemporaryFile(suffix=".peak") as peak_file:
        done = subprocess.run(
            [sys.executable, "-c", _CLI_WITH_PEAK, *args], capture_output=True, text=True, timeout=1800,
            stdin=subprocess.DEVNULL, preexec_fn=lambda: cap_memory(CLI_MEMORY_CAP_MB),
            env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200", "S2I_FUZZ_PEAK": peak_file.name},
        )
        text = Path(peak_file.name).read_text()
    return done, (float(text) / 1024 if text else float("nan"))


def check_cli_batch(bundle: Path | None, files: list[Path], good: list[Path], out: Path) -> dict:
    """One `s2i-run infer` call on good[0], files..., good[1]; asserts the CLI properties, returns counts."""
    inputs = [good[0], *files, good[1]]
    args = ["infer", *map(str, inputs), "--out", str(out), "--json", "--threads", "1"]
    if bundle is not None:
        args += ["--bundle", str(bundle)]
    done, peak_mb = run_cli(args)
    assert done.returncode in (0, 2), (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    report = json.loads(done.stdout)
    errors = [o for o in report["outputs"] if "error" in o]
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) <= 2 * len(errors), lines[:10]
    assert (done.returncode == 2) == bool(errors)
    for output in report["outputs"]:
        for image in output.get("images", []):
            assert Path(image).is_file(), image
    assert "images" in report["outputs"][0] and "images" in report["outputs"][-1]
    return {"inputs": len(files), "errors": len(errors), "stderr_lines": len(lines), "peak_rss_mb": peak_mb,
            "messages": [e["error"] for e in errors]}


def bomb_files(folder: Path) -> dict[str, Path]:
    from test_runtime_hardening import _samples_wav, sparse_wav

    fifo = folder / "pipe.wav"
    if not fifo.exists():
        os.mkfifo(fifo)
    return {
        "small (baseline)": _samples_wav(folder / "small.wav", 1600, 16000),
        "349 s 192 kHz 8 ch float64 (4.3 GB declared)": sparse_wav(folder / "declared.wav", 349),
        "10 min 192 kHz 8 ch float64, size unknown (7.4 GB)": sparse_wav(folder / "stream.wav", 600,
                                                                        declared=0xFFFFFFFF),
        "/dev/zero": Path("/dev/zero"),
        "named pipe": fifo,
        "29.9 s 192 kHz 8 ch float64 (367 MB, accepted)": sparse_wav(folder / "biggest.wav", 29.9),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="corpus cases (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bundle", type=Path, default=None, help="bundle (default: the shipped model)")
    parser.add_argument("--batch", type=int, default=250, help="cases per CLI call")
    parser.add_argument("--stages", default="library,cli,bombs,manifests")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    stages = set(args.stages.split(","))

    from bundle_factory import tone, write_wav

    from s2i_runtime import Pipeline
    from s2i_runtime.bundle import MANIFEST, default_bundle_path

    work = Path(tempfile.mkdtemp(prefix="s2i-fuzz-"))
    summary: dict = {"n": args.n, "seed": args.seed, "bundle": str(args.bundle or "shipped")}
    try:
        good = [write_wav(work / "good_first.wav", tone(1.0, 440.0)),
                write_wav(work / "good_last.wav", tone(1.5, 900.0, seed=1))]
        if "library" in stages:
            started = time.perf_counter()
            counts: collections.Counter = collections.Counter()
            with Pipeline.load(args.bundle, device="cpu", threads=1) as pipe:
                for i in range(args.n):
                    family, data = audio_case(i, args.seed)
                    try:
                        outcome = check_library(pipe, data, [str(g) for g in good])
                    except AssertionError as exc:
                        raise SystemExit(f"library: case {i} ({family}) broke a property: {exc}") from None
                    counts[f"{family}:{outcome}"] += 1
                    counts[outcome] += 1
            summary["library"] = {"seconds": round(time.perf_counter() - started, 1), **dict(sorted(counts.items()))}
            print(json.dumps({"library": summary["library"]}), flush=True)
        if "cli" in stages:
            started = time.perf_counter()
            totals = collections.Counter()
            peaks = []
            messages: collections.Counter = collections.Counter()
            for start in range(0, args.n, args.batch):
                folder = work / f"cli{start}"
                folder.mkdir()
                files = []
                for i in range(start, min(args.n, start + args.batch)):
                    path = folder / f"case{i:06d}.wav"
                    path.write_bytes(audio_case(i, args.seed)[1])
                    files.append(path)
                try:
                    batch = check_cli_batch(args.bundle, files, good, folder / "out")
                except AssertionError as exc:
                    raise SystemExit(f"cli: batch from case {start} broke a property: {exc}") from None
                totals.update({k: batch[k] for k in ("inputs", "errors", "stderr_lines")})
                peaks.append(batch["peak_rss_mb"])
                for message in batch["messages"]:  # the kind of error: no file name, no numbers
                    kind = re.sub(r"\d+(\.\d+)?", "N", message.split(": ", 1)[-1].split(" (")[0])
                    messages[kind[:60]] += 1
                shutil.rmtree(folder)
            summary["cli"] = {
                "seconds": round(time.perf_counter() - started, 1), "calls": len(peaks),
                "inputs": totals["inputs"], "images_written_for": totals["inputs"] - totals["errors"],
                "input_errors": totals["errors"], "stderr_lines": totals["stderr_lines"],
                "max_peak_rss_mb": round(max(peaks), 1), "exit_codes": "0 or 2 only (asserted)",
                "error_kinds": dict(messages.most_common(25)),
            }
            print(json.dumps({"cli": summary["cli"]}), flush=True)
        if "bombs" in stages:
            from test_runtime_hardening import load_in_fresh_process

            files = bomb_files(work)
            small = files.pop("small (baseline)")
            summary["bombs"] = {}
            for name, path in files.items():  # each in its own process, after the baseline file
                (base, _), (peak, result) = load_in_fresh_process(small, path)
                summary["bombs"][name] = {"baseline_rss_mb": round(base, 1), "peak_rss_mb": round(peak, 1),
                                          "result": result.replace(str(work), "")[:100]}
            print(json.dumps({"bombs": summary["bombs"]}), flush=True)
        if "manifests" in stages:
            bundle = args.bundle or default_bundle_path()
            cases = tampered_manifests((bundle / MANIFEST).read_text())
            refused = 0
            for name, raw in cases:
                copy = work / "tampered"
                shutil.rmtree(copy, ignore_errors=True)
                shutil.copytree(bundle, copy)
                (copy / MANIFEST).write_bytes(raw)
                done, _ = run_cli(["info", "--bundle", str(copy)])
                lines = [line for line in done.stderr.splitlines() if line.strip()]
                if done.returncode != 2 or len(lines) != 1 or not lines[0].startswith("error: "):
                    raise SystemExit(f"manifests: {name}: exit {done.returncode}, stderr {done.stderr[-500:]}")
                refused += 1
            summary["manifests"] = {"cases": len(cases), "refused_one_line_exit_2": refused}
            print(json.dumps({"manifests": summary["manifests"]}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(summary, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
