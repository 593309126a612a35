"""The benchmarks run end to end on tiny sizes (so they do not rot). Nothing here judges speed."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
    sys.path.insert(0, str(REPO_ROOT))

torch = pytest.importorskip("torch")

from benchmarks import common, report, run  # noqa: E402
from benchmarks.common import THREAD_ENV_VARS  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> tuple[Path, Path]:
    from export_fixtures import make_tiny_run

    from s2i_export.onnx_export import export_bundle

    run_dir = make_tiny_run(tmp_path_factory.mktemp("bench") / "run", arch="cnn-rnn", branches=1)
    return run_dir, export_bundle(run_dir, run_dir / "bundle")


@pytest.fixture
def restore_threads(monkeypatch):
    for name in THREAD_ENV_VARS:  # the runner pins these in its own process
        monkeypatch.setenv(name, os.environ.get(name, ""))
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_whole_suite_on_tiny_sizes(tiny_model, tmp_path, restore_threads):
    run_dir, bundle = tiny_model
    out = tmp_path / "results"
    code = run.main([
        "--run", str(run_dir), "--bundle", str(bundle), "--out", str(out), "--threads", str(restore_threads),
        "--quick", "--batch-sizes", "1,2", "--clip-seconds", "1", "--repeats", "1", "--frontend-clips", "2",
        "--frontend-seconds", "1", "--cold-repeats", "1", "--no-compile",
    ])
    assert code == 0
    (folder,) = out.iterdir()
    assert folder.name == common.results_dir_name()
    results = json.loads((folder / "results.json").read_text())
    assert results["machine"]["threads"] == restore_threads and results["machine"]["libraries"]["torch"]

    frontend = results["frontend"]
    assert {"runtime, batch", "librosa", "torch (training), batch"} <= set(frontend["ms_per_clip"])
    assert frontend["speedup_vs_librosa"]["librosa"] == pytest.approx(1.0)

    e2e = results["end_to_end"]
    assert set(e2e["batches"]) == {"1", "2"}
    for block in e2e["batches"].values():
        # Same models, same noise, same front end spec: the baseline really does the runtime's work.
        assert block["max_pixel_diff_runtime_vs_eager"] <= 1
        rows = block["contenders"]
        # Without a judge the INT8 generator is timed for speed only (its check on images passed).
        assert set(rows) == {"runtime: onnxruntime cpu fp32", "runtime: onnxruntime cpu int8 generator",
                             "pytorch eager (baseline)"}
        assert all(r["p50_ms"] > 0 and r["p95_ms"] >= r["p50_ms"] and r["images_per_s"] > 0 for r in rows.values())
    assert set(results["end_to_end_ratios"]["1"]) == {"runtime_vs_eager_latency", "runtime_vs_eager_throughput",
                                                      "runtime_vs_eager_spread", "int8_vs_fp32_throughput"}

    cold = results["cold_start"]
    assert set(cold["contenders"]) == {"runtime: s2i-run infer", "pytorch baseline script", "python -c 'import torch'"}
    assert cold["ratios"]["rss_runtime_over_import_torch"] > 0
    for row in cold["contenders"].values():
        assert row["wall_p50_s"] > 0 and 10 < row["peak_rss_p50_mb"] < 4096
    int8 = results["int8"]
    assert int8["accepted"] is False and int8["status"].startswith("speed only: image check passed")
    assert int8["reason"] == "no trained judge (judge.safetensors + judge.json) in the run directory"
    assert int8["fp32_judge_accuracy"] is None and int8["image_mae_max"] < 0.1
    if not torch.cuda.is_available():
        assert "no CUDA device" in results["gpu"]["skipped"]

    targets = {t["target"]: t for t in results["targets"]}
    assert len(targets) == len(report.TARGETS)
    assert targets["end to end, batch 32: throughput >= 1.5x eager"]["met"] is None  # batch 32 not run here
    spread = targets["end to end, batch 1: runtime >= 2x PyTorch eager (latency)"]["spread"]
    assert spread["min"] <= spread["median"] <= spread["max"]
    in_graph = results["frontend_in_graph"]
    assert set(in_graph["batches"]) == {"1", "4"}
    for block in in_graph["batches"].values():
        assert block["max_embedding_difference"] <= 1e-4  # the same model either way
        ratio = block["in_graph_over_default"]
        assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"]
    text = (folder / "results.md").read_text()
    for heading in ("## Targets", "## Front end", "## End to end", "## Cold start", "## GPU", "## INT8",
                    "## Front end in the encoder graph"):
        assert heading in text
    assert (folder / "e2e.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_int8_generator_quantises_and_runs(tiny_model, tmp_path):
    from s2i_export.int8 import generate_images, quantize_generator
    from s2i_export.probes import ort_session
    from s2i_runtime.bundle import load_bundle

    _, bundle = tiny_model
    dims = load_bundle(bundle).dims
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((16, dims.embedding_dim)).astype(np.float32)
    int8 = quantize_generator(bundle / "generator.onnx", tmp_path / "g.int8.onnx", embeddings, dims.z_dim,
                              dims.ca_dim)
    z = rng.standard_normal((4, dims.z_dim)).astype(np.float32)
    eps = rng.standard_normal((4, dims.ca_dim)).astype(np.float32)
    fp32 = generate_images(ort_session(bundle / "generator.onnx", 1), embeddings[:4], z, eps)
    quantised = generate_images(ort_session(int8, 1), embeddings[:4], z, eps)
    assert quantised.shape == fp32.shape
    # int8 error, not a different picture. Not the maximum: the layout shift is computed from quantised activations,
    # so a random-weight image (noise at the pixel scale) moves by a fraction of a pixel and its sharpest edges by 0.17.
    assert np.abs(quantised - fp32).mean() < 0.05
    assert np.abs(quantised - fp32).max() < 0.3


def test_torch_baseline_cli_writes_png_and_rejects_bad_input(tiny_model, tmp_path, capsys):
    from benchmarks.end_to_end import write_wavs
    from benchmarks.torch_baseline import main

    run_dir, _ = tiny_model
    (wav,) = write_wavs(tmp_path, 1, 1.0)
    assert main([str(wav), "--run", str(run_dir), "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"
    assert main([str(tmp_path / "missing.wav"), "--run", str(run_dir), "--out", str(tmp_path / "y.png")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_percentile_and_summary_numbers():
    assert common.percentile([3.0], 95) == 3.0
    assert common.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert common.percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)
    stats = common.summarise([0.001, 0.003, 0.002])
    assert stats["p50_ms"] == pytest.approx(2.0) and stats["min_ms"] == pytest.approx(1.0)


def test_interleaved_alternates_after_warmup():
    calls: list[str] = []
    times = common.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=2, warmup=1)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert {k: len(v) for k, v in times.items()} == {"a": 2, "b": 2}


def test_interleaved_settles_each_contender_before_its_timed_call():
    calls: list[str] = []
    times = common.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=2,
                               warmup=0, settle=1)
    assert calls == ["a", "a", "b", "b", "a", "a", "b", "b"]
    assert {k: len(v) for k, v in times.items()} == {"a": 2, "b": 2}


def test_update_readme_replaces_only_the_marked_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Bench\nintro\n{run.README_START}\nold\n{run.README_END}\nafter\n")
    results_dir = tmp_path / "results" / "2025-01-01-host"
    run.update_readme("# s2i benchmarks\n\n| a |\n\n![plot](e2e.png)\n", results_dir, readme)
    text = readme.read_text()
    assert text.startswith("# Bench\nintro\n") and text.endswith(f"{run.README_END}\nafter\n")
    assert "old" not in text and "## s2i benchmarks" in text
    assert "![plot](results/2025-01-01-host/e2e.png)" in text


def test_bad_options_are_usage_errors():
    with pytest.raises(SystemExit) as exc:
        run.main(["--sections", "frontend,warp"])
    assert exc.value.code == 2


def test_bundle_without_its_run_is_refused_and_left_untouched(tiny_model, tmp_path):
    _, bundle = tiny_model
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    with pytest.raises(SystemExit, match="needs --run"):
        run.main(["--bundle", str(bundle), "--out", str(tmp_path / "results"), "--sections", "frontend"])
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
