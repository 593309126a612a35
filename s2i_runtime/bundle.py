"""The model bundle (docs/design.md): a directory with s2i.json and the ONNX graphs. The one loader and writer.

Export writes bundles with `write_manifest`; the runtime and every tool read them with `load_bundle`.
s2i.json is checked against a strict schema and its own content hash (`manifest_schema.py`) before any
of it is used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from .errors import BundleError
from .frontend import FrontendSpec
from .fsutil import atomic_write_text
from .manifest_schema import (
    FORMAT_VERSION,
    HASH_FIELD,
    MAX_MANIFEST_BYTES,
    check_content_hash,
    content_sha256,
    parse_manifest,
    validate_manifest,
)

MANIFEST = "s2i.json"
ENCODER_FILE = "encoder.onnx"
GENERATOR_FILE = "generator.onnx"
ENCODER_FP16_FILE = "encoder.fp16.onnx"
GENERATOR_FP16_FILE = "generator.fp16.onnx"
GENERATOR_INT8_FILE = "generator.int8.onnx"  # `s2i-export int8`: the generator only, checked on ONNX Runtime CPU

# Graph I/O names: stable, relied on by the runtime, TensorRT profiles and Triton configs.
ENCODER_INPUTS = ("mel", "lengths")
# An encoder with the front end inside its graph (`s2i-export onnx --frontend-in-graph`) reads the padded
# samples (B, N) float32 and each clip's length in samples (B,) int64.
WAVEFORM_ENCODER_INPUTS = ("waveform", "num_samples")
ENCODER_OUTPUTS = ("embedding",)
GENERATOR_INPUTS = ("embedding", "z", "eps")
GENERATOR_OUTPUTS = ("image",)

# What the encoder graph reads (s2i.json `model.encoder_input`; bundles without it read log-Mel features).
LOGMEL_INPUT, WAVEFORM_INPUT = "logmel", "waveform"
ENCODER_INPUT_KINDS = (LOGMEL_INPUT, WAVEFORM_INPUT)

# Files that never belong to the hashed contents.
_UNHASHED = {MANIFEST}


@dataclasses.dataclass(frozen=True)
class ModelDims:
    embedding_dim: int
    z_dim: int
    ca_dim: int
    image_sizes: tuple[int, ...]  # one per generator branch; the graph outputs the last

    @property
    def image_size(self) -> int:
        return self.image_sizes[-1]


@dataclasses.dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]
    frontend: FrontendSpec
    dims: ModelDims

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def encoder_input(self) -> str:
        """"logmel" (the runtime computes features) or "waveform" (the front end is in the encoder graph)."""
        return self.manifest.get("model", {}).get("encoder_input", LOGMEL_INPUT)

    @property
    def encoder_inputs(self) -> tuple[str, str]:
        """The encoder graph's input names, in order."""
        return encoder_input_names(self.encoder_input)

    @property
    def dataset(self) -> dict[str, Any]:
        return self.manifest.get("dataset", {})

    @property
    def engines(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("engines", []))

    @property
    def fp16(self) -> dict[str, Any] | None:
        return self.manifest.get("fp16")

    @property
    def int8(self) -> dict[str, Any] | None:
        return self.manifest.get("int8")


def encoder_input_names(kind: str) -> tuple[str, str]:
    return WAVEFORM_ENCODER_INPUTS if kind == WAVEFORM_INPUT else ENCODER_INPUTS


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_files(path: Path) -> list[str]:
    """Every file of the bundle (relative, POSIX), except the manifest and hidden temporaries."""
    names = []
    for item in sorted(path.rglob("*")):
        rel = item.relative_to(path).as_posix()
        if item.is_file() and rel not in _UNHASHED and not any(p.startswith(".") for p in rel.split("/")):
            names.append(rel)
    return names


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write s2i.json with the sha256 of every file now in the bundle and of its own content; returns what
    was written. A manifest the runtime would refuse is refused here, before it is written."""
    path = Path(path)
    data = {k: v for k, v in manifest.items() if k != HASH_FIELD}
    data["format_version"] = FORMAT_VERSION
    data["files"] = {name: sha256_file(path / name) for name in bundle_files(path)}
    validate_manifest(data, f"{path / MANIFEST} (being written)")
    data[HASH_FIELD] = content_sha256(data)
    atomic_write_text(path / MANIFEST, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest as parsed JSON (an object), not yet checked against the schema."""
    manifest_path = Path(path) / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path}: not a model bundle (no {MANIFEST})")
    try:
        with open(manifest_path, "rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as exc:
        raise BundleError(f"{manifest_path}: unreadable manifest ({exc.strerror or exc})") from None
    return parse_manifest(raw, str(manifest_path))


def load_bundle(path: str | Path | None = None, verify_hashes: bool = True) -> Bundle:
    """Read and check a bundle. `None` means the default model shipped with the runtime."""
    if path is None:
        path = default_bundle_path()
        if not (path / MANIFEST).is_file():
            raise BundleError(
                f"the default model is not installed (no {MANIFEST} in {path}); build it with "
                "`make default-model`, or pass a bundle directory (--bundle DIR)"
            )
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: bundle directory does not exist")
    data = read_manifest(path)
    where = str(path / MANIFEST)
    validate_manifest(data, where)
    if verify_hashes:
        check_content_hash(data, where)
    try:
        frontend = FrontendSpec.from_dict(data["frontend"])
    except ValueError as exc:  # the schema's ranges leave only the spec's own cross-field rules
        raise BundleError(f"{where}: frontend: {exc}") from None
    model = data["model"]
    dims = ModelDims(model["embedding_dim"], model["z_dim"], model["ca_dim"], tuple(model["image_sizes"]))
    files = data["files"]
    for name, expected in files.items():
        file_path = path / name
        if not file_path.is_file():
            raise BundleError(f"{file_path}: listed in {MANIFEST} but missing")
        if verify_hashes and sha256_file(file_path) != expected:
            raise BundleError(f"{file_path}: sha256 does not match {MANIFEST} (corrupt or modified file)")
    return Bundle(path=path, manifest=data, frontend=frontend, dims=dims)


def default_bundle_path() -> Path:
    return Path(__file__).resolve().parent / "default_bundle"
