"""The front end's C path (s2i_runtime/native/logmel.c) against the numpy path, which defines the features."""

from pathlib import Path

import numpy as np
import pytest

from s2i_runtime import native_frontend
from s2i_runtime.frontend import FrontendSpec, logmel, logmel_batch

SR = 16000
TOLERANCE_DB = 1e-3

pytestmark = pytest.mark.skipif(not native_frontend.built(),
                                reason=f"the C front end is not here: {native_frontend.describe().get('reason')}")


@pytest.fixture(autouse=True)
def c_path(monkeypatch):
    monkeypatch.delenv(native_frontend.ENV_SWITCH, raising=False)


# Each spec takes the transform through other radices: 400 = 4 4 5 5 (the default), 512 = 4 4 4 4 2,
# 480 = 4 4 2 3 5 (3 by the generic butterfly), 392 = 4 2 7 7 (7 likewise), 200 = 4 2 5 5.
SPECS = {
    "default": FrontendSpec(),
    "n_fft 512, window 400": FrontendSpec(n_fft=512),
    "n_fft 480": FrontendSpec(n_fft=480, win_length=480, hop_length=120),
    "n_fft 392, window 300": FrontendSpec(n_fft=392, win_length=300, hop_length=100),
    "not centred, no DC removal, no pre-emphasis": FrontendSpec(center=False, remove_dc=False, preemphasis=0.0),
    "8 kHz": FrontendSpec(sample_rate=8000, n_fft=200, win_length=200, hop_length=80, fmax=4000.0, n_mels=24),
}


