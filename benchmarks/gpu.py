"""GPU section, only when CUDA is present: the same end-to-end job and the front end, on the GPU.

Contenders (each one is skipped, with its reason, when it cannot run here):
- runtime: TensorRT engines of the bundle (FP16 when the engines were built so; `s2i-export build-engine`)
- runtime: ONNX Runtime, CUDA execution provider, fp32
- PyTorch eager on CUDA, fp32 and fp16 (weights and activations cast to half; front end in fp32 as in training)
- front end: the runtime's CUDA kernels (`CudaLogMel`) against `logmel_torch` on the CUDA device
and the correctness checks of `gpu_checks` (fp32 parity with TF32 off, a clip of exactly --max-seconds,
1,000 calls from threads with device memory flat), reported under "checks".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .common import interleaved, summarise


def cuda_unavailable_reason() -> str | None:
    """None when torch sees a CUDA device, else why not (the section is skipped with this reason)."""
    try:
        import torch
    except ImportError as exc:
        return f"torch is not importable ({exc})"
    if not torch.cuda.is_available():
        built = torch.version.cuda
        return ("torch sees no CUDA device" + (f" (torch built for CUDA {built})" if built else
                                               " (this torch is a CPU-only build)"))
    return None


def _try(factory: Callable[[], Any], skipped: dict[str, str], name: str) -> Any:
    from s2i_runtime.errors import S2IError

    try:
        return factory()
    except (S2IError, ImportError, RuntimeError, OSError) as exc:
        skipped[name] = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None


def run_gpu(run_dir: Path | str, bundle: Path | str, paths: Sequence[Path], *, batch_sizes: Sequence[int] = (1, 8, 32),
            frontend_clips: int = 64, frontend_seconds: float = 10.0, repeats: int = 20, warmup: int = 3,
            checks: bool = True, progress: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    reason = cuda_unavailable_reason()
    if reason is not None:
        return {"skipped": reason}
    import torch

    from s2i_runtime.audio import load_audio
    from s2i_runtime.pipeline import Pipeline

    from .torch_baseline import TorchBaseline

    result: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "batches": {}, "skipped": {}}
    skipped: dict[str, str] = result["skipped"]
    eager32 = TorchBaseline(run_dir, device="cuda")
    eager16 = _try(lambda: TorchBaseline(run_dir, device="cuda", dtype=torch.float16), skipped,
                   "pytorch eager cuda fp16")

    for batch in batch_sizes:
        progress(f"gpu end to end, batch {batch}")
        inputs = [str(p) for p in paths[:batch]]
        runs: dict[str, Callable[[], object]] = {}
        pipes = []
        trt = _try(lambda b=batch: Pipeline.load(bundle, backend="tensorrt", device="cuda", batch_size=b),
                   skipped, "runtime: tensorrt")
        if trt is not None:
            pipes.append(trt)
            precision = trt.describe().get("precision", "?")
            runs[f"runtime: tensorrt {precision}"] = lambda p=trt, i=inputs: p.generate(i, seed=0)
        ort_cuda = _try(lambda b=batch: Pipeline.load(bundle, backend="onnxruntime", device="cuda", batch_size=b),
                        skipped, "runtime: onnxruntime cuda fp32")
        if ort_cuda is not None:
            pipes.append(ort_cuda)
            runs["runtime: onnxruntime cuda fp32"] = lambda p=ort_cuda, i=inputs: p.generate(i, seed=0)

        def torch_run(model: TorchBaseline, files: list[str] = inputs) -> Callable[[], object]:
            return lambda: model.pil_images([load_audio(p) for p in files], seed=0)

        runs["pytorch eager cuda fp32"] = torch_run(eager32)
        if eager16 is not None:
            runs["pytorch eager cuda fp16"] = torch_run(eager16)
        times = interleaved(runs, repeats, warmup)
        rows = {}
        for name, seconds in times.items():
            stats = summarise(seconds)
            stats["images_per_s"] = batch / (stats["p50_ms"] / 1e3)
            rows[name] = stats
        result["batches"][str(batch)] = {"contenders": rows}
        for pipe in pipes:
            pipe.close()

    progress("gpu front end")
    result["frontend"] = _gpu_frontend(frontend_clips, frontend_seconds, repeats, warmup, skipped)
    if checks:
        from .gpu_checks import run_checks

        progress("gpu correctness checks")
        result["checks"] = _try(lambda: run_checks(bundle, progress=progress), skipped, "gpu checks")
    return result


def _gpu_frontend(clips_count: int, seconds: float, repeats: int, warmup: int, skipped: dict[str, str]) -> dict:
    import torch

    from s2i_train.frontend import logmel_torch

    from .frontend import make_clips

    clips = make_clips(clips_count, seconds)
    host_waves = torch.from_numpy(np.stack(clips))
    lengths = torch.full((len(clips),), host_waves.shape[1])

    def torch_cuda() -> object:  # host in, host out, like the kernels' logmel_batch
        features, frames = logmel_torch(host_waves.cuda(), lengths.cuda())
        return features.cpu(), frames.cpu()

    runs: dict[str, Callable[[], object]] = {"torch (training) on cuda, host in/out": torch_cuda}

    def open_cuda_frontend():
        from s2i_runtime.cuda.frontend_cuda import CudaLogMel

        return CudaLogMel()

    kernels = _try(open_cuda_frontend, skipped, "cuda front end (runtime kernels)")
    if kernels is not None:
        runs["cuda front end (runtime kernels), host in/out"] = lambda: kernels.logmel_batch(clips)
    times = interleaved(runs, repeats, warmup)
    return {
        "clips": clips_count,
        "seconds_per_clip": seconds,
        "ms_per_clip": {name: summarise(t)["p50_ms"] / clips_count for name, t in times.items()},
    }
