"""INT8 variant of the generator: static QDQ quantisation with ONNX Runtime, kept only if the judge agrees.

The generator is quantised with `onnxruntime.quantization.quantize_static` (QDQ format, per-channel int8
weights in 7 bits, uint8 activations), calibrated on speech embeddings of real captions. It counts as a contender
only when its judge accuracy on generated images (colour, shape, size; the test split's held-out classes)
is at most 1 point below fp32's with the same embeddings and noise. Without a trained judge, or without
the dataset, the variant is reported "not evaluated" and left out of the tables.

Calibration uses the even-numbered test captions and the judge check the odd-numbered ones, so the two
never share an utterance.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from s2i_runtime.bundle import GENERATOR_FILE, GENERATOR_INPUTS, GENERATOR_OUTPUTS

INT8_FILE = "generator.int8.onnx"
MAX_DROP = 0.01  # one accuracy point
CHECKED_ATTRIBUTES = ("colour", "shape", "size")


def quantize_generator(fp32_path: Path | str, out_path: Path | str, embeddings: np.ndarray, z_dim: int,
                       ca_dim: int, seed: int = 0) -> Path:
    """Quantise generator.onnx statically; calibration rows = `embeddings` with fresh normal noise."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    rng = np.random.default_rng(seed)
    emb_name, z_name, eps_name = GENERATOR_INPUTS
    rows = [
        {emb_name: embeddings[i : i + 8].astype(np.float32),
         z_name: rng.standard_normal((len(embeddings[i : i + 8]), z_dim), dtype=np.float32),
         eps_name: rng.standard_normal((len(embeddings[i : i + 8]), ca_dim), dtype=np.float32)}
        for i in range(0, len(embeddings), 8)
    ]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._rows: Iterator[dict[str, np.ndarray]] = iter(rows)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._rows, None)

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    prepared = out_path.with_name(out_path.stem + ".pre.onnx")
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    # reduce_range: 7-bit weights, so that u8 x s8 products cannot saturate the 16-bit intermediate sums of CPUs with
    # AVX2 but no VNNI (ONNX Runtime's quantisation guide).
    quantize_static(str(prepared), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    prepared.unlink(missing_ok=True)
    return out_path


def replace_generator_session(pipe: Any, generator_file: Path | str, threads: int) -> None:
    """Point a CPU ONNX Runtime pipeline's generator at another graph with the same I/O."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(0, int(threads))
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(os.fspath(generator_file), sess_options=options,
                                   providers=["CPUExecutionProvider"])
    got = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
    if got != (list(GENERATOR_INPUTS), list(GENERATOR_OUTPUTS)):
        raise RuntimeError(f"{generator_file}: I/O {got} differs from the generator contract")
    pipe.backend.generator = session


def _session(path: Path | str, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(0, int(threads))
    options.log_severity_level = 3
    return ort.InferenceSession(os.fspath(path), sess_options=options, providers=["CPUExecutionProvider"])


def _generate(session: Any, embeddings: np.ndarray, z: np.ndarray, eps: np.ndarray, batch: int = 64) -> np.ndarray:
    out = []
    for s in range(0, len(embeddings), batch):
        feed = dict(zip(GENERATOR_INPUTS, (embeddings[s : s + batch], z[s : s + batch], eps[s : s + batch]),
                        strict=True))
        out.append(session.run(list(GENERATOR_OUTPUTS), feed)[0])
    return np.concatenate(out)


def judge_accuracy(run_dir: Path | str, images: np.ndarray, attributes: np.ndarray) -> dict[str, float]:
    """Per attribute, the judge's accuracy on generated images (B, 3, H, W) in [-1, 1]."""
    import torch

    from s2i_train.checkpoint import load_judge
    from s2i_train.eval import judge_read
    from s2i_train.train.banks import ATTRIBUTES

    judge = load_judge(run_dir).eval()
    hits = {name: [] for name in CHECKED_ATTRIBUTES}
    for s in range(0, len(images), 256):
        probs, _ = judge_read(judge, torch.from_numpy(images[s : s + 256]))
        for name in CHECKED_ATTRIBUTES:
            column = torch.from_numpy(attributes[s : s + 256, ATTRIBUTES.index(name)])
            hits[name].append(probs[name].argmax(1) == column)
    return {name: float(torch.cat(h).float().mean()) for name, h in hits.items()}


def _test_captions(run_dir: Path, data: Path | None) -> tuple[Any, str | None]:
    """The test caption bank, or (None, why not)."""
    from s2i_runtime.errors import InputError
    from s2i_train.checkpoint import JUDGE, has_module
    from s2i_train.train.banks import load_caption_bank, load_image_bank

    if not has_module(run_dir, JUDGE):
        return None, "no trained judge (judge.safetensors + judge.json) in the run directory"
    root = data
    if root is None:
        try:
            from s2i_train.train.config import load_run_config

            root = Path(load_run_config(run_dir).data.root)
        except InputError as exc:
            return None, f"no dataset to check against ({exc}); pass --data"
    if not root.is_dir():
        return None, f"dataset {root} not found; pass --data"
    try:
        images = load_image_bank(root, "test", (64,), run_dir)
        return load_caption_bank(root, "test", images, run_dir=run_dir), None
    except InputError as exc:
        return None, f"cannot read the test captions: {exc}"


def prepare_int8(run_dir: Path | str, bundle: Path | str, work_dir: Path, *, data: Path | None = None,
                 threads: int = 2, max_captions: int = 512) -> dict[str, Any]:
    """Quantise, check with the judge; {"status", "accepted", "generator_file"?, accuracies ...}."""
    from s2i_runtime.bundle import load_bundle
    from s2i_runtime.pipeline import Pipeline

    run_dir, bundle = Path(run_dir), Path(bundle)
    captions, why_not = _test_captions(run_dir, data)
    if captions is None:
        return {"status": "not evaluated", "accepted": False, "reason": why_not}
    loaded = load_bundle(bundle)
    dims = loaded.dims
    pipe = Pipeline.load(loaded, backend="onnxruntime", device="cpu", threads=threads)
    count = min(len(captions), max_captions)
    embeddings = np.empty((count, dims.embedding_dim), np.float32)
    for s in range(0, count, 64):
        rows = np.arange(s, min(s + 64, count))
        mel, lengths = captions.batch(rows)
        embeddings[rows] = pipe.backend.encode(mel.numpy(), lengths.numpy())
    pipe.close()
    calibrate, check = embeddings[0::2], np.arange(1, count, 2)
    int8_path = quantize_generator(loaded.file(GENERATOR_FILE), work_dir / INT8_FILE, calibrate, dims.z_dim,
                                   dims.ca_dim)
    rng = np.random.default_rng(1)
    z = rng.standard_normal((len(check), dims.z_dim), dtype=np.float32)
    eps = rng.standard_normal((len(check), dims.ca_dim), dtype=np.float32)
    attributes = captions.attributes[check].numpy()
    fp32 = judge_accuracy(run_dir, _generate(_session(loaded.file(GENERATOR_FILE), threads), embeddings[check], z, eps),
                          attributes)
    int8 = judge_accuracy(run_dir, _generate(_session(int8_path, threads), embeddings[check], z, eps), attributes)
    accepted = all(int8[a] >= fp32[a] - MAX_DROP for a in CHECKED_ATTRIBUTES)
    return {
        "status": "accepted (within 1 point of fp32)" if accepted else "rejected (more than 1 point below fp32)",
        "accepted": accepted,
        "generator_file": str(int8_path),
        "fp32_judge_accuracy": fp32,
        "int8_judge_accuracy": int8,
        "calibration": f"{len(calibrate)} test captions (even rows); checked on {len(check)} others",
    }
