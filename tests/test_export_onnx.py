"""`s2i-export onnx` and `s2i-export verify` on tiny randomly initialised models."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from export_fixtures import CA_DIM, EMBEDDING_DIM, Z_DIM, make_tiny_run
from typer.testing import CliRunner

from s2i_export.cli import app
from s2i_export.dirs import staged_dir
from s2i_export.onnx_export import OPSET, export_bundle
from s2i_export.probes import default_real_sources, find_audio, synthetic_features
from s2i_export.verify import verify_bundle
from s2i_runtime.bundle import ENCODER_FILE, GENERATOR_FILE, load_bundle
from s2i_runtime.errors import BundleError, InputError
from s2i_runtime.frontend import FrontendSpec


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="module")
def bundle_dir(run_dir, tmp_path_factory):
    return export_bundle(run_dir, tmp_path_factory.mktemp("export") / "bundle")


def test_bundle_manifest_and_graphs(bundle_dir, run_dir):
    bundle = load_bundle(bundle_dir)
    assert bundle.dims.embedding_dim == EMBEDDING_DIM and bundle.dims.z_dim == Z_DIM and bundle.dims.ca_dim == CA_DIM
    assert bundle.dims.image_sizes == (64, 128)
    assert bundle.frontend == FrontendSpec()
    manifest = bundle.manifest
    assert manifest["model"]["encoder_arch"] == "s2igan"
    assert manifest["dataset"]["name"] == "spoken-shapes"
    assert len(manifest["dataset"]["vocabulary"]["classes"]) == 64
    assert manifest["training"]["encoder"]["steps"] == 1
    assert manifest["export"]["opset"] == OPSET
    assert set(manifest["files"]) == {ENCODER_FILE, GENERATOR_FILE}

    encoder = onnx.load(str(bundle_dir / ENCODER_FILE))
    assert [i.name for i in encoder.graph.input] == ["mel", "lengths"]
    assert [o.name for o in encoder.graph.output] == ["embedding"]
    mel_dims = encoder.graph.input[0].type.tensor_type.shape.dim
    assert mel_dims[0].dim_param and mel_dims[2].dim_param and mel_dims[1].dim_value == 40
    assert encoder.graph.input[1].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert {o.version for o in encoder.opset_import if o.domain in ("", "ai.onnx")} == {OPSET}
    generator = onnx.load(str(bundle_dir / GENERATOR_FILE))
    assert [i.name for i in generator.graph.input] == ["embedding", "z", "eps"]
    assert [o.name for o in generator.graph.output] == ["image"]
    assert generator.graph.output[0].type.tensor_type.shape.dim[0].dim_param
    # no hidden staging directories left beside the bundle
    assert [p.name for p in bundle_dir.parent.iterdir()] == ["bundle"]


def test_verify_passes_with_real_utterances(bundle_dir):
    real = find_audio(default_real_sources(), 8)
    assert real, "the runtime ships example utterances"
    report = verify_bundle(bundle_dir, real_audio=real)
    assert report.passed
    assert report.real_utterances == len(real)
    encoder_cases = {(c.batch, c.frames) for c in report.cases if c.component == "encoder" and "synthetic" in c.inputs}
    assert encoder_cases == {(b, t) for b in (1, 3, 8) for t in (64, 500, 3000)}
    assert sum(c.component == "generator" for c in report.cases) == 4
    assert max(c.max_abs_error for c in report.cases) <= 1e-4
    assert any("real" in c.inputs for c in report.cases)


def test_onnx_image_range_and_padding_invariance(bundle_dir):
    from s2i_export.probes import noise_for, ort_session

    enc = ort_session(bundle_dir / ENCODER_FILE)
    batch = synthetic_features(3, 500, FrontendSpec(), seed=3)
    emb = enc.run(None, {"mel": batch.mel, "lengths": batch.lengths})[0]
    # the same utterances padded further give the same embeddings (lengths are honoured in the graph)
    padded = np.concatenate([batch.mel, np.full((3, 40, 300), -80.0, np.float32)], axis=2)
    emb_padded = enc.run(None, {"mel": padded, "lengths": batch.lengths})[0]
    np.testing.assert_allclose(emb, emb_padded, atol=1e-5)
    z, eps = noise_for(3, Z_DIM, CA_DIM)
    image = ort_session(bundle_dir / GENERATOR_FILE).run(None, {"embedding": emb, "z": z, "eps": eps})[0]
    assert image.shape == (3, 3, 128, 128)
    assert image.min() >= -1.0 and image.max() <= 1.0


def test_verify_cli_table_json_and_failure_exit(bundle_dir):
    runner = CliRunner()
    result = runner.invoke(app, ["verify", str(bundle_dir), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["passed"] is True and data["real_utterances"] == 3
    result = runner.invoke(app, ["verify", str(bundle_dir), "--tolerance", "0"])
    assert result.exit_code == 1
    assert "FAIL" in result.stdout and "ONNX Runtime vs PyTorch" in result.stdout


def test_verify_refuses_other_weights(bundle_dir, tmp_path):
    other = make_tiny_run(tmp_path / "other", seed=1)
    with pytest.raises(BundleError, match="not the ones"):
        verify_bundle(bundle_dir, run_dir=other)


def test_verify_from_included_checkpoint(run_dir, tmp_path):
    bundle = export_bundle(run_dir, tmp_path / "b", include_checkpoint=True)
    assert (bundle / "checkpoint" / "encoder.safetensors").is_file()
    assert "checkpoint/generator.json" in load_bundle(bundle).manifest["files"]
    moved = tmp_path / "moved_run"
    shutil.move(str(run_dir), moved)  # the recorded source run is gone: the bundle's copy is used
    try:
        report = verify_bundle(bundle, batch_sizes=(1,), frame_lengths=(64,))
        assert report.passed and report.torch_source == str(bundle / "checkpoint")
    finally:
        shutil.move(str(moved), run_dir)


def test_export_replaces_a_bundle_atomically_and_refuses_bad_input(run_dir, tmp_path):
    target = tmp_path / "bundle"
    export_bundle(run_dir, target)
    first = load_bundle(target).manifest["files"]
    export_bundle(run_dir, target)  # replacing an existing bundle works and leaves nothing behind
    assert load_bundle(target).manifest["files"].keys() == first.keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]
    with pytest.raises(InputError, match="no trained"):
        export_bundle(tmp_path / "bundle", tmp_path / "x")
    not_a_bundle = tmp_path / "docs"
    not_a_bundle.mkdir()
    (not_a_bundle / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not a bundle"):
        export_bundle(run_dir, not_a_bundle)
    with pytest.raises(InputError, match="opset"):
        export_bundle(run_dir, tmp_path / "y", opset=25)


def test_staged_dir_failure_keeps_the_old_directory(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_dir(target) as staging:
        (staging / "new.txt").write_text("new")
        raise RuntimeError("boom")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (target / "old.txt").read_text() == "old"


def test_onnx_cli_errors_are_one_line(tmp_path):
    from s2i_runtime.cliutil import run_app

    with pytest.raises(SystemExit) as exit_info:
        run_app(app, "s2i-export", ["onnx", "--run", str(tmp_path / "missing"), "--out", str(tmp_path / "b")])
    assert exit_info.value.code == 2
