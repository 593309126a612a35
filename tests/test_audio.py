import struct
import wave

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2i_runtime.audio import load_audio
from s2i_runtime.errors import InputError


def wav_bytes(samples: np.ndarray, rate: int, *, bits: int = 16, float_format: bool = False,
              extensible: bool = False) -> bytes:
    """A WAV file written field by field (the stdlib `wave` cannot write float or extensible files)."""
    samples = np.atleast_2d(samples.T).T  # (frames, channels)
    channels = samples.shape[1]
    if float_format:
        payload = samples.astype("<f4" if bits == 32 else "<f8").tobytes()
        tag = 3
    elif bits == 8:
        payload = np.clip(np.round(samples * 128 + 128), 0, 255).astype(np.uint8).tobytes()
        tag = 1
    elif bits == 24:
        ints = np.clip(np.round(samples * (1 << 23)), -(1 << 23), (1 << 23) - 1).astype("<i4")
        payload = ints.view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
        tag = 1
    else:
        scale = float(1 << (bits - 1))
        ints = np.clip(np.round(samples * scale), -scale, scale - 1)
        payload = ints.astype("<i2" if bits == 16 else "<i4").tobytes()
        tag = 1
    block = channels * bits // 8
    if extensible:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, 0)
        fmt += struct.pack("<H", tag) + guid_tail
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"LIST" + struct.pack("<I", 4) + b"INFO"  # an unrelated chunk to skip
    chunks += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


@pytest.mark.parametrize("bits,float_format", [(8, False), (16, False), (24, False), (32, False), (32, True),
                                               (64, True)])
def test_wav_encodings_decode_to_the_same_signal(bits, float_format):
    signal = tone(0.5, 16000)
    audio = load_audio(wav_bytes(signal, 16000, bits=bits, float_format=float_format))
    assert audio.dtype == np.float32 and audio.shape == signal.shape
    tolerance = 1.0 / 100 if bits == 8 else 1e-4
    assert np.abs(audio - signal).max() <= tolerance


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000, 96000, 192000])
def test_any_rate_is_resampled_to_16k(rate):
    audio = load_audio(wav_bytes(tone(1.0, rate), rate))
    assert abs(len(audio) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) * 16000 / len(audio) - 440) < 2


def test_channels_are_averaged():
    left, right = tone(0.25, 16000), tone(0.25, 16000, freq=1000.0)
    audio = load_audio(wav_bytes(np.stack([left, right], axis=1), 16000, bits=32, float_format=True))
    np.testing.assert_allclose(audio, (left + right) / 2, atol=1e-6)


def test_extensible_header_with_six_channels():
    audio = load_audio(wav_bytes(tone(0.25, 48000, channels=6), 48000, bits=24, extensible=True))
    assert audio.shape == (4000,)


def test_stdlib_written_wav_from_a_path(tmp_path):
    path = tmp_path / "hello.wav"
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes((tone(0.3, 16000) * 20000).astype("<i2").tobytes())
    assert load_audio(path).shape == (4800,)
    assert load_audio(str(path)).shape == (4800,)


def test_arrays_with_a_sample_rate():
    assert load_audio(tone(1.0, 16000).astype(np.float32)).shape == (16000,)
    assert load_audio(tone(1.0, 8000).astype(np.float32), 8000).shape == (16000,)
    ints = (tone(0.1, 16000) * 30000).astype(np.int16)
    np.testing.assert_allclose(load_audio(ints), ints / 32768.0, atol=1e-6)


def test_flac_through_soundfile(tmp_path):
    soundfile = pytest.importorskip("soundfile")
    path = tmp_path / "a.flac"
    soundfile.write(str(path), tone(0.5, 22050), 22050, format="FLAC")
    assert abs(len(load_audio(path)) - 8000) <= 1


def _error(source, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        load_audio(source, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_clear_errors(tmp_path):
    assert _error(tmp_path / "missing.wav") == f"{tmp_path / 'missing.wav'}: file not found"
    assert "is a directory" in _error(tmp_path)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    assert _error(empty) == f"{empty}: file is empty"
    good = wav_bytes(tone(0.5, 16000), 16000)
    assert "truncated WAV file" in _error(good[:200], name="cut.wav")
    assert "corrupt WAV header" in _error(good[:12] + b"fmt " + struct.pack("<I", 4) + b"abcd")
    assert "not audio" in _error(b"this is a text file, not audio at all")
    zero = wav_bytes(np.zeros(0), 16000)
    assert "empty" in _error(zero)
    assert "NaN or infinite" in _error(np.array([0.0, np.nan], dtype=np.float32))
    assert "more than the maximum of 30 s" in _error(np.zeros(31 * 16000, dtype=np.float32))
    assert load_audio(np.zeros(31 * 16000, dtype=np.float32), max_seconds=None).shape == (31 * 16000,)
    assert "sample rate 4000 Hz" in _error(tone(0.1, 4000), sample_rate=4000)
    assert "expected a path, bytes or a numpy array" in _error(12)


def test_float_wav_with_nan_is_rejected():
    samples = tone(0.1, 16000)
    samples[10] = np.inf
    assert "NaN or infinite" in _error(wav_bytes(samples, 16000, bits=32, float_format=True))


def _valid_or_input_error(data: bytes) -> None:
    try:
        audio = load_audio(data)
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert audio.dtype == np.float32 and audio.ndim == 1 and audio.size > 0
    assert np.isfinite(audio).all()


SEED_WAVS = [
    wav_bytes(tone(0.05, 16000), 16000),
    wav_bytes(tone(0.05, 44100, channels=2), 44100, bits=24),
    wav_bytes(tone(0.05, 8000), 8000, bits=32, float_format=True, extensible=True),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_random_bytes_give_audio_or_input_error(data):
    _valid_or_input_error(data)
    _valid_or_input_error(b"RIFF" + data)
    _valid_or_input_error(b"RIFF\x00\x00\x00\x00WAVE" + data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(SEED_WAVS),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=8),
    st.integers(0, 4000),
)
def test_mutated_wavs_give_audio_or_input_error(seed, flips, cut):
    data = bytearray(seed)
    for position, value in flips:
        if position < len(data):
            data[position] = value
    _valid_or_input_error(bytes(data[: max(0, len(data) - cut)]))
