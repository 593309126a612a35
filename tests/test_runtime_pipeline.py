"""Pipeline on tiny real bundles (ONNX graphs built by bundle_factory, run by ONNX Runtime)."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from bundle_factory import make_bundle, tiny_bundle, tone, tone_wavs  # noqa: F401 - fixtures

from s2i_runtime import Pipeline
from s2i_runtime.audio import load_audio
from s2i_runtime.bundle import MANIFEST
from s2i_runtime.errors import BackendUnavailable, BundleError, InputError
from s2i_runtime.images import NonFiniteOutput

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pipe(tiny_bundle):  # noqa: F811
    with Pipeline.load(tiny_bundle, backend="onnxruntime", device="cpu", threads=1) as p:
        yield p


def test_generate_returns_k_pil_images_per_input(pipe, tone_wavs):  # noqa: F811
    images = pipe.generate([str(tone_wavs[0]), tone(1.2, 700.0)], seed=3, num_images=2)
    assert len(images) == 2 and all(len(row) == 2 for row in images)
    assert images[0][0].size == (16, 16) and images[0][0].mode == "RGB"
    a = [np.asarray(im) for row in images for im in row]
    assert not np.array_equal(a[0], a[1])  # different noise, different image
    assert not np.array_equal(a[0], a[2])  # different speech, different image


def test_same_seed_same_pixels_other_seed_other_pixels(pipe, tone_wavs):  # noqa: F811
    first = pipe.generate_arrays([str(tone_wavs[1])], seed=11)[0]
    again = pipe.generate_arrays([str(tone_wavs[1])], seed=11)[0]
    other = pipe.generate_arrays([str(tone_wavs[1])], seed=12)[0]
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_pixels_do_not_depend_on_batch_size_or_neighbours(tiny_bundle, tone_wavs):  # noqa: F811
    inputs = [str(p) for p in tone_wavs]
    results = {}
    for batch_size in (1, 2, 8):
        with Pipeline.load(tiny_bundle, device="cpu", batch_size=batch_size, threads=1) as p:
            results[batch_size] = p.generate_arrays(inputs, seed=5, num_images=2)
    for batch_size in (2, 8):
        for got, want in zip(results[batch_size], results[1], strict=True):
            # Masked mean: padding changes the sum's order at most, so float noise only (docs/runtime-limits.md).
            np.testing.assert_allclose(got, want, atol=1e-4)
    # an input alone at position i equals the same input at position i in a long list
    with Pipeline.load(tiny_bundle, device="cpu", batch_size=8, threads=1) as p:
        alone = p.generate_outcomes([inputs[3]], seed=5, num_images=2, start_index=3)[0]
    np.testing.assert_allclose(alone, results[1][3], atol=1e-4)


def test_concurrent_callers_with_dynamic_batcher_match_serial_calls(tiny_bundle, tone_wavs):  # noqa: F811
    requests = [[str(tone_wavs[i % 5]), str(tone_wavs[(i + 2) % 5])] for i in range(8)]
    with Pipeline.load(tiny_bundle, device="cpu", batch_size=1, threads=1) as serial:
        expected = [serial.generate(r, seed=i, num_images=2) for i, r in enumerate(requests)]
    got = [None] * len(requests)
    barrier = threading.Barrier(len(requests))
    with Pipeline.load(tiny_bundle, device="cpu", batch_size=16, max_wait_ms=100, threads=1) as merged:

        def call(i):
            barrier.wait()
            got[i] = merged.generate(requests[i], seed=i, num_images=2)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sizes = merged._batcher.batch_sizes
    assert max(sizes) > 2, f"requests were not merged: batch sizes {sizes}"
    # The documented guarantee (docs/runtime-limits.md): float noise from other batch shapes moves a PNG
    # pixel by one level at most, rarely (so a whole image almost always matches exactly).
    differing = 0
    for want_rows, got_rows in zip(expected, got, strict=True):
        for want_row, got_row in zip(want_rows, got_rows, strict=True):
            for want, have in zip(want_row, got_row, strict=True):
                diff = np.abs(np.asarray(want, np.int16) - np.asarray(have, np.int16))
                assert diff.max() <= 1
                differing += int(diff.any())
    assert differing <= 4, f"{differing} of 32 images differ"


def test_arrays_and_paths_give_the_same_image(pipe, tone_wavs):  # noqa: F811
    from_path = pipe.generate_arrays([str(tone_wavs[2])], seed=0)[0]
    from_array = pipe.generate_arrays([load_audio(tone_wavs[2])], seed=0)[0]
    np.testing.assert_array_equal(from_path, from_array)


def test_bad_input_raises_before_models_or_is_collected(pipe, tone_wavs, tmp_path):  # noqa: F811
    missing = str(tmp_path / "nope.wav")
    with pytest.raises(InputError, match="nope.wav: file not found"):
        pipe.generate([str(tone_wavs[0]), missing])
    outcomes = pipe.generate_outcomes([str(tone_wavs[0]), missing, np.zeros(0, np.float32)])
    assert isinstance(outcomes[0], np.ndarray) and outcomes[0].shape == (1, 3, 16, 16)
    assert isinstance(outcomes[1], InputError)
    assert isinstance(outcomes[2], InputError) and "input #2" in str(outcomes[2])
    with pytest.raises(InputError, match="num_images"):
        pipe.generate([str(tone_wavs[0])], num_images=0)


def test_too_long_input_is_an_input_error(pipe):
    with pytest.raises(InputError, match="maximum"):
        pipe.generate([np.zeros(16000 * 31, np.float32)])


def test_interpolation_ends_at_the_two_inputs(pipe, tone_wavs):  # noqa: F811
    a, b = str(tone_wavs[0]), str(tone_wavs[3])
    strip = pipe.interpolate(a, b, steps=5, seed=0)
    assert len(strip) == 5
    same_noise_a = pipe.generate([a], seed=0)[0][0]  # image 0 of input 0 uses the strip's noise
    assert np.array_equal(np.asarray(strip[0]), np.asarray(same_noise_a))
    assert not np.array_equal(np.asarray(strip[0]), np.asarray(strip[-1]))


def test_nan_output_is_reported_not_written(tmp_path, tone_wavs):  # noqa: F811
    bundle = make_bundle(tmp_path / "nan", poison="nan")
    with Pipeline.load(bundle, device="cpu", threads=1) as p:
        with pytest.raises(NonFiniteOutput, match="NaN/Inf"):
            p.generate([str(tone_wavs[0])])


def _mismatch(tmp_path, name, **kwargs):
    return make_bundle(tmp_path / name, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model_overrides": {"embedding_dim": 9}}, "axis 1 is 8, but s2i.json says 9"),
        ({"model_overrides": {"z_dim": 5}}, "'z' axis 1 is 4, but s2i.json says 5"),
        ({"model_overrides": {"image_sizes": [32]}}, "'image' axis 2 is 16, but s2i.json says 32"),
        ({"fixed_batch": 1}, "axis 0 is fixed at 1"),
        ({"output_name": "rgb"}, "outputs are \\['rgb'\\], expected \\['image'\\]"),
    ],
)
def test_bundle_that_does_not_match_its_manifest_is_refused(tmp_path, kwargs, message):
    bundle = make_bundle(tmp_path / "bad", **kwargs)
    with pytest.raises(BundleError, match=message):
        Pipeline.load(bundle, device="cpu")


def test_modified_file_and_missing_default_model_are_bundle_errors(tmp_path, monkeypatch):
    bundle = make_bundle(tmp_path / "b")
    with open(bundle / "generator.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match="sha256 does not match"):
        Pipeline.load(bundle)
    empty = tmp_path / "no_default"
    empty.mkdir()
    monkeypatch.setattr("s2i_runtime.bundle.default_bundle_path", lambda: empty)
    with pytest.raises(BundleError, match="default model is not installed.*make default-model"):
        Pipeline.load()


def test_cuda_without_cuda_is_an_error_not_a_fallback(tiny_bundle):  # noqa: F811
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    with pytest.raises(BackendUnavailable, match="device cuda requested"):
        Pipeline.load(tiny_bundle, backend="onnxruntime", device="cuda")
    with pytest.raises(BackendUnavailable, match="(?i)tensorrt"):
        Pipeline.load(tiny_bundle, backend="tensorrt")
    auto = Pipeline.load(tiny_bundle, device="auto")
    assert auto.describe()["device"] == "cpu"
    assert any("no CUDA provider" in note for note in auto.describe()["notes"])


def test_runtime_never_imports_torch(tiny_bundle, tone_wavs):  # noqa: F811
    """In a fresh interpreter where importing torch would fail, the whole pipeline still runs."""
    script = f"""
import importlib.abc, sys
class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 's2i_train', 's2i_export'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, NoTorch())
import s2i_runtime
from s2i_runtime import Pipeline
with Pipeline.load({str(tiny_bundle)!r}, device='cpu', threads=1) as p:
    images = p.generate([{str(tone_wavs[0])!r}], seed=0)
import s2i_runtime.cli, s2i_runtime.info
s2i_runtime.info.gather({str(tiny_bundle)!r})
assert 'torch' not in sys.modules
print(images[0][0].size)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(16, 16)"


def test_describe_is_json(pipe):
    described = pipe.describe()
    json.dumps(described)
    assert described["backend"] == "onnxruntime" and described["providers"] == ["CPUExecutionProvider"]
    assert (Path(described["bundle"]) / MANIFEST).is_file()
