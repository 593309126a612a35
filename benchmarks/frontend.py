"""Front-end speed: the runtime's log-Mel (its C extension when built, and its numpy path) against librosa and
our torch front end (training).

    python -m benchmarks.frontend [--clips 64] [--seconds 10] [--repeats 5] [--json]

Contenders run interleaved (A B C A B C ...) after a warm-up; each figure is the median over repeats of the
time for all clips, divided by the clip count. Thread counts are those of the process (state them with
OMP_NUM_THREADS); the table lists them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from s2i_runtime import native_frontend
from s2i_runtime.frontend import FrontendSpec, logmel, logmel_batch

from .common import paired_ratios, spread


def make_clips(count: int, seconds: float, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    samples = int(seconds * FrontendSpec().sample_rate)
    return [(0.1 * rng.standard_normal(samples)).astype(np.float32) for _ in range(count)]


BATCH, ONE_CLIP, ONE_CLIP_ALL = ("runtime, batch", "runtime, one clip at a time",
                                 "runtime, one clip at a time on all cores")


def _on_numpy(run: Callable[[], object]) -> Callable[[], object]:
    """`run` with the runtime's C front end switched off (S2I_FRONTEND=numpy) for its duration."""

    def numpy_run() -> object:
        previous = os.environ.get(native_frontend.ENV_SWITCH)
        os.environ[native_frontend.ENV_SWITCH] = "numpy"
        try:
            return run()
        finally:
            if previous is None:
                del os.environ[native_frontend.ENV_SWITCH]
            else:
                os.environ[native_frontend.ENV_SWITCH] = previous

    return numpy_run


def contenders(clips: list[np.ndarray]) -> dict[str, Callable[[], object]]:
    """The runtime as it runs here (its C front end when built), its numpy path when that differs, and the
    references."""
    runs: dict[str, Callable[[], object]] = {
        BATCH: lambda: logmel_batch(clips),
        ONE_CLIP: lambda: [logmel(c) for c in clips],
        ONE_CLIP_ALL: lambda: [logmel(c, threads=0) for c in clips],
    }
    if native_frontend.describe()["implementation"] == "c":
        runs["runtime numpy path, batch"] = _on_numpy(runs[BATCH])
        runs["runtime numpy path, one clip at a time"] = _on_numpy(runs[ONE_CLIP])
    try:
        import librosa
        import scipy.signal

        window = scipy.signal.get_window("hamming", 400, fftbins=False)

        def librosa_one(clip: np.ndarray) -> np.ndarray:
            y = clip - clip.mean()
            y = librosa.effects.preemphasis(y, coef=0.97, zi=[0.0])
            mel = librosa.feature.melspectrogram(
                y=y, sr=16000, n_fft=400, hop_length=160, win_length=400, window=window, center=True,
                pad_mode="reflect", power=2.0, n_mels=40, fmin=20.0, fmax=8000.0,
            )
            return librosa.power_to_db(mel, ref=np.max, amin=1e-10, top_db=80.0)

        runs["librosa"] = lambda: [librosa_one(c) for c in clips]
    except ImportError:
        pass
    try:
        import torch

        from s2i_train.frontend import logmel_torch

        waves = torch.from_numpy(np.stack(clips))
        lengths = torch.full((len(clips),), waves.shape[1])
        runs["torch (training), batch"] = lambda: logmel_torch(waves, lengths)
    except ImportError:
        pass
    torchaudio_run = _torchaudio_contender(clips)
    if torchaudio_run is not None:
        runs["torchaudio MelSpectrogram, batch"] = torchaudio_run
    return runs


def _torchaudio_contender(clips: list[np.ndarray]) -> Callable[[], object] | None:
    """torchaudio's MelSpectrogram + AmplitudeToDB with our spec's sizes (speed reference only: it has no
    per-utterance DC removal, pre-emphasis or padding-aware max, so its numbers differ slightly)."""
    try:
        import torch
        import torchaudio
    except ImportError:
        return None
    spec = FrontendSpec()
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=spec.sample_rate, n_fft=spec.n_fft, win_length=spec.win_length, hop_length=spec.hop_length,
        f_min=spec.fmin, f_max=spec.fmax, n_mels=spec.n_mels, window_fn=torch.hamming_window,
        wkwargs={"periodic": False}, center=True, pad_mode="reflect", power=2.0, norm="slaney", mel_scale="slaney",
    )
    to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=80.0)
    waves = torch.from_numpy(np.stack(clips))

    def run() -> object:
        with torch.inference_mode():
            return to_db(mel(waves))

    return run


def run_frontend(clips: int = 64, seconds: float = 10.0, repeats: int = 5) -> dict:
    """The section as data: ms per clip (median over repeats) and speed-ups over librosa."""
    times = measure(contenders(make_clips(clips, seconds)), repeats)
    per_clip = {name: statistics.median(t) / clips * 1e3 for name, t in times.items()}
    baseline = per_clip.get("librosa")
    torch_ms = per_clip.get("torch (training), batch")
    return {
        "runtime_frontend": native_frontend.describe(),
        "clips": clips,
        "seconds_per_clip": seconds,
        "repeats": repeats,
        "ms_per_clip": per_clip,
        "ms_per_clip_spread": {name: {k: v / clips * 1e3 for k, v in spread(t).items()} for name, t in times.items()},
        "vs_librosa_spread": ({name: paired_ratios(times["librosa"], t) for name, t in times.items()}
                              if "librosa" in times else {}),
        "speedup_vs_librosa": {name: baseline / ms for name, ms in per_clip.items()} if baseline else {},
        "speedup_vs_torch": {name: torch_ms / ms for name, ms in per_clip.items()} if torch_ms else {},
    }


def measure(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    for run in runs.values():
        run()  # warm-up: caches, thread pools, lazy imports
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()

    clips = make_clips(args.clips, args.seconds)
    times = measure(contenders(clips), args.repeats)
    per_clip = {name: statistics.median(t) / args.clips * 1e3 for name, t in times.items()}
    baseline = per_clip.get("librosa")
    result = {
        "clips": args.clips,
        "seconds_per_clip": args.seconds,
        "repeats": args.repeats,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset")},
        "ms_per_clip": per_clip,
        "speedup_vs_librosa": {name: baseline / ms for name, ms in per_clip.items()} if baseline else {},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"log-Mel front end, {args.clips} clips x {args.seconds:g} s, median of {args.repeats} "
          f"(cores {os.cpu_count()}, OMP_NUM_THREADS={result['machine']['OMP_NUM_THREADS']})")
    print(f"| {'contender':<38} | {'ms/clip':>8} | {'vs librosa':>10} |")
    print(f"|{'-' * 40}|{'-' * 10}|{'-' * 12}|")
    for name, ms in per_clip.items():
        ratio = f"{baseline / ms:.2f}x" if baseline else "n/a"
        print(f"| {name:<38} | {ms:8.2f} | {ratio:>10} |")


if __name__ == "__main__":
    main()
