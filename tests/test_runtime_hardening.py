"""Issue #34, one test (or a few) per defect found by fuzzing the runtime: bad input in, one clear line out."""

import json
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from bundle_factory import make_bundle, tiny_bundle, tone, tone_wavs, write_wav  # noqa: F401 - fixtures
from PIL import Image
from test_audio import wav_bytes
from test_cli_run import cap_memory, one_error_line, run_cli, s2i_run

from s2i_runtime import Pipeline, S2IError
from s2i_runtime.audio import load_audio
from s2i_runtime.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "s2i_runtime" / "examples"


@pytest.fixture(scope="module")
def pipe(tiny_bundle):  # noqa: F811
    with Pipeline.load(tiny_bundle, backend="onnxruntime", device="cpu", threads=1) as p:
        yield p


def _samples_wav(path: Path, count: int, rate: int) -> Path:
    return write_wav(path, tone(count / rate, 440.0, rate=rate), rate=rate)


# -- 1. audio that resamples to nothing -------------------------------------------------------------


@pytest.mark.parametrize("count, rate", [(1, 44100), (1, 192000), (5, 192000)])
def test_audio_that_resamples_to_nothing_is_an_input_error(count, rate, tmp_path):
    path = _samples_wav(tmp_path / "short.wav", count, rate)
    with pytest.raises(InputError, match="too short"):
        load_audio(path)


def test_too_short_input_costs_the_others_nothing(pipe, tone_wavs, tmp_path):  # noqa: F811
    short = _samples_wav(tmp_path / "short.wav", 1, 44100)
    outcomes = pipe.generate_outcomes([str(tone_wavs[0]), str(short), str(tone_wavs[1])])
    assert isinstance(outcomes[1], InputError) and "too short" in str(outcomes[1])
    assert outcomes[0].shape == outcomes[2].shape == (1, 3, 16, 16)
    # shorter than one hop at the front end's rate: a single frame is not speech either
    with pytest.raises(InputError, match="too short"):
        pipe.generate([np.zeros(100, np.float32)])


def test_a_front_end_failure_costs_only_its_own_input(pipe, tone_wavs, monkeypatch):  # noqa: F811
    """The clips of a call go through the front end together; if that call fails they are retried one by one,
    so a clip that breaks the front end gets an internal error and the others their images."""
    healthy = pipe.generate_outcomes([str(path) for path in tone_wavs[:3]])
    bad_length = pipe.features(str(tone_wavs[1]), "probe").shape[1]
    numpy_logmel = pipe.backend.logmel

    def broken(audio, spec):
        if spec.num_frames(audio.size) == bad_length:
            raise RuntimeError("kernel fault\nsecond line")
        return numpy_logmel(audio, spec)

    monkeypatch.setattr(pipe.backend, "logmel_each", lambda audios, spec: [broken(a, spec) for a in audios])
    monkeypatch.setattr(pipe.backend, "logmel", broken)
    outcomes = pipe.generate_outcomes([str(path) for path in tone_wavs[:3]])
    assert str(outcomes[1]) == f"{tone_wavs[1]}: internal error (RuntimeError: kernel fault); please report it"
    np.testing.assert_array_equal(outcomes[0], healthy[0])
    np.testing.assert_array_equal(outcomes[2], healthy[2])


def test_cli_too_short_input_one_line_and_the_good_input_still_written(tiny_bundle, tone_wavs, tmp_path,  # noqa: F811
                                                                       capsys):
    short = _samples_wav(tmp_path / "short.wav", 5, 192000)
    out = tmp_path / "out"
    done = run_cli(capsys, "infer", tone_wavs[0], short, tone_wavs[1], "--bundle", tiny_bundle, "--out", out)
    assert done.returncode == 2
    assert "short.wav" in one_error_line(done) and "too short" in done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["tone0_0.png", "tone1_0.png"]
    done = run_cli(capsys, "interpolate", tone_wavs[0], short, "--bundle", tiny_bundle, "--out", tmp_path / "s.png")
    assert done.returncode == 2 and "too short" in one_error_line(done)
    assert not (tmp_path / "s.png").exists()


# -- 2. unbounded reads --------------------------------------------------------------------------------


