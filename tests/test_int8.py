"""`s2i-export int8` and `--precision int8`: the INT8 generator, checked against fp32 on ORT CPU, run by the runtime."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from bundle_factory import make_bundle, tone_wavs  # noqa: F401 - fixture
from test_cli_run import one_error_line, run_cli
from train_tiny_data import make_tiny_shapes
from typer.testing import CliRunner

import s2i_export.int8 as int8
from s2i_export.cli import app as export_app
from s2i_export.probes import noise_for, ort_session, probe_batches
from s2i_runtime import Pipeline
from s2i_runtime.bundle import GENERATOR_FILE, GENERATOR_INT8_FILE, MANIFEST, load_bundle, sha256_file, write_manifest
from s2i_runtime.cliutil import run_app
from s2i_runtime.errors import BundleError, InputError
from s2i_train import checkpoint
from s2i_train.models import Judge, JudgeConfig


def snapshot(folder):
    """Every file of a folder, hidden ones included, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def plain_bundle(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("int8") / "plain")


@pytest.fixture(scope="module")
def int8_bundle(plain_bundle, tone_wavs, tmp_path_factory):  # noqa: F811
    folder = tmp_path_factory.mktemp("int8") / "bundle"
    shutil.copytree(plain_bundle, folder)
    section = int8.export_int8(folder, real_audio=tone_wavs)
    return folder, section


def test_export_adds_the_generator_section_and_hash(int8_bundle):
    folder, section = int8_bundle
    bundle = load_bundle(folder)  # schema and every hash, the new file's included
    assert bundle.int8 == section
    assert bundle.manifest["files"][GENERATOR_INT8_FILE] == sha256_file(folder / GENERATOR_INT8_FILE)
    assert section["generator"] == GENERATOR_INT8_FILE
    quantization = section["quantization"]
    assert {k: quantization[k] for k in int8.QUANTIZATION} == int8.QUANTIZATION
    assert quantization["onnxruntime"]
    check = section["check"]
    assert check["passed"] and check["all_finite"] and check["image_mae_max"] <= int8.MAX_IMAGE_MAE
    assert check["thresholds"] == {"image_mae_max": int8.MAX_IMAGE_MAE, "judge_max_drop": int8.MAX_DROP}
    assert check["judge"] is None and check["judge_skipped"].startswith("no judge given")
    assert any("real utterances" in case["inputs"] for case in check["cases"])
    # Five tone files are too few to calibrate on alone: synthetic features make up the rest.
    assert section["calibration"].startswith("5 real utterances") and "synthetic" in section["calibration"]
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]
    model = onnx.load(str(folder / GENERATOR_INT8_FILE))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in model.graph.node}
    assert any(t.data_type == onnx.TensorProto.INT8 for t in model.graph.initializer)


def test_int8_images_are_close_to_fp32_and_finite(int8_bundle, tone_wavs):  # noqa: F811
    folder, _ = int8_bundle
    bundle = load_bundle(folder)
    encoder = ort_session(folder / "encoder.onnx", 1)
    gen32, gen8 = ort_session(folder / GENERATOR_FILE, 1), ort_session(folder / GENERATOR_INT8_FILE, 1)
    for batch in probe_batches(bundle, tone_wavs):
        embedding = encoder.run(None, {"mel": batch.mel, "lengths": batch.lengths})[0]
        z, eps = noise_for(len(embedding), bundle.dims.z_dim, bundle.dims.ca_dim, seed=3)
        images32 = int8.generate_images(gen32, embedding, z, eps)
        images8 = int8.generate_images(gen8, embedding, z, eps)
        assert images8.shape == images32.shape and np.isfinite(images8).all()
        assert np.abs(images8 - images32).mean() <= int8.MAX_IMAGE_MAE


