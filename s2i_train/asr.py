"""Speech recognition for the two-stage baseline: pocketsphinx (the `asr` extra) with its shipped en-us acoustic
model, constrained by a grammar of the caption templates and word lists.

The recogniser is given the captions' language and nothing else: the grammar and the pronunciation dictionary
are made from `caption_grammar` (templates and word lists), never from a dataset's text, so a held-out
caption is recognised exactly as well as any other sentence the templates can make. Pronunciations come from
the CMU dictionary the wheel ships; the few caption words it lacks are spelled out here.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from s2i_runtime.errors import InputError

from .data import caption_grammar

SAMPLE_RATE = 16000
SEARCH = "caption"
# Caption words missing from the shipped CMU dictionary, in its phone set.
EXTRA_PRONUNCIATIONS: dict[str, str] = {"rhombus": "R AA M B AH S"}


@dataclasses.dataclass(frozen=True)
class Transcript:
    text: str  # lower-case words; empty when nothing in the grammar matched
    seconds: float  # wall time of the decode
    audio_seconds: float


def _pocketsphinx():
    try:
        import pocketsphinx
    except ImportError:
        raise InputError("the two-stage baseline needs pocketsphinx: pip install 's2i[asr]'") from None
    return pocketsphinx


def pronunciations(words: tuple[str, ...], dictionary: Path) -> list[str]:
    """Dictionary lines for `words` (every listed variant, "word(2)" included), from `dictionary` and the
    extra table; a word in neither is an error, since the decoder could then never say it."""
    wanted = set(words)
    lines, known = [], set()
    for line in dictionary.read_text(encoding="utf-8").splitlines():
        entry = line.split(maxsplit=1)
        if len(entry) == 2 and entry[0].split("(")[0] in wanted:
            lines.append(f"{entry[0]} {entry[1].split('#')[0].strip()}")
            known.add(entry[0].split("(")[0])
    for word in sorted(wanted - known):
        if word not in EXTRA_PRONUNCIATIONS:
            raise ValueError(f"no pronunciation for caption word {word!r}")
        lines.append(f"{word} {EXTRA_PRONUNCIATIONS[word]}")
    return lines


class Recogniser:
    """A pocketsphinx decoder searching only the caption grammar. Holds native state: one per thread."""

    def __init__(self) -> None:
        ps = _pocketsphinx()
        model = Path(ps.get_model_path()) / "en-us"
        lines = pronunciations(caption_grammar.vocabulary(), model / "cmudict-en-us.dict")
        with tempfile.TemporaryDirectory(prefix="s2i-asr-") as folder:
            dictionary = Path(folder) / "captions.dict"
            dictionary.write_text("\n".join(lines) + "\n", encoding="utf-8")
            # Filler words between grammar words are off: with them far more utterances end in no hypothesis.
            self.decoder = ps.Decoder(hmm=str(model / "en-us"), dict=str(dictionary), lm=None,
                                      samprate=SAMPLE_RATE, fsgusefiller=False, loglevel="FATAL")
        self.decoder.add_jsgf_string(SEARCH, caption_grammar.jsgf(SEARCH))
        self.decoder.activate_search(SEARCH)

    def transcribe(self, audio: np.ndarray) -> Transcript:
        """Decode one utterance: mono float samples in [-1, 1] at 16 kHz."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        began = time.perf_counter()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hypothesis = self.decoder.hyp()
        text = hypothesis.hypstr if hypothesis is not None else ""
        return Transcript(text.strip(), time.perf_counter() - began, audio.size / SAMPLE_RATE)

    def transcribe_all(self, waves: list[np.ndarray]) -> list[Transcript]:
        return [self.transcribe(w) for w in waves]
