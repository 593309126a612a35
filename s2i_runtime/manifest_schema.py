"""s2i.json read strictly (docs/design.md): its JSON, a schema with types and ranges, and a hash of its content.

Every field the runtime acts on has a type and a range, and a manifest that breaks one is refused with one
line naming the field. The ranges also bound what a manifest can make the runtime allocate (FFT sizes,
frame counts, image sizes). `manifest_sha256` seals the content itself, so an edited front-end block is
caught like an edited graph; bundles written before the seal existed have none and still load.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from typing import Any

from .errors import BundleError
from .limits import MAX_RATE, MIN_RATE

FORMAT_VERSION = 1
HASH_FIELD = "manifest_sha256"
MAX_MANIFEST_BYTES = 4 << 20
MAX_DEPTH = 32
MAX_DIM = 1 << 16
MAX_IMAGE_SIZE = 1024
# The front end's largest spectrogram (frames x frequency bins); it bounds the memory one input costs.
MAX_SPECTRUM_CELLS = 1 << 22
# The longest clip a bundle may accept (max_frames hops), which bounds the memory of reading one input.
MAX_CLIP_SECONDS = 120.0

_HEX64 = re.compile(r"[0-9a-f]{64}")


def parse_manifest(raw: bytes, where: str) -> dict[str, Any]:
    """The JSON object in `raw`; BundleError for anything but plain, finite, not absurdly nested JSON."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{where}: manifest is {len(raw)} bytes, more than {MAX_MANIFEST_BYTES}")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float,
                          object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise BundleError(f"{where}: unreadable manifest (nested too deeply)") from None
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, duplicate keys, 4,300+ digit integers
        raise BundleError(f"{where}: unreadable manifest ({_first_line(exc)})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{where}: manifest is not a JSON object")
    if _depth(data) > MAX_DEPTH:
        raise BundleError(f"{where}: unreadable manifest (nested more than {MAX_DEPTH} levels deep)")
    return data


def validate_manifest(data: dict[str, Any], where: str) -> None:
    """BundleError naming the first field that breaks the schema."""
    check = _Checker(where)
    version = data.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise BundleError(f"{where}: format_version {_show(version)} is not supported (expected {FORMAT_VERSION})")
    _validate_frontend(check, check.obj(data, "frontend"))
    _validate_model(check, check.obj(data, "model"))
    _validate_files(check, check.obj(data, "files"))
    for optional in ("dataset", "training", "export"):
        if optional in data:
            check.obj(data, optional)
    if "dataset" in data:
        dataset = data["dataset"]
        if "name" in dataset:
            check.string(dataset, "dataset.name")
        if "vocabulary" in dataset and not isinstance(dataset["vocabulary"], (list, dict)):
            check.fail("dataset.vocabulary", "must be a list or an object", dataset["vocabulary"])
    if data.get("fp16") is not None:
        check.obj(data, "fp16")
    if data.get("int8") is not None:
        _validate_int8(check, check.obj(data, "int8"), data["files"])
    if "engines" in data:
        engines = data["engines"]
        if not isinstance(engines, list) or len(engines) > 64:
            check.fail("engines", "must be a list of at most 64 objects", engines)
        for i, entry in enumerate(engines):
            if not isinstance(entry, dict):
                check.fail(f"engines[{i}]", "must be an object", entry)
            check.relative_path(entry.get("dir"), f"engines[{i}].dir")
            plans = entry.get("plans", {})
            if not isinstance(plans, dict):
                check.fail(f"engines[{i}].plans", "must be an object", plans)
            for role, path in plans.items():
                check.relative_path(path, f"engines[{i}].plans.{role}")
    if HASH_FIELD in data and (not isinstance(data[HASH_FIELD], str) or not _HEX64.fullmatch(data[HASH_FIELD])):
        check.fail(HASH_FIELD, "must be 64 lowercase hex digits", data[HASH_FIELD])


def content_sha256(data: dict[str, Any]) -> str:
    """sha256 of the manifest without its own hash, as canonical JSON (sorted keys, no spaces, ASCII)."""
    body = {k: v for k, v in data.items() if k != HASH_FIELD}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def check_content_hash(data: dict[str, Any], where: str) -> None:
    recorded = data.get(HASH_FIELD)
    if recorded is not None and content_sha256(data) != recorded:
        raise BundleError(
            f"{where}: content does not match its {HASH_FIELD} (s2i.json was edited after export; re-export "
            "the bundle)"
        )