def wav_header(channels: int, rate: int, bits: int, data_bytes: int, tag: int = 1) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    riff_size = min(0xFFFFFFFF, 4 + 8 + len(fmt) + 8 + data_bytes)
    return (b"RIFF" + struct.pack("<I", riff_size) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", min(0xFFFFFFFF, data_bytes)))


def sparse_wav(path: Path, seconds: float, rate: int = 192000, channels: int = 8, bits: int = 64,
               declared: int | None = None) -> Path:
    """A WAV of silence, as big as it says, without using the disk (a sparse file)."""
    data = int(seconds * rate) * channels * bits // 8
    with open(path, "wb") as handle:
        handle.write(wav_header(channels, rate, bits, data if declared is None else declared,
                                tag=3 if bits == 64 else 1))
        handle.truncate(handle.tell() + data)
    return path


# VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec.
PEAK_SCRIPT = """
import re, sys
from s2i_runtime.audio import load_audio
from s2i_runtime.errors import InputError
def peak_mb():
    with open('/proc/self/status') as status:
        return int(re.search(r'VmHWM:\\s+(\\d+) kB', status.read()).group(1)) / 1024
for path in sys.argv[1:]:
    try:
        result = str(load_audio(path).size)
    except InputError as exc:
        result = 'InputError ' + str(exc)
    print(peak_mb(), result, flush=True)
"""


def load_in_fresh_process(*paths) -> list[tuple[float, str]]:
    """load_audio on each path in turn, in one fresh interpreter capped at 2 GB of address space: per path,
    the process's peak resident memory so far (MB) and the result (sample count or the error)."""
    done = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, *map(str, paths)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          preexec_fn=lambda: cap_memory(2048))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    return [(float(line.split(" ", 1)[0]), line.split(" ", 1)[1]) for line in lines]


def test_memory_stays_bounded_on_bomb_files(tmp_path):
    """Smallest first, so each peak is the growth that file caused (ru_maxrss only ever grows)."""
    small = _samples_wav(tmp_path / "a.wav", 1600, 16000)
    declared = sparse_wav(tmp_path / "declared.wav", 349)  # 4.3 GB declared (RIFF's most), float64, 8 channels
    biggest = sparse_wav(tmp_path / "biggest.wav", 29.9)  # 367 MB (sparse on disk), accepted
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)  # open() would block forever without a writer
    (base, _), (bomb, refused), (dev, dev_zero), (pipe, piped), (peak, accepted) = load_in_fresh_process(
        small, declared, "/dev/zero", fifo, biggest)
    assert "audio is 349 s long, more than the maximum of 30 s" in refused and bomb - base < 10, (base, bomb)
    assert dev_zero == "InputError /dev/zero: not a regular file" and dev - base < 10
    assert piped == f"InputError {fifo}: not a regular file" and pipe - base < 10
    # mono float32 at 192 kHz is 23 MB; the file is read block by block, never whole
    assert accepted == str(round(29.9 * 16000)) and peak - base < 80, (base, peak)


def test_streaming_size_wav_stops_at_the_limit(tmp_path):
    """A size of 0xFFFFFFFF means 'unknown' (streaming encoders; also any 7 GB file): read to the limit only."""
    path = sparse_wav(tmp_path / "stream.wav", 600, declared=0xFFFFFFFF)  # 10 minutes, 7.4 GB of samples
    with pytest.raises(InputError, match="longer than the maximum of 30 s"):
        load_audio(path)


def test_cli_dev_zero_is_one_line(tiny_bundle, tone_wavs, tmp_path):  # noqa: F811
    done = s2i_run("infer", "/dev/zero", tone_wavs[0], "--bundle", tiny_bundle, "--out", tmp_path / "out")
    assert done.returncode == 2 and "/dev/zero: not a regular file" in one_error_line(done)
    assert (tmp_path / "out" / "tone0_0.png").is_file()


# -- 3. output location checked before the model loads --------------------------------------------------


@pytest.mark.parametrize("case", ["file", "under_file", "proc", "sys"])
def test_bad_output_location_is_one_line_before_loading(case, tone_wavs, tmp_path, capsys):  # noqa: F811
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    out = {"file": a_file, "under_file": a_file / "sub", "proc": Path("/proc/x"), "sys": Path("/sys/kernel")}[case]
    if case == "sys" and not Path("/sys/kernel").is_dir():
        pytest.skip("no /sys/kernel here")
    # the bundle does not exist: the output location must be refused first, without loading anything
    done = run_cli(capsys, "infer", tone_wavs[0], "--bundle", tmp_path / "no-bundle", "--out", out)
    assert done.returncode == 2
    line = one_error_line(done)
    assert str(out) in line and "bundle" not in line
    strip = run_cli(capsys, "interpolate", tone_wavs[0], tone_wavs[1], "--bundle", tmp_path / "no-bundle",
                    "--out", out / "strip.png" if case != "file" else a_file)
    assert strip.returncode == 2 and "bundle" not in one_error_line(strip)