def _clips() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    t = np.arange(2 * SR) / SR
    return {
        "one sample": np.array([0.3], dtype=np.float32),
        "7 samples": rng.standard_normal(7).astype(np.float32),
        "161 samples": rng.standard_normal(161).astype(np.float32),
        "399 samples": rng.standard_normal(399).astype(np.float32),
        "1 s noise": rng.standard_normal(SR).astype(np.float32),
        "odd length, 17 frame pairs and a bit": rng.standard_normal(160 * 35 + 13).astype(np.float32),
        "two tones": (np.sin(2 * np.pi * 300 * t) + 1e-3 * np.sin(2 * np.pi * 5000 * t)).astype(np.float32),
        "quiet": (1e-6 * rng.standard_normal(SR)).astype(np.float32),
        "loud with a dc offset": (3e4 * (0.4 + rng.standard_normal(SR))).astype(np.float32),
        "silence": np.zeros(SR // 2, dtype=np.float32),
    }


CLIPS = _clips()


def _numpy_path(monkeypatch, fn, *args, **kwargs):
    with monkeypatch.context() as patch:
        patch.setenv(native_frontend.ENV_SWITCH, "numpy")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_c_path_matches_numpy(spec_name, monkeypatch):
    spec = SPECS[spec_name]
    assert native_frontend.native_frontend(spec) is not None
    for name, clip in CLIPS.items():
        ours = logmel(clip, spec)
        reference = _numpy_path(monkeypatch, logmel, clip, spec)
        assert ours.shape == reference.shape and ours.dtype == np.float32, name
        assert np.abs(ours - reference).max() <= TOLERANCE_DB, name
        assert ours.max() == 0.0 or not clip.any(), name


def test_c_path_retries_power_past_float32_like_numpy(monkeypatch):
    clip = (1e20 * np.random.default_rng(3).standard_normal(SR // 4)).astype(np.float64)
    ours = logmel(clip)
    assert np.isfinite(ours).all() and ours.max() == 0.0
    assert np.abs(ours - _numpy_path(monkeypatch, logmel, clip)).max() <= TOLERANCE_DB


def test_c_path_gives_a_clip_the_same_features_whatever_its_batch_and_threads():
    clips = list(CLIPS.values())
    batch, lengths = logmel_batch(clips, threads=2)
    for row, clip, length in zip(batch, clips, lengths, strict=True):
        alone = logmel(clip)
        np.testing.assert_array_equal(row[:, :length], alone)
        np.testing.assert_array_equal(logmel(clip, threads=2), alone)


def test_the_switch_and_describe_say_which_path_runs(monkeypatch):
    assert native_frontend.describe()["implementation"] == "c"
    monkeypatch.setenv(native_frontend.ENV_SWITCH, "numpy")
    assert native_frontend.native_frontend(FrontendSpec()) is None
    assert native_frontend.describe() == {"implementation": "numpy", "reason": "S2I_FRONTEND=numpy"}


def test_factors_of_the_transform_size():
    assert native_frontend._radices(400) == [4, 4, 5, 5]
    assert native_frontend._radices(512) == [4, 4, 4, 4, 2]
    assert native_frontend._radices(392) == [4, 2, 7, 7]
    assert native_frontend._radices(7) == [7]
    assert native_frontend._radices(4) == [4]


def test_c_path_takes_float64_and_integer_samples_as_numpy_does(monkeypatch):
    rng = np.random.default_rng(5)
    for clip in (1e39 * rng.standard_normal(SR // 4),  # past float32's range: kept in float64 on the way in
                 rng.integers(-3000, 3000, SR).astype(np.int16),
                 0.1 * rng.standard_normal(SR)):
        ours = logmel(clip)
        assert np.isfinite(ours).all()
        assert np.abs(ours - _numpy_path(monkeypatch, logmel, clip)).max() <= TOLERANCE_DB


def test_c_code_stays_in_its_buffers_under_address_sanitizer(tmp_path):
    """The C file built with ASan and UBSan, run on every spec and clip above in a child process."""
    import os
    import shutil
    import subprocess
    import sys
    from importlib import resources

    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc to build the sanitised library")
    runtimes = [subprocess.run([gcc, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
                for name in ("libasan.so", "libubsan.so")]
    if not all(os.path.isabs(path) and os.path.exists(path) for path in runtimes):
        pytest.skip("gcc has no ASan/UBSan runtime here")
    source = Path(str(resources.files("s2i_runtime"))) / "native" / "logmel.c"
    library = tmp_path / "liblogmel_asan.so"
    subprocess.run([gcc, "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                    "-fno-omit-frame-pointer", "-fPIC", "-shared", str(source), "-o", str(library)], check=True)
    script = f"""
import numpy as np
from s2i_runtime import native_frontend
native_frontend._library_path = lambda: {str(library)!r}
import test_frontend_native as cases
from s2i_runtime.frontend import logmel, logmel_batch
for spec in cases.SPECS.values():
    for clip in cases.CLIPS.values():
        logmel(np.array(clip, copy=True), spec)  # an allocation of its own: a read past its end is caught
    logmel_batch(list(cases.CLIPS.values()), spec, threads=2)
print("clean")
"""
    env = dict(os.environ, LD_PRELOAD=" ".join(runtimes), ASAN_OPTIONS="detect_leaks=0",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    env.pop(native_frontend.ENV_SWITCH, None)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and "clean" in result.stdout, result.stderr[-3000:]


def test_a_library_from_an_older_build_falls_back_to_numpy_with_the_reason(tmp_path, monkeypatch):
    import shutil
    import subprocess

    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("no gcc")
    source = tmp_path / "old.c"
    source.write_text("int s2i_lanes(void) { return 8; }\n")
    subprocess.run([gcc, "-shared", "-fPIC", str(source), "-o", str(tmp_path / "old.so")], check=True)
    monkeypatch.setattr(native_frontend, "_library_path", lambda: str(tmp_path / "old.so"))
    native_frontend._loaded.cache_clear()
    native_frontend._for_spec.cache_clear()
    try:
        described = native_frontend.describe()
        assert described["implementation"] == "numpy" and "out of date" in described["reason"]
        assert native_frontend.native_frontend(FrontendSpec()) is None
        assert logmel(CLIPS["1 s noise"]).shape == (40, 101)
    finally:
        native_frontend._loaded.cache_clear()
        native_frontend._for_spec.cache_clear()
