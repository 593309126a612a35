import os
import shutil

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
