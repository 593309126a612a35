"""`s2i-export onnx --frontend-in-graph`: the log-Mel front end as ONNX ops inside the encoder graph, and the
runtime on such a bundle. Real ONNX Runtime sessions on a tiny randomly initialised run.

Tolerances: features within FEATURE_TOLERANCE_DB of `s2i_runtime.frontend.logmel` (the contract every
implementation keeps), embeddings within verify's 1e-4 of the numpy front end + PyTorch encoder, images
within IMAGE_TOLERANCE of the default (numpy front end) path with the same noise.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from bundle_factory import make_bundle, tone, write_wav
from export_fixtures import make_tiny_run
from test_cli_run import one_error_line, run_cli
from typer.testing import CliRunner

from s2i_export.cli import app as export_app
from s2i_export.onnx_export import FRONTEND_OUTPUTS, export_bundle, export_frontend
from s2i_export.probes import default_real_sources, find_audio, ort_session, synthetic_waveforms, wave_batch
from s2i_export.verify import TOLERANCE, verify_bundle
from s2i_runtime import Pipeline
from s2i_runtime.audio import load_audio
from s2i_runtime.backends.base import open_backend
from s2i_runtime.bundle import ENCODER_FILE, WAVEFORM_ENCODER_INPUTS, load_bundle
from s2i_runtime.errors import BackendUnavailable, BundleError, InputError
from s2i_runtime.frontend import FrontendSpec, logmel, logmel_batch

FEATURE_TOLERANCE_DB = 1e-3
IMAGE_TOLERANCE = 1e-4  # images are in [-1, 1]; one 8-bit level is 2/255


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="module")
def waveform_bundle(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "in-graph"
    done = CliRunner().invoke(export_app, ["onnx", "--run", str(run_dir), "--out", str(out), "--frontend-in-graph",
                                           "--json"])
    assert done.exit_code == 0, done.output
    return out


@pytest.fixture(scope="module")
def logmel_bundle(run_dir, tmp_path_factory):
    return export_bundle(run_dir, tmp_path_factory.mktemp("export") / "default")


@pytest.fixture(scope="module")
def frontend_session(tmp_path_factory):
    path = tmp_path_factory.mktemp("frontend") / "frontend.onnx"
    export_frontend(path, FrontendSpec())
    return ort_session(path, threads=1)


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    return [load_audio(p, max_seconds=None) for p in find_audio(default_real_sources(), 8)]


def mixed_clips(speech: list[np.ndarray]) -> list[np.ndarray]:
    """Real speech and the awkward cases: shorter than the reflection pad (161 samples), very quiet, loud with
    a DC offset, 12 s long, and a length that is not a whole number of hops."""
    rng = np.random.default_rng(5)
    return [
        *speech,
        (0.2 * rng.standard_normal(161)).astype(np.float32),
        speech[0][:4000] * np.float32(1e-4),
        speech[1][:9000] * np.float32(3.0) + np.float32(0.4),
        np.tile(speech[2], 6)[: 12 * 16000],
        tone(0.77, 700.0, seed=2)[:12345],
    ]


def run_frontend(session, clips, garbage: float = 7.0):
    """The graph on clips padded into one batch; the padding holds `garbage`, which must not matter."""
    batch = wave_batch("clips", clips)
    steps = np.arange(batch.waveform.shape[1])[None, :]
    waveform = np.where(steps < batch.num_samples[:, None], batch.waveform, np.float32(garbage))
    signal, lengths = WAVEFORM_ENCODER_INPUTS
    return session.run(list(FRONTEND_OUTPUTS), {signal: waveform.astype(np.float32), lengths: batch.num_samples})


def test_graph_features_match_the_numpy_front_end_in_one_padded_batch(frontend_session, speech):
    clips = mixed_clips(speech)
    features, frame_lengths = run_frontend(frontend_session, clips)
    expected, expected_lengths = logmel_batch(clips, FrontendSpec())
    assert features.shape == expected.shape and np.array_equal(frame_lengths, expected_lengths)
    assert np.abs(features - expected).max() <= FEATURE_TOLERANCE_DB
    for row, clip, length in zip(features, clips, frame_lengths, strict=True):
        assert np.abs(row[:, :length] - logmel(clip)).max() <= FEATURE_TOLERANCE_DB
        assert np.all(row[:, length:] == FrontendSpec().pad_value)


def test_graph_pads_short_batches_to_min_frames(frontend_session, speech):
    clips = [speech[0][:3000], speech[1][:170]]
    features, frame_lengths = run_frontend(frontend_session, clips)
    expected, expected_lengths = logmel_batch(clips, FrontendSpec())
    assert features.shape[2] == FrontendSpec().min_frames == expected.shape[2]
    assert np.array_equal(frame_lengths, expected_lengths)
    assert np.abs(features - expected).max() <= FEATURE_TOLERANCE_DB


def test_graph_scales_clips_too_loud_for_float32_as_the_numpy_retry_does(frontend_session):
    noise = np.random.default_rng(0).standard_normal(16000).astype(np.float32)
    clips = [noise * np.float32(1e30), noise * np.float32(1e37), noise[:5000] * np.float32(1e18), noise * 0.1]
    features, _ = run_frontend(frontend_session, clips)
    expected, _ = logmel_batch(clips, FrontendSpec())
    assert np.isfinite(features).all() and np.abs(features - expected).max() <= FEATURE_TOLERANCE_DB


def test_in_graph_bundle_says_so_and_keeps_the_default_unchanged(waveform_bundle, logmel_bundle, tmp_path):
    bundle = load_bundle(waveform_bundle)
    assert bundle.encoder_input == "waveform" and bundle.encoder_inputs == WAVEFORM_ENCODER_INPUTS
    assert bundle.manifest["model"]["encoder_input"] == "waveform"
    assert bundle.manifest["export"]["inputs"]["encoder"] == list(WAVEFORM_ENCODER_INPUTS)
    default = load_bundle(logmel_bundle)
    assert default.encoder_input == "logmel" and default.encoder_inputs == ("mel", "lengths")
    # Bundles written before the field existed read log-Mel features.
    old = load_bundle(make_bundle(tmp_path / "old"))
    assert "encoder_input" not in old.manifest["model"] and old.encoder_input == "logmel"


def test_verify_compares_the_graph_with_numpy_front_end_and_torch_encoder(waveform_bundle):
    report = verify_bundle(waveform_bundle, real_audio=find_audio(default_real_sources(), 8), threads=1,
                           frame_lengths=(64, 500))
    assert report.passed, report.to_dict()
    encoder_cases = [c for c in report.cases if c.component == "encoder"]
    assert all("waveforms" in c.inputs for c in encoder_cases) and any("real" in c.inputs for c in encoder_cases)
    assert max(c.max_abs_error for c in encoder_cases) <= TOLERANCE


def test_a_batch_of_different_lengths_gives_each_clip_its_own_embedding(waveform_bundle, speech):
    session = ort_session(waveform_bundle / ENCODER_FILE, threads=1)
    signal, lengths = WAVEFORM_ENCODER_INPUTS
    batch = wave_batch("speech", [*speech, speech[0][:2500]])
    together = session.run(None, {signal: batch.waveform, lengths: batch.num_samples})[0]
    for row, clip in enumerate(batch.clips()):
        alone = session.run(None, {signal: clip[None], lengths: np.array([clip.size])})[0]
        assert np.abs(alone[0] - together[row]).max() <= 1e-5
    # Extra zero padding beyond the longest clip changes nothing either.
    wider = np.pad(batch.waveform, ((0, 0), (0, 5000)))
    assert np.abs(session.run(None, {signal: wider, lengths: batch.num_samples})[0] - together).max() <= 1e-5


def test_pipeline_on_in_graph_bundle_matches_the_default_path(waveform_bundle, logmel_bundle, speech):
    inputs = [*speech, tone(1.3, 440.0), tone(0.4, 2000.0, seed=1)]
    with Pipeline.load(waveform_bundle, device="cpu", threads=1, batch_size=2) as in_graph, \
            Pipeline.load(logmel_bundle, device="cpu", threads=1, batch_size=2) as default:
        got = in_graph.generate_arrays(inputs, seed=3, num_images=2)
        expected = default.generate_arrays(inputs, seed=3, num_images=2)
        assert np.abs(in_graph.embed(inputs) - default.embed(inputs)).max() <= TOLERANCE
        assert in_graph.describe()["frontend"] == "in-graph" and in_graph.describe()["encoder_input"] == "waveform"
        assert default.describe()["frontend"] == "runtime" and default.describe()["encoder_input"] == "logmel"
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.shape == theirs.shape and np.abs(mine - theirs).max() <= IMAGE_TOLERANCE


def test_cli_infer_and_info_on_in_graph_bundle(waveform_bundle, logmel_bundle, speech, tmp_path, capsys):
    wav = write_wav(tmp_path / "speech.wav", speech[0])
    outs = {}
    for name, bundle in (("in-graph", waveform_bundle), ("default", logmel_bundle)):
        outs[name] = tmp_path / name
        done = run_cli(capsys, "infer", wav, "--bundle", bundle, "--out", outs[name], "--seed", 5, "--json",
                       "--threads", 1, "--device", "cpu")
        assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["frontend"] == "runtime"
    from PIL import Image

    mine, theirs = (np.asarray(Image.open(outs[n] / "speech_0.png"), dtype=np.int16) for n in ("in-graph", "default"))
    assert np.abs(mine - theirs).max() <= 1  # PNG levels: float noise may round one level differently

    info = run_cli(capsys, "info", "--bundle", waveform_bundle, "--json")
    assert json.loads(info.stdout)["bundle_info"]["frontend"]["in_graph"] is True
    assert "front end: in the encoder graph" in run_cli(capsys, "info", "--bundle", waveform_bundle).stdout
    assert "front end: in the runtime" in run_cli(capsys, "info", "--bundle", logmel_bundle).stdout


def test_log_mel_only_tools_refuse_an_in_graph_bundle(waveform_bundle, tmp_path):
    from s2i_export.fp16 import export_fp16
    from s2i_export.tensorrt_build import EngineRequest, build_engines
    from s2i_export.triton import write_triton_repository

    for attempt in (lambda: export_fp16(waveform_bundle),
                    lambda: build_engines(waveform_bundle, EngineRequest()),
                    lambda: write_triton_repository(waveform_bundle, tmp_path / "repo")):
        with pytest.raises(InputError, match="frontend-in-graph"):
            attempt()
    with pytest.raises(BackendUnavailable, match="log-Mel bundles only"):
        open_backend(load_bundle(waveform_bundle), "tensorrt", "cuda")


def test_int8_generator_on_an_in_graph_bundle(waveform_bundle, logmel_bundle, speech, tmp_path):
    """INT8 touches the generator only, so a waveform bundle takes it: calibrated and checked on its own encoder."""
    import shutil

    from s2i_export.int8 import MAX_IMAGE_MAE, export_int8

    images = {}
    for name, source in (("in-graph", waveform_bundle), ("default", logmel_bundle)):
        copy = tmp_path / name
        shutil.copytree(source, copy)
        section = export_int8(copy, real_audio=find_audio(default_real_sources(), 8))
        check = section["check"]
        assert check["passed"]
        assert any("waveforms" in case["inputs"] for case in check["cases"]) == (name == "in-graph")
        with Pipeline.load(copy, precision="int8", threads=1) as pipe:
            images[name] = pipe.generate_arrays(speech[:2], seed=3)
    for mine, theirs in zip(images["in-graph"], images["default"], strict=True):
        assert mine.shape == theirs.shape and np.abs(mine - theirs).mean() <= MAX_IMAGE_MAE


def test_a_manifest_that_claims_the_wrong_encoder_input_is_refused(tmp_path, capsys):
    # A log-Mel graph declared as a waveform encoder: the graph's inputs do not match, on load.
    bundle = make_bundle(tmp_path / "liar", model_overrides={"encoder_input": "waveform"})
    with pytest.raises(BundleError, match="waveform"):
        Pipeline.load(bundle, device="cpu")
    done = run_cli(capsys, "infer", write_wav(tmp_path / "a.wav", tone(0.5, 300.0)), "--bundle", bundle,
                   "--out", tmp_path / "out")
    assert done.returncode == 2 and one_error_line(done)


def test_synthetic_waveform_probes_cover_the_requested_frames():
    spec = FrontendSpec()
    batch = synthetic_waveforms(3, 500, spec)
    frames = [spec.num_frames(int(n)) for n in batch.num_samples]
    assert frames[0] == 500 and min(frames) >= 250 and batch.features(spec).frames == 500
