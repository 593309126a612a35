import dataclasses
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
from frontend_reference import librosa_logmel

from s2i_runtime.audio import load_audio
from s2i_runtime.frontend import FrontendSpec, logmel, logmel_batch, logmel_each, mel_filterbank

SR = 16000
TOLERANCE_DB = 1e-3
EXAMPLES = Path(__file__).resolve().parents[1] / "s2i_runtime" / "examples"


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    t3 = np.arange(3 * SR) / SR
    return {
        "white noise": rng.standard_normal(2 * SR).astype(np.float32),
        "quiet noise": (1e-4 * rng.standard_normal(SR)).astype(np.float32),
        "tone 440 Hz": np.sin(2 * np.pi * 440 * t3).astype(np.float32),
        "two tones": (np.sin(2 * np.pi * 300 * t3) + 0.01 * np.sin(2 * np.pi * 5000 * t3)).astype(np.float32),
        "chirp": scipy.signal.chirp(t3, 50, 3, 7900).astype(np.float32),
        "silence": np.zeros(SR, dtype=np.float32),
        "0.05 s clip": rng.standard_normal(SR // 20).astype(np.float32),
        "60 s clip": (0.1 * rng.standard_normal(60 * SR)).astype(np.float32),
        "dc offset": (0.5 + 0.1 * rng.standard_normal(SR)).astype(np.float32),
    }


SIGNALS = _signals()


@pytest.fixture(params=["c", "numpy"])
def implementation(request, monkeypatch):
    """Each front-end implementation in turn: the C extension (when built) and numpy."""
    from s2i_runtime import native_frontend

    if request.param == "numpy":
        monkeypatch.setenv(native_frontend.ENV_SWITCH, "numpy")
    elif native_frontend.describe()["implementation"] != "c":
        pytest.skip(f"the C front end is not here: {native_frontend.describe()['reason']}")
    return request.param


@pytest.mark.parametrize("name", list(SIGNALS))
def test_front_end_matches_librosa(name, implementation):
    audio = SIGNALS[name]
    ours = logmel(audio)
    reference = librosa_logmel(audio)
    assert ours.dtype == np.float32
    assert ours.shape == reference.shape == (40, 1 + len(audio) // 160)
    assert np.abs(ours - reference).max() <= TOLERANCE_DB
    assert ours.max() == 0.0 and ours.min() >= -80.0


def _speech_clips() -> list[np.ndarray]:
    clips = [load_audio(path) for path in sorted(EXAMPLES.glob("*.wav"))]
    if not clips:
        pytest.skip(f"no example speech in {EXAMPLES}")
    return clips


def test_front_end_matches_librosa_on_real_speech(implementation):
    for clip in _speech_clips():
        assert np.abs(logmel(clip) - librosa_logmel(clip)).max() <= TOLERANCE_DB


def test_gain_invariance():
    audio = SIGNALS["chirp"]
    assert np.abs(logmel(audio) - logmel(audio * 0.01)).max() <= TOLERANCE_DB


def test_mel_filterbank_matches_librosa_slaney():
    import librosa

    reference = librosa.filters.mel(sr=SR, n_fft=400, n_mels=40, fmin=20.0, fmax=8000.0, dtype=np.float64)
    np.testing.assert_allclose(mel_filterbank(FrontendSpec()), reference, rtol=1e-9, atol=1e-12)


def test_batch_pads_with_the_floor_and_keeps_valid_frames():
    clips = [SIGNALS["0.05 s clip"], SIGNALS["chirp"][: SR // 2], SIGNALS["white noise"]]
    features, lengths = logmel_batch(clips)
    assert features.shape == (3, 40, 1 + 2 * SR // 160)
    assert lengths.dtype == np.int64 and lengths.tolist() == [6, 51, 201]
    for row, clip, length in zip(features, clips, lengths, strict=True):
        np.testing.assert_array_equal(row[:, :length], logmel(clip))
        assert (row[:, length:] == -80.0).all()


def test_each_gives_every_clip_its_own_features_unpadded():
    clips = [SIGNALS["0.05 s clip"], SIGNALS["60 s clip"], SIGNALS["silence"], (1e30 * SIGNALS["chirp"])]
    features = logmel_each(clips)
    assert [f.shape for f in features] == [(40, FrontendSpec().num_frames(c.size)) for c in clips]
    for feature, clip in zip(features, clips, strict=True):
        assert feature.dtype == np.float32 and feature.flags.c_contiguous
        np.testing.assert_array_equal(feature, logmel(clip))
    with pytest.raises(ValueError, match="at least one utterance"):
        logmel_each([])


def test_batch_has_at_least_min_frames():
    features, lengths = logmel_batch([SIGNALS["0.05 s clip"]])
    assert features.shape == (1, 40, 64)
    assert lengths.tolist() == [6]


def test_spec_json_round_trip():
    spec = FrontendSpec()
    assert FrontendSpec.from_json(spec.to_json()) == spec
    changed = dataclasses.replace(spec, max_frames=2000)
    assert FrontendSpec.from_dict(changed.to_dict()) == changed
    with pytest.raises(ValueError, match="unknown front-end spec fields: colour"):
        FrontendSpec.from_dict({**spec.to_dict(), "colour": "red"})


def test_spec_values_are_the_papers():
    spec = FrontendSpec()
    assert (spec.sample_rate, spec.n_fft, spec.win_length, spec.hop_length, spec.n_mels) == (16000, 400, 400, 160, 40)
    assert (spec.fmin, spec.fmax, spec.preemphasis, spec.top_db, spec.pad_value) == (20.0, 8000.0, 0.97, 80.0, -80.0)
    assert spec.num_frames(16000) == 101


def test_threads_and_reused_buffers_do_not_change_features():
    long_clip, short_clip = SIGNALS["60 s clip"], SIGNALS["0.05 s clip"]
    alone = logmel(short_clip)
    np.testing.assert_array_equal(logmel(long_clip, threads=3), logmel(long_clip))
    np.testing.assert_array_equal(logmel(short_clip), alone)  # after a longer clip filled the buffers
    batch, lengths = logmel_batch([long_clip, short_clip], threads=1)
    parallel, _ = logmel_batch([long_clip, short_clip])
    np.testing.assert_array_equal(batch, parallel)


def test_a_clip_in_a_large_batch_gets_the_features_it_gets_alone():
    from s2i_runtime.frontend import _clip_groups

    rng = np.random.default_rng(5)
    clips = [(0.1 * rng.standard_normal(int(n))).astype(np.float32) for n in rng.integers(1, 5 * SR, size=23)]
    clips[7] = (1e30 * SIGNALS["white noise"]).astype(np.float32)  # float32 power overflows: retried alone
    lengths = np.array([FrontendSpec().num_frames(c.size) for c in clips])
    groups = _clip_groups(lengths, 2)
    assert len(groups) % 2 == 0 and groups[0][0] == 0 and groups[-1][1] == len(clips)
    assert all(a[1] == b[0] for a, b in zip(groups, groups[1:], strict=False))
    for threads in (1, 0):
        features, got = logmel_batch(clips, threads=threads)
        assert got.tolist() == lengths.tolist()
        for row, clip, length in zip(features, clips, lengths, strict=True):
            np.testing.assert_array_equal(row[:, :length], logmel(clip))
            assert (row[:, length:] == -80.0).all()


def test_samples_beyond_float32_power_range_match_the_reference():
    audio = (1e30 * SIGNALS["white noise"]).astype(np.float32)
    with np.errstate(all="raise"):
        ours = logmel(audio)
    assert np.isfinite(ours).all()
    assert np.abs(ours - librosa_logmel(audio)).max() <= TOLERANCE_DB


def test_a_forked_child_computes_features_with_its_own_pool():
    import multiprocessing

    clips = [SIGNALS["white noise"], SIGNALS["chirp"]]
    expected, _ = logmel_batch(clips)  # the parent's pool exists before the fork
    with multiprocessing.get_context("fork").Pool(1) as pool:
        features, _ = pool.apply(logmel_batch, (clips,))
    np.testing.assert_array_equal(features, expected)
