import json
import multiprocessing
import wave

import numpy as np
import pytest
from data_helpers import tiny_shapes_root
from typer.testing import CliRunner

from s2i_runtime.audio import load_audio
from s2i_train.cli import app
from s2i_train.data import recorded_voices, shapes, speech, vocabulary


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    return tiny_shapes_root(tmp_path_factory)


def _captions(root):
    return [json.loads(line) for line in (root / "captions.jsonl").read_text().splitlines()]


def test_layout(tiny_shapes):
    root = tiny_shapes
    for name in ("README.md", "captions.jsonl", "dataset.json", "vocabulary.json"):
        assert (root / name).is_file()
    train = json.loads((root / "train" / "filenames.json").read_text())
    test = json.loads((root / "test" / "filenames.json").read_text())
    assert len(train) == 96 and len(test) == 32
    assert {k.split("/")[0] for k in test} == {c.name for c in vocabulary.TEST_CLASSES}
    assert {k.split("/")[0] for k in train}.isdisjoint(k.split("/")[0] for k in test)
    for key in train + test:
        assert (root / "images" / f"{key}.png").is_file()
        assert (root / "audio" / f"{key}_0.wav").is_file()
    card = (root / "README.md").read_text()
    assert "96 images" in card and "red_circle" in card and "en-gb-scotland+m6" in card


def test_voices_held_out(tiny_shapes):
    assert len(speech.TRAIN_VOICES) >= 20 and len(speech.TEST_VOICES) >= 5
    assert set(speech.TRAIN_VOICES).isdisjoint(speech.TEST_VOICES)
    recorded_train = {v.label for v in recorded_voices.TRAIN_VOICES}
    recorded_test = {v.label for v in recorded_voices.TEST_VOICES}
    assert recorded_train == {"flite:kal", "flite:kal16", "flite:rms", "festival:kal_diphone"}
    assert recorded_test == {"flite:slt", "flite:awb", "festival:cmu_us_slt_arctic_hts"}
    captions = _captions(tiny_shapes)
    train_voices = {c["voice"] for c in captions if c["split"] == "train"}
    test_voices = {c["voice"] for c in captions if c["split"] == "test"}
    assert train_voices <= {v.name for v in speech.TRAIN_VOICES} | recorded_train
    assert test_voices <= {v.name for v in speech.TEST_VOICES} | recorded_test
    assert len(train_voices & recorded_train) >= 3 and len(train_voices) >= 12
    assert len(test_voices & recorded_test) == 3 and len(test_voices) >= 6


def test_training_captions_mix_synthesizers_and_test_captions_are_spoken_twice(tiny_shapes):
    captions = _captions(tiny_shapes)
    train = [c for c in captions if c["split"] == "train"]
    share = sum(c["engine"] != "espeak-ng" for c in train) / len(train)
    assert 0.35 < share < 0.65  # recorded_fraction 0.5 over 96 captions
    test = {(c["key"], c["caption_index"]): c for c in captions if c["split"] == "test"}
    for (key, index), c in test.items():
        if index == 0:
            assert c["engine"] == "espeak-ng"
            again = test[(key, 1)]  # one caption per image in the tiny set: the recorded voice's copy is index 1
            assert again["engine"] in ("flite", "festival") and again["text"] == c["text"]
            assert again["audio"] != c["audio"]
    recorded = [c for c in captions if c["engine"] != "espeak-ng"]
    assert all("duration_stretch" in c and "rate" not in c for c in recorded)


def test_missing_synthesizer_is_one_line_naming_the_package(monkeypatch, tmp_path):
    from s2i_runtime.errors import InputError

    monkeypatch.setenv("PATH", str(tmp_path))  # no flite, no festival on this PATH
    with pytest.raises(InputError, match=r"flite is not installed: apt-get install flite"):
        shapes.generate(tmp_path / "out", shapes.ShapesConfig(images_per_class=1, captions_per_image=1,
                                                               image_size=64))
    assert not (tmp_path / "out").exists()


