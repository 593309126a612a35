"""Waveform augmentation (s2i_train/train/wave_augment.py): shapes, determinism, and that each transform does
what it claims (SNR, RT60, telephone band, speed, silence)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from s2i_runtime.audio import load_audio
from s2i_train.train import wave_augment as wa

SR = wa.SAMPLE_RATE
EXAMPLES = Path(wa.__file__).resolve().parents[2] / "s2i_runtime" / "examples"
EVERYTHING = wa.WaveAugmentConfig(speed=0.1, voice_prob=1.0, pitch_factor=(0.8, 2.0), formant_factor=(0.9, 1.25),
                                  noise_prob=1.0, reverb_prob=1.0, telephone_prob=1.0, gain_db=(-6.0, 6.0),
                                  clip_prob=1.0, silence_s=0.3)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return load_audio(EXAMPLES / "large_red_star.wav")


@pytest.fixture(scope="module")
def pool():
    talkers = [load_audio(path) for path in sorted(EXAMPLES.glob("*.wav"))]
    calls = []

    def draw(rng: np.random.Generator) -> np.ndarray:
        calls.append(1)
        return talkers[rng.integers(len(talkers))]

    draw.calls = calls
    return draw


def _snr_db(clean: np.ndarray, noisy: np.ndarray, where: np.ndarray) -> float:
    noise = noisy.astype(np.float64) - clean
    return float(10 * np.log10(np.mean(np.square(clean[where], dtype=np.float64)) / np.mean(np.square(noise[where]))))


def _band_db(x: np.ndarray, y: np.ndarray, low: float, high: float) -> float:
    """Output power against input power in [low, high) Hz, dB."""
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    band = (freqs >= low) & (freqs < high)
    return float(10 * np.log10(np.sum(np.abs(np.fft.rfft(y))[band] ** 2) / np.sum(np.abs(np.fft.rfft(x))[band] ** 2)))


def _find(inner: np.ndarray, outer: np.ndarray) -> list[int]:
    """Offsets at which `inner` appears unchanged in `outer`."""
    loudest = int(np.argmax(np.abs(inner)))
    return [s - loudest for s in np.flatnonzero(outer == inner[loudest])
            if s >= loudest and np.array_equal(outer[s - loudest:s - loudest + inner.size], inner)]


def _all_outputs(speech, pool):
    rng = np.random.default_rng(0)
    n = speech.size
    rir = wa.room_impulse_response(0.5, rng)
    return {
        "speed": wa.speed_perturb(speech, 1.1),
        "voice_shift": wa.voice_shift(speech, 1.7, 1.15),
        "white": wa.white_noise(n, rng),
        "pink": wa.pink_noise(n, rng),
        "add_noise": wa.add_noise(speech, wa.pink_noise(n, rng), 10.0),
        "rir": rir,
        "reverberate": wa.reverberate(speech, rir),
        "telephone": wa.telephone(speech),
        "augment": wa.augment(speech, EVERYTHING, rng, pool),
        "augment, no pool": wa.augment(speech, EVERYTHING, rng),
        **{f"condition {name}": wa.condition(name, speech, 3, pool) for name in wa.CONDITIONS},
    }


def test_every_output_is_a_finite_float32_wave(speech, pool):
    outputs = _all_outputs(speech, pool)
    for name, out in outputs.items():
        assert out.dtype == np.float32 and out.ndim == 1 and out.size > 0, name
        assert np.isfinite(out).all(), name
    same_length = ("voice_shift", "add_noise", "reverberate", "telephone", "condition clean", "condition noisy_room",
                   "condition telephone")
    assert all(outputs[name].size == speech.size for name in same_length)
    assert outputs["white"].size == outputs["pink"].size == speech.size


def test_augment_and_condition_stay_in_full_scale(speech, pool):
    loud = wa.WaveAugmentConfig(noise_prob=1.0, snr_db=(-5.0, -5.0), reverb_prob=1.0, gain_db=(20.0, 20.0))
    for seed in range(3):
        out = wa.augment(speech / np.abs(speech).max(), loud, np.random.default_rng(seed), pool)
        assert np.abs(out).max() <= 1.0
    for name in wa.CONDITIONS:
        assert np.abs(wa.condition(name, speech / np.abs(speech).max(), 0, pool)).max() <= 1.0


def test_same_seed_same_output_different_seed_different(speech, pool):
    def run(seed):
        return wa.augment(speech, EVERYTHING, np.random.default_rng(seed), pool)

    assert np.array_equal(run(1), run(1))
    first, second = run(1), run(2)
    assert first.shape != second.shape or not np.allclose(first, second)
    for make in (wa.white_noise, wa.pink_noise):
        assert np.array_equal(make(800, np.random.default_rng(5)), make(800, np.random.default_rng(5)))
        assert not np.allclose(make(800, np.random.default_rng(5)), make(800, np.random.default_rng(6)))
    assert np.array_equal(wa.room_impulse_response(0.3, np.random.default_rng(5)),
                          wa.room_impulse_response(0.3, np.random.default_rng(5)))


def test_everything_off_is_identity(speech):
    config = wa.WaveAugmentConfig()
    assert not config.enabled
    out = wa.augment(speech, config, np.random.default_rng(0))
    assert out.dtype == np.float32 and np.array_equal(out, speech)
    for switch in ({"speed": 0.1}, {"voice_prob": 0.5}, {"noise_prob": 0.5}, {"reverb_prob": 0.5},
                   {"telephone_prob": 0.5}, {"gain_db": (-3.0, 3.0)}, {"clip_prob": 0.5}, {"silence_s": 0.2}):
        assert wa.WaveAugmentConfig(**switch).enabled, switch
    assert not wa.WaveAugmentConfig(gain_db=[0.0, 0.0]).enabled  # as a TOML config gives it
    with pytest.raises(ValueError):
        wa.WaveAugmentConfig(noise_kinds=("traffic",))
    for bad in ({"pitch_factor": (0.0, 2.0)}, {"formant_factor": (1.2, 1.1)}):
        with pytest.raises(ValueError, match="increasing pair of positive factors"):
            wa.WaveAugmentConfig(**bad)


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
def test_snr_is_achieved_on_the_active_speech(speech, pool, kind):
    active = wa._active_mask(speech)
    assert 0.3 < active.mean() < 1.0  # the clip has pauses, so active and whole-clip SNR differ
    for target in (-5.0, 0.0, 10.0, 20.0, 30.0):
        rng = np.random.default_rng(int(target) + 100)
        noise = wa._noise(kind, speech.size, rng, pool)
        noisy = wa.add_noise(speech, noise, target)
        assert _snr_db(speech, noisy, active) == pytest.approx(target, abs=0.05)


def test_snr_on_a_burst_with_known_active_part():
    n = SR
    burst = np.zeros(n, dtype=np.float32)
    burst[4000:12000] = 0.3 * np.sin(2 * np.pi * 440 * np.arange(8000) / SR)
    inside = np.zeros(n, dtype=bool)
    inside[4000:12000] = True
    for target in (0.0, 15.0):
        noisy = wa.add_noise(burst, wa.white_noise(n, np.random.default_rng(0)), target)
        assert _snr_db(burst, noisy, inside) == pytest.approx(target, abs=0.1)
    assert np.array_equal(wa.add_noise(np.zeros(n, np.float32), np.ones(n, np.float32), 10.0), np.zeros(n))


def test_pink_noise_falls_3_db_per_octave():
    segments = wa.pink_noise(64 * 1024, np.random.default_rng(0)).reshape(64, 1024)
    power = np.mean(np.abs(np.fft.rfft(segments * np.hanning(1024), axis=1)) ** 2, axis=0)
    freqs = np.fft.rfftfreq(1024, 1 / SR)
    band = (freqs > 100) & (freqs < 7000)
    slope = np.polyfit(np.log10(freqs[band]), np.log10(power[band]), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.1)
    assert np.sqrt(np.mean(np.square(segments))) == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("rt60", [0.1, 0.2, 0.4, 0.6, 0.8])
def test_rir_decays_60_db_in_rt60(rt60):
    for seed in range(4):
        rir = wa.room_impulse_response(rt60, np.random.default_rng(seed))
        assert rir.size == int(rt60 * SR) + 1 and np.argmax(np.abs(rir)) == 0
        assert np.sum(np.square(rir, dtype=np.float64)) == pytest.approx(1.0, rel=1e-4)
        assert wa.rt60_of(rir) == pytest.approx(rt60, rel=0.15)


def test_rt60_of_an_exact_exponential_decay():
    t = np.arange(SR) / SR
    rir = np.random.default_rng(0).standard_normal(SR) * np.exp(-3 * np.log(10) * t / 0.5)
    assert wa.rt60_of(rir) == pytest.approx(0.5, rel=0.03)


def test_reverberation_keeps_length_and_level(speech):
    rir = wa.room_impulse_response(0.8, np.random.default_rng(0))
    out = wa.reverberate(speech, rir)
    assert out.size == speech.size
    assert np.sqrt(np.mean(np.square(out, dtype=np.float64))) == pytest.approx(
        np.sqrt(np.mean(np.square(speech, dtype=np.float64))), rel=1e-4)
    direct = np.zeros(100, np.float32)
    direct[0] = 1
    assert np.allclose(wa.reverberate(speech, direct), speech, atol=1e-5)


def test_telephone_keeps_only_the_300_3400_hz_band():
    x = (0.1 * np.random.default_rng(0).standard_normal(2 * SR)).astype(np.float32)
    y = wa.telephone(x)
    assert y.size == x.size
    assert _band_db(x, y, 20, 300) < -30
    assert _band_db(x, y, 3400, 8000) < -30
    assert _band_db(x, y, 400, 3300) == pytest.approx(0.0, abs=1.0)


def test_telephone_quantises_with_mu_law():
    ramp = np.linspace(-1, 1, 10001)
    levels = np.unique(wa._mu_law(ramp))
    assert levels.size <= 256
    steps = np.diff(levels)
    assert steps[levels[:-1] >= 0].min() < steps.max() / 50  # fine near zero, coarse near full scale


@pytest.mark.parametrize("factor", [0.9, 0.95, 1.1])
def test_speed_changes_length_and_pitch_by_the_factor(factor):
    tone = np.sin(2 * np.pi * 440 * np.arange(2 * SR) / SR).astype(np.float32)
    out = wa.speed_perturb(tone, factor)
    assert abs(out.size - tone.size / factor) <= 2
    freqs = np.fft.rfftfreq(out.size, 1 / SR)
    assert freqs[np.argmax(np.abs(np.fft.rfft(out)))] == pytest.approx(440 * factor, abs=1.0)
    assert np.array_equal(wa.speed_perturb(tone, 1.0), tone)


def _vowel(f0: float, formant_hz: float, seconds: float = 1.5) -> np.ndarray:
    """A pulse train at f0 through one resonance (120 Hz wide) at formant_hz: a vowel with one formant."""
    pulses = np.zeros(int(seconds * SR))
    pulses[np.arange(0, pulses.size, SR / f0).astype(int)] = 1.0
    radius, angle = np.exp(-np.pi * 120 / SR), 2 * np.pi * formant_hz / SR
    # The resonator's impulse response, long enough to die away, applied by FFT convolution.
    t = np.arange(SR // 10)
    response = radius ** t * np.sin(angle * (t + 1)) / np.sin(angle)
    return np.fft.irfft(np.fft.rfft(pulses, 2 * pulses.size) * np.fft.rfft(response, 2 * pulses.size))[
        : pulses.size].astype(np.float32)


def _harmonic_spacing_and_formant(wave: np.ndarray) -> tuple[float, float]:
    """The spacing of the spectrum's strongest peaks (F0), and the power-weighted mean frequency in 200-3000 Hz
    (where the single formant is)."""
    middle = wave[SR // 4: SR // 4 + SR]
    power = np.abs(np.fft.rfft(middle * np.hanning(middle.size))) ** 2
    freqs = np.fft.rfftfreq(middle.size, 1 / SR)
    band = (freqs > 200) & (freqs < 3000)
    peaks = [k for k in range(1, power.size - 1) if power[k] >= power[k - 1] and power[k] >= power[k + 1]]
    strongest = sorted(sorted(peaks, key=lambda k: power[k])[-6:])
    return float(np.min(np.diff(freqs[strongest]))), float(np.sum(freqs[band] * power[band]) / np.sum(power[band]))


@pytest.mark.parametrize("pitch, formant", [(1.6, 1.0), (1.0, 1.2), (1.7, 1.15), (0.8, 0.9)])
def test_voice_shift_moves_pitch_and_formant_apart(pitch, formant):
    vowel = _vowel(120.0, 800.0)
    spacing, centre = _harmonic_spacing_and_formant(vowel)
    assert spacing == pytest.approx(120.0, abs=2.0) and centre == pytest.approx(800.0, rel=0.05)
    out = wa.voice_shift(vowel, pitch, formant)
    assert out.dtype == np.float32 and out.size == vowel.size
    assert np.sqrt(np.mean(np.square(out[SR // 10:-SR // 10]))) == pytest.approx(
        np.sqrt(np.mean(np.square(vowel[SR // 10:-SR // 10]))), rel=0.1)
    spacing, centre = _harmonic_spacing_and_formant(out)
    assert spacing == pytest.approx(120.0 * pitch, abs=2.0)
    assert centre == pytest.approx(800.0 * formant, rel=0.06)


def test_voice_shift_identity_and_reconstruction(speech):
    assert np.array_equal(wa.voice_shift(speech, 1.0, 1.0), speech)
    assert np.abs(wa._istft(wa._stft(speech))[: speech.size] - speech).max() < 1e-5
    with pytest.raises(ValueError):
        wa.voice_shift(speech, 0.0, 1.0)


def test_silence_pads_are_bounded_quiet_and_not_digital_zero(speech):
    config = wa.WaveAugmentConfig(silence_s=0.25)
    most = int(0.25 * SR)
    for seed in range(5):
        out = wa.augment(speech, config, np.random.default_rng(seed))
        assert speech.size <= out.size <= speech.size + 2 * most
        starts = _find(speech, out)
        assert len(starts) == 1 and starts[0] <= most and out.size - starts[0] - speech.size <= most
        pads = np.concatenate([out[:starts[0]], out[starts[0] + speech.size:]])
        if pads.size:
            assert np.mean(pads != 0) > 0.99
            assert np.abs(pads).max() < 0.05 * np.abs(speech).max()


def test_silence_after_noise_continues_the_noise_floor(speech):
    noisy = wa.WaveAugmentConfig(noise_prob=1.0, snr_db=(5.0, 5.0), noise_kinds=("white",))
    padded = wa.augment(speech, dataclasses.replace(noisy, silence_s=0.25), np.random.default_rng(1))
    inner = wa.augment(speech, noisy, np.random.default_rng(1))  # silence draws come last: same noisy wave
    (start,) = _find(inner, padded)
    pads = np.concatenate([padded[:start], padded[start + inner.size:]])
    floor = np.sqrt(np.mean(np.square(inner[: inner.size // 160 * 160].reshape(-1, 160)), axis=1)).min()
    assert pads.size > 0 and np.std(pads) == pytest.approx(floor, rel=0.1)


def test_gain_and_clipping(speech):
    quiet = wa.augment(speech, wa.WaveAugmentConfig(gain_db=(-12.0, -12.0)), np.random.default_rng(0))
    assert np.allclose(quiet, speech * 10 ** (-12 / 20), atol=1e-6)
    clipped = wa.augment(speech, wa.WaveAugmentConfig(clip_prob=1.0), np.random.default_rng(0))
    level = np.abs(clipped).max()
    assert level < 0.9 * np.abs(speech).max() and np.mean(np.abs(clipped) == level) > 0.001


def test_babble_draws_from_the_pool_and_falls_back_to_pink(speech, pool):
    babble = wa.WaveAugmentConfig(noise_prob=1.0, noise_kinds=("babble",))
    pink = wa.WaveAugmentConfig(noise_prob=1.0, noise_kinds=("pink",))
    before = len(pool.calls)
    wa.augment(speech, babble, np.random.default_rng(0), pool)
    assert 3 <= len(pool.calls) - before <= 6
    assert np.array_equal(wa.augment(speech, babble, np.random.default_rng(0)),
                          wa.augment(speech, pink, np.random.default_rng(0)))


def test_conditions_are_fixed_per_seed(speech, pool):
    assert np.array_equal(wa.condition("clean", speech, 0), speech)
    for name in ("noisy_room", "telephone"):
        assert np.array_equal(wa.condition(name, speech, 7, pool), wa.condition(name, speech, 7, pool))
        assert not np.allclose(wa.condition(name, speech, 7, pool), speech, atol=1e-3)
    assert not np.allclose(wa.condition("noisy_room", speech, 7, pool), wa.condition("noisy_room", speech, 8, pool))
    with pytest.raises(ValueError):
        wa.condition("underwater", speech, 0)


def test_benchmark_runs(capsys):
    import json
    import sys

    root = str(EXAMPLES.parents[1])
    if root not in sys.path:  # `benchmarks` is a top-level folder, not an installed package
        sys.path.insert(0, root)
    from benchmarks import wave_augment as bench

    bench.main(["--seconds", "0.5", "--clips", "1", "--repeats", "1", "--no-rooms", "--json"])
    costs = json.loads(capsys.readouterr().out)["ms_per_utterance"]
    assert "full chain, everything on" in costs and all(ms["0.5"] > 0 for ms in costs.values())
    assert bench.room_measures(wa.room_impulse_response(0.4, np.random.default_rng(0)))["rt60_ours"] > 0
