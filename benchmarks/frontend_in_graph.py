"""The front end inside the encoder graph (`s2i-export onnx --frontend-in-graph`) against the default path,
the runtime's front end (its C extension when built, else numpy) followed by the log-Mel encoder session:
same weights, same clips, ONNX Runtime CPU.

    python -m benchmarks.frontend_in_graph [--run RUN] [--threads 1] [--seconds 10] [--batch-sizes 1,32]
                                           [--repeats 5] [--json]

Without --run the model is a random-weight stand-in with the shapes64 architecture (speed does not depend
on the weights). Per batch size, interleaved after a warm-up: the whole encoder stage each way, and the
two front ends alone (the runtime's `logmel_batch` and the front-end graph by itself). Figures: ms per batch
(min / median / max over rounds) and the spread of the per-round ratio in-graph / default, which a slow
spell on a shared machine hits alike on both sides.

Threads: ONNX Runtime and the runtime's front end get --threads; BLAS reads OMP_NUM_THREADS /
OPENBLAS_NUM_THREADS when numpy loads, so set them on the command line (`benchmarks.run` pins them itself).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .common import interleaved, paired_ratios, spread

DEFAULT = "runtime front end + encoder (default)"
IN_GRAPH = "in-graph front end + encoder"
NUMPY_FRONTEND = "runtime front end alone"
GRAPH_FRONTEND = "front-end graph alone"


def export_pair(run_dir: Path, work: Path) -> tuple[Path, Path, Path]:
    """(log-Mel bundle, in-graph bundle, front-end graph) exported from the same run."""
    from s2i_export.onnx_export import export_bundle, export_frontend
    from s2i_runtime.bundle import load_bundle

    default = export_bundle(run_dir, work / "bundle-logmel")
    in_graph = export_bundle(run_dir, work / "bundle-in-graph", frontend_in_graph=True)
    frontend = work / "frontend.onnx"
    export_frontend(frontend, load_bundle(default).frontend)
    return default, in_graph, frontend


def speech_like_clips(count: int, seconds: float, seed: int = 0) -> list[np.ndarray]:
    """The end-to-end benchmark's kind of clip (16 kHz), as float32 samples."""
    from .end_to_end import speech_like_signals

    return [signal.astype(np.float32) for signal in speech_like_signals(count, seconds, seed)]


def contenders(default_bundle: Path, in_graph_bundle: Path, frontend_graph: Path, clips: Sequence[np.ndarray],
               threads: int) -> tuple[dict[str, Callable[[], Any]], float]:
    """The four timed calls for one batch, and the largest embedding difference between the two paths."""
    from s2i_export.probes import ort_session, wave_batch
    from s2i_runtime.bundle import ENCODER_FILE, load_bundle
    from s2i_runtime.frontend import logmel_batch

    spec = load_bundle(default_bundle).frontend
    mel_name, frames_name = load_bundle(default_bundle).encoder_inputs
    wave_name, samples_name = load_bundle(in_graph_bundle).encoder_inputs
    encoder = ort_session(default_bundle / ENCODER_FILE, threads)
    in_graph = ort_session(in_graph_bundle / ENCODER_FILE, threads)
    frontend = ort_session(frontend_graph, threads)
    clips = list(clips)

    def numpy_frontend() -> tuple[np.ndarray, np.ndarray]:
        return logmel_batch(clips, spec, threads=threads)

    def default_path() -> np.ndarray:
        mel, lengths = numpy_frontend()
        return encoder.run(None, {mel_name: mel, frames_name: lengths})[0]

    def waveform_feed() -> dict[str, np.ndarray]:
        # Padding the clips into one array is part of this path's work, as it is in the runtime.
        batch = wave_batch("clips", clips)
        return {wave_name: batch.waveform, samples_name: batch.num_samples}

    def in_graph_path() -> np.ndarray:
        return in_graph.run(None, waveform_feed())[0]

    def graph_frontend() -> Any:
        return frontend.run(None, waveform_feed())

    difference = float(np.abs(default_path() - in_graph_path()).max())
    runs = {DEFAULT: default_path, IN_GRAPH: in_graph_path, NUMPY_FRONTEND: numpy_frontend,
            GRAPH_FRONTEND: graph_frontend}
    return runs, difference


def run_in_graph(run_dir: Path, work: Path, *, batch_sizes: Sequence[int], seconds: float, repeats: int,
                 warmup: int, threads: int, progress: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """The section as data: per batch size, ms per batch of each contender and the paired ratios."""
    progress("in-graph front end: exporting both bundles")
    default, in_graph, frontend = export_pair(run_dir, work)
    clips = speech_like_clips(max(batch_sizes), seconds)
    section: dict[str, Any] = {"seconds_per_clip": seconds, "repeats": repeats, "threads": threads, "batches": {}}
    for batch in batch_sizes:
        progress(f"in-graph front end: batch {batch}")
        runs, difference = contenders(default, in_graph, frontend, clips[:batch], threads)
        times = interleaved(runs, repeats, warmup)
        section["batches"][str(batch)] = {
            "ms_per_batch": {name: {k: v * 1e3 for k, v in spread(t).items()} for name, t in times.items()},
            "in_graph_over_default": paired_ratios(times[IN_GRAPH], times[DEFAULT]),
            "graph_frontend_over_numpy": paired_ratios(times[GRAPH_FRONTEND], times[NUMPY_FRONTEND]),
            "max_embedding_difference": difference,
        }
    return section


def markdown_lines(section: dict[str, Any]) -> list[str]:
    from .report import _spread_text, _table

    lines = [f"## Front end in the encoder graph: {section['seconds_per_clip']:g} s clips, ONNX Runtime CPU, "
             f"{section['threads']} thread(s), {section['repeats']} rounds", ""]
    rows = [[batch, name, _spread_text(ms)]
            for batch, block in section["batches"].items() for name, ms in block["ms_per_batch"].items()]
    lines += _table(["batch", "contender", "ms per batch: min / median / max"], rows) + [""]
    rows = [[batch, _spread_text(block["in_graph_over_default"]), _spread_text(block["graph_frontend_over_numpy"]),
             f"{block['max_embedding_difference']:.1e}"] for batch, block in section["batches"].items()]
    lines += _table(["batch", "in-graph / default (per round)", "front-end graph / runtime front end (per round)",
                     "max embedding difference"], rows) + [""]
    return lines


def _int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.frontend_in_graph",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="run directory (default: a random shapes64 stand-in)")
    parser.add_argument("--threads", type=int, default=1, help="threads for ONNX Runtime, numpy and BLAS")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch-sizes", type=_int_list, default=[1, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the section as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="s2i-bench-ingraph-") as tmp:
        work = Path(tmp)
        run_dir = args.run
        if run_dir is None:
            from .random_run import make_random_run

            run_dir = make_random_run(work / "random-run")
        section = run_in_graph(run_dir, work, batch_sizes=args.batch_sizes, seconds=args.seconds,
                               repeats=args.repeats, warmup=args.warmup, threads=args.threads,
                               progress=lambda m: print(f"[bench] {m}", file=sys.stderr, flush=True))
    print(json.dumps(section, indent=2) if args.json else "\n".join(markdown_lines(section)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
