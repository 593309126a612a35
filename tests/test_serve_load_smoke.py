"""The serve load test runs end to end on tiny sizes (so it does not rot). Nothing here judges speed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from bundle_factory import tiny_bundle  # noqa: F401 - fixture
from serve_support import require_serve_extra

require_serve_extra()

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import loadgen, serve_load  # noqa: E402


def test_load_test_on_tiny_sizes_counts_every_request(tiny_bundle, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    code = serve_load.main([
        "--bundle", str(tiny_bundle), "--threads", "1", "--levels", "2", "--seconds", "1", "--rounds", "1",
        "--warmup-seconds", "0.3", "--contenders", "http,inproc-b1", "--soak-clients", "3", "--soak-seconds", "1",
        "--out", str(tmp_path),
    ])
    assert code == 0
    (folder,) = tmp_path.iterdir()
    results = json.loads((folder / "serve.json").read_text())
    rows = {r["contender"]: r for r in results["levels"]}
    assert set(rows) == {serve_load.HTTP_BATCHED, serve_load.INPROC_SINGLE}
    for row in rows.values():
        assert row["ok"] > 0 and row["ok"] == row["requests"] and row["lost"] == 0 and row["p99_ms"] > 0
    soak = results["soak"]
    assert soak["server_errors"] == 0 and soak["lost"] == 0 and soak["ok"] == soak["server_counted_200"]
    assert soak["peak_rss_mb"] > 0 and soak["healthy_after"] and soak["server_in_flight_after"] == 0
    assert "### Soak: 3 clients" in (folder / "serve.md").read_text()


def test_load_generator_refuses_anything_but_loopback():
    assert loadgen.loopback_target("http://127.0.0.1:8000/") == ("127.0.0.1", 8000)
    assert loadgen.loopback_target("http://localhost:9/") == ("localhost", 9)
    for url in ("http://10.0.0.1:8000/", "http://192.168.1.5/", "https://127.0.0.1/", "http://8.8.8.8/"):
        with pytest.raises(ValueError, match="only targets"):
            loadgen.loopback_target(url)
