"""End to end, warm: WAV files -> PIL images, per batch size, lean runtime against the PyTorch baseline.

Every contender does the whole job for a batch of B files: decode the WAV (the same decoder for all),
log-Mel front end (numpy in the runtime, `logmel_torch` in the baseline), speech encoder, generator,
uint8 RGB PIL images. Models are loaded and warmed up before timing (torch.compile's compilation happens
in its warm-up and is reported apart). One timed call = one batch of B inputs -> B images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .common import interleaved, paired_ratios, summarise

RUNTIME = "runtime: onnxruntime cpu fp32"
RUNTIME_INT8 = "runtime: onnxruntime cpu int8 generator"
EAGER = "pytorch eager (baseline)"
COMPILED = "pytorch torch.compile"
# One untimed call before each timed one, for every contender alike: the first call after another library ran
# finds that library's data in the caches and its threads on the cores.
SETTLE_CALLS = 1


def speech_like_signals(count: int, seconds: float, seed: int = 0, rate: int = 16000) -> list[np.ndarray]:
    """`count` float64 signals of noise-modulated tones at `rate` (speech-like energy, all `seconds` long)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    signals = []
    for _ in range(count):
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t) ** 2
        signals.append(envelope * (0.3 * np.sin(2 * np.pi * rng.uniform(120, 300) * t)
                                   + 0.05 * rng.standard_normal(t.size)))
    return signals


def write_wavs(directory: Path, count: int, seconds: float, seed: int = 0) -> list[Path]:
    """`count` 16-bit mono 16 kHz WAV files of `speech_like_signals`."""
    import wave

    directory.mkdir(parents=True, exist_ok=True)
    rate = 16000
    paths = []
    for index, signal in enumerate(speech_like_signals(count, seconds, seed, rate)):
        pcm = np.clip(signal * 32767 * 0.5, -32768, 32767).astype(np.int16)
        path = directory / f"clip{index:03d}.wav"
        with wave.open(str(path), "wb") as handle:
            handle.setnchannels(1)
            handle.setsampwidth(2)
            handle.setframerate(rate)
            handle.writeframes(pcm.tobytes())
        paths.append(path)
    return paths


def _runtime_contender(bundle: Path | str, batch: int, threads: int, paths: Sequence[Path],
                       precision: str = "fp32") -> tuple[Callable[[], object], Any]:
    from s2i_runtime.pipeline import Pipeline

    pipe = Pipeline.load(bundle, backend="onnxruntime", device="cpu", batch_size=batch, threads=threads,
                         precision=precision)
    inputs = [str(p) for p in paths[:batch]]
    return (lambda: pipe.generate(inputs, seed=0)), pipe


def _torch_contender(baseline: Any, batch: int, paths: Sequence[Path]) -> Callable[[], object]:
    from s2i_runtime.audio import load_audio

    def run() -> object:
        clips = [load_audio(str(p)) for p in paths[:batch]]
        return baseline.pil_images(clips, seed=0)

    return run


def max_pixel_difference(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Largest |difference| between two lists of PIL images, in 8-bit levels."""
    worst = 0
    for x, y in zip(a, b, strict=True):
        worst = max(worst, int(np.abs(np.asarray(x, np.int16) - np.asarray(y, np.int16)).max()))
    return worst


def run_end_to_end(run_dir: Path | str, bundle: Path | str, work_dir: Path, *, batch_sizes: Sequence[int] = (1, 8, 32),
                   seconds: float = 3.0, repeats: int = 20, warmup: int = 2, threads: int = 2,
                   compile_models: bool = True, int8_bundle: str | None = None,
                   progress: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """Per batch size and contender: p50/p95 latency of one batch call and images/s; plus a pixel
    check that the runtime and the eager baseline produce the same images."""
    import torch

    from .common import pin_torch_threads
    from .torch_baseline import TorchBaseline

    pin_torch_threads(threads)
    paths = write_wavs(work_dir / "wavs", max(batch_sizes), seconds)
    eager = TorchBaseline(run_dir)
    compiled = TorchBaseline(run_dir, compile_models=True) if compile_models else None
    result: dict[str, Any] = {
        "clip_seconds": seconds, "repeats": repeats, "warmup": warmup, "threads": threads,
        "torch_threads": torch.get_num_threads(), "batches": {}, "compile_seconds": {},
    }
    for batch in batch_sizes:
        progress(f"end to end, batch {batch}")
        runs: dict[str, Callable[[], object]] = {}
        runtime_run, pipe = _runtime_contender(bundle, batch, threads, paths)
        runs[RUNTIME] = runtime_run
        int8_pipe = None
        if int8_bundle is not None:
            runs[RUNTIME_INT8], int8_pipe = _runtime_contender(int8_bundle, batch, threads, paths, "int8")
        runs[EAGER] = _torch_contender(eager, batch, paths)
        if compiled is not None:
            compiled_run = _torch_contender(compiled, batch, paths)
            started = time.perf_counter()
            compiled_run()  # compiles for this batch shape; the timed warm-up below then runs warm
            result["compile_seconds"][str(batch)] = round(time.perf_counter() - started, 2)
            runs[COMPILED] = compiled_run
        eager_images = runs[EAGER]()
        checks = {"max_pixel_diff_runtime_vs_eager": max_pixel_difference(runs[RUNTIME](), eager_images)}
        if COMPILED in runs:
            checks["max_pixel_diff_compile_vs_eager"] = max_pixel_difference(runs[COMPILED](), eager_images)
        times = interleaved(runs, repeats, warmup, settle=SETTLE_CALLS)
        rows = {}
        for name, seconds_list in times.items():
            stats = summarise(seconds_list)
            stats["images_per_s"] = batch / (stats["p50_ms"] / 1e3)
            rows[name] = stats
        result["batches"][str(batch)] = {"contenders": rows, **checks}
        pipe.close()
        if int8_pipe is not None:
            int8_pipe.close()
    return result


def ratios(result: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per batch size: runtime speed-up over eager (latency) and throughput over eager and compile; the
    spreads are min / median / max of the per-round ratios (one call takes a whole batch, so the time ratio
    is the throughput ratio)."""
    out: dict[str, dict[str, float]] = {}
    for batch, block in result["batches"].items():
        rows = block["contenders"]
        runtime = rows[RUNTIME]
        entry = {"runtime_vs_eager_latency": rows[EAGER]["p50_ms"] / runtime["p50_ms"],
                 "runtime_vs_eager_throughput": runtime["images_per_s"] / rows[EAGER]["images_per_s"],
                 "runtime_vs_eager_spread": paired_ratios(rows[EAGER]["times_ms"], runtime["times_ms"])}
        if COMPILED in rows:
            entry["runtime_vs_compile_throughput"] = runtime["images_per_s"] / rows[COMPILED]["images_per_s"]
            entry["runtime_vs_compile_spread"] = paired_ratios(rows[COMPILED]["times_ms"], runtime["times_ms"])
            entry["compile_vs_eager_throughput"] = rows[COMPILED]["images_per_s"] / rows[EAGER]["images_per_s"]
        if RUNTIME_INT8 in rows:
            entry["int8_vs_fp32_throughput"] = rows[RUNTIME_INT8]["images_per_s"] / runtime["images_per_s"]
            if COMPILED in rows:
                entry["int8_vs_compile_throughput"] = (rows[RUNTIME_INT8]["images_per_s"]
                                                       / rows[COMPILED]["images_per_s"])
                entry["int8_vs_compile_spread"] = paired_ratios(rows[COMPILED]["times_ms"],
                                                                rows[RUNTIME_INT8]["times_ms"])
        out[batch] = entry
    return out
