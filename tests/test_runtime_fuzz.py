"""The runtime fuzzed (#34), a few hundred cases: every input gives an image or one InputError line.

`python -m tests.fuzz_runtime --n 10000` runs the same checks on 10,000 cases (docs/runtime-limits.md).
"""

import numpy as np
import pytest
from bundle_factory import tiny_bundle, tone, tone_wavs  # noqa: F401 - fixtures
from fuzz_corpus import FAMILIES, audio_case
from fuzz_runtime import check_cli_batch, check_library
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from s2i_runtime import Pipeline
from s2i_runtime.audio import load_audio
from s2i_runtime.errors import InputError

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@pytest.fixture(scope="module")
def pipe(tiny_bundle):  # noqa: F811
    with Pipeline.load(tiny_bundle, device="cpu", threads=1) as p:
        yield p


@pytest.fixture(scope="module")
def good(tone_wavs):  # noqa: F811
    return [str(tone_wavs[1]), str(tone_wavs[4])]


@settings(FAST, max_examples=300)
@given(st.integers(0, 2**31))
def test_any_corpus_case_loads_or_is_one_input_error(index):
    try:
        audio = load_audio(audio_case(index)[1])
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert audio.dtype == np.float32 and audio.ndim == 1 and audio.size > 0 and np.isfinite(audio).all()


@settings(FAST, max_examples=120)
@given(index=st.integers(0, 2**31))
def test_any_corpus_case_in_a_call_with_good_inputs(index, pipe, good):
    check_library(pipe, audio_case(index)[1], good)


ARRAYS = hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int16, np.int32, np.uint8, np.int8, np.complex64, np.bool_]),
    shape=st.one_of(st.tuples(st.integers(0, 20000)), st.tuples(st.integers(0, 4000), st.integers(0, 9)),
                    st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5))),
)


@settings(FAST, max_examples=100)
@given(array=ARRAYS, rate=st.sampled_from([None, 8000, 16000, 44100, 192000, 0, 7999, 10**9]))
def test_any_array_at_any_rate_is_an_image_or_an_input_error(array, rate, pipe, good):
    outcomes = pipe.generate_outcomes([good[0], array], sample_rate=rate)
    assert isinstance(outcomes[0], np.ndarray)
    assert isinstance(outcomes[1], (np.ndarray, InputError)), repr(outcomes[1])


def test_cli_on_every_family_keeps_its_promises(tiny_bundle, good, tmp_path):  # noqa: F811
    """One real `s2i-run infer` call on 60 corpus files (six of each family) between two good inputs:
    exit 0 or 2, no traceback, at most two stderr lines per bad input, every good input's PNG written."""
    files = []
    for index in range(6 * len(FAMILIES)):
        path = tmp_path / f"case{index:03d}.wav"
        path.write_bytes(audio_case(index)[1])
        files.append(path)
    counts = check_cli_batch(tiny_bundle, files, good, tmp_path / "out")
    assert counts["inputs"] == 60 and 0 < counts["errors"] < 60
    assert counts["peak_rss_mb"] < 1024
