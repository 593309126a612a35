"""The two-stage baseline's pieces: the caption grammar, the parse, the recogniser, the condition it feeds the
generator, and its scores. Training the text encoder and the end-to-end evaluation are in test_train_loop."""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from s2i_train.asr import Transcript
from s2i_train.cascade import asr_scores, code_drawer, parsed_code, word_errors
from s2i_train.data import caption_grammar, caption_parse, captions, vocabulary
from s2i_train.models import Generator, GeneratorConfig


def _all_captions(per_combination: int = 3):
    rng = np.random.default_rng(0)
    for colour in vocabulary.COLOURS:
        for shape in vocabulary.SHAPES:
            for size in vocabulary.SIZES:
                for background in vocabulary.BACKGROUNDS:
                    for _ in range(per_combination):
                        text, _ = captions.make_caption(rng, colour, shape, size, background)
                        yield text, (colour, shape, size, background)


def test_vocabulary_is_exactly_the_words_of_templates_and_word_lists():
    lists = [captions.SIZE_WORDS, captions.COLOUR_WORDS, captions.SHAPE_WORDS, captions.BACKGROUND_WORDS]
    expected = {w for options in lists for phrases in options.values() for p in phrases for w in p.split()}
    expected |= {w for t in captions.TEMPLATES for w in re.findall(r"[a-z]+", re.sub(r"\{\w+\}", " ", t.lower()))}
    expected |= {"a", "an"}
    assert set(caption_grammar.vocabulary()) == expected
    spoken = {w for text, _ in _all_captions(1) for w in caption_grammar.tokens(text)}
    assert spoken <= expected


def test_grammar_names_every_value_alike_and_no_colour_shape_pair():
    grammar = caption_grammar.jsgf()
    # Each template's slots are rule references: no literal word of a word list sits in a template rule, so the
    # grammar cannot favour the training pairs over the held-out ones.
    listed = {w for options in caption_grammar.SLOT_WORDS.values() for phrases in options.values() for w in phrases}
    for line in grammar.splitlines():
        if line.startswith("<template"):
            body = line.split("=", 1)[1]
            assert not set(caption_grammar.tokens(body)) & listed - {"background"}, line
    for held_out in vocabulary.TEST_CLASSES:
        assert f"{held_out.colour} {held_out.shape}" not in grammar
    for slot, lists in caption_grammar.SLOT_WORDS.items():
        rule = next(line for line in grammar.splitlines() if line.startswith(f"<{slot}> ="))
        assert all(phrase in rule for phrases in lists.values() for phrase in phrases)


def test_grammar_and_vocabulary_read_no_dataset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    caption_grammar.jsgf()
    caption_grammar.vocabulary()
    assert opened == []


def test_parse_reads_every_caption_the_templates_make():
    for text, (colour, shape, size, background) in _all_captions():
        parsed = caption_parse.parse(text)
        assert (parsed["colour"], parsed["shape"], parsed["size"]) == (colour, shape, size), text
        assert parsed["background"] in (background if captions.names_background(text) else None,), text


def test_parse_of_partial_and_empty_transcripts():
    assert caption_parse.parse("a big plus sign") == {"size": "large", "colour": None, "shape": "cross",
                                                      "background": None}
    assert caption_parse.parse_labels("") == {"size": -1, "colour": -1, "shape": -1, "background": -1}


def test_parsed_code_is_one_hot_where_named_and_uniform_elsewhere():
    code = parsed_code(["a tiny violet rhombus", ""])
    assert code.shape == (2, 20)
    blocks = code[0].split([8, 8, 2, 2])
    assert int(blocks[0].argmax()) == vocabulary.COLOURS.index("purple") and blocks[0].max() == 1
    assert int(blocks[1].argmax()) == vocabulary.SHAPES.index("diamond")
    assert torch.allclose(blocks[3], torch.full((2,), 0.5))
    assert torch.allclose(code[1][:8], torch.full((8,), 1 / 8))


def test_code_drawer_draws_from_a_code_through_the_generator():
    torch.manual_seed(0)
    config = GeneratorConfig(embedding_dim=16, z_dim=8, ca_dim=8, ngf=4, init_mult=8, attribute_code=(8, 8, 2, 2),
                             condition_on_embedding=False, sampled_code_blocks=(3,))
    generator = Generator(config).eval()
    draw = code_drawer(generator)
    code = parsed_code(["a large red star", "a small blue heart"])
    z, eps = torch.randn(2, 8), torch.randn(2, 8)
    images = draw(code, z, eps)
    assert images.shape == (2, 3, 64, 64)
    assert not torch.equal(images[0], images[1])


def test_word_errors_and_asr_scores():
    assert word_errors("a large red star".split(), "a large red star".split()) == 0
    assert word_errors("a large red star".split(), "a red star on".split()) == 2
    records = [{"text": "A large red star", "attributes": {"colour": 0, "shape": 3, "size": 1, "background": 0}},
               {"text": "A tiny blue heart", "attributes": {"colour": 5, "shape": 6, "size": 0, "background": 0}}]
    transcripts = [Transcript("a large red star", 0.1, 1.0), Transcript("", 0.1, 1.0)]
    scores = asr_scores(transcripts, records)
    assert scores["colour"] == scores["shape"] == scores["size"] == 0.5
    assert scores["word_error_rate"] == pytest.approx(4 / 8)
    assert scores["empty"] == 0.5 and scores["real_time_factor"] == pytest.approx(0.1)


SPEAK = """
import sys
from pathlib import Path
from s2i_train.data import speech
synthesizer = speech.Synthesizer()
for index, text in enumerate(sys.argv[2:]):
    raw = synthesizer.speak(speech.Utterance(text, speech.TRAIN_VOICES[0], 150, 50))
    audio = speech.resample_to_16k(raw, synthesizer.sample_rate)
    (Path(sys.argv[1]) / f"{index}.wav").write_bytes(speech.wav_bytes(audio))
"""


def test_recogniser_hears_espeak_captions(tmp_path):
    pytest.importorskip("pocketsphinx")
    from s2i_runtime.audio import load_audio
    from s2i_train.asr import Recogniser

    said = ["A large red star", "Draw a small blue circle", "It is a huge green heart"]
    # espeak-ng is one global instance per process: speak in a process of its own.
    subprocess.run([sys.executable, "-c", SPEAK, str(tmp_path), *said], check=True, timeout=120)
    recogniser = Recogniser()
    heard = []
    for index in range(len(said)):
        wave = load_audio(tmp_path / f"{index}.wav")
        transcript = recogniser.transcribe(wave)
        assert transcript.seconds > 0 and transcript.audio_seconds == pytest.approx(wave.size / 16000)
        assert set(caption_grammar.tokens(transcript.text)) <= set(caption_grammar.vocabulary())
        heard.append(transcript.text)
    assert sum(bool(text) for text in heard) >= 2, heard
