"""GPU correctness checks that go with the GPU timings; they need TensorRT, pycuda and a CUDA device.

    python -m benchmarks.gpu_checks --bundle BUNDLE [--max-seconds 10] [--calls 1000] [--threads 8]

On a copy of the bundle, fp32 engines are built with TF32 off (`s2i-export build-engine` without --tf32),
then:
- parity: the TensorRT backend against ONNX Runtime on the CPU, same features and noise, embeddings and
  images within PARITY_ATOL;
- exact clip: a clip of exactly --max-seconds (and ones just under it, batched together) goes through the
  TensorRT pipeline; its frame count is the engine profile's maximum;
- memory: `threads` threads make `calls` pipeline calls in all (front end in the callers, models in the
  dynamic batcher's worker); free device memory (cuMemGetInfo) after equals before, within MEMORY_SLACK.
The gpu tests run the same functions on a tiny bundle (tests/test_runtime_tensorrt.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

PARITY_ATOL = 1e-4
# cuMemGetInfo counts whole pages and other processes' use; a per-call leak is orders of magnitude more.
MEMORY_SLACK = 4 << 20


def build_fp32_engines(bundle: Path | str, work: Path, max_batch: int, max_seconds: float) -> tuple[Path, dict]:
    """A copy of the bundle with fp32, TF32-off engines for this GPU, and their engines.json record."""
    from s2i_export.tensorrt_build import EngineRequest, build_engines

    copy = Path(work) / "bundle"
    shutil.copytree(bundle, copy, dirs_exist_ok=True)
    record = build_engines(copy, EngineRequest(fp16=False, max_batch=max_batch, max_seconds=max_seconds,
                                               workspace_gb=1.0, tf32=False))
    return copy, record


def check_clips(sample_rate: int, max_seconds: float, seed: int = 0) -> list[np.ndarray]:
    """Exactly max_seconds, just under it (the widths that used to overflow the profile), and short ones."""
    rng = np.random.default_rng(seed)
    seconds = [max_seconds, max_seconds - 0.04, max_seconds - 0.07, 1.0, 2.5]
    clips = []
    for i, s in enumerate(seconds):
        t = np.arange(int(round(s * sample_rate))) / sample_rate
        tone = 0.4 * np.sin(2 * np.pi * (200.0 + 150.0 * i) * t) + 0.01 * rng.standard_normal(t.size)
        clips.append(tone.astype(np.float32))
    return clips


def check_parity(bundle: Path, clips: list[np.ndarray], max_batch: int) -> dict[str, Any]:
    """TensorRT against ONNX Runtime (CPU, fp32) on identical features and noise."""
    from s2i_runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
    from s2i_runtime.backends.tensorrt_backend import TensorRTBackend
    from s2i_runtime.batching import pad_features
    from s2i_runtime.bundle import load_bundle
    from s2i_runtime.frontend import logmel
    from s2i_runtime.noise import noise_block

    loaded = load_bundle(bundle)
    spec, dims = loaded.frontend, loaded.dims
    features = [logmel(clip, spec) for clip in clips[:max_batch]]
    mel, lengths = pad_features(features, max(f.shape[1] for f in features), spec.pad_value)
    counts = np.array([1 + i % 3 for i in range(len(features))])
    blocks = [noise_block(0, i, int(c), dims.z_dim, dims.ca_dim) for i, c in enumerate(counts)]
    z, eps = np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])
    trt, ort = TensorRTBackend(loaded, precision="fp32"), OnnxRuntimeBackend(loaded, device="cpu")
    try:
        embedding_diff = float(np.abs(trt.encode(mel, lengths) - ort.encode(mel, lengths)).max())
        image_diff = float(np.abs(trt.encode_generate(mel, lengths, z, eps, counts, max_batch)
                                  - ort.encode_generate(mel, lengths, z, eps, counts, max_batch)).max())
        precision, tf32 = trt.describe()["precision"], trt.describe()["tf32"]
    finally:
        trt.close()
        ort.close()
    return {"embedding_max_abs_diff": embedding_diff, "image_max_abs_diff": image_diff, "atol": PARITY_ATOL,
            "precision": precision, "tf32": tf32,
            "ok": precision == "fp32" and tf32 is False and max(embedding_diff, image_diff) <= PARITY_ATOL}


def check_exact_clip(bundle: Path, clips: list[np.ndarray], max_batch: int) -> dict[str, Any]:
    """Clips of exactly max_seconds and just under it, batched together, through the TensorRT pipeline."""
    from s2i_runtime import Pipeline

    with Pipeline.load(bundle, backend="tensorrt", precision="fp32", batch_size=max_batch) as pipe:
        frame_range = pipe.backend.frame_range
        frames = [pipe.features(clip, "clip").shape[1] for clip in clips]
        images = pipe.generate_arrays(clips, seed=0)
    return {"frames": frames, "engine_frame_range": list(frame_range), "images": len(images),
            "ok": max(frames) == frame_range[1] and len(images) == len(clips)}


def free_device_memory() -> int:
    """cuMemGetInfo's free bytes, with the primary context current."""
    import pycuda.driver as cuda

    from s2i_runtime.cuda.context import PrimaryContext

    cuda.init()
    context = PrimaryContext(cuda, 0)
    try:
        with context.active():
            free, _total = cuda.mem_get_info()
    finally:
        context.release()
    return int(free)


