"""Speech synthesis with espeak-ng through espeakng-loader (ctypes), resampled to 16 kHz, written as WAV.

Facts this relies on (docs/design.md): `espeak_Initialize(2 /*synchronous*/, 0, data_path, 0)` returns
the output rate (22050 Hz); `espeak_SetVoiceByName` returns 2 for an unknown language and then keeps the
previous voice, and accepts an unknown `+variant` silently, so both are checked here. The library keeps
global state — and part of it (the pitch "flutter" phase) survives even Terminate/Initialize, so the same
sentence spoken twice in one process differs slightly. Output is therefore deterministic only for a fixed
sequence of utterances in a fresh process: callers run each batch of utterances in its own new process.
"""

from __future__ import annotations

import ctypes
import dataclasses
import io
import wave
from pathlib import Path

import numpy as np

from s2i_runtime.errors import S2IError

OUTPUT_RATE = 16000
RATE_RANGE = (145, 195)  # words per minute (espeak's default is 175)
PITCH_RANGE = (35, 65)  # espeak's 0-100 scale (default 50)

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH = 1, 3


class SpeechError(S2IError, RuntimeError):
    """espeak-ng could not be loaded or refused a voice or a sentence."""


@dataclasses.dataclass(frozen=True)
class Voice:
    language: str  # an espeak-ng voice file name, e.g. "en-us"
    variant: str  # a file in espeak-ng-data/voices/!v, e.g. "f3"

    @property
    def name(self) -> str:
        return f"{self.language}+{self.variant}"


def _voices(languages: tuple[str, ...], variants: tuple[str, ...]) -> tuple[Voice, ...]:
    return tuple(Voice(lang, var) for lang in languages for var in variants)


# Training voices: 4 accents x 8 variants. Test voices use variants never heard in training (m6, m7, f4, f5),
# several with accents never heard in training either, so the test measures unseen speakers as well as
# unseen classes.
TRAIN_VOICES: tuple[Voice, ...] = _voices(
    ("en", "en-us", "en-gb-x-rp", "en-029"), ("m1", "m2", "m3", "m4", "f1", "f2", "f3", "m5")
)
TEST_VOICES: tuple[Voice, ...] = (
    Voice("en-gb-scotland", "m6"),
    Voice("en-us-nyc", "f4"),
    Voice("en-gb-x-gbclan", "m7"),
    Voice("en-gb-x-gbcwmd", "f5"),
    Voice("en-us", "m7"),
    Voice("en", "f4"),
)


@dataclasses.dataclass(frozen=True)
class Utterance:
    text: str
    voice: Voice
    rate: int
    pitch: int


def sample_prosody(rng: np.random.Generator) -> tuple[int, int]:
    rate = int(rng.integers(RATE_RANGE[0], RATE_RANGE[1] + 1))
    pitch = int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1))
    return rate, pitch


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class Synthesizer:
    """The process's one espeak-ng instance. Create at most one per process (the library is global)."""

    _created = False

    def __init__(self) -> None:
        if Synthesizer._created:
            raise SpeechError("espeak-ng keeps global state: create one Synthesizer per process")
        try:
            import espeakng_loader
        except ImportError:
            raise SpeechError("espeakng-loader is not installed (pip install 's2i[train]')") from None
        self._data_path = Path(espeakng_loader.get_data_path())
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, str(self._data_path).encode(), 0)
        if rate <= 0:
            raise SpeechError(f"espeak-ng failed to initialise with data at {self._data_path}")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._on_audio)  # kept alive as long as the library may call it
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib
        Synthesizer._created = True

    def _on_audio(self, wav, count, _events) -> int:
        if count > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0  # 0 = go on

    def check_voice(self, voice: Voice) -> None:
        if not (self._data_path / "voices" / "!v" / voice.variant).is_file():
            raise SpeechError(f"espeak-ng has no voice variant {voice.variant!r}")
        if self._lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise SpeechError(f"espeak-ng does not know the voice {voice.name!r}")

    def speak(self, utterance: Utterance, seed: int = 0) -> np.ndarray:
        """int16 samples at `self.sample_rate`."""
        self.check_voice(utterance.voice)
        self._lib.espeak_SetParameter(_PARAM_RATE, int(utterance.rate), 0)
        self._lib.espeak_SetParameter(_PARAM_PITCH, int(utterance.pitch), 0)
        self._lib.espeak_ng_SetRandSeed(int(seed) & 0x7FFFFFFF)
        self._chunks = []
        text = utterance.text.encode("utf-8") + b"\0"
        status = self._lib.espeak_Synth(text, len(text), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        if status != 0 or not self._chunks:
            raise SpeechError(f"espeak-ng produced no audio for {utterance.text!r} (status {status})")
        return np.concatenate(self._chunks)


def resample_to_16k(samples: np.ndarray, rate: int) -> np.ndarray:
    """float32 in [-1, 1] at 16 kHz (soxr, high quality; deterministic)."""
    import soxr

    audio = samples.astype(np.float32) / 32768.0
    if rate == OUTPUT_RATE:
        return audio
    return soxr.resample(audio, rate, OUTPUT_RATE, quality="HQ").astype(np.float32)


def wav_bytes(audio: np.ndarray, sample_rate: int = OUTPUT_RATE) -> bytes:
    """16-bit mono PCM WAV; the bytes depend only on the samples."""
    pcm = np.clip(np.rint(np.asarray(audio, dtype=np.float64) * 32767.0), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()
