"""ONNX Runtime against PyTorch on the same inputs (`s2i-export verify`).

Cases: the encoder for every batch size in {1, 3, 8} x length in {64, 500, 3000} frames (synthetic
features, each batch with rows of different valid lengths), plus real utterances when any are given or
shipped. An encoder that holds the front end (`model.encoder_input` "waveform") gets synthetic and real
waveforms instead, and is compared with the numpy front end followed by the PyTorch encoder. The
generator for every batch size and the real utterances, fed with PyTorch's embeddings and the runtime's
own noise. A case passes when the max abs difference is <= 1e-4 (fp32).

The PyTorch side needs the weights the bundle was exported from: `--run RUN`, else the bundle's
`checkpoint/` (export with --include-checkpoint), else the run directory recorded at export. Their sha256
must match what s2i.json recorded, so a retrained run is never compared against an older bundle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from s2i_runtime.bundle import ENCODER_FILE, GENERATOR_FILE, GENERATOR_INPUTS, Bundle, load_bundle
from s2i_runtime.errors import BundleError

from .probes import (
    FeatureBatch,
    WaveBatch,
    encoder_feed,
    noise_for,
    ort_session,
    real_inputs,
    synthetic_inputs,
)

BATCH_SIZES = (1, 3, 8)
FRAME_LENGTHS = (64, 500, 3000)
TOLERANCE = 1e-4


@dataclasses.dataclass(frozen=True)
class VerifyCase:
    component: str  # "encoder" | "generator"
    inputs: str
    batch: int
    frames: int | None
    max_abs_error: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(np.isfinite(self.max_abs_error)) and self.max_abs_error <= self.tolerance

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "passed": self.passed}


@dataclasses.dataclass
class VerifyReport:
    bundle: str
    torch_source: str
    tolerance: float
    real_utterances: int
    cases: list[VerifyCase] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": self.bundle,
            "torch_source": self.torch_source,
            "tolerance": self.tolerance,
            "real_utterances": self.real_utterances,
            "passed": self.passed,
            "max_abs_error": {
                comp: max((c.max_abs_error for c in self.cases if c.component == comp), default=None)
                for comp in ("encoder", "generator")
            },
            "cases": [c.to_dict() for c in self.cases],
        }


def torch_weights_dir(bundle: Bundle, run_dir: str | Path | None) -> Path:
    """Where the PyTorch weights of this bundle are (see the module docstring), checked by sha256."""
    from s2i_train.checkpoint import ENCODER, GENERATOR, has_module, read_meta

    candidates: list[Path] = []
    if run_dir is not None:
        candidates.append(Path(run_dir))
    else:
        candidates.append(bundle.path / "checkpoint")
        source = bundle.manifest.get("export", {}).get("source_run")
        if source:
            candidates.append(Path(source))
    expected = bundle.manifest.get("export", {}).get("checkpoint_sha256", {})
    for candidate in candidates:
        if not all(has_module(candidate, name) for name in (ENCODER, GENERATOR)):
            continue
        for name in (ENCODER, GENERATOR):
            recorded = expected.get(name)
            if recorded and read_meta(candidate, name).get("sha256") != recorded:
                raise BundleError(
                    f"{candidate}: its {name} weights are not the ones {bundle.path} was exported from "
                    "(re-export the bundle, or pass the matching --run)"
                )
        return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise BundleError(
        f"no PyTorch weights to verify against (tried {tried}): pass --run RUN, or export with --include-checkpoint"
    )


def encoder_batches(bundle: Bundle, batch_sizes: Sequence[int],
                    frame_lengths: Sequence[int]) -> list[FeatureBatch | WaveBatch]:
    spec = bundle.frontend
    lengths = sorted({min(max(t, spec.min_frames), spec.max_frames) for t in frame_lengths})
    return [synthetic_inputs(bundle, b, t, seed=1) for b in batch_sizes for t in lengths]


def verify_bundle(
    bundle_path: str | Path | None,
    *,
    run_dir: str | Path | None = None,
    real_audio: Sequence[Path] = (),
    batch_sizes: Sequence[int] = BATCH_SIZES,
    frame_lengths: Sequence[int] = FRAME_LENGTHS,
    tolerance: float = TOLERANCE,
    threads: int = 0,
    progress: Callable[[str], None] = lambda _m: None,
) -> VerifyReport:
    import torch

    from s2i_train.checkpoint import load_generator, load_speech_encoder
    from s2i_train.models.generator import ExportableGenerator

    bundle = load_bundle(bundle_path)
    weights = torch_weights_dir(bundle, run_dir)
    encoder = load_speech_encoder(weights).eval()
    generator = ExportableGenerator(load_generator(weights)).eval()
    enc_session = ort_session(bundle.file(ENCODER_FILE), threads)
    gen_session = ort_session(bundle.file(GENERATOR_FILE), threads)
    emb_name, z_name, eps_name = GENERATOR_INPUTS
    dims = bundle.dims

    real = real_inputs(bundle, real_audio)
    report = VerifyReport(str(bundle.path), str(weights), tolerance, 0 if real is None else real.batch)

    def run_encoder(probe: FeatureBatch | WaveBatch) -> np.ndarray:
        progress(f"encoder: {probe.label}")
        # The reference: PyTorch's encoder on the numpy front end's features.
        batch = probe.features(bundle.frontend) if isinstance(probe, WaveBatch) else probe
        with torch.inference_mode():
            expected = encoder(torch.from_numpy(batch.mel), torch.from_numpy(batch.lengths)).numpy()
        got = enc_session.run(None, encoder_feed(bundle, probe))[0]
        report.cases.append(VerifyCase("encoder", batch.label, batch.batch, batch.frames, _max_abs(expected, got),
                                       tolerance))
        return expected

    def run_generator(label: str, embedding: np.ndarray) -> None:
        progress(f"generator: {label}")
        z, eps = noise_for(embedding.shape[0], dims.z_dim, dims.ca_dim)
        with torch.inference_mode():
            expected = generator(*(torch.from_numpy(a) for a in (embedding, z, eps))).numpy()
        got = gen_session.run(None, {emb_name: embedding, z_name: z, eps_name: eps})[0]
        report.cases.append(VerifyCase("generator", label, embedding.shape[0], None, _max_abs(expected, got),
                                       tolerance))

    embeddings: dict[int, np.ndarray] = {}
    for batch in encoder_batches(bundle, batch_sizes, frame_lengths):
        embeddings[batch.batch] = run_encoder(batch)  # the last (longest) length per batch size is kept
    if real is not None:
        real_embedding = run_encoder(real)
    for size in batch_sizes:
        run_generator(f"embeddings B={size}", embeddings[size].astype(np.float32))
    if real is not None:
        run_generator(real.label, real_embedding.astype(np.float32))
    return report


def _max_abs(expected: np.ndarray, got: np.ndarray) -> float:
    if expected.shape != got.shape:
        return float("inf")
    if not (np.isfinite(expected).all() and np.isfinite(got).all()):
        return float("nan")
    return float(np.abs(expected.astype(np.float64) - got.astype(np.float64)).max())
