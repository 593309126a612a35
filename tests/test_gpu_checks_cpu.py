"""The CPU-side pieces of benchmarks/gpu_checks.py (the checks themselves need a GPU: test_runtime_tensorrt.py)."""

import numpy as np

from benchmarks.gpu_checks import check_clips
from benchmarks.report import _gpu_check_lines
from s2i_runtime.frontend import FrontendSpec


def test_check_clips_include_one_of_exactly_max_seconds():
    spec = FrontendSpec()
    clips = check_clips(spec.sample_rate, 10.0)
    assert clips[0].size == 160000 and clips[0].dtype == np.float32
    frames = sorted(spec.num_frames(c.size) for c in clips)
    assert frames[-1] == 1001 and frames[-2] > 992  # the longest ones share a batch just under the profile


def test_gpu_check_lines_say_pass_or_fail():
    checks = {
        "parity": {"tf32": False, "embedding_max_abs_diff": 2e-6, "image_max_abs_diff": 3e-5, "atol": 1e-4,
                   "ok": True},
        "exact_clip": {"frames": [1001, 997], "engine_frame_range": [64, 1001], "ok": True},
        "memory": {"calls": 1000, "threads": 8, "drift_bytes": 64 << 20, "slack_bytes": 4 << 20, "ok": False},
    }
    lines = _gpu_check_lines(checks)
    assert "TF32 off" in lines[0] and lines[0].endswith("pass")
    assert "1001 frames" in lines[1] and lines[2].endswith("FAIL") and "+64.0 MiB" in lines[2]
    assert _gpu_check_lines(None) == []
