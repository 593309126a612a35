import functools
import importlib.util
import os
import re
import shutil
from pathlib import Path

import pytest


def _cuda_device_reason() -> str | None:
    """Why GPU tests cannot run here, or None when a CUDA device is present."""
    if shutil.which("nvidia-smi") is None and not os.path.exists("/dev/nvidia0"):
        return "no CUDA device on this machine (no /dev/nvidia0, no nvidia-smi)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _cuda_device_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# In the runtime-only environment (no torch) the training and export tests cannot even be imported; they are
# left out of collection, by reading which test modules (or the local helpers they use) import the training side.
_TRAINING_SIDE = re.compile(r"^(?:import|from)\s+(torch|s2i_train|s2i_export)\b", re.MULTILINE)
_LOCAL_IMPORT = re.compile(r"^(?:import|from)\s+(\w+)", re.MULTILINE)
_TESTS = Path(__file__).resolve().parent


@functools.cache
def _needs_training_side(module: str) -> bool:
    path = _TESTS / f"{module}.py"
    if not path.is_file():
        return False
    text = path.read_text(encoding="utf-8")
    if _TRAINING_SIDE.search(text):
        return True
    return any(name != module and _needs_training_side(name) for name in _LOCAL_IMPORT.findall(text))


def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def pytest_ignore_collect(collection_path, config):
    if collection_path.suffix == ".py" and not _torch_available():
        return _needs_training_side(collection_path.stem) or None
    return None


def pytest_report_header(config):
    if not _torch_available():
        left_out = sorted(p.name for p in _TESTS.glob("test_*.py") if _needs_training_side(p.stem))
        return f"torch is not installed: {len(left_out)} training/export test modules left out ({', '.join(left_out)})"
    return None


@pytest.fixture(autouse=True, scope="session")
def _graph_cache_in_a_temporary_directory(tmp_path_factory):
    """Optimised graphs go to a directory of this test run, not the user's cache (subprocesses inherit it)."""
    previous = os.environ.get("S2I_CACHE_DIR")
    os.environ["S2I_CACHE_DIR"] = str(tmp_path_factory.mktemp("graph-cache"))
    yield
    if previous is None:
        os.environ.pop("S2I_CACHE_DIR", None)
    else:
        os.environ["S2I_CACHE_DIR"] = previous
