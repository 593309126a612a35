"""The model bundle (DESIGN §3): a directory with s2i.json and the ONNX graphs. The one loader and writer.

Export writes bundles with `write_manifest`; the runtime and every tool read them with `load_bundle`.
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

FORMAT_VERSION = 1
MANIFEST = "s2i.json"
ENCODER_FILE = "encoder.onnx"
GENERATOR_FILE = "generator.onnx"
ENCODER_FP16_FILE = "encoder.fp16.onnx"
GENERATOR_FP16_FILE = "generator.fp16.onnx"

# Graph I/O names: stable, relied on by the runtime, TensorRT profiles and Triton configs.
ENCODER_INPUTS = ("mel", "lengths")
ENCODER_OUTPUTS = ("embedding",)
GENERATOR_INPUTS = ("embedding", "z", "eps")
GENERATOR_OUTPUTS = ("image",)

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
    def dataset(self) -> dict[str, Any]:
        return self.manifest.get("dataset", {})

    @property
    def engines(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("engines", []))

    @property
    def fp16(self) -> dict[str, Any] | None:
        return self.manifest.get("fp16")


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
    """Write s2i.json with the sha256 of every file now in the bundle; returns what was written."""
    path = Path(path)
    data = dict(manifest)
    data["format_version"] = FORMAT_VERSION
    data["files"] = {name: sha256_file(path / name) for name in bundle_files(path)}
    atomic_write_text(path / MANIFEST, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


def read_manifest(path: str | Path) -> dict[str, Any]:
    manifest_path = Path(path) / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path}: not a model bundle (no {MANIFEST})")
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path}: unreadable manifest ({exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{manifest_path}: manifest is not a JSON object")
    return data


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
    where = path / MANIFEST
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{where}: format_version {version!r} is not supported (expected {FORMAT_VERSION})")
    try:
        frontend = FrontendSpec.from_dict(data["frontend"])
        model = data["model"]
        dims = ModelDims(
            embedding_dim=int(model["embedding_dim"]),
            z_dim=int(model["z_dim"]),
            ca_dim=int(model["ca_dim"]),
            image_sizes=tuple(int(s) for s in model["image_sizes"]),
        )
        files = dict(data["files"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{where}: missing or malformed field ({exc})") from None
    for required in (ENCODER_FILE, GENERATOR_FILE):
        if required not in files:
            raise BundleError(f"{where}: does not list {required}")
    for name, expected in files.items():
        file_path = path / name
        if not file_path.is_file():
            raise BundleError(f"{file_path}: listed in {MANIFEST} but missing")
        if verify_hashes and sha256_file(file_path) != expected:
            raise BundleError(f"{file_path}: sha256 does not match {MANIFEST} (corrupt or modified file)")
    return Bundle(path=path, manifest=data, frontend=frontend, dims=dims)


def default_bundle_path() -> Path:
    return Path(__file__).resolve().parent / "default_bundle"