def test_pipeline_runs_the_int8_generator(int8_bundle, tone_wavs):  # noqa: F811
    folder, _ = int8_bundle
    with Pipeline.load(folder, precision="int8", threads=1) as pipe:
        described = pipe.describe()
        images = pipe.generate_arrays(tone_wavs[:2], seed=0, num_images=2)
    assert (described["backend"], described["device"], described["precision"]) == ("onnxruntime", "cpu", "int8")
    assert GENERATOR_INT8_FILE in described["graph_cache"]  # hashed in s2i.json, so its optimised graph is cached
    assert any("runs on the CPU only" in note for note in described["notes"])
    assert [a.shape for a in images] == [(2, 3, 16, 16)] * 2
    assert all(np.isfinite(a).all() and np.abs(a).max() <= 1.0 for a in images)
    with Pipeline.load(folder, device="cpu", precision="fp32", threads=1) as pipe:
        fp32 = pipe.generate_arrays(tone_wavs[:2], seed=0, num_images=2)
    assert max(np.abs(a - b).mean() for a, b in zip(images, fp32, strict=True)) <= int8.MAX_IMAGE_MAE


def test_missing_int8_generator_is_one_line(plain_bundle, tmp_path):
    with pytest.raises(BundleError) as error:
        Pipeline.load(plain_bundle, device="cpu", precision="int8")
    message = str(error.value)
    assert message == f"{plain_bundle}: no {GENERATOR_INT8_FILE}; make it with `s2i-export int8 {plain_bundle}`"
    # A stray file that s2i.json does not list is not loaded either.
    stray = tmp_path / "stray"
    shutil.copytree(plain_bundle, stray)
    shutil.copy(plain_bundle / GENERATOR_FILE, stray / GENERATOR_INT8_FILE)
    with pytest.raises(BundleError, match=f"no {GENERATOR_INT8_FILE}"):
        Pipeline.load(stray, device="cpu", precision="int8")


def test_int8_refused_on_cuda_and_tensorrt(int8_bundle):
    folder, _ = int8_bundle
    with pytest.raises(InputError, match="runs on the CPU only") as error:
        Pipeline.load(folder, device="cuda", precision="int8")
    assert "\n" not in str(error.value)
    with pytest.raises(InputError, match="no INT8 TensorRT engines"):
        Pipeline.load(folder, backend="tensorrt", precision="int8")


def test_failed_check_leaves_the_bundle_byte_identical(plain_bundle, int8_bundle, tone_wavs, tmp_path,  # noqa: F811
                                                      monkeypatch):
    monkeypatch.setattr(int8, "MAX_IMAGE_MAE", 0.0)
    # A bundle without an INT8 generator, and one whose earlier INT8 generator must survive a failed redo.
    for name, source in (("plain", plain_bundle), ("again", int8_bundle[0])):
        folder = tmp_path / name
        shutil.copytree(source, folder)
        before = snapshot(folder)
        with pytest.raises(int8.Int8CheckFailed, match="int8 check failed") as error:
            int8.export_int8(folder, real_audio=tone_wavs)
        assert "\n" not in str(error.value) and not error.value.check.passed
        assert snapshot(folder) == before