# -- 4. limits -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["infer", "x.wav", "--num-images", "1000000"], "--num-images"),
    (["infer", "x.wav", "--threads", "100000"], "--threads"),
    (["infer", "x.wav", "--batch-size", "100000"], "--batch-size"),
    (["interpolate", "a.wav", "b.wav", "--steps", "1000000"], "--steps"),
    (["infer", "x.wav", "--num-images", "0"], "--num-images"),
    (["infer", "x.wav", "--seed", "-1"], "seed"),
])
def test_options_out_of_range_are_one_line(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = run_cli(capsys, *args, "--out", tmp_path / ("o.png" if args[0] == "interpolate" else "o"))
    assert done.returncode == 2
    assert message in one_error_line(done)


def test_library_limits(pipe, tone_wavs, tiny_bundle):  # noqa: F811
    from s2i_runtime.limits import MAX_NUM_IMAGES, MAX_STEPS, MAX_THREADS

    with pytest.raises(InputError, match="num_images"):
        pipe.generate([str(tone_wavs[0])], num_images=MAX_NUM_IMAGES + 1)
    with pytest.raises(InputError, match="steps"):
        pipe.interpolate(str(tone_wavs[0]), str(tone_wavs[1]), steps=MAX_STEPS + 1)
    with pytest.raises(InputError, match="threads"):
        Pipeline.load(tiny_bundle, device="cpu", threads=MAX_THREADS + 1)


def test_images_are_written_chunk_by_chunk(pipe, tone_wavs, tmp_path):  # noqa: F811
    from s2i_runtime.infer import IMAGES_PER_CHUNK, infer_files

    inputs = [str(p) for p in tone_wavs]
    seen = []
    k = IMAGES_PER_CHUNK // 2 + 1  # two inputs' images would not fit one chunk
    result = infer_files(pipe, inputs, tmp_path / "out", num_images=k,
                         on_progress=lambda done, total: seen.append(
                             (done, len(list((tmp_path / "out").glob("*.png"))))))
    assert result.exit_code == 0
    assert seen == [(i + 1, (i + 1) * k) for i in range(len(inputs))]  # on disk as soon as made


# -- 6. batching and pixels ---------------------------------------------------------------------------


def test_batching_changes_a_pixel_by_at_most_one_level():
    """The shipped model, the guarantee docs/runtime-limits.md states: float noise from batch shapes moves
    a pixel by at most one level of 255, never more."""
    inputs = sorted(str(p) for p in EXAMPLES.glob("*.wav")) * 2
    arrays = {}
    for batch_size in (1, 6):
        with Pipeline.load(None, backend="onnxruntime", device="cpu", batch_size=batch_size, threads=1) as p:
            arrays[batch_size] = np.stack([np.asarray(im) for row in p.generate(inputs, seed=2, num_images=2)
                                           for im in row]).astype(np.int16)
    assert np.abs(arrays[6] - arrays[1]).max() <= 1


# -- 7. numpy warnings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["huge_float64", "inf_stereo", "nan_mono"])
def test_rejected_extreme_samples_raise_no_warnings(case, tiny_bundle, tone_wavs, tmp_path, capsys):  # noqa: F811
    samples = tone(0.2, 440.0)
    if case == "huge_float64":
        data = wav_bytes(samples.astype(np.float64) * 1e300, 16000, bits=64, float_format=True)
    elif case == "inf_stereo":
        stereo = np.stack([samples, samples], axis=1)
        stereo[10] = [np.inf, -np.inf]
        data = wav_bytes(stereo, 16000, bits=32, float_format=True)
    else:
        samples[5] = np.nan
        data = wav_bytes(samples, 16000, bits=32, float_format=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="infinite"):
            load_audio(data)
    path = tmp_path / f"{case}.wav"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        done = run_cli(capsys, "infer", path, tone_wavs[0], "--bundle", tiny_bundle, "--out", tmp_path / "out")
    assert done.returncode == 2 and case in one_error_line(done)


# -- 8. smaller things ---------------------------------------------------------------------------------------


def test_info_on_a_missing_bundle_exits_2(tmp_path, capsys):
    done = run_cli(capsys, "info", "--bundle", tmp_path / "nowhere")
    assert done.returncode == 2 and "bundle directory does not exist" in one_error_line(done)
    done = run_cli(capsys, "info", "--bundle", tmp_path / "nowhere", "--json")
    assert done.returncode == 2 and json.loads(done.stdout)["bundle_info"]["ok"] is False


def test_one_bytes_path_or_array_is_one_input(pipe, tone_wavs):  # noqa: F811
    data = Path(tone_wavs[0]).read_bytes()
    from_bytes = pipe.generate(data)
    from_path = pipe.generate(tone_wavs[0])
    from_str = pipe.generate(str(tone_wavs[0]))
    from_array = pipe.generate(load_audio(tone_wavs[0]))
    assert len(from_bytes) == len(from_path) == len(from_str) == len(from_array) == 1
    for other in (from_path, from_str, from_array):
        assert np.array_equal(np.asarray(other[0][0]), np.asarray(from_bytes[0][0]))
    outcomes = pipe.generate_outcomes([data, bytearray(b"junk")])
    assert isinstance(outcomes[0], np.ndarray) and "input #1 (bytes)" in str(outcomes[1])


def test_arrays_carry_their_sample_rate(pipe, tmp_path):
    at_44k = tone(1.0, 500.0, rate=44100)
    path = tmp_path / "f.wav"
    path.write_bytes(wav_bytes(at_44k, 44100, bits=32, float_format=True))
    want = np.asarray(pipe.generate(path)[0][0])
    assert np.array_equal(np.asarray(pipe.generate(at_44k, sample_rate=44100)[0][0]), want)
    assert not np.array_equal(np.asarray(pipe.generate(at_44k)[0][0]), want)  # read as 16 kHz: another clip
    with pytest.raises(InputError, match="sample rate"):
        pipe.generate(at_44k, sample_rate=1000)


def test_closed_pipeline_says_so(tiny_bundle, tone_wavs):  # noqa: F811
    p = Pipeline.load(tiny_bundle, device="cpu", threads=1)
    p.close()
    p.close()  # twice is fine
    with pytest.raises(S2IError, match="closed"):
        p.generate(tone_wavs[0])
    with pytest.raises(S2IError, match="closed"):
        p.interpolate(tone_wavs[0], tone_wavs[1])


def test_stdin_as_input(tiny_bundle, tone_wavs, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    with open(tone_wavs[0], "rb") as stdin:
        done = s2i_run("infer", "-", "--bundle", tiny_bundle, "--out", out, stdin=stdin)
    assert done.returncode == 0, done.stderr
    from_file = run_cli(capsys, "infer", tone_wavs[0], "--bundle", tiny_bundle, "--out", tmp_path / "ref")
    assert from_file.returncode == 0
    assert np.array_equal(np.asarray(Image.open(out / "stdin_0.png")),
                          np.asarray(Image.open(tmp_path / "ref" / "tone0_0.png")))
    twice = run_cli(capsys, "infer", "-", "-", "--bundle", tiny_bundle, "--out", out)
    assert twice.returncode == 2 and "stdin" in one_error_line(twice)


def test_version_help_and_info_text(capsys):
    from s2i_runtime import __version__

    done = run_cli(capsys, "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"s2i-run {__version__}"
    helped = s2i_run("infer", "--help")  # a fresh interpreter: rich sizes its help to the real terminal
    assert helped.returncode == 0 and "s2i[audio]" in helped.stdout
    info = run_cli(capsys, "info")
    assert info.returncode == 0
    assert "64 classes" in info.stdout and "11 words" not in info.stdout


def test_name_collision_under_json_is_one_line_and_a_json_error(tone_wavs, tmp_path, capsys):  # noqa: F811
    other = tmp_path / "other"
    other.mkdir()
    twin = write_wav(other / Path(tone_wavs[0]).name, tone(0.5, 900.0))
    done = run_cli(capsys, "infer", tone_wavs[0], twin, "--out", tmp_path / "out", "--json")
    assert done.returncode == 2 and "would both be written" in one_error_line(done)
    assert "would both be written" in json.loads(done.stdout)["error"]


def test_max_length_message_says_30_s(pipe):
    with pytest.raises(InputError) as info:
        pipe.generate(np.zeros(16000 * 31, np.float32))
    assert "31 s long" in str(info.value) and "maximum of 30 s" in str(info.value)
    with pytest.raises(InputError) as info:
        pipe.generate(np.zeros(16000 * 30, np.float32))  # exactly 30 s is one frame too many
    assert "29.9999" not in str(info.value) and "30 s" in str(info.value)
