"""Speech from synthesizers built from recordings of real people: Debian's flite and festival voices.

espeak-ng is formant synthesis: a model that only ever heard it learns espeak-ng, not speech. These voices
are concatenated or modelled from recorded speakers, so they sound like a person in a quiet room. Both
programs run as subprocesses (flite once per utterance, festival once per batch through `--pipe`, since its
start-up costs more than an utterance); both are deterministic for the same text and settings.

Held-out voices are never trained on: they measure how the model hears voices it never met.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .speech import SpeechError, resample_to_16k

# Prosody drawn per utterance: a duration stretch (1 = the voice's own tempo) and, for the diphone voices that
# honour it, a target mean F0 in Hz. The clustergen and HTS voices keep their own pitch.
STRETCH_RANGE = (0.85, 1.15)
F0_RANGE = (85.0, 145.0)

_TIMEOUT_S = 120


@dataclasses.dataclass(frozen=True)
class RecordedVoice:
    engine: str  # "flite" or "festival"
    name: str  # flite's -voice name, or festival's voice_<name> function
    package: str  # the Debian package that provides it
    takes_f0: bool = False  # whether the voice honours a target mean F0

    @property
    def label(self) -> str:
        return f"{self.engine}:{self.name}"


TRAIN_VOICES: tuple[RecordedVoice, ...] = (
    RecordedVoice("flite", "kal", "flite", takes_f0=True),
    RecordedVoice("flite", "kal16", "flite", takes_f0=True),
    RecordedVoice("flite", "rms", "flite"),
    RecordedVoice("festival", "kal_diphone", "festvox-kallpc16k", takes_f0=True),
)
TEST_VOICES: tuple[RecordedVoice, ...] = (
    RecordedVoice("flite", "slt", "flite"),
    RecordedVoice("flite", "awb", "flite"),
    RecordedVoice("festival", "cmu_us_slt_arctic_hts", "festvox-us-slt-hts"),
)


@dataclasses.dataclass(frozen=True)
class RecordedUtterance:
    text: str
    voice: RecordedVoice
    stretch: float
    f0_mean: float | None

    def prosody(self) -> dict[str, float]:
        out = {"duration_stretch": self.stretch}
        if self.f0_mean is not None:
            out["f0_mean_hz"] = self.f0_mean
        return out


def sample_utterance(text: str, voice: RecordedVoice, rng: np.random.Generator) -> RecordedUtterance:
    stretch = round(float(rng.uniform(*STRETCH_RANGE)), 3)
    f0 = round(float(rng.uniform(*F0_RANGE)), 1)
    return RecordedUtterance(text, voice, stretch, f0 if voice.takes_f0 else None)


def _missing(what: str, package: str) -> SpeechError:
    return SpeechError(f"{what} is not installed: apt-get install {package}")


def check_available(voices: Sequence[RecordedVoice]) -> None:
    """Raise SpeechError naming the Debian package of the first synthesizer or voice that is missing."""
    engines = {v.engine for v in voices}
    if "flite" in engines:
        flite = shutil.which("flite")
        if flite is None:
            raise _missing("flite", "flite")
        listed = subprocess.run([flite, "-lv"], capture_output=True, text=True, timeout=_TIMEOUT_S).stdout.split()
        for voice in voices:
            if voice.engine == "flite" and voice.name not in listed:
                raise _missing(f"flite voice {voice.name!r}", voice.package)
    if "festival" in engines:
        if shutil.which("festival") is None:
            raise _missing("festival", "festival")
        listed = _festival(["(print (voice.list))"]).replace("(", " ").replace(")", " ").split()
        for voice in voices:
            if voice.engine == "festival" and voice.name not in listed:
                raise _missing(f"festival voice {voice.name!r}", voice.package)


def _festival(commands: list[str]) -> str:
    try:
        done = subprocess.run(["festival", "--pipe"], input="\n".join(commands) + "\n", capture_output=True,
                              text=True, timeout=_TIMEOUT_S * max(1, len(commands) // 50))
    except FileNotFoundError:
        raise _missing("festival", "festival") from None
    if done.returncode != 0:
        raise SpeechError(f"festival failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return done.stdout


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as source:
        if source.getsampwidth() != 2 or source.getnchannels() != 1:
            raise SpeechError(f"{path.name}: expected 16-bit mono from the synthesizer")
        samples = np.frombuffer(source.readframes(source.getnframes()), dtype="<i2")
        return resample_to_16k(samples, source.getframerate())


def _flite(utterance: RecordedUtterance, out: Path) -> None:
    args = ["flite", "-voice", utterance.voice.name, "--setf", f"duration_stretch={utterance.stretch}"]
    if utterance.f0_mean is not None:
        args += ["--setf", f"int_f0_target_mean={utterance.f0_mean}"]
    try:
        done = subprocess.run([*args, "-t", utterance.text, "-o", str(out)], capture_output=True, text=True,
                              timeout=_TIMEOUT_S)
    except FileNotFoundError:
        raise _missing("flite", "flite") from None
    if done.returncode != 0 or not out.is_file():
        raise SpeechError(f"flite produced no audio for {utterance.text!r}: {done.stderr.strip()[:200]}")


def _festival_commands(utterance: RecordedUtterance, out: Path) -> list[str]:
    commands = [f"(voice_{utterance.voice.name})",
                f"(Parameter.set 'Duration_Stretch {utterance.stretch})"]
    if utterance.f0_mean is not None:
        # kal_diphone's intonation maps its model F0 statistics onto these targets.
        commands.append(f"(set! int_lr_params '((target_f0_mean {utterance.f0_mean}) (target_f0_std 16)"
                        " (model_f0_mean 170) (model_f0_std 34)))")
    commands.append(f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(utterance.text)}))"
                    f" {_scheme_string(str(out))} 'riff)")
    return commands


def synthesize(utterances: Sequence[RecordedUtterance]) -> list[np.ndarray]:
    """float32 waves at 16 kHz, one per utterance, in order."""
    with tempfile.TemporaryDirectory(prefix="s2i-voices-") as scratch:
        paths = [Path(scratch) / f"{i}.wav" for i in range(len(utterances))]
        festival_commands: list[str] = []
        for utterance, path in zip(utterances, paths, strict=True):
            if utterance.voice.engine == "flite":
                _flite(utterance, path)
            elif utterance.voice.engine == "festival":
                festival_commands += _festival_commands(utterance, path)
            else:
                raise SpeechError(f"unknown synthesizer {utterance.voice.engine!r}")
        if festival_commands:
            _festival(festival_commands)
        missing = [u.text for u, p in zip(utterances, paths, strict=True) if not p.is_file()]
        if missing:
            raise SpeechError(f"{utterances[0].voice.engine} produced no audio for {missing[0]!r}")
        return [_read_wav(path) for path in paths]
