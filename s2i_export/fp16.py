"""FP16 ONNX files (`s2i-export fp16`): float16 inside, float32 at the inputs and outputs, checked against fp32.

The converter is ONNX Runtime's (`onnxruntime.transformers.float16`): unlike onnxconverter-common 1.16 it
also retargets Cast nodes, so a graph whose masks cast int64 lengths to float stays type-consistent.
Ops on the block list stay float32 (casts are inserted around them). Why each family is there:
- recurrences (GRU/LSTM/RNN): the state is carried over hundreds of steps, rounding compounds;
- exp/log/pow/sqrt/reciprocal: overflow or precision cliffs — e.g. the conditioning augmentation's
  exp(logvar / 2), and the L2 normalisation of S2IGAN embeddings;
- softmax and normalisation layers: sums over many terms (attention pooling over time, BatchNorm);
- casts, comparisons and the arithmetic from `lengths` to them (a node block list, see
  `length_arithmetic_nodes`): masks compare frame indices with lengths; fp16 integers are exact only to
  2048, and inputs reach 3000 frames;
- whatever feeds only comparisons (`comparison_feeding_nodes`): the generator's drawn code blocks compare a
  number made from z with cumulative probabilities, and the draw must not move with rounding.
These are the usual causes of NaN or black images in FP16 engines.

The check runs on ONNX Runtime CPU, which computes many float16 ops in float32 behind inserted casts, so an
overflow that a GPU would hit can pass unseen there. The check therefore also runs the fp32 graph with every
intermediate tensor exposed and fails when one that the fp16 graph computes in float16 exceeds the float16
range (65504): the overflow is caught whatever the execution provider.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from s2i_runtime.bundle import (
    ENCODER_FILE,
    ENCODER_FP16_FILE,
    ENCODER_INPUTS,
    GENERATOR_FILE,
    GENERATOR_FP16_FILE,
    GENERATOR_INPUTS,
    Bundle,
    load_bundle,
)
from s2i_runtime.errors import S2IError
from s2i_runtime.fsutil import atomic_path

from .encoder_input import require_logmel_encoder
from .manifest import add_section
from .probes import noise_for, ort_session, probe_batches

FP32_OPS = (
    "GRU", "LSTM", "RNN",
    "Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Erf",
    "Softmax", "LogSoftmax",
    "BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization",
    "LpNormalization", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp",
    "Cast", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Equal", "Where",
)

# Acceptance: on ONNX Runtime CPU, fp16 against fp32 on the same inputs.
MIN_EMBEDDING_COSINE = 0.999
MAX_IMAGE_MAE = 1e-2
FP16_MAX = 65504.0


def op_block_list() -> list[str]:
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST

    return sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS))


_COMPARISONS = {"Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Equal"}


def length_arithmetic_nodes(model: Any, roots: Sequence[str] = (ENCODER_INPUTS[1],)) -> list[str]:
    """Names of the nodes that turn `lengths` into the float values masks compare against.

    Float16 holds integers exactly only up to 2048 and utterances reach 3000 frames, so this arithmetic
    stays float32 (node block list). A node belongs when it reads a lengths-derived tensor and all of its
    float inputs are lengths-derived (so the data path, e.g. a gather indexed by lengths, never joins);
    comparisons end the chain (their output is a bool mask)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    floats = {v.name for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    floats |= {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    derived = set(roots)
    names = []
    for node in model.graph.node:  # exported graphs are topologically sorted
        if node.op_type in _COMPARISONS or not any(i in derived for i in node.input):
            continue
        if all(i in derived for i in node.input if i in floats):
            derived.update(node.output)
            if node.name:
                names.append(node.name)
    return names


def comparison_feeding_nodes(model: Any) -> list[str]:
    """Names of the nodes whose every output is read only by comparisons or by other such nodes.

    A comparison decides, and rounding its operands to float16 can move the decision: the generator's drawn
    code blocks (models.generator.draw_one_hot) compare a uniform number made from z with cumulative
    probabilities, and in float16 a draw near a boundary would come out differently from the float32 graph's."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    kept: set[str] = set()
    names = []
    for node in reversed(model.graph.node):  # exported graphs are topologically sorted
        if node.op_type in _COMPARISONS or not node.name or not node.output:
            continue
        readers = [c for out in node.output for c in consumers.get(out, [])]
        if readers and not any(out in outputs for out in node.output) and all(
                c.op_type in _COMPARISONS or c.name in kept for c in readers):
            kept.add(node.name)
            names.append(node.name)
    return names[::-1]


def fp32_nodes(model: Any) -> list[str]:
    """The node block list: length arithmetic and what feeds only comparisons."""
    return sorted(set(length_arithmetic_nodes(model)) | set(comparison_feeding_nodes(model)))


def convert_file(source: Path, target: Path, block_list: Sequence[str] | None = None) -> None:
    """float32 ONNX -> float16 ONNX with float32 I/O, written atomically."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(source))
    converted = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=list(block_list or op_block_list()),
        node_block_list=fp32_nodes(model),
    )
    sort_nodes(converted.graph)
    onnx.checker.check_model(converted)
    with atomic_path(target) as tmp:
        onnx.save(converted, str(tmp))


def sort_nodes(graph: Any) -> None:
    """Put nodes in topological order in place (the converter appends its casts at the end; the ONNX
    checker and TensorRT's parser want producers before consumers)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        remaining = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                remaining.append(node)
        if len(remaining) == len(pending):
            names = ", ".join(n.name or n.op_type for n in remaining[:5])
            raise S2IError(f"fp16 graph has a cycle or an undefined input (at {names})")
        pending = remaining
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


@dataclasses.dataclass
class Fp16Check:
    """fp16 vs fp32 figures over all probe inputs."""

    embedding_cosine_min: float = 1.0
    embedding_max_abs: float = 0.0
    image_mae_max: float = 0.0
    image_max_abs: float = 0.0
    all_finite: bool = True
    activation_peak: float = 0.0  # largest |value| of a tensor the fp16 graph computes in float16
    activation_peak_tensor: str = ""
    cases: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (
            self.all_finite
            and self.embedding_cosine_min >= MIN_EMBEDDING_COSINE
            and self.image_mae_max <= MAX_IMAGE_MAE
            and self.activation_peak < FP16_MAX
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "embedding_cosine_min": self.embedding_cosine_min,
            "embedding_max_abs": self.embedding_max_abs,
            "image_mae_max": self.image_mae_max,
            "image_max_abs": self.image_max_abs,
            "all_finite": self.all_finite,
            "activation_peak": self.activation_peak,
            "activation_peak_tensor": self.activation_peak_tensor,
            "thresholds": {"embedding_cosine_min": MIN_EMBEDDING_COSINE, "image_mae_max": MAX_IMAGE_MAE,
                           "activation_peak": FP16_MAX},
            "passed": self.passed,
            "backend": "onnxruntime CPUExecutionProvider",
            "cases": self.cases,
        }


class ActivationProbe:
    """The fp32 graph with every float tensor computed outside the block list exposed as an output."""

    def __init__(self, fp32_path: Path, block_list: Sequence[str]) -> None:
        import onnx

        from .probes import ort_session_from_bytes

        model = onnx.load(str(fp32_path))
        inferred = onnx.shape_inference.infer_shapes(model)
        typed = {v.name: v for v in inferred.graph.value_info
                 if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
        blocked, blocked_nodes = set(block_list), set(fp32_nodes(model))
        present = {o.name for o in model.graph.output}
        typed.update({o.name: o for o in model.graph.output})
        self.names = [o for node in model.graph.node
                      if node.op_type not in blocked and node.op_type != "Constant" and node.name not in blocked_nodes
                      for o in node.output if o in typed]
        model.graph.output.extend(typed[name] for name in self.names if name not in present)
        self.session = ort_session_from_bytes(model.SerializeToString())

    def peak(self, feeds: dict[str, np.ndarray]) -> tuple[float, str]:
        values = self.session.run(self.names, feeds)
        peaks = [float(np.abs(v).max()) if v.size else 0.0 for v in values]
        if not peaks:
            return 0.0, ""
        worst = int(np.argmax(peaks))
        return peaks[worst], self.names[worst]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return (a64 * b64).sum(axis=1) / np.maximum(norms, 1e-30)


def compare_fp16(
    bundle: Bundle,
    encoder_fp16: Path,
    generator_fp16: Path,
    real_audio: Sequence[Path] = (),
    progress: Callable[[str], None] = lambda _m: None,
    block_list: Sequence[str] | None = None,
) -> Fp16Check:
    mel_name, len_name = ENCODER_INPUTS
    emb_name, z_name, eps_name = GENERATOR_INPUTS
    sessions = {
        "enc32": ort_session(bundle.file(ENCODER_FILE)),
        "enc16": ort_session(encoder_fp16),
        "gen32": ort_session(bundle.file(GENERATOR_FILE)),
        "gen16": ort_session(generator_fp16),
    }
    block_list = op_block_list() if block_list is None else block_list
    probes = {"encoder": ActivationProbe(bundle.file(ENCODER_FILE), block_list),
              "generator": ActivationProbe(bundle.file(GENERATOR_FILE), block_list)}
    check = Fp16Check()
    dims = bundle.dims
    for batch in probe_batches(bundle, real_audio):
        progress(f"fp16 check: {batch.label}")
        feeds = {mel_name: batch.mel, len_name: batch.lengths}
        emb32 = sessions["enc32"].run(None, feeds)[0]
        emb16 = sessions["enc16"].run(None, feeds)[0]
        z, eps = noise_for(batch.batch, dims.z_dim, dims.ca_dim)
        # Both generators get the fp32 embedding: each graph is judged on its own error.
        gen_feeds = {emb_name: emb32, z_name: z, eps_name: eps}
        img32 = sessions["gen32"].run(None, gen_feeds)[0]
        img16 = sessions["gen16"].run(None, gen_feeds)[0]
        finite = bool(np.isfinite(emb16).all() and np.isfinite(img16).all())
        cosine = float(cosine_rows(emb32, emb16).min()) if finite else float("nan")
        emb_abs = float(np.abs(emb32 - emb16).max()) if finite else float("inf")
        mae = float(np.abs(img32 - img16).mean()) if finite else float("inf")
        img_abs = float(np.abs(img32 - img16).max()) if finite else float("inf")
        check.all_finite &= finite
        for component, component_feeds in (("encoder", feeds), ("generator", gen_feeds)):
            peak, tensor = probes[component].peak(component_feeds)
            if peak > check.activation_peak:
                check.activation_peak, check.activation_peak_tensor = peak, f"{component}: {tensor}"
        if finite:
            check.embedding_cosine_min = min(check.embedding_cosine_min, cosine)
            check.embedding_max_abs = max(check.embedding_max_abs, emb_abs)
            check.image_mae_max = max(check.image_mae_max, mae)
            check.image_max_abs = max(check.image_max_abs, img_abs)
        check.cases.append({
            "inputs": batch.label, "batch": batch.batch, "frames": batch.frames, "finite": finite,
            "embedding_cosine_min": cosine, "embedding_max_abs": emb_abs,
            "image_mae": mae, "image_max_abs": img_abs,
        })
    return check


class Fp16CheckFailed(S2IError):
    """The FP16 graphs are not close enough to fp32; nothing was added to the bundle."""

    def __init__(self, check: Fp16Check) -> None:
        self.check = check
        super().__init__(
            f"fp16 check failed (embedding cosine min {check.embedding_cosine_min:.6f} >= {MIN_EMBEDDING_COSINE}, "
            f"image MAE max {check.image_mae_max:.2e} <= {MAX_IMAGE_MAE:g}, finite {check.all_finite}, "
            f"largest float16 activation {check.activation_peak:.3g} < {FP16_MAX:g} "
            f"at {check.activation_peak_tensor}); "
            "the FP16 files were not added"
        )


def export_fp16(
    bundle_path: str | Path,
    *,
    real_audio: Sequence[Path] = (),
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Convert, check, and add the FP16 files to the bundle; returns the s2i.json `fp16` section.

    Raises Fp16CheckFailed (and leaves the bundle as it was) when the check fails.
    """
    import onnxruntime

    bundle = load_bundle(bundle_path)
    require_logmel_encoder(bundle, "fp16")
    block_list = op_block_list()
    targets = {ENCODER_FP16_FILE: bundle.file(ENCODER_FILE), GENERATOR_FP16_FILE: bundle.file(GENERATOR_FILE)}
    # Converted next to the bundle under hidden names (not hashed), moved in only after the check passes.
    staged = {name: bundle.path / f".{name}.staged" for name in targets}
    try:
        for name, source in targets.items():
            progress(f"converting {source.name} -> {name}")
            convert_file(source, staged[name], block_list)
        check = compare_fp16(
            bundle, staged[ENCODER_FP16_FILE], staged[GENERATOR_FP16_FILE], real_audio, progress, block_list
        )
        if not check.passed:
            raise Fp16CheckFailed(check)
        for name, tmp in staged.items():
            tmp.replace(bundle.file(name))
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)

    return add_section(bundle, "fp16", {
        "files": {"encoder": ENCODER_FP16_FILE, "generator": GENERATOR_FP16_FILE},
        "io_dtype": "float32",
        "converter": f"onnxruntime.transformers.float16 (onnxruntime {onnxruntime.__version__}), keep_io_types",
        "op_block_list": block_list,
        "check": check.to_dict(),
    })
