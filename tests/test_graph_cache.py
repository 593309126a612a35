import os

import numpy as np
import pytest

from s2i_runtime import graph_cache
from s2i_runtime.bundle import default_bundle_path, load_bundle
from s2i_runtime.pipeline import Pipeline

pytest.importorskip("onnxruntime")


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv("S2I_CACHE_DIR", str(directory))
    return directory


def _images(pipe):
    rng = np.random.default_rng(3)
    return pipe.generate_arrays([(0.1 * rng.standard_normal(16000)).astype(np.float32)], seed=5)[0]


def _load():
    return Pipeline.load(backend="onnxruntime", device="cpu", threads=1)


def test_second_load_reuses_the_optimised_graphs_and_draws_the_same(cache):
    with _load() as first:
        assert set(first.describe()["graph_cache"].values()) == {"cache written"}
        written = sorted(p.name for p in cache.iterdir())
        before = {name: (cache / name).stat().st_mtime_ns for name in written}
        expected = _images(first)
    assert not [n for n in written if n.startswith(".")]  # no temporaries left
    graphs = [n for n in written if n.endswith(".onnx")]
    assert len(graphs) == 2 and sorted(n for n in written if n.endswith(".data")) == [g + ".data" for g in graphs]
    for graph in graphs:  # the weights live beside the graph, to be mapped rather than parsed
        assert (cache / graph).stat().st_size < (cache / f"{graph}.data").stat().st_size / 10
    with _load() as second:
        assert set(second.describe()["graph_cache"].values()) == {"cache hit"}
        np.testing.assert_array_equal(_images(second), expected)
    assert {name: (cache / name).stat().st_mtime_ns for name in written} == before


def test_a_corrupt_cached_graph_is_made_anew(cache):
    with _load():
        pass
    damaged = sorted(cache.iterdir())[0]
    damaged.write_bytes(b"not a graph")
    with _load() as pipe:
        assert "cache written" in pipe.describe()["graph_cache"].values()
        _images(pipe)
    assert damaged.stat().st_size > 1000


def test_a_truncated_weights_file_is_made_anew(cache):
    with _load() as first:
        expected = _images(first)
    weights = sorted(cache.glob("generator-*.onnx.data"))[0]
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: size // 2])
    with _load() as pipe:
        assert pipe.describe()["graph_cache"]["generator.onnx"] == "cache written"
        np.testing.assert_array_equal(_images(pipe), expected)
    assert weights.stat().st_size == size


def test_idle_onnxruntime_threads_sleep_rather_than_spin(cache):
    # Two sessions' pools and the front end's threads share the cores: a spinning pool slows the next stage.
    with _load() as pipe:
        for session in (pipe.backend.encoder, pipe.backend.generator):
            assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_a_changed_graph_or_runtime_gets_its_own_file():
    key = graph_cache.cache_key("a" * 64, "1.0", "ALL")
    assert key != graph_cache.cache_key("b" * 64, "1.0", "ALL")
    assert key != graph_cache.cache_key("a" * 64, "1.1", "ALL")


def test_an_unusable_cache_directory_still_loads(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("S2I_CACHE_DIR", str(blocker / "graphs"))  # refused even to root
    with _load() as pipe:
        assert all(v.startswith("not cached") for v in pipe.describe()["graph_cache"].values())
        _images(pipe)


def test_caching_off_and_the_bundle_is_never_written(monkeypatch):
    monkeypatch.setenv("S2I_CACHE_DIR", "off")
    before = sorted(os.listdir(default_bundle_path()))
    with _load() as pipe:
        assert all(v.startswith("not cached") for v in pipe.describe()["graph_cache"].values())
    assert sorted(os.listdir(default_bundle_path())) == before
    assert graph_cache.cache_dir() is None
    assert load_bundle().manifest["files"]
