"""`s2i-run` end to end: WAV files in, PNG files out, through the real command line in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bundle_factory import make_bundle, tiny_bundle, tone, tone_wavs, write_wav  # noqa: F401 - fixtures
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def s2i_run(*args, cwd=None, stdin=None, memory_mb=8192):
    """The CLI in a fresh interpreter; its address space is capped so a memory bomb fails fast instead of
    taking the machine down."""
    return subprocess.run(
        [sys.executable, "-c", "from s2i_runtime.cli import main; main()", *map(str, args)],
        capture_output=True, text=True, timeout=120, cwd=cwd, stdin=stdin,
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
        preexec_fn=lambda: cap_memory(memory_mb),
    )


def cap_memory(megabytes: int) -> None:
    import resource

    limit = megabytes * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_cli(capsys, *args):
    """The CLI in this process (much cheaper than a fresh interpreter): a CompletedProcess-like result.
    Anything but a clean exit propagates, so an unexpected exception still fails the test."""
    from s2i_runtime.cli import app
    from s2i_runtime.cliutil import run_app

    capsys.readouterr()
    code = 0
    try:
        run_app(app, "s2i-run", [str(a) for a in args])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["s2i-run", *map(str, args)], code, out, err)


def one_error_line(done):
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_infer_writes_pngs_that_match_the_python_api(tiny_bundle, tone_wavs, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    done = s2i_run("infer", tone_wavs[0], tone_wavs[2], "--bundle", tiny_bundle, "--out", out,
                   "--num-images", 2, "--seed", 4, "--batch-size", 1, "--grid", "--json", "--threads", 1)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "tone0_0.png", "tone0_1.png", "tone2_0.png",
                                                     "tone2_1.png"]
    assert set(report["timings_s"]) >= {"load_model", "load_audio", "front_end", "encoder", "generator",
                                        "encode_png"}
    assert report["backend"] == "onnxruntime" and report["outputs"][1]["images"][1].endswith("tone2_1.png")
    assert Image.open(out / "grid.png").size == (2 * 16 + 2, 2 * 16 + 2)

    from s2i_runtime import Pipeline

    with Pipeline.load(tiny_bundle, device="cpu") as pipe:
        expected = pipe.generate([str(tone_wavs[0]), str(tone_wavs[2])], seed=4, num_images=2)
    assert np.array_equal(np.asarray(Image.open(out / "tone2_1.png")), np.asarray(expected[1][1]))


def test_bad_inputs_are_reported_and_the_others_still_run(tiny_bundle, tone_wavs, tmp_path):  # noqa: F811
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    out = tmp_path / "out"
    done = s2i_run("infer", tone_wavs[1], tmp_path / "missing.wav", corrupt, "--bundle", tiny_bundle,
                   "--out", out)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    errors = done.stderr.strip().splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors)
    assert "missing.wav: file not found" in errors[0] and "corrupt.wav" in errors[1]
    assert sorted(p.name for p in out.iterdir()) == ["tone1_0.png"]  # nothing partial, no temporaries


def test_fail_fast_stops_before_writing_anything(tiny_bundle, tone_wavs, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    done = s2i_run("infer", tone_wavs[1], tmp_path / "missing.wav", "--bundle", tiny_bundle, "--out", out,
                   "--fail-fast")
    assert done.returncode == 2
    assert "missing.wav: file not found" in one_error_line(done)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("case", ["no_dir", "modified", "tensorrt", "bad_backend", "same_stem"])
def test_usage_and_bundle_errors_are_one_line_exit_2(case, tiny_bundle, tone_wavs, tmp_path):  # noqa: F811
    wav = tone_wavs[0]
    args = ["infer", wav, "--bundle", tiny_bundle, "--out", tmp_path / "out"]
    if case == "no_dir":
        args[3] = tmp_path / "nowhere"
    elif case == "modified":
        bundle = make_bundle(tmp_path / "b")
        (bundle / "encoder.onnx").write_bytes(b"not onnx")
        args[3] = bundle
    elif case == "tensorrt":
        pytest.importorskip("s2i_runtime")  # always; tensorrt must be absent for this case
        try:
            import tensorrt  # noqa: F401

            pytest.skip("tensorrt is installed here")
        except ImportError:
            pass
        args += ["--backend", "tensorrt"]
    elif case == "bad_backend":
        args += ["--backend", "tflite"]
    elif case == "same_stem":
        other = tmp_path / "other"
        other.mkdir()
        args.insert(2, write_wav(other / wav.name, tone(0.5, 900.0)))
    done = s2i_run(*args)
    assert done.returncode == 2, done.stderr
    line = one_error_line(done)
    expected = {
        "no_dir": "bundle directory does not exist",
        "modified": "sha256 does not match",
        "tensorrt": "TensorRT",
        "bad_backend": "unknown backend 'tflite'",
        "same_stem": "would both be written",
    }[case]
    assert expected in line
    assert not (tmp_path / "out").exists()


def test_nan_output_exits_1_without_a_black_png(tone_wavs, tmp_path):  # noqa: F811
    bundle = make_bundle(tmp_path / "nan", poison="nan")
    done = s2i_run("infer", tone_wavs[0], "--bundle", bundle, "--out", tmp_path / "out")
    assert done.returncode == 1
    assert "NaN/Inf" in one_error_line(done)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_interpolate_writes_one_strip(tiny_bundle, tone_wavs, tmp_path):  # noqa: F811
    strip = tmp_path / "strip.png"
    done = s2i_run("interpolate", tone_wavs[0], tone_wavs[3], "--steps", 5, "--out", strip,
                   "--bundle", tiny_bundle)
    assert done.returncode == 0, done.stderr
    assert Image.open(strip).size == (5 * 16 + 4 * 2, 16)


def test_info_json_names_bundle_and_backends(tiny_bundle):  # noqa: F811
    done = s2i_run("info", "--bundle", tiny_bundle, "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert Path(info["bundle"]) == Path(tiny_bundle).resolve()
    assert info["bundle_info"]["ok"] and info["bundle_info"]["model"]["embedding_dim"] == 8
    assert info["backends"]["onnxruntime"]["available"]
    assert set(info["backends"]) >= {"onnxruntime", "tensorrt", "cuda_frontend"}
    if not info["backends"]["tensorrt"]["available"]:
        assert info["backends"]["tensorrt"]["reason"]
    text = s2i_run("info", "--bundle", tiny_bundle)
    assert text.returncode == 0 and "auto picks:" in text.stdout


def test_export_bundle_end_to_end(tmp_path, tone_wavs):  # noqa: F811
    """A random small model through s2i_export's real exporter, then wav -> PNG through the CLI."""
    pytest.importorskip("torch", reason="torch is not installed (runtime-only environment)")
    onnx_export = pytest.importorskip("s2i_export.onnx_export", reason="s2i_export is not importable")
    import torch

    from s2i_train.checkpoint import ENCODER, GENERATOR, save_module
    from s2i_train.models.generator import GeneratorConfig, build_generator
    from s2i_train.models.speech_encoder import SpeechEncoderConfig, build_speech_encoder

    torch.manual_seed(0)
    run = tmp_path / "run"
    run.mkdir()
    enc_cfg = SpeechEncoderConfig(embedding_dim=32, hidden=16, conv_channels=(8, 8, 8, 8, 8, 8, 8, 8))
    gen_cfg = GeneratorConfig(embedding_dim=32, z_dim=8, ca_dim=8, ngf=4, init_mult=8, branches=1)
    save_module(run, ENCODER, build_speech_encoder(enc_cfg).eval(), enc_cfg)
    save_module(run, GENERATOR, build_generator(gen_cfg).eval(), gen_cfg)
    bundle = onnx_export.export_bundle(run, tmp_path / "bundle")
    out = tmp_path / "out"
    done = s2i_run("infer", tone_wavs[0], tone_wavs[3], "--bundle", bundle, "--out", out, "-k", 2,
                   "--batch-size", 2, "--json")
    assert done.returncode == 0, done.stderr
    image = Image.open(out / "tone3_1.png")
    assert image.size == (64, 64) and image.mode == "RGB"
    report = json.loads(done.stdout)
    assert report["outputs"][0]["images"] == [str(out / "tone0_0.png"), str(out / "tone0_1.png")]
