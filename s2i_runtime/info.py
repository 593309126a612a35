"""`s2i-run info`: the bundle, and which backends can run here (and why not), without loading a model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .bundle import WAVEFORM_INPUT, default_bundle_path, load_bundle
from .errors import BackendUnavailable, S2IError


def bundle_info(path: str | os.PathLike | None) -> dict[str, Any]:
    where = Path(path) if path is not None else default_bundle_path()
    info: dict[str, Any] = {"path": str(where.resolve()), "default": path is None}
    try:
        bundle = load_bundle(path)
    except S2IError as exc:
        info.update(ok=False, error=str(exc))
        return info
    manifest = bundle.manifest
    dataset = bundle.dataset
    info.update(
        ok=True,
        model={k: v for k, v in manifest.get("model", {}).items() if not isinstance(v, (dict, list))}
        | {"image_sizes": list(bundle.dims.image_sizes)},
        dataset={"name": dataset.get("name"), **vocabulary_size(dataset.get("vocabulary"))},
        frontend={"sample_rate": bundle.frontend.sample_rate, "n_mels": bundle.frontend.n_mels,
                  "max_frames": bundle.frontend.max_frames, "encoder_input": bundle.encoder_input,
                  "in_graph": bundle.encoder_input == WAVEFORM_INPUT},
        fp16=bundle.fp16 is not None,
        int8=bundle.int8 is not None,
        engines=[
            {k: e.get(k) for k in ("dir", "gpu", "compute_capability", "trt_version", "precision", "max_batch",
                                   "max_frames")}
            for e in bundle.engines
        ],
    )
    info["_bundle"] = bundle
    return info


def vocabulary_size(vocabulary: Any) -> dict[str, int]:
    """{"classes": n} for a structured vocabulary (Spoken-Shapes: colours x shapes), {"words": n} for a list."""
    if isinstance(vocabulary, dict) and isinstance(vocabulary.get("classes"), list):
        return {"classes": len(vocabulary["classes"])}
    if isinstance(vocabulary, list):
        return {"words": len(vocabulary)}
    return {}


def onnxruntime_info() -> dict[str, Any]:
    from .backends.onnxruntime_backend import CUDA, import_onnxruntime

    try:
        ort = import_onnxruntime()
    except BackendUnavailable as exc:
        return {"available": False, "reason": str(exc), "cpu": False, "cuda": False}
    providers = list(ort.get_available_providers())
    info: dict[str, Any] = {"available": True, "version": ort.__version__, "providers": providers, "cpu": True}
    if CUDA in providers:
        info["cuda"] = True
        info["cuda_note"] = ("provider present; whether CUDA/cuDNN really load shows when a session starts "
                             "(`s2i-run infer --json` reports the active provider)")
    else:
        info["cuda"] = False
        info["cuda_reason"] = "this onnxruntime build has no CUDAExecutionProvider (install 's2i[gpu]')"
    return info


def tensorrt_info(bundle=None) -> dict[str, Any]:
    from .backends.tensorrt_backend import detect_gpu, import_pycuda, import_tensorrt, select_engine

    info: dict[str, Any] = {"available": False}
    try:
        trt = import_tensorrt()
        info["version"] = trt.__version__
        cuda = import_pycuda()
        gpu = detect_gpu(cuda)
    except BackendUnavailable as exc:
        info["reason"] = str(exc)
        return info
    info["gpu"] = {"name": gpu.name, "compute_capability": gpu.compute_capability}
    if bundle is None:
        info["reason"] = "no bundle to look for engines in"
        return info
    entry, reasons = select_engine(bundle.engines, gpu, trt.__version__)
    if entry is None:
        info["reason"] = "; ".join(reasons) or "the bundle has no TensorRT engines (s2i-export build-engine)"
        return info
    info.update(available=True, engine=entry.get("dir"), precision=entry.get("precision"))
    return info


def cuda_frontend_info() -> dict[str, Any]:
    """Whether the CUDA log-Mel kernels load here (the TensorRT path uses them when they do)."""
    try:
        from .cuda.frontend_cuda import CudaLogMel
        from .frontend import FrontendSpec

        CudaLogMel(FrontendSpec())
    except Exception as exc:  # ImportError, BackendUnavailable, a driver refusing the PTX
        return {"available": False, "reason": f"{exc}"}
    return {"available": True}


def gather(bundle_path: str | os.PathLike | None = None) -> dict[str, Any]:
    bundle = bundle_info(bundle_path)
    loaded = bundle.pop("_bundle", None)
    ort = onnxruntime_info()
    trt = tensorrt_info(loaded)
    if trt["available"]:
        auto = "tensorrt (cuda)"
    elif ort.get("cuda"):
        auto = "onnxruntime (cuda, else cpu if the CUDA provider fails to start)"
    elif ort["available"]:
        auto = "onnxruntime (cpu)"
    else:
        auto = "none: install 's2i[cpu]' or 's2i[gpu]'"
    return {
        "bundle": bundle["path"],
        "bundle_info": bundle,
        "backends": {"onnxruntime": ort, "tensorrt": trt, "cuda_frontend": cuda_frontend_info()},
        "host_frontend": host_frontend_info(),
        "auto": auto,
    }


def host_frontend_info() -> dict[str, str]:
    """Which implementation computes log-Mel features on the CPU: the C extension, or numpy and why."""
    from .native_frontend import describe

    return describe()


def render_text(info: dict[str, Any]) -> str:
    lines = [f"bundle: {info['bundle']}"]
    b = info["bundle_info"]
    if not b["ok"]:
        lines.append(f"  not usable: {b['error']}")
    else:
        m = b["model"]
        lines.append(
            f"  model: {m.get('encoder_arch', '?')}, embedding {m.get('embedding_dim')}, z {m.get('z_dim')}, "
            f"ca {m.get('ca_dim')}, images {'/'.join(str(s) for s in m['image_sizes'])} px"
        )
        sizes = ", ".join(f"{n} {unit if n != 1 else unit[:-1]}" for unit, n in b["dataset"].items() if unit != "name")
        lines.append(f"  dataset: {b['dataset']['name']}" + (f" ({sizes})" if sizes else ""))
        if b["frontend"]["in_graph"]:
            lines.append("  front end: in the encoder graph (the encoder reads waveforms)")
        else:
            host = info["host_frontend"]
            how = "C" if host["implementation"] == "c" else f"numpy: {host['reason']}"
            lines.append(f"  front end: in the runtime, before the encoder (the encoder reads log-Mel features; {how})")
        lines.append(f"  fp16 graphs: {'yes' if b['fp16'] else 'no'}; int8 generator: {'yes' if b['int8'] else 'no'}; "
                     f"TensorRT engines: {len(b['engines'])}")
        for e in b["engines"]:
            lines.append(
                f"    {e['dir']}: {e['gpu']} (cc {e['compute_capability']}), TensorRT {e['trt_version']}, "
                f"{e['precision']}, batch <= {e['max_batch']}, frames <= {e['max_frames']}"
            )
    lines.append("backends:")
    for name, entry in info["backends"].items():
        if entry["available"]:
            detail = entry.get("version", "")
            if name == "onnxruntime":
                detail += f", providers {', '.join(entry['providers'])}"
                if not entry["cuda"]:
                    detail += f"; no CUDA: {entry['cuda_reason']}"
            if name == "tensorrt":
                detail += f", engine {entry['engine']} on {entry['gpu']['name']}"
            lines.append(f"  {name}: available {detail}".rstrip())
        else:
            lines.append(f"  {name}: not available: {entry['reason']}")
    lines.append(f"auto picks: {info['auto']}")
    return "\n".join(lines)