def check_memory_from_threads(bundle: Path, clips: list[np.ndarray], max_batch: int, calls: int = 1000,
                              threads: int = 8) -> dict[str, Any]:
    """`calls` pipeline calls from `threads` threads; device memory must not shrink."""
    from s2i_runtime import Pipeline

    with Pipeline.load(bundle, backend="tensorrt", precision="fp32", batch_size=max_batch, max_wait_ms=2) as pipe:
        pipe.generate_arrays(clips, seed=0)  # warm: every shape class once, the longest clip included
        before = free_device_memory()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            done = sum(1 for _ in pool.map(lambda i: pipe.generate_arrays([clips[i % len(clips)]], seed=i),
                                           range(calls)))
        after = free_device_memory()
        cuda_frontend = pipe.describe()["cuda_frontend"]
    drift = before - after
    return {"calls": done, "threads": threads, "free_before": before, "free_after": after, "drift_bytes": drift,
            "slack_bytes": MEMORY_SLACK, "cuda_frontend": cuda_frontend, "ok": done == calls and drift <= MEMORY_SLACK}


def run_checks(bundle: Path | str, work: Path | str | None = None, *, max_batch: int = 4, max_seconds: float = 10.0,
               calls: int = 1000, threads: int = 8,
               progress: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """All three checks on a copy of `bundle` (in `work`, or a temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="s2i-gpu-checks-") as tmp:
        folder = Path(work) if work is not None else Path(tmp)
        progress(f"building fp32 engines (TF32 off), batch <= {max_batch}, <= {max_seconds} s")
        copy, record = build_fp32_engines(bundle, folder, max_batch, max_seconds)
        from s2i_runtime.bundle import load_bundle

        clips = check_clips(load_bundle(copy).frontend.sample_rate, max_seconds)
        result: dict[str, Any] = {"engine": {k: record[k] for k in ("dir", "precision", "builder_flags", "tf32",
                                                                     "max_frames", "max_seconds")}}
        progress("parity against ONNX Runtime")
        result["parity"] = check_parity(copy, clips, max_batch)
        progress("a clip of exactly --max-seconds")
        result["exact_clip"] = check_exact_clip(copy, clips, max_batch)
        progress(f"{calls} calls from {threads} threads")
        result["memory"] = check_memory_from_threads(copy, clips, max_batch, calls, threads)
    result["ok"] = all(result[k]["ok"] for k in ("parity", "exact_clip", "memory"))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=None, help="bundle directory (default: the shipped model)")
    parser.add_argument("--max-batch", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)
    from s2i_runtime.bundle import default_bundle_path

    bundle = args.bundle or default_bundle_path()
    result = run_checks(bundle, max_batch=args.max_batch, max_seconds=args.max_seconds, calls=args.calls,
                        threads=args.threads, progress=lambda m: print(f"... {m}", flush=True))
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
