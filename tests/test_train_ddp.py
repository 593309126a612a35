"""Multi-process training through torchrun: 2 CPU processes with the gloo backend on the tiny config."""

import json
import os
import socket
import subprocess
import sys

import pytest
from train_tiny_data import make_tiny_shapes

from s2i_train.train.config import builtin_config_path
from s2i_train.train.runner import train_stage


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path):
    data = make_tiny_shapes(tmp_path / "shapes")
    run = tmp_path / "run"
    for stage in ("judge", "teacher"):
        train_stage(stage, run, data=data, config_path=builtin_config_path("tiny") if stage == "judge" else None,
                    progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for stage in ("checkers", "encoder", "generator"):
        # Each run ends by checking that both ranks hold bit-identical weights (RuntimeError otherwise).
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
             "--master-port", str(_free_port()), "-m", "s2i_train.cli", stage, "--run-dir", str(run), "--json"],
            capture_output=True, text=True, timeout=300, env=env,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        assert len(reports) == 1 and reports[0]["end_step"] == 3, proc.stdout[-2000:]  # tiny: one checker
        assert (run / f"{'checker-1' if stage == 'checkers' else stage}.safetensors").is_file()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    # Rank 0 alone logs: one line per step.
    assert [x["step"] for x in lines if x["stage"] == "generator"] == [1, 2, 3]
