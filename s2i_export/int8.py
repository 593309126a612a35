"""The INT8 generator (`s2i-export int8`): static QDQ quantisation with ONNX Runtime, checked against fp32.

The generator is quantised with `onnxruntime.quantization.quantize_static` (QDQ format, per-channel int8
weights in 7 bits, uint8 activations), calibrated on speech embeddings that the bundle's own encoder (ONNX
Runtime CPU) computes from real utterances: the dataset's test captions when a run or a dataset is given,
else the shipped example utterances or the `--audio` files, topped up with synthetic features when those are
too few. The encoder stays float32: only the generator is quantised.

The check, on ONNX Runtime's CPU provider (what the runtime's `--precision int8` runs on):
- always: every image finite, and the image MAE against fp32 at most MAX_IMAGE_MAE on the probe inputs
  (synthetic and real features; both generators get the same fp32 embeddings and noise);
- with a run that has a trained judge and its dataset: the judge's accuracy (colour, shape, size) on images of
  held-out test captions (JUDGED_DRAWS noise draws each) at most MAX_DROP below fp32's, with the same embeddings
  and noise. Calibration uses the even-numbered picked captions and the judge the odd-numbered ones, so the two
  never share an utterance.
If the check fails nothing is added to the bundle (Int8CheckFailed).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from s2i_runtime.bundle import (
    ENCODER_FILE,
    GENERATOR_FILE,
    GENERATOR_INPUTS,
    GENERATOR_INT8_FILE,
    GENERATOR_OUTPUTS,
    Bundle,
    load_bundle,
)
from s2i_runtime.errors import InputError, S2IError
from s2i_runtime.fsutil import atomic_path

from .manifest import add_section
from .probes import (
    FeatureBatch,
    WaveBatch,
    encoder_feed,
    noise_for,
    ort_session,
    probe_batches,
    real_inputs,
    synthetic_inputs,
)

# Acceptance, on ONNX Runtime CPU against fp32 with the same inputs.
# Images in [-1, 1]: the limit admits an int8 error (a drawn code block near its edge may flip, the layout may shift
# by a fraction of a pixel) and refuses a different picture, which another noise draw of the same utterance already
# is by several times the limit (figures: docs/performance.md).
MAX_IMAGE_MAE = 0.1
MAX_DROP = 0.01  # judge accuracy: one point per attribute
# Each judged caption is drawn with this many noises: one point of 256 images is under three images, fewer than
# int8's rounding flips on borderline images of one draw, so a single draw's verdict is mostly chance.
JUDGED_DRAWS = 4
CHECKED_ATTRIBUTES = ("colour", "shape", "size")
# Calibration: at most this many test captions are encoded (half calibrate, half are judged); with fewer
# real utterances than MIN_CALIBRATION_ROWS, synthetic features make up the rest.
MAX_CAPTIONS = 512
MIN_CALIBRATION_ROWS = 64
CALIBRATION_BATCH = 8
NO_JUDGE = "no trained judge (judge.safetensors + judge.json) in the run directory"
# What `quantize_generator` does, as s2i.json records it.
QUANTIZATION = {"format": "QDQ", "per_channel": True, "reduce_range": True, "activation": "uint8",
                "weight": "int8"}


def quantize_generator(fp32_path: Path | str, out_path: Path | str, embeddings: np.ndarray, z_dim: int,
                       ca_dim: int, seed: int = 0) -> Path:
    """Quantise generator.onnx statically; calibration rows = `embeddings` with fresh normal noise."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    rng = np.random.default_rng(seed)
    emb_name, z_name, eps_name = GENERATOR_INPUTS
    rows = []
    for s in range(0, len(embeddings), CALIBRATION_BATCH):
        block = embeddings[s : s + CALIBRATION_BATCH].astype(np.float32)
        rows.append({emb_name: block, z_name: rng.standard_normal((len(block), z_dim), dtype=np.float32),
                     eps_name: rng.standard_normal((len(block), ca_dim), dtype=np.float32)})

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._rows: Iterator[dict[str, np.ndarray]] = iter(rows)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._rows, None)

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="s2i-int8-") as scratch:
        prepared = Path(scratch) / "generator.pre.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        # reduce_range: 7-bit weights, so that u8 x s8 products cannot saturate the 16-bit intermediate sums of
        # CPUs with AVX2 but no VNNI (ONNX Runtime's quantisation guide).
        quantize_static(str(prepared), str(out_path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out_path


def generate_images(session: Any, embeddings: np.ndarray, z: np.ndarray, eps: np.ndarray,
                    batch: int = 64) -> np.ndarray:
    """A generator session's images (B, 3, H, W) for these rows, `batch` rows at a time."""
    out = []
    for s in range(0, len(embeddings), batch):
        feed = dict(zip(GENERATOR_INPUTS, (embeddings[s : s + batch], z[s : s + batch], eps[s : s + batch]),
                        strict=True))
        out.append(session.run(list(GENERATOR_OUTPUTS), feed)[0])
    return np.concatenate(out)


def judge_accuracy(run_dir: Path | str, images: np.ndarray, attributes: np.ndarray) -> dict[str, float]:
    """Per checked attribute, the run's judge's accuracy on images (B, 3, H, W) in [-1, 1]; `attributes` is
    (B, len(ATTRIBUTES)) labels in s2i_train.train.banks.ATTRIBUTES order."""
    import torch

    from s2i_train.checkpoint import load_judge
    from s2i_train.eval import attribute_accuracy, judge_read

    judge = load_judge(run_dir).eval()
    chunks = [judge_read(judge, torch.from_numpy(np.ascontiguousarray(images[s : s + 256])))[0]
              for s in range(0, len(images), 256)]
    probs = {name: torch.cat([chunk[name] for chunk in chunks]) for name in CHECKED_ATTRIBUTES}
    return attribute_accuracy(probs, torch.from_numpy(np.asarray(attributes)), CHECKED_ATTRIBUTES)


def judge_verdict(fp32: dict[str, float], int8: dict[str, float]) -> bool:
    return all(int8[a] >= fp32[a] - MAX_DROP for a in CHECKED_ATTRIBUTES)


# -- real utterances ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HeldOutCaptions:
    """Spoken test captions picked evenly over a dataset's test split: their audio and attribute labels."""

    root: Path
    audio: list[Path]
    attributes: np.ndarray  # (N, len(ATTRIBUTES)) int64

    def rows(self, parity: int) -> np.ndarray:
        """The even (0) or odd (1) rows: calibration and check never share an utterance."""
        return np.arange(parity, len(self.audio), 2)


def dataset_root(run_dir: Path | None, data: Path | None) -> tuple[Path | None, str]:
    """The dataset to take test captions from (`data`, else the run's config), or (None, why not).

    A `data` that is not a Spoken-Shapes folder is the caller's mistake: InputError."""
    if data is not None:
        if not (Path(data) / "captions.jsonl").is_file():
            raise InputError(f"{data}: not a Spoken-Shapes dataset (no captions.jsonl)")
        return Path(data), ""
    if run_dir is None:
        return None, "no dataset given"
    from s2i_train.train.config import load_run_config

    try:
        root = Path(load_run_config(run_dir).data.root)
    except InputError as exc:
        return None, f"no dataset to check against ({exc}); pass --data"
    if not (root / "captions.jsonl").is_file():
        return None, f"dataset {root} not found; pass --data"
    return root, ""


def held_out_captions(root: Path, limit: int = MAX_CAPTIONS) -> HeldOutCaptions:
    """At most `limit` test captions, spread evenly over the split (so every held-out class is present)."""
    from s2i_train.train.banks import ATTRIBUTES, read_records

    records = [r for r in read_records(root) if r.get("split") == "test"]
    if not records:
        raise InputError(f"{root}: no test captions")
    if len(records) > limit:
        picks = np.unique(np.linspace(0, len(records) - 1, num=limit).round().astype(int))
        records = [records[i] for i in picks]
    try:
        attributes = np.array([[r["attributes"][a] for a in ATTRIBUTES] for r in records], dtype=np.int64)
        audio = [root / r["audio"] for r in records]
    except (KeyError, TypeError) as exc:
        raise InputError(f"{root}/captions.jsonl: a test caption lacks {exc}") from None
    return HeldOutCaptions(root, audio, attributes)


# -- embeddings -----------------------------------------------------------------------------------------


def _encode(bundle: Bundle, session: Any, batch: FeatureBatch | WaveBatch) -> np.ndarray:
    return np.asarray(session.run(None, encoder_feed(bundle, batch))[0], dtype=np.float32)


def embed_audio(bundle: Bundle, session: Any, paths: Sequence[Path], chunk: int = 32) -> np.ndarray:
    """The encoder's embeddings (N, D) of these utterances, `chunk` at a time (each padded to its longest)."""
    out = [_encode(bundle, session, real_inputs(bundle, paths[s : s + chunk])) for s in range(0, len(paths), chunk)]
    return np.concatenate(out) if out else np.empty((0, bundle.dims.embedding_dim), np.float32)


def calibration_embeddings(bundle: Bundle, session: Any, captions: HeldOutCaptions | None,
                           real_audio: Sequence[Path]) -> tuple[np.ndarray, str]:
    """(embeddings to calibrate on, a line saying what they are)."""
    if captions is not None:
        rows = captions.rows(0)
        real = embed_audio(bundle, session, [captions.audio[i] for i in rows])
        what = f"{len(rows)} test captions of {captions.root} (even rows)"
    else:
        real = embed_audio(bundle, session, list(real_audio))
        what = f"{len(real)} real utterances (shipped examples or --audio)"
    missing = MIN_CALIBRATION_ROWS - len(real)
    if missing <= 0:
        return real, what
    synthetic = [_encode(bundle, session, synthetic_inputs(bundle, 8, frames, seed=1))
                 for frames in np.linspace(64, 3000, num=-(-missing // 8)).round().astype(int)]
    rows = sum(len(s) for s in synthetic)
    return np.concatenate([real, *synthetic]), f"{what} and {rows} rows of synthetic features"


# -- the check ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Int8Check:
    """int8 against fp32 on ONNX Runtime CPU: images over the probe inputs, and the judge when there is one."""

    image_mae_max: float = 0.0
    image_max_abs: float = 0.0
    all_finite: bool = True
    cases: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    judge: dict[str, Any] | None = None
    judge_skipped: str | None = None  # why there is no judge reading

    @property
    def judge_passed(self) -> bool:
        return self.judge is None or judge_verdict(self.judge["fp32"], self.judge["int8"])

    @property
    def passed(self) -> bool:
        return self.all_finite and self.image_mae_max <= MAX_IMAGE_MAE and self.judge_passed

    def add_case(self, label: str, fp32: np.ndarray, int8: np.ndarray) -> None:
        finite = bool(np.isfinite(int8).all())
        diff = np.abs(fp32.astype(np.float64) - int8.astype(np.float64)) if finite else None
        mae = float(diff.mean()) if finite else float("inf")
        max_abs = float(diff.max()) if finite else float("inf")
        self.all_finite &= finite
        if finite:
            self.image_mae_max = max(self.image_mae_max, mae)
            self.image_max_abs = max(self.image_max_abs, max_abs)
        self.cases.append({"inputs": label, "batch": int(fp32.shape[0]), "finite": finite, "image_mae": mae,
                           "image_max_abs": max_abs})

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_mae_max": self.image_mae_max,
            "image_max_abs": self.image_max_abs,
            "all_finite": self.all_finite,
            "thresholds": {"image_mae_max": MAX_IMAGE_MAE, "judge_max_drop": MAX_DROP},
            "judge": self.judge,
            **({"judge_skipped": self.judge_skipped} if self.judge is None else {}),
            "passed": self.passed,
            "backend": "onnxruntime CPUExecutionProvider",
            "cases": self.cases,
        }


class Int8CheckFailed(S2IError):
    """The INT8 generator is not close enough to fp32; nothing was added to the bundle."""

    def __init__(self, check: Int8Check) -> None:
        self.check = check
        judge = ""
        if check.judge is not None:
            drops = ", ".join(f"{a} {check.judge['fp32'][a]:.3f} -> {check.judge['int8'][a]:.3f}"
                              for a in CHECKED_ATTRIBUTES)
            judge = f", judge accuracy fp32 -> int8 {drops} (max drop {MAX_DROP:g})"
        super().__init__(
            f"int8 check failed (image MAE max {check.image_mae_max:.2e} <= {MAX_IMAGE_MAE:g}, finite "
            f"{check.all_finite}{judge}); generator.int8.onnx was not added"
        )


def compare_int8(bundle: Bundle, int8_generator: Path, encoder: Any, *, real_audio: Sequence[Path] = (),
                 captions: HeldOutCaptions | None = None, run_dir: Path | None = None, judge_skipped: str | None = None,
                 threads: int = 0, progress: Callable[[str], None] = lambda _m: None) -> Int8Check:
    """Both generators on the same embeddings and noise; the judge reads the odd caption rows when `run_dir`
    is given (and `captions`)."""
    gen32, gen8 = ort_session(bundle.file(GENERATOR_FILE), threads), ort_session(int8_generator, threads)
    dims = bundle.dims
    check = Int8Check(judge_skipped=judge_skipped)
    for batch in probe_batches(bundle, real_audio):
        progress(f"int8 check: {batch.label}")
        embedding = _encode(bundle, encoder, batch)
        z, eps = noise_for(len(embedding), dims.z_dim, dims.ca_dim)
        check.add_case(batch.label, generate_images(gen32, embedding, z, eps), generate_images(gen8, embedding, z, eps))
    if captions is None:
        return check
    rows = captions.rows(1)
    progress(f"int8 check: {len(rows)} test captions x {JUDGED_DRAWS} noise draws")
    embedding = np.tile(embed_audio(bundle, encoder, [captions.audio[i] for i in rows]), (JUDGED_DRAWS, 1))
    rng = np.random.default_rng(1)
    z = rng.standard_normal((len(embedding), dims.z_dim), dtype=np.float32)
    eps = rng.standard_normal((len(embedding), dims.ca_dim), dtype=np.float32)
    images32, images8 = generate_images(gen32, embedding, z, eps), generate_images(gen8, embedding, z, eps)
    check.add_case(f"test captions x{len(rows)} (odd rows) x{JUDGED_DRAWS} noise draws", images32, images8)
    if run_dir is not None and check.all_finite:
        progress("int8 check: judge accuracy")
        attributes = np.tile(captions.attributes[rows], (JUDGED_DRAWS, 1))
        check.judge = {"fp32": judge_accuracy(run_dir, images32, attributes),
                       "int8": judge_accuracy(run_dir, images8, attributes), "max_drop": MAX_DROP,
                       "captions": f"{len(rows)} test captions of {captions.root} (odd rows), "
                                   f"{JUDGED_DRAWS} noise draws each"}
    return check


def export_int8(
    bundle_path: str | Path,
    *,
    run_dir: str | Path | None = None,
    data: str | Path | None = None,
    real_audio: Sequence[Path] = (),
    threads: int = 0,
    max_captions: int = MAX_CAPTIONS,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Quantise, check, and add generator.int8.onnx to the bundle; returns the s2i.json `int8` section.

    Raises Int8CheckFailed (and leaves the bundle as it was) when the check fails.
    """
    import onnxruntime

    from s2i_train.checkpoint import JUDGE, has_module

    bundle = load_bundle(bundle_path)
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None and not run_dir.is_dir():
        raise InputError(f"{run_dir}: run directory does not exist")
    root, no_data = dataset_root(run_dir, Path(data) if data is not None else None)
    captions = held_out_captions(root, max_captions) if root is not None else None
    if run_dir is None:
        judge_skipped = "no judge given (pass --run RUN with a trained judge)"
    elif not has_module(run_dir, JUDGE):
        judge_skipped = NO_JUDGE
    elif captions is None:
        judge_skipped = no_data
    else:
        judge_skipped = None
    encoder = ort_session(bundle.file(ENCODER_FILE), threads)
    progress("int8: calibration embeddings")
    embeddings, calibration = calibration_embeddings(bundle, encoder, captions, real_audio)
    dims = bundle.dims
    # Quantised under a hidden temporary name (not hashed), renamed in only after the check passes.
    with atomic_path(bundle.file(GENERATOR_INT8_FILE)) as staged:
        progress(f"quantising {GENERATOR_FILE} -> {GENERATOR_INT8_FILE}")
        quantize_generator(bundle.file(GENERATOR_FILE), staged, embeddings, dims.z_dim, dims.ca_dim)
        check = compare_int8(bundle, staged, encoder, real_audio=real_audio, captions=captions,
                             run_dir=None if judge_skipped else run_dir, judge_skipped=judge_skipped,
                             threads=threads, progress=progress)
        if not check.passed:
            raise Int8CheckFailed(check)
    return add_section(bundle, "int8", {
        "generator": GENERATOR_INT8_FILE,
        "quantization": {**QUANTIZATION, "tool": "onnxruntime.quantization.quantize_static",
                         "onnxruntime": onnxruntime.__version__},
        "calibration": calibration,
        "check": check.to_dict(),
    })
