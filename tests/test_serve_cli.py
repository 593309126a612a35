"""`s2i-run serve` as a person starts it: a child process on a real loopback socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from bundle_factory import tiny_bundle, tone_wavs  # noqa: F401 - fixtures
from serve_support import require_serve_extra

require_serve_extra()

from s2i_runtime.serve.process import ServerExited, ServerProcess  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {"PYTHONPATH": str(ROOT)}


def http(url: str, body: bytes | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_serve_answers_on_loopback_and_stops_on_ctrl_c(tiny_bundle, tone_wavs):  # noqa: F811
    server = ServerProcess(["--bundle", tiny_bundle, "--threads", "1"], env=ENV).start()
    try:
        assert server.ready["loopback_only"] and server.ready["dynamic_batching"]
        assert server.url.startswith("http://127.0.0.1:") and server.ready["port"] > 0
        assert server.ready["bundle"] == str(Path(tiny_bundle).resolve())
        assert http(server.url + "healthz")[0] == 200
        status, headers, body = http(server.url + "v1/images?seed=1", tone_wavs[0].read_bytes())
        assert status == 200 and headers["content-type"] == "image/png" and body[:4] == b"\x89PNG"
        status, _, body = http(server.url + "v1/images", b"not audio")
        assert status == 400 and json.loads(body)["error"].startswith("upload: ")
    finally:
        code = server.stop()
    assert code in (0, 130), server.stderr  # 130: Ctrl-C, passed on by uvicorn after a clean shutdown
    assert "Traceback" not in server.stderr


def test_port_in_use_is_one_error_line_and_exit_2(tiny_bundle):  # noqa: F811
    with ServerProcess(["--bundle", tiny_bundle, "--threads", "1"], env=ENV) as first:
        done = subprocess.run(
            [sys.executable, "-c", "from s2i_runtime.cli import main; main()", "serve", "--bundle",
             str(tiny_bundle), "--port", str(first.ready["port"])],
            capture_output=True, text=True, timeout=120, env={**os.environ, **ENV},
        )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{first.ready['port']}: "
                                                "Address already in use"]


def test_bad_bundle_or_settings_are_exit_2_before_listening(tmp_path):
    with pytest.raises(ServerExited, match="exited with 2"):
        ServerProcess(["--bundle", tmp_path / "missing"], env=ENV).start()
    with pytest.raises(ServerExited, match="upload limit must be at least 1 KiB"):
        ServerProcess(["--max-upload-mb", "0"], env=ENV).start()


def test_missing_extra_is_named(monkeypatch):
    import importlib.util

    from s2i_runtime import serve

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    assert serve.missing_extra() == "serving needs uvicorn: pip install 's2i[serve]'"


def test_runtime_imports_without_the_serve_extra():
    """`import s2i_runtime.serve` and the CLI module load nothing of the ASGI stack until `serve` runs."""
    code = ("import sys, s2i_runtime.cli, s2i_runtime.serve; "
            "sys.exit(bool({'starlette', 'uvicorn', 'python_multipart'} & set(sys.modules)))")
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ, **ENV}, timeout=60).returncode == 0


def test_sigterm_also_stops_it(tiny_bundle):  # noqa: F811
    server = ServerProcess(["--bundle", tiny_bundle, "--threads", "1"], env=ENV).start()
    os.kill(server.pid, signal.SIGTERM)
    code = server.stop()
    assert code in (0, -signal.SIGTERM), server.stderr
    assert "Traceback" not in server.stderr


def test_precision_int8_serves_a_bundles_int8_generator(tiny_bundle, tone_wavs, tmp_path):  # noqa: F811
    """A bundle given an INT8 generator by `s2i-export int8` serves it."""
    pytest.importorskip("torch", reason="torch is not installed (runtime-only environment): s2i-export needs it")
    import shutil

    from s2i_export.int8 import export_int8

    quantised = tmp_path / "int8"
    shutil.copytree(tiny_bundle, quantised)
    export_int8(quantised, real_audio=tone_wavs)
    with ServerProcess(["--bundle", str(quantised), "--precision", "int8", "--threads", "1"], env=ENV) as server:
        assert server.ready["precision"] == "int8" and server.ready["device"] == "cpu"
        assert http(server.url + "healthz")[0] == 200


def test_precision_int8_without_an_int8_generator_stops_before_listening(tiny_bundle):  # noqa: F811
    with pytest.raises(ServerExited, match=r"no generator\.int8\.onnx; make it with `s2i-export int8 "):
        ServerProcess(["--bundle", tiny_bundle, "--precision", "int8"], env=ENV).start()