def _validate_frontend(check: _Checker, spec: dict[str, Any]) -> None:
    from .frontend import FrontendSpec

    names = [f.name for f in dataclasses.fields(FrontendSpec)]
    for name in sorted(set(spec) - set(names)):
        check.fail(f"frontend.{name}", "is not a front-end field", spec[name])
    for name in names:
        if name not in spec:
            check.fail(f"frontend.{name}", "is missing", None)
    f = "frontend."
    rate = check.integer(spec, f + "sample_rate", MIN_RATE, MAX_RATE)
    n_fft = check.integer(spec, f + "n_fft", 16, 8192)
    check.integer(spec, f + "win_length", 1, n_fft)
    hop = check.integer(spec, f + "hop_length", 1, n_fft)
    check.integer(spec, f + "n_mels", 1, min(512, n_fft // 2 + 1))
    max_frames = check.integer(spec, f + "max_frames", 1, MAX_SPECTRUM_CELLS // (n_fft // 2 + 1))
    check.integer(spec, f + "min_frames", 1, max_frames)
    if max_frames * hop / rate > MAX_CLIP_SECONDS:
        check.fail(f + "max_frames", f"allows clips longer than {MAX_CLIP_SECONDS:g} s at this hop and rate",
                   max_frames)
    for name in ("remove_dc", "center"):
        check.boolean(spec, f + name)
    check.number(spec, f + "preemphasis", 0.0, 1.0)
    fmax = check.number(spec, f + "fmax", 0.0, rate / 2, low_open=True)
    check.number(spec, f + "fmin", 0.0, fmax, high_open=True)
    check.number(spec, f + "amin", 0.0, 1.0, low_open=True, high_open=True)
    check.number(spec, f + "top_db", 0.0, 300.0, low_open=True)
    for name, allowed in (("window", "hamming"), ("pad_mode", "reflect"), ("mel_scale", "slaney"),
                          ("mel_norm", "slaney")):
        if spec[name] != allowed:
            check.fail(f + name, f"must be {allowed!r} (the only one implemented)", spec[name])


def _validate_model(check: _Checker, model: dict[str, Any]) -> None:
    from .bundle import ENCODER_INPUT_KINDS

    for name in ("embedding_dim", "z_dim", "ca_dim"):
        check.integer(model, f"model.{name}", 1, MAX_DIM)
    sizes = model.get("image_sizes")
    if not isinstance(sizes, list) or not 1 <= len(sizes) <= 16:
        check.fail("model.image_sizes", "must be a list of 1 to 16 image sizes", sizes)
    for i in range(len(sizes)):
        check.integer(sizes, f"model.image_sizes[{i}]", 1, MAX_IMAGE_SIZE, key=i)
    # Absent in bundles written before the front end could be exported into the graph: those read log-Mel.
    if "encoder_input" in model and model["encoder_input"] not in ENCODER_INPUT_KINDS:
        check.fail("model.encoder_input", f"must be one of {', '.join(map(repr, ENCODER_INPUT_KINDS))}",
                   model["encoder_input"])


def _validate_files(check: _Checker, files: dict[str, Any]) -> None:
    from .bundle import ENCODER_FILE, GENERATOR_FILE, MANIFEST

    if len(files) > 256:
        check.fail("files", "must list at most 256 files", f"{len(files)} entries")
    for required in (ENCODER_FILE, GENERATOR_FILE):
        if required not in files:
            check.fail("files", f"does not list {required}", None)
    for name, digest in files.items():
        check.relative_path(name, f"files[{name[:60]!r}]")
        if name == MANIFEST:
            check.fail(f"files[{name!r}]", "must not list the manifest itself", digest)
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            check.fail(f"files[{name[:60]!r}]", "must be a sha256 (64 lowercase hex digits)", digest)


def _validate_int8(check: _Checker, section: dict[str, Any], files: dict[str, Any]) -> None:
    """The INT8 generator the section names is the one file the runtime loads for it, and is hashed."""
    from .bundle import GENERATOR_INT8_FILE

    generator = section.get("generator")
    if generator != GENERATOR_INT8_FILE:
        check.fail("int8.generator", f"must be {GENERATOR_INT8_FILE!r}", generator)
    if generator not in files:
        check.fail("files", f"does not list {generator} (named by int8.generator)", None)


class _Checker:
    """Typed reads of manifest fields; the first problem raises one BundleError line naming the field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def fail(self, field: str, problem: str, value: Any) -> None:
        got = "" if value is None else f", got {_show(value)}"
        # Field names can come from the manifest's own keys: escaped, so that the error stays one line.
        field = "".join(c if c.isprintable() else repr(c)[1:-1] for c in field)
        raise BundleError(f"{self.where}: {field} {problem}{got}")

    def obj(self, data: dict[str, Any], field: str) -> dict[str, Any]:
        value = data.get(field)
        if not isinstance(value, dict):
            self.fail(field, "must be an object" if field in data else "is missing", value)
        return value

    def _get(self, data: Any, field: str, key: Any) -> Any:
        key = field.rsplit(".", 1)[-1] if key is None else key
        if isinstance(data, dict) and key not in data:
            self.fail(field, "is missing", None)
        return data[key]

    def integer(self, data: Any, field: str, low: int, high: int, key: Any = None) -> int:
        value = self._get(data, field, key)
        if type(value) is not int or not low <= value <= high:
            self.fail(field, f"must be an integer from {low} to {high}", value)
        return value

    def number(self, data: Any, field: str, low: float, high: float, *, low_open: bool = False,
               high_open: bool = False) -> float:
        value = self._get(data, field, None)
        ok = type(value) in (int, float) and math.isfinite(value)
        ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not ok:
            span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            self.fail(field, f"must be a finite number in {span}", value)
        return float(value)

    def boolean(self, data: Any, field: str) -> bool:
        value = self._get(data, field, None)
        if type(value) is not bool:
            self.fail(field, "must be true or false", value)
        return value

    def string(self, data: Any, field: str) -> str:
        value = self._get(data, field, None)
        if not isinstance(value, str) or len(value) > 1000:
            self.fail(field, "must be a string (at most 1000 characters)", value)
        return value

    def relative_path(self, value: Any, field: str) -> None:
        """A path inside the bundle: relative, POSIX, no `..`, nothing hidden."""
        ok = isinstance(value, str) and 0 < len(value) <= 255 and "\\" not in value and "\0" not in value
        parts = value.split("/") if ok else []
        if not ok or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
            self.fail(field, "must be a relative path inside the bundle", value)


def _show(value: Any) -> str:
    """A short repr: huge integers by their size, long strings cut."""
    if type(value) is int and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    if isinstance(value, (dict, list)):
        return f"{'an object' if isinstance(value, dict) else 'a list'} of {len(value)} entries"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) != len(pairs):
        seen = set()
        duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {duplicate[:60]!r} appears twice")
    return data


def _depth(value: Any) -> int:
    """Nesting depth, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]

