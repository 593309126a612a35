"""ONNX Runtime's optimised graphs, kept on disk so that a later load skips the optimiser.

The optimiser takes about half of a cold start's model loading and keeps the unoptimised graph in memory
beside the optimised one while it works. A cached graph keeps its weights in a file of their own beside it
(`<graph>.onnx.data`), which ONNX Runtime maps into memory instead of parsing and copying them out of the
graph: the load is shorter and its memory peak lower. Optimised graphs go to a user cache directory (`S2I_CACHE_DIR`,
else `$XDG_CACHE_HOME/s2i/graphs`, else `~/.cache/s2i/graphs`; `S2I_CACHE_DIR=off` turns caching off), never
into the bundle, which may be read-only. A file is named by everything its content depends on — the source
graph's sha256 (from the verified manifest), ONNX Runtime's version and this CPU — so a changed bundle, an
upgrade or another machine never reads a stale graph. Files are written whole or not at all (rename, the
weights before the graph that names them), and a graph that fails to load is removed and made anew.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

OFF = ("off", "0", "no", "false")
# Tensors at least this large go to the weights file; small ones (shapes, scalars) stay in the graph.
_EXTERNAL_MIN_BYTES = 1024


def cache_dir() -> Path | None:
    """Where optimised graphs go, or None when caching is turned off."""
    chosen = os.environ.get("S2I_CACHE_DIR")
    if chosen is not None:
        return None if chosen.strip().lower() in OFF or not chosen.strip() else Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "s2i" / "graphs"


def _cpu_fingerprint() -> str:
    # ORT_ENABLE_ALL lays convolutions out for this CPU's vector width: a graph optimised on an AVX-512
    # machine is not for an AVX2 one.
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            lines = [line for line in handle.read(65536).splitlines() if line.startswith(("model name", "flags"))]
        return "\n".join(lines[:2])
    except OSError:
        return platform.processor()


def cache_key(source_sha256: str, ort_version: str, level: str) -> str:
    facts = {"graph": source_sha256, "onnxruntime": ort_version, "level": level,
             "machine": platform.machine(), "cpu": _cpu_fingerprint(), "weights": "external"}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


def cached_session(ort: Any, source: Path, source_sha256: str, make_options: Callable[[], Any],
                   providers: list[str]) -> tuple[Any, str]:
    """An InferenceSession of `source` on the CPU provider, through the cache; (session, how) where how is
    'cache hit', 'cache written' or 'not cached (reason)'."""
    directory = cache_dir()
    if directory is None:
        return _plain(ort, source, make_options, providers), "not cached (S2I_CACHE_DIR=off)"
    options = make_options()
    key = cache_key(source_sha256, ort.__version__, str(options.graph_optimization_level))
    path = directory / f"{source.stem}-{key}.onnx"
    weights = path.with_name(path.name + ".data")
    if path.is_file():
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            return ort.InferenceSession(os.fspath(path), sess_options=options, providers=providers), "cache hit"
        except Exception:  # truncated or damaged by hand: made anew below
            path.unlink(missing_ok=True)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=directory))
    except OSError as exc:
        return _plain(ort, source, make_options, providers), f"not cached ({directory}: {exc.strerror or exc})"
    try:
        options = make_options()
        # The graph names its weights file relative to itself: stage it under its final name.
        options.optimized_model_filepath = os.fspath(staging / "graph.onnx")
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", weights.name)
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                         str(_EXTERNAL_MIN_BYTES))
        session = ort.InferenceSession(os.fspath(source), sess_options=options, providers=providers)
        for staged, final in ((staging / weights.name, weights), (staging / "graph.onnx", path)):
            if staged.is_file():  # a graph without large tensors has no weights file
                os.chmod(staged, 0o644)
                os.replace(staged, final)
        return session, "cache written"
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return _plain(ort, source, make_options, providers), f"not cached ({detail})"
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _plain(ort: Any, source: Path, make_options: Callable[[], Any], providers: list[str]) -> Any:
    return ort.InferenceSession(os.fspath(source), sess_options=make_options(), providers=providers)