def test_audio_is_real_speech(tiny_shapes):
    for caption in _captions(tiny_shapes)[::7]:
        path = tiny_shapes / caption["audio"]
        with wave.open(str(path)) as w:
            assert (w.getframerate(), w.getsampwidth(), w.getnchannels()) == (16000, 2, 1)
        audio = load_audio(path)
        duration = audio.size / 16000
        assert 0.5 <= duration <= 6.0, caption["text"]
        assert float(np.sqrt(np.mean(audio**2))) > 0.03  # silence is ~0; espeak speech is ~0.1
        # Speech has pauses and syllables: loudness varies strongly over 50 ms windows.
        frames = audio[: audio.size // 800 * 800].reshape(-1, 800)
        energy = np.sqrt((frames**2).mean(axis=1))
        assert energy.max() > 5 * np.percentile(energy, 10)


def test_captions_name_the_attributes(tiny_shapes):
    from s2i_train.data.captions import COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS

    for c in _captions(tiny_shapes):
        text = c["text"].lower()
        assert any(w in text for w in COLOUR_WORDS[c["colour"]])
        assert any(w in text for w in SHAPE_WORDS[c["shape"]])
        assert any(w in text.replace(",", " ").split() for w in SIZE_WORDS[c["size"]])
        assert c["attributes"] == vocabulary.attribute_labels(c["colour"], c["shape"], c["size"], c["background"])


def test_a_caption_names_its_background_exactly_when_its_template_does():
    from s2i_train.data.captions import TEMPLATES, make_caption, names_background

    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(400):
        text, template = make_caption(rng, "red", "star", "small", "dark")
        assert names_background(text) == ("{background}" in TEMPLATES[template]), text
        seen.add(template)
    assert seen == set(range(len(TEMPLATES)))
    assert names_background("A small red star on a Dark background")
    assert not names_background("A large disc coloured red") and not names_background("noise")


def test_shape_open_captions_name_colour_size_and_half_the_time_the_background_but_never_a_shape():
    from s2i_train.data.captions import (
        COLOUR_WORDS,
        SHAPE_OPEN_TEMPLATES,
        SHAPE_WORDS,
        TEMPLATES,
        make_caption,
        names_background,
    )

    assert sum("{background}" in t for t in SHAPE_OPEN_TEMPLATES) / len(SHAPE_OPEN_TEMPLATES) == pytest.approx(
        sum("{background}" in t for t in TEMPLATES) / len(TEMPLATES), abs=0.1)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        text, template = make_caption(rng, "green", "star", "large", "light", say_shape=False)
        assert names_background(text) == ("{background}" in SHAPE_OPEN_TEMPLATES[template]), text
        assert not any(w in text.lower() for options in SHAPE_WORDS.values() for w in options), text
        assert "green" in text.lower() and COLOUR_WORDS["green"] == ("green",)
        seen.add(template)
    assert seen == set(range(len(SHAPE_OPEN_TEMPLATES)))


def test_regenerating_gives_identical_bytes(tiny_shapes, tmp_path):
    config = shapes.ShapesConfig(images_per_class=2, captions_per_image=1, image_size=64, seed=3)
    jobs = [(str(tmp_path), name, config.__dict__) for name in ("pink_hexagon", "blue_square", "red_circle")]
    with multiprocessing.get_context("spawn").Pool(2, maxtasksperchild=1) as pool:
        results = dict(pool.map(shapes.build_class, list(reversed(jobs))))
    for records in results.values():
        for r in records:
            for field in ("image", "audio"):
                assert (tmp_path / r[field]).read_bytes() == (tiny_shapes / r[field]).read_bytes(), r[field]
    expected = [c for c in _captions(tiny_shapes) if c["class"] == "pink_hexagon"]
    assert results["pink_hexagon"] == expected


def test_shape_open_captions_are_extra_training_captions_that_leave_every_full_caption_as_it_was(tiny_shapes, tmp_path):
    from s2i_train.data.captions import COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS

    config = shapes.ShapesConfig(images_per_class=2, captions_per_image=1, image_size=64, seed=3,
                                 shape_open_per_image=2)
    jobs = [(str(tmp_path), name, config.__dict__) for name in ("blue_square", "red_circle")]
    with multiprocessing.get_context("spawn").Pool(2, maxtasksperchild=1) as pool:
        results = dict(pool.map(shapes.build_class, jobs))
    assert vocabulary.split_of("red_circle") == "test" and vocabulary.split_of("blue_square") == "train"
    assert results["red_circle"] == [c for c in _captions(tiny_shapes) if c["class"] == "red_circle"]
    train = results["blue_square"]
    full = [r for r in train if "shape_said" not in r]
    open_ = [r for r in train if "shape_said" in r]
    assert full == [c for c in _captions(tiny_shapes) if c["class"] == "blue_square"]
    for r in full:
        assert (tmp_path / r["audio"]).read_bytes() == (tiny_shapes / r["audio"]).read_bytes(), r["audio"]
    assert len(open_) == 2 * 2 and {r["caption_index"] for r in open_} == {1, 2}
    for r in open_:
        words = r["text"].lower().replace(",", " ").split()
        assert r["shape_said"] is False
        assert not any(w in r["text"].lower() for options in SHAPE_WORDS.values() for w in options), r["text"]
        assert any(w in words for w in COLOUR_WORDS[r["colour"]]) and any(w in words for w in SIZE_WORDS[r["size"]])
        assert load_audio(tmp_path / r["audio"]).size > 0.3 * 16000
    assert len({r["audio"] for r in train}) == len(train)


def test_shape_open_option_is_checked():
    with pytest.raises(Exception, match="shape-open-per-image"):
        shapes.ShapesConfig(shape_open_per_image=-1)


def _run_cli(argv, capsys):
    from s2i_runtime.cliutil import run_app

    with pytest.raises(SystemExit) as stopped:
        run_app(app, "s2i-train", argv)
    return stopped.value.code, capsys.readouterr().err


def test_cli_refuses_non_empty_folder(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    code, err = _run_cli(["data", "shapes", "--out", str(tmp_path)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and "not empty" in err


def test_cli_rejects_bad_options(tmp_path, capsys):
    code, err = _run_cli(["data", "shapes", "--out", str(tmp_path / "x"), "--image-size", "8"], capsys)
    assert code == 2 and err.startswith("error: --image-size")


def test_check_command(tiny_shapes):
    result = CliRunner().invoke(app, ["data", "check", str(tiny_shapes), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["train"]["items"] == 96 and report["test"]["classes"] == 16


def test_shipped_examples_are_small_test_voice_speech():
    from s2i_train.data.examples import DEFAULT_FOLDER, EXAMPLES

    for stem, _, voice, _, _ in EXAMPLES:
        path = DEFAULT_FOLDER / f"{stem}.wav"
        assert path.stat().st_size < 150_000
        assert voice in speech.TEST_VOICES
        audio = load_audio(path)
        assert 1.0 < audio.size / 16000 < 4.0
