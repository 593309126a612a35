"""Waveform augmentation for training the speech encoder, and the fixed acoustic conditions of evaluation.

Everything works on 1-D float32 waves at 16 kHz and draws its randomness from the `np.random.Generator` it is
given, so a seeded generator gives the same output on every machine run with the same library versions.
`augment` and `condition` return waves in [-1, 1]; the single transforms keep levels as documented and may
leave a peak above 1 for the caller to handle.

SNR is defined on the speech's active part: the 10 ms frames within `_ACTIVE_RANGE_DB` of the loudest frame,
with the noise power taken over the same samples. A whole-clip SNR would depend on how much silence the
synthesizer left around the caption, and noise is heard against speech, not against the pauses.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import soxr

SAMPLE_RATE = 16000
CONDITIONS = ("clean", "noisy_room", "telephone")
NOISE_KINDS = ("white", "pink", "babble")

BabblePool = Callable[[np.random.Generator], np.ndarray]

_FRAME = SAMPLE_RATE // 100
_ACTIVE_RANGE_DB = 40.0
_TELEPHONE_RATE = 8000
_TELEPHONE_BAND_HZ = (300.0, 3400.0)
_TELEPHONE_EDGE_HZ = 100.0
_MU = 255.0
# The voice shift's STFT: 64 ms frames resolve the harmonics of a 85 Hz voice; 75% overlap keeps the phase
# vocoder's stretched frames smooth.
_SHIFT_FFT = 1024
_SHIFT_HOP = 256
# Cepstral coefficients kept for the spectral envelope: 1.9 ms of quefrency, below the pitch period of any voice
# up to about 500 Hz, so the envelope holds the vocal tract and not the harmonics.
_ENVELOPE_LIFTER = 30
# The envelope correction never boosts or cuts a bin by more than 24 dB: spectral valleys hold mostly noise.
_MAX_LOG_GAIN = 24.0 / 20.0 * np.log(10.0)


@dataclasses.dataclass
class WaveAugmentConfig:
    speed: float = 0.0  # speed perturbation: factor uniform in [1-speed, 1+speed] (tempo and pitch); 0 = off
    voice_prob: float = 0.0  # probability of a voice shift: pitch and vocal tract moved apart, tempo kept
    pitch_factor: tuple[float, float] = (1.0, 1.0)  # F0 times a factor log-uniform in this range
    formant_factor: tuple[float, float] = (1.0, 1.0)  # spectral envelope stretched by a factor log-uniform here
    noise_prob: float = 0.0  # probability of additive noise per utterance
    snr_db: tuple[float, float] = (0.0, 30.0)
    noise_kinds: tuple[str, ...] = NOISE_KINDS
    reverb_prob: float = 0.0  # probability of reverberation with a simulated room impulse response
    rt60_s: tuple[float, float] = (0.1, 0.8)
    telephone_prob: float = 0.0  # 8 kHz, 300-3400 Hz band, 8-bit mu-law, back to 16 kHz
    gain_db: tuple[float, float] = (0.0, 0.0)  # random gain; 0,0 = off
    clip_prob: float = 0.0  # hard clipping at a random level after gain
    silence_s: float = 0.0  # up to this much leading and trailing silence (a low noise floor, not digital zero)

    def __post_init__(self) -> None:
        unknown = set(self.noise_kinds) - set(NOISE_KINDS)
        if unknown or not self.noise_kinds:
            raise ValueError(f"noise_kinds must be a non-empty subset of {NOISE_KINDS}, got {self.noise_kinds}")
        if not 0.0 <= self.speed < 1.0:
            raise ValueError("speed must be in [0, 1)")
        if self.rt60_s[0] <= 0 or self.rt60_s[1] < self.rt60_s[0]:
            raise ValueError("rt60_s must be an increasing pair of positive seconds")
        for name in ("pitch_factor", "formant_factor"):
            low, high = getattr(self, name)
            if low <= 0 or high < low:
                raise ValueError(f"{name} must be an increasing pair of positive factors")

    @property
    def enabled(self) -> bool:
        return (
            self.speed > 0
            or self.voice_prob > 0
            or self.noise_prob > 0
            or self.reverb_prob > 0
            or self.telephone_prob > 0
            or any(self.gain_db)
            or self.clip_prob > 0
            or self.silence_s > 0
        )


def augment(
    wave: np.ndarray, config: WaveAugmentConfig, rng: np.random.Generator, babble_pool: BabblePool | None = None
) -> np.ndarray:
    """One random augmentation of `wave` (the wave itself, as float32, when `config` is all off).

    The order follows the path sound takes: the speaker's voice (pitch and vocal tract, then rate), the room
    (reverb), other sources heard at the microphone (noise, after the room: diffuse or near noise is not
    reverberated with the talker), the channel carrying the mixture (telephone), the recording level and
    converter (gain, clipping), and where the recording starts and stops (silence, last, at the clip's own noise floor).

    `babble_pool(rng)` returns one other training utterance and must draw only from the generator it is
    given, or the result is no longer reproducible. Babble without a pool falls back to pink noise.
    """
    wave = _as_wave(wave)
    if not config.enabled:
        return wave
    if config.voice_prob > 0 and rng.random() < config.voice_prob:
        wave = voice_shift(wave, _log_uniform(rng, config.pitch_factor), _log_uniform(rng, config.formant_factor))
    if config.speed > 0:
        wave = speed_perturb(wave, rng.uniform(1.0 - config.speed, 1.0 + config.speed))
    if config.reverb_prob > 0 and rng.random() < config.reverb_prob:
        wave = reverberate(wave, room_impulse_response(rng.uniform(*config.rt60_s), rng))
    if config.noise_prob > 0 and rng.random() < config.noise_prob:
        kind = config.noise_kinds[rng.integers(len(config.noise_kinds))]
        snr_db = rng.uniform(*config.snr_db)
        wave = add_noise(wave, _noise(kind, wave.size, rng, babble_pool), snr_db)
    if config.telephone_prob > 0 and rng.random() < config.telephone_prob:
        wave = telephone(wave)
    # The mixture is recorded without clipping unless gain or clip_prob ask for it.
    wave = _fit(wave)
    if any(config.gain_db):
        wave = np.clip(wave * np.float32(10.0 ** (rng.uniform(*config.gain_db) / 20.0)), -1.0, 1.0)
    if config.clip_prob > 0 and rng.random() < config.clip_prob:
        level = np.float32(rng.uniform(0.25, 0.9) * np.abs(wave).max())
        wave = np.clip(wave, -level, level)
    if config.silence_s > 0:
        wave = _pad_silence(wave, config.silence_s, rng)
    return wave.astype(np.float32, copy=False)


def speed_perturb(wave: np.ndarray, factor: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Played `factor` times faster (tempo and pitch both scale): the length becomes len / factor."""
    wave = _as_wave(wave)
    if factor <= 0:
        raise ValueError("speed factor must be positive")
    if factor == 1.0:
        return wave.copy()
    # Resampling from a pretended rate of factor * sample_rate down to sample_rate shortens by the factor.
    return soxr.resample(wave, sample_rate * factor, sample_rate, quality="HQ").astype(np.float32, copy=False)


def voice_shift(wave: np.ndarray, pitch: float, formant: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Another speaker's voice from this one: F0 times `pitch`, the spectral envelope (the formants) stretched
    along frequency by `formant`, the tempo and length kept, the RMS kept.

    A female voice is roughly a male one with pitch ~1.7 and formant ~1.15. The envelope is corrected first,
    to where the formants must be before the pitch shift moves them (the cepstrally smoothed log spectrum read
    at f * pitch / formant); then a phase vocoder stretches time by `pitch` and resampling plays the result
    `pitch` times faster, moving every frequency by `pitch` and restoring the length.
    """
    wave = _as_wave(wave)
    if pitch <= 0 or formant <= 0:
        raise ValueError("pitch and formant factors must be positive")
    if (pitch == 1.0 and formant == 1.0) or wave.size == 0:
        return wave.copy()
    spectrum = _stft(wave)
    magnitude, phase = np.abs(spectrum), np.angle(spectrum)
    magnitude *= _envelope_gain(magnitude, pitch / formant)
    stretched = _istft(_phase_vocoder(magnitude, phase, pitch))
    return _match_rms(_to_length(speed_perturb(stretched, pitch, sample_rate), wave.size), wave)


def white_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian white noise, unit RMS."""
    return rng.standard_normal(n, dtype=np.float32)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with a 1/f power spectrum (no DC), unit RMS."""
    size = _fast_len(n)
    spectrum = np.fft.rfft(rng.standard_normal(size, dtype=np.float32))
    spectrum[0] = 0
    spectrum[1:] /= np.sqrt(np.arange(1, spectrum.size, dtype=np.float32))
    noise = np.fft.irfft(spectrum, size)[:n]
    return _unit_rms(noise)


def add_noise(wave: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """wave + noise scaled so that the active-speech SNR (see the module's docstring) is exactly snr_db.

    `noise` must be at least as long as `wave` (its head is used). A wave with no active part, or a noise
    that is silent there, is returned unchanged.
    """
    wave = _as_wave(wave)
    if noise.shape[0] < wave.size:
        raise ValueError("noise is shorter than the wave")
    noise = np.asarray(noise[: wave.size], dtype=np.float64)
    active = _active_mask(wave)
    if not active.any():
        return wave.copy()
    speech_power = np.mean(np.square(wave[active], dtype=np.float64))
    noise_power = np.mean(np.square(noise[active]))
    if noise_power == 0:
        return wave.copy()
    scale = np.sqrt(speech_power / noise_power * 10.0 ** (-snr_db / 10.0))
    return (wave + scale * noise).astype(np.float32)


def room_impulse_response(rt60_s: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A simulated room: direct path, sparse early reflections, and an exponentially decaying noise tail.

    The tail's energy falls 60 dB in rt60_s, and the response stops there. The direct path is at sample 0,
    so the reverberated speech stays aligned with the dry one. The direct-to-reverberant ratio is the
    diffuse-field one, (r_c / r)^2 with critical distance r_c = 0.057 sqrt(V / RT60), for a room of
    30-150 m^3 and a talker 0.5-3 m from the microphone (both log-uniform). Normalised to unit energy.
    """
    if rt60_s <= 0:
        raise ValueError("rt60_s must be positive")
    n = int(rt60_s * sample_rate) + 1
    t = np.arange(n) / sample_rate
    envelope = np.exp(-3.0 * np.log(10.0) * t / rt60_s)  # amplitude falls 1000x (energy 60 dB) in rt60_s
    # Reflections start a few metres of extra path after the direct sound. A tail dense from there on (no
    # build-up ramp) gives early decay times and C50 closer to image-source rooms' (benchmarks/wave_augment.py).
    onset = rng.uniform(0.002, 0.008)
    reverberant = np.where(t >= onset, rng.standard_normal(n) * envelope, 0.0)
    # Small, dead rooms have their early reflections closer together, hence the bound by rt60_s.
    early = min(0.04, 0.25 * rt60_s)
    count = rng.integers(6, 13)
    taps = np.round(rng.uniform(onset, onset + early, count) * sample_rate).astype(int)
    taps = np.minimum(taps, n - 1)
    # Each reflection stands well above the tail's per-sample level, as a single specular path does.
    reverberant[taps] += rng.choice([-1.0, 1.0], count) * rng.uniform(2.0, 6.0, count) * envelope[taps]
    volume_m3 = np.exp(rng.uniform(np.log(30.0), np.log(150.0)))
    distance_m = np.exp(rng.uniform(np.log(0.5), np.log(3.0)))
    drr_db = 20.0 * np.log10(0.057 * np.sqrt(volume_m3 / rt60_s) / distance_m)
    reverberant *= np.sqrt(10.0 ** (-drr_db / 10.0) / np.sum(np.square(reverberant)))
    reverberant[0] = 1.0
    return (reverberant / np.sqrt(np.sum(np.square(reverberant)))).astype(np.float32)


def reverberate(wave: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """wave convolved with rir, cut to the input's length and scaled back to the input's RMS.

    Cutting the tail keeps the length and the timing the batch's lengths were computed for; only the
    reverberation after the clip's last sample is lost, which the synthesizers' trailing silence mostly holds.
    """
    wave = _as_wave(wave)
    size = _fast_len(wave.size + rir.size - 1)
    wet = np.fft.irfft(np.fft.rfft(wave, size) * np.fft.rfft(np.asarray(rir, dtype=np.float32), size), size)
    return _match_rms(wet[: wave.size], wave)


def telephone(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A narrowband telephone channel: 8 kHz, 300-3400 Hz band, 8-bit mu-law, back to sample_rate.

    The band filter runs before the codec (the transmit filter) and after it (the receive filter, which
    also removes the codec's quantisation noise outside the band). Same length as the input.
    """
    wave = _as_wave(wave)
    narrow = soxr.resample(wave, sample_rate, _TELEPHONE_RATE, quality="HQ")
    narrow = _telephone_band(_mu_law(_telephone_band(narrow)))
    wide = soxr.resample(narrow.astype(np.float32), _TELEPHONE_RATE, sample_rate, quality="HQ")
    return _to_length(wide, wave.size)


def rt60_of(rir: np.ndarray, sample_rate: int = SAMPLE_RATE) -> float:
    """RT60 from Schroeder backward integration: a least-squares line through the decay curve from -5 to -35 dB
    (T30), or to -25 dB (T20) when the curve does not reach -35 dB, extrapolated to 60 dB."""
    energy = np.cumsum(np.square(np.asarray(rir, dtype=np.float64))[::-1])[::-1]
    if energy[0] <= 0:
        raise ValueError("the impulse response is silent")
    decay_db = 10.0 * np.log10(np.maximum(energy / energy[0], 1e-300))
    start = int(np.argmax(decay_db <= -5.0))
    for end_db in (-35.0, -25.0):
        if decay_db[-1] < end_db:
            end = int(np.argmax(decay_db <= end_db))
            break
    else:
        raise ValueError("the decay curve does not reach -25 dB")
    if end - start < 2:
        raise ValueError("the impulse response is too short to fit a decay")
    t = np.arange(start, end) / sample_rate
    slope = np.polyfit(t, decay_db[start:end], 1)[0]
    return float(-60.0 / slope)


def condition(name: str, wave: np.ndarray, seed: int, babble_pool: BabblePool | None = None) -> np.ndarray:
    """Evaluation condition `name` (one of CONDITIONS), the same for the same (name, seed, wave, pool).

    clean: unchanged. noisy_room: a room with RT60 uniform in 0.3-0.6 s, then pink noise or babble (pink
    without a pool) at an SNR uniform in 10-20 dB. telephone: the telephone band and mu-law, no noise.
    """
    if name not in CONDITIONS:
        raise ValueError(f"unknown condition {name!r}; expected one of {CONDITIONS}")
    wave = _as_wave(wave)
    if name == "clean":
        return wave
    if name == "telephone":
        return _fit(telephone(wave))
    rng = np.random.default_rng([seed, CONDITIONS.index(name)])
    # The scalars come first so the room and SNR of a seed do not depend on whether a pool is given.
    rt60_s = rng.uniform(0.3, 0.6)
    snr_db = rng.uniform(10.0, 20.0)
    kind = ("pink", "babble")[rng.integers(2)]
    room = reverberate(wave, room_impulse_response(rt60_s, rng))
    return _fit(add_noise(room, _noise(kind, wave.size, rng, babble_pool), snr_db))


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return float(np.exp(rng.uniform(np.log(low), np.log(high)))) if high > low else float(low)


def _stft(wave: np.ndarray) -> np.ndarray:
    """(frames, bins) complex spectrum, Hann windows, the wave zero-padded by half a frame at each end."""
    half = _SHIFT_FFT // 2
    padded = np.pad(wave, (half, half + _SHIFT_HOP))
    frames = np.lib.stride_tricks.sliding_window_view(padded, _SHIFT_FFT)[::_SHIFT_HOP]
    return np.fft.rfft(frames * _shift_window(), axis=1)


def _istft(spectrum: np.ndarray) -> np.ndarray:
    """Weighted overlap-add of Hann-windowed frames, the inverse of _stft (padding removed)."""
    window = _shift_window()
    overlap = _SHIFT_FFT // _SHIFT_HOP
    frames = (np.fft.irfft(spectrum, _SHIFT_FFT, axis=1) * window).reshape(len(spectrum), overlap, _SHIFT_HOP)
    hops = np.zeros((len(spectrum) + overlap - 1, _SHIFT_HOP), dtype=np.float32)
    weight = np.zeros_like(hops)
    for part in range(overlap):  # each frame's part-th hop lands on output hop frame + part
        hops[part: part + len(spectrum)] += frames[:, part]
        weight[part: part + len(spectrum)] += np.square(window[part * _SHIFT_HOP: (part + 1) * _SHIFT_HOP])
    half = _SHIFT_FFT // 2
    return (hops / np.maximum(weight, np.float32(1e-3))).ravel()[half: hops.size - half]


@lru_cache(maxsize=1)
def _shift_window() -> np.ndarray:
    return _read_only(np.hanning(_SHIFT_FFT + 1)[:-1].astype(np.float32))


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _envelope_gain(magnitude: np.ndarray, stretch: float) -> np.ndarray:
    """Per frame and bin, the gain that moves the spectral envelope E(k) to E(k * stretch).

    E is the cepstrally smoothed log magnitude, from the first _ENVELOPE_LIFTER cepstral coefficients c_n:
    E(k) = c_0 + 2 sum_n c_n cos(2 pi n k / N), which can be read at fractional bins, the stretched ones too.
    Both the cepstrum and the shift are small matrix products, written with einsum: BLAS would start its own
    threads for each, and training augments several captions at once on threads of its own.
    """
    cepstrum = np.einsum("fk,kn->fn", np.log(magnitude + np.float32(1e-9)), _cepstrum_basis())
    shift = np.einsum("fn,nk->fk", cepstrum, _envelope_shift_basis(stretch))
    return np.exp(np.clip(shift, -_MAX_LOG_GAIN, _MAX_LOG_GAIN))


@lru_cache(maxsize=1)
def _cepstrum_basis() -> np.ndarray:
    """(bins, lifter): a real, even log spectrum of _SHIFT_FFT points to its first cepstral coefficients."""
    bins = np.arange(_SHIFT_FFT // 2 + 1)[:, None]
    counted = np.where((bins == 0) | (bins == _SHIFT_FFT // 2), 1.0, 2.0)  # each inner bin stands for two
    basis = counted * np.cos(2 * np.pi * bins * np.arange(_ENVELOPE_LIFTER) / _SHIFT_FFT) / _SHIFT_FFT
    return _read_only(basis.astype(np.float32))


def _envelope_shift_basis(stretch: float) -> np.ndarray:
    """(lifter, bins): cepstral coefficients to E(k * stretch) - E(k), stretched bins held at the last one."""
    bins = np.arange(_SHIFT_FFT // 2 + 1)
    moved = np.minimum(bins * stretch, bins[-1])
    weights = np.where(np.arange(_ENVELOPE_LIFTER) == 0, 1.0, 2.0)[:, None]
    n = np.arange(_ENVELOPE_LIFTER)[:, None]
    basis = weights * (np.cos(2 * np.pi * n * moved / _SHIFT_FFT) - np.cos(2 * np.pi * n * bins / _SHIFT_FFT))
    return basis.astype(np.float32)


def _phase_vocoder(magnitude: np.ndarray, phase: np.ndarray, stretch: float) -> np.ndarray:
    """The STFT of the same sound `stretch` times longer: frames read at fractional positions, magnitudes
    interpolated, each bin's phase advanced by its measured frequency so the partials stay continuous."""
    positions = np.arange(0.0, len(magnitude) - 1, 1.0 / stretch)
    below = positions.astype(int)
    weight = (positions - below)[:, None].astype(np.float32)
    magnitude = (1.0 - weight) * magnitude[below] + weight * magnitude[below + 1]
    expected = (2.0 * np.pi * _SHIFT_HOP / _SHIFT_FFT * np.arange(magnitude.shape[1])).astype(np.float32)
    deviation = np.diff(phase, axis=0) - expected
    deviation -= np.float32(2.0 * np.pi) * np.rint(deviation * np.float32(0.5 / np.pi))  # into [-pi, pi]
    accumulated = np.empty_like(magnitude)
    accumulated[0] = phase[0]
    np.cumsum((expected + deviation)[below[:-1]], axis=0, out=accumulated[1:])
    accumulated[1:] += phase[0]
    # cos and sin rather than exp(1j * x): numpy's complex64 exp is several times slower.
    out = np.empty(magnitude.shape, dtype=np.complex64)
    out.real = magnitude * np.cos(accumulated)
    out.imag = magnitude * np.sin(accumulated)
    return out


def _noise(kind: str, n: int, rng: np.random.Generator, babble_pool: BabblePool | None) -> np.ndarray:
    if kind == "white":
        return white_noise(n, rng)
    if kind == "pink" or (kind == "babble" and babble_pool is None):
        return pink_noise(n, rng)
    if kind == "babble":
        return _babble(n, rng, babble_pool)
    raise ValueError(f"unknown noise kind {kind!r}")


def _babble(n: int, rng: np.random.Generator, pool: BabblePool) -> np.ndarray:
    """3-6 other utterances, each looped from a random start to n samples at equal active level, summed."""
    total = np.zeros(n, dtype=np.float32)
    for _ in range(rng.integers(3, 7)):
        talker = _as_wave(pool(rng))
        active = _active_mask(talker)
        if not active.any():
            continue
        talker = talker / np.float32(np.sqrt(np.mean(np.square(talker[active], dtype=np.float64))))
        start = rng.integers(talker.size)
        total += talker[(start + np.arange(n)) % talker.size]
    return total


def _mu_law(x: np.ndarray) -> np.ndarray:
    """8-bit mu-law encode and decode: quantisation steps fine near zero and coarse near full scale."""
    x = np.clip(x, -1.0, 1.0)
    compressed = np.sign(x) * np.log1p(_MU * np.abs(x)) / np.log1p(_MU)
    code = np.round((compressed + 1.0) * 127.5)
    compressed = code / 127.5 - 1.0
    return np.sign(compressed) * np.expm1(np.abs(compressed) * np.log1p(_MU)) / _MU


def _telephone_band(x: np.ndarray) -> np.ndarray:
    """Zero-phase band-pass at the telephone rate: zero outside 300-3400 Hz, raised-cosine edges inside."""
    low, high = _TELEPHONE_BAND_HZ
    size = _fast_len(x.size + _TELEPHONE_RATE // 20)  # room for the edges' ringing, none wraps round
    freqs = np.fft.rfftfreq(size, 1.0 / _TELEPHONE_RATE)
    rise = np.clip((freqs - low) / _TELEPHONE_EDGE_HZ, 0.0, 1.0)
    fall = np.clip((high - freqs) / _TELEPHONE_EDGE_HZ, 0.0, 1.0)
    gain = np.sin(0.5 * np.pi * rise) ** 2 * np.sin(0.5 * np.pi * fall) ** 2
    return np.fft.irfft(np.fft.rfft(x, size) * gain, size)[: x.size]


def _pad_silence(wave: np.ndarray, most_s: float, rng: np.random.Generator) -> np.ndarray:
    """Up to most_s of leading and trailing noise floor: 50-70 dB below the peak, or the clip's own floor
    (its quietest 10 ms) when that is louder, so pads after added noise do not step down to near silence."""
    most = int(most_s * SAMPLE_RATE)
    lead, trail = rng.integers(0, most + 1, 2)
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    level = peak * 10.0 ** (-rng.uniform(50.0, 70.0) / 20.0)
    frames = wave[: wave.size // _FRAME * _FRAME].reshape(-1, _FRAME)
    if frames.size:
        level = max(level, float(np.sqrt(np.mean(np.square(frames, dtype=np.float64), 1).min())))
    level = max(level, 1e-5)  # a silent clip still gets a floor above digital zero
    floor = white_noise(int(lead + trail), rng) * np.float32(level)
    return np.concatenate([floor[:lead], wave, floor[lead:]])


def _active_mask(wave: np.ndarray) -> np.ndarray:
    """Per sample: inside a 10 ms frame whose power is within _ACTIVE_RANGE_DB of the loudest frame's."""
    frames = -(-wave.size // _FRAME)
    padded = np.zeros(frames * _FRAME, dtype=np.float64)
    padded[: wave.size] = wave
    power = np.mean(np.square(padded.reshape(frames, _FRAME)), axis=1)
    if frames == 0 or power.max() == 0:
        return np.zeros(wave.size, dtype=bool)
    active = power >= power.max() * 10.0 ** (-_ACTIVE_RANGE_DB / 10.0)
    return np.repeat(active, _FRAME)[: wave.size]


def _to_length(x: np.ndarray, n: int) -> np.ndarray:
    """x as float32, cut or zero-padded to n samples (resampling round trips miss the length by a few)."""
    out = np.zeros(n, dtype=np.float32)
    out[: min(x.size, n)] = x[:n]
    return out


def _as_wave(wave: np.ndarray) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"expected a 1-D wave, got shape {wave.shape}")
    return wave


def _unit_rms(x: np.ndarray) -> np.ndarray:
    rms = np.sqrt(np.mean(np.square(x, dtype=np.float64))) if x.size else 0.0
    return (x / rms if rms > 0 else x).astype(np.float32)


def _match_rms(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    have = np.sqrt(np.mean(np.square(x, dtype=np.float64)))
    want = np.sqrt(np.mean(np.square(reference, dtype=np.float64)))
    return (x * (want / have) if have > 0 else x).astype(np.float32)


def _fit(wave: np.ndarray) -> np.ndarray:
    """Scaled down (never clipped) into [-1, 1]: scaling keeps the SNR and the spectrum."""
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    return (wave / np.float32(peak) if peak > 1.0 else wave).astype(np.float32, copy=False)


def _fast_len(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: a size numpy's FFT handles fast, without doubling to a power of two."""
    best = 1 << max(n - 1, 0).bit_length()
    fives = 1
    while fives < best:
        threes = fives
        while threes < best:
            size = threes
            while size < n:
                size *= 2
            best = min(best, size)
            threes *= 3
        fives *= 5
    return best
