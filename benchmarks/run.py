"""The benchmark suite's one entry command: lean runtime against the PyTorch baseline.

    python -m benchmarks.run --run RUN --bundle BUNDLE            # the trained model (bundle = its export)
    python -m benchmarks.run                                      # a random-weight stand-in, default sizes
    python -m benchmarks.run --quick                              # small sizes, a minute or so

Writes benchmarks/results/<date>-<host>/{results.json,results.md,e2e.png} (or under --out) and prints the
markdown. Sections: frontend, e2e, cold, gpu, int8, ingraph (--sections to choose). Thread counts are fixed with
--threads (default: the usable cores) for ONNX Runtime, torch and the BLAS pools alike.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from .common import pin_thread_env, results_dir_name

SECTIONS = ("frontend", "e2e", "cold", "gpu", "int8", "ingraph")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
README = Path(__file__).resolve().parent / "README.md"
README_START, README_END = "<!-- bench:latest:start -->", "<!-- bench:latest:end -->"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _sections(text: str) -> list[str]:
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return chosen


def parser() -> argparse.ArgumentParser:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="run directory (encoder/generator safetensors); default: a random "
                   "stand-in with the shapes64 architecture")
    p.add_argument("--bundle", type=Path, help="the run's exported bundle (default RUN/bundle, else exported now)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results root; files go to OUT/<date>-<host>/")
    p.add_argument("--threads", type=int, default=usable, help=f"threads for every library (default {usable})")
    p.add_argument("--sections", type=_sections, default=list(SECTIONS), help=",".join(SECTIONS))
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats (a look, not a result)")
    p.add_argument("--batch-sizes", type=_int_list, default=None, help="end-to-end batch sizes (default 1,8,32)")
    p.add_argument("--clip-seconds", type=float, default=None, help="end-to-end clip length (default 3)")
    p.add_argument("--repeats", type=int, default=None, help="end-to-end repeats (default 20)")
    p.add_argument("--frontend-clips", type=int, default=None, help="front-end clips (default 64)")
    p.add_argument("--frontend-seconds", type=float, default=None, help="front-end clip length (default 10)")
    p.add_argument("--cold-repeats", type=int, default=None, help="cold-start repeats (default 5)")
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out (it compiles ~30 s per shape)")
    p.add_argument("--data", type=Path, default=None, help="Spoken-Shapes data for the INT8 judge check "
                   "(default: the run's own dataset)")
    p.add_argument("--update-readme", action="store_true", help="put the tables into benchmarks/README.md")
    p.add_argument("--note", default="", help="a remark stored with the results (e.g. 'machine was loaded')")
    return p


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Sizes for this run: the defaults, --quick's small ones, then explicit options."""
    quick = args.quick
    chosen = {
        "batch_sizes": [1, 4, 8] if quick else [1, 8, 32],
        "clip_seconds": 2.0 if quick else 3.0,
        "repeats": 5 if quick else 20,
        "warmup": 1 if quick else 3,
        "frontend_clips": 16 if quick else 64,
        "frontend_seconds": 5.0 if quick else 10.0,
        "frontend_repeats": 3 if quick else 7,
        "cold_repeats": 2 if quick else 5,
        "ingraph_batch_sizes": [1, 4] if quick else [1, 32],
        "ingraph_seconds": 2.0 if quick else 10.0,
        "ingraph_repeats": 3 if quick else 7,
    }
    for key in ("batch_sizes", "clip_seconds", "repeats", "frontend_clips", "frontend_seconds", "cold_repeats"):
        value = getattr(args, key)
        if value is not None:
            chosen[key] = value
    return chosen