def test_manifest_schema_checks_the_int8_section(int8_bundle, tmp_path):
    folder = tmp_path / "bundle"
    shutil.copytree(int8_bundle[0], folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    with pytest.raises(BundleError, match="int8.generator must be 'generator.int8.onnx'"):
        write_manifest(folder, {**manifest, "int8": {**manifest["int8"], "generator": "../elsewhere.onnx"}})
    (folder / GENERATOR_INT8_FILE).unlink()
    with pytest.raises(BundleError, match="does not list generator.int8.onnx"):
        write_manifest(folder, manifest)
    with pytest.raises(BundleError, match="int8 must be an object"):
        write_manifest(folder, {**manifest, "int8": ["generator.int8.onnx"]})


def test_export_cli_json_and_errors(plain_bundle, tone_wavs, tmp_path, capsys, monkeypatch):  # noqa: F811
    folder = tmp_path / "bundle"
    shutil.copytree(plain_bundle, folder)
    done = CliRunner().invoke(export_app, ["int8", str(folder), "--audio", str(tone_wavs[1]), "--json"])
    assert done.exit_code == 0, done.output
    section = json.loads(done.stdout)
    assert section["check"]["passed"] is True and load_bundle(folder).int8 == section
    capsys.readouterr()
    for argv in (["int8", str(tmp_path / "missing")], ["int8", str(folder), "--data", str(tmp_path)],
                 ["int8", str(folder), "--run", str(tmp_path / "no-run")]):
        with pytest.raises(SystemExit) as stop:
            run_app(export_app, "s2i-export", argv)
        assert stop.value.code == 2
        assert capsys.readouterr().err.count("\n") == 1
    monkeypatch.setattr(int8, "MAX_IMAGE_MAE", 0.0)  # a failed check: exit 1, the check still printed as JSON
    done = CliRunner().invoke(export_app, ["int8", str(folder), "--audio", str(tone_wavs[1]), "--json"])
    assert done.exit_code == 1 and json.loads(done.stdout)["passed"] is False
    assert "int8 check failed" in done.stderr


def test_run_cli_infer_and_info_with_int8(int8_bundle, plain_bundle, tone_wavs, tmp_path, capsys):  # noqa: F811
    folder, _ = int8_bundle
    done = run_cli(capsys, "infer", tone_wavs[0], "--bundle", folder, "--out", tmp_path / "out", "--precision",
                   "int8", "--threads", 1, "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["precision"] == "int8" and len(report["outputs"][0]["images"]) == 1
    assert (tmp_path / "out" / f"{tone_wavs[0].stem}_0.png").is_file()
    refused = run_cli(capsys, "infer", tone_wavs[0], "--bundle", plain_bundle, "--out", tmp_path / "no",
                      "--precision", "int8")
    assert refused.returncode == 2 and "s2i-export int8" in one_error_line(refused)
    assert "int8 generator: yes" in run_cli(capsys, "info", "--bundle", folder).stdout
    assert "int8 generator: no" in run_cli(capsys, "info", "--bundle", plain_bundle).stdout


def test_judge_check_on_held_out_captions(plain_bundle, tmp_path, monkeypatch):
    """With a run's judge and a dataset: calibration on even caption rows, the judge on odd ones."""
    data = make_tiny_shapes(tmp_path / "shapes", images_per_class=1, size=16)
    run_dir = tmp_path / "run"
    config = JudgeConfig(width=2, image_size=16, attributes={"colour": 8, "shape": 8, "size": 2})
    checkpoint.save_module(run_dir, checkpoint.JUDGE, Judge(config).eval(), config)
    folder = tmp_path / "bundle"
    shutil.copytree(plain_bundle, folder)
    before = snapshot(folder)
    monkeypatch.setattr(int8, "MAX_DROP", -1.0)  # int8 must beat fp32 by 100 points: cannot pass
    with pytest.raises(int8.Int8CheckFailed, match="judge accuracy") as error:
        int8.export_int8(folder, run_dir=run_dir, data=data)
    assert snapshot(folder) == before
    monkeypatch.setattr(int8, "MAX_DROP", 1.0)
    section = int8.export_int8(folder, run_dir=run_dir, data=data)
    judge = section["check"]["judge"]
    assert judge == error.value.check.judge | {"max_drop": 1.0}  # the same images, read the same way
    assert set(judge["fp32"]) == set(judge["int8"]) == set(int8.CHECKED_ATTRIBUTES)
    captions = int8.held_out_captions(data)
    assert len(captions.rows(0)) + len(captions.rows(1)) == len(captions.audio) == 32  # 16 held-out classes x 2
    assert judge["captions"].startswith("16 test captions") and "odd rows" in judge["captions"]
    assert f"{int8.JUDGED_DRAWS} noise draws each" in judge["captions"]
    judged = [case for case in section["check"]["cases"] if case["inputs"].startswith("test captions")]
    assert [case["batch"] for case in judged] == [16 * int8.JUDGED_DRAWS]  # every caption under each draw
    assert section["calibration"].startswith("16 test captions") and "even rows" in section["calibration"]
    assert "judge_skipped" not in section["check"]
