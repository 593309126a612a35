"""The example WAVs shipped in `s2i_runtime/examples/`, spoken by held-out test voices.

`write_examples()` regenerates them byte for byte (one fresh process, fixed order: see `speech`).
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from s2i_runtime.fsutil import atomic_write_bytes

from . import speech

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "s2i_runtime" / "examples"

# (file stem, text, voice, rate, pitch): test voices only, so a model never heard these speakers.
EXAMPLES: tuple[tuple[str, str, speech.Voice, int, int], ...] = (
    ("large_red_star", "a large red star on a dark background", speech.TEST_VOICES[4], 165, 50),
    ("small_blue_circle", "a small blue circle on a light background", speech.TEST_VOICES[5], 165, 55),
    ("big_green_triangle", "a big green triangle on a dark background", speech.TEST_VOICES[0], 160, 45),
)


def _speak_all(_: int) -> list[tuple[str, bytes]]:
    synthesizer = speech.Synthesizer()
    out = []
    for stem, text, voice, rate, pitch in EXAMPLES:
        raw = synthesizer.speak(speech.Utterance(text, voice, rate, pitch), seed=0)
        out.append((stem, speech.wav_bytes(speech.resample_to_16k(raw, synthesizer.sample_rate))))
    return out


def write_examples(folder: str | os.PathLike = DEFAULT_FOLDER) -> list[Path]:
    folder = Path(folder)
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        spoken = pool.map(_speak_all, [0])[0]
    paths = []
    for stem, data in spoken:
        path = folder / f"{stem}.wav"
        atomic_write_bytes(path, data)
        path.chmod(0o644)  # shipped in the wheel: readable by everyone (temporary files start as 0600)
        paths.append(path)
    return paths