class Reporter:
    """Progress lines on stderr: a rich status spinner on a terminal, plain lines otherwise."""

    def __init__(self) -> None:
        self._status = None
        if sys.stderr.isatty():
            from rich.console import Console

            self._status = Console(stderr=True).status("starting")
            self._status.start()

    def __call__(self, message: str) -> None:
        if self._status is not None:
            self._status.update(message)
        else:
            print(f"[bench] {message}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()


def resolve_model(args: argparse.Namespace, work: Path, progress) -> tuple[Path, Path, str]:
    """(run_dir, bundle_dir, description)."""
    if args.run is None:
        if args.bundle is not None:
            # The stand-in is exported into --bundle: never over a bundle that exists (the shipped one, say).
            raise SystemExit(f"error: --bundle {args.bundle} needs --run (the run it was exported from); "
                             "without --run the benchmark builds its own random stand-in")
        from .random_run import make_random_bundle

        progress("building a random-weight stand-in model (shapes64 sizes)")
        run_dir, bundle = make_random_bundle(work / "random-run")
        return run_dir, bundle, "random weights, shapes64 architecture (stand-in until the trained default model)"
    if not args.run.is_dir():
        raise SystemExit(f"error: {args.run}: run directory does not exist")
    bundle = args.bundle or args.run / "bundle"
    if not (bundle / "s2i.json").is_file():
        if args.bundle is not None:
            raise SystemExit(f"error: {bundle}: not a bundle (no s2i.json)")
        from s2i_export.onnx_export import export_bundle

        progress(f"exporting {args.run} to a bundle")
        bundle = export_bundle(args.run, work / "bundle")
    return args.run, bundle, f"run {args.run.resolve()}, bundle {Path(bundle).resolve()}"


def run_suite(args: argparse.Namespace, progress) -> tuple[dict[str, Any], Path]:
    from .common import machine_info, pin_torch_threads

    size = settings(args)
    now = dt.datetime.now()
    results: dict[str, Any] = {"date": now.isoformat(timespec="seconds"), "machine": machine_info(args.threads),
                               "settings": size, "sections": args.sections, "skipped_sections": {}}
    if args.note:
        results["note"] = args.note
    try:
        import torch  # noqa: F401 - the baseline needs it; without it only the runtime could be timed
    except ImportError as exc:
        raise SystemExit(f"error: the PyTorch baseline needs torch ({exc}); install s2i[train]") from None
    pin_torch_threads(args.threads)
    out_dir = args.out / results_dir_name(when=now)
    with tempfile.TemporaryDirectory(prefix="s2i-bench-") as tmp:
        work = Path(tmp)
        run_dir, bundle, description = resolve_model(args, work, progress)
        results["model"] = {"run": str(run_dir), "bundle": str(bundle), "description": description}

        if "frontend" in args.sections:
            from .frontend import run_frontend

            progress("front end")
            results["frontend"] = run_frontend(size["frontend_clips"], size["frontend_seconds"],
                                               size["frontend_repeats"])

        int8_bundle = None
        if "int8" in args.sections:
            from .int8 import prepare_int8

            progress("INT8 generator: quantising and checking the judge accuracy")
            results["int8"] = prepare_int8(run_dir, bundle, work / "int8", data=args.data, threads=args.threads)
            int8_bundle = results["int8"].get("bundle")

        if "e2e" in args.sections:
            from .end_to_end import ratios, run_end_to_end

            results["end_to_end"] = run_end_to_end(
                run_dir, bundle, work, batch_sizes=size["batch_sizes"], seconds=size["clip_seconds"],
                repeats=size["repeats"], warmup=size["warmup"], threads=args.threads,
                compile_models=not args.no_compile, int8_bundle=int8_bundle, progress=progress,
            )
            results["end_to_end_ratios"] = ratios(results["end_to_end"])

        if "cold" in args.sections:
            from .cold_start import run_cold_start
            from .end_to_end import write_wavs

            (wav,) = write_wavs(work / "cold-wav", 1, size["clip_seconds"])
            results["cold_start"] = run_cold_start(run_dir, bundle, wav, work / "cold", repeats=size["cold_repeats"],
                                                   threads=args.threads, progress=progress)

        if "ingraph" in args.sections:
            from .frontend_in_graph import run_in_graph

            results["frontend_in_graph"] = run_in_graph(
                run_dir, work / "ingraph", batch_sizes=size["ingraph_batch_sizes"], seconds=size["ingraph_seconds"],
                repeats=size["ingraph_repeats"], warmup=size["warmup"], threads=args.threads, progress=progress,
            )

        if "gpu" in args.sections:
            from .end_to_end import write_wavs
            from .gpu import run_gpu

            progress("GPU section")
            paths = write_wavs(work / "gpu-wavs", max(size["batch_sizes"]), size["clip_seconds"])
            results["gpu"] = run_gpu(run_dir, bundle, paths, batch_sizes=size["batch_sizes"],
                                     frontend_clips=size["frontend_clips"], frontend_seconds=size["frontend_seconds"],
                                     repeats=size["repeats"], warmup=size["warmup"], progress=progress)
    return results, out_dir


def update_readme(markdown_text: str, results_dir: Path, readme: Path = README) -> None:
    """Replace the block between the README's markers with the latest tables (plot linked relatively)."""
    from s2i_runtime.fsutil import atomic_write_text

    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        raise SystemExit(f"error: {readme} lacks the {README_START} / {README_END} markers")
    relative = os.path.relpath(results_dir, readme.parent)
    body = markdown_text.replace("](e2e.png)", f"]({relative}/e2e.png)")
    # The README has its own title; demote the results' headings by one level.
    body = "\n".join("#" + line if line.startswith("#") else line for line in body.splitlines())
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    atomic_write_text(readme, f"{head}{README_START}\n_From `{relative}`._\n\n{body}\n{README_END}{tail}")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.threads < 1:
        raise SystemExit("error: --threads must be at least 1")
    pin_thread_env(args.threads)  # before numpy/torch load their thread pools
    from .report import write_results

    progress = Reporter()
    try:
        results, out_dir = run_suite(args, progress)
        written = write_results(results, out_dir)
    finally:
        progress.close()
    text = written["markdown"].read_text(encoding="utf-8")
    print(text)
    if args.update_readme:
        update_readme(text, out_dir)
    print(f"results: {out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
