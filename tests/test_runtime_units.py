"""Noise, interpolation, images and batching: the runtime's pure parts."""

import threading
import time

import numpy as np
import pytest
from PIL import Image

from s2i_runtime.batching import DynamicBatcher, batch_width, pad_features, plan_batches
from s2i_runtime.errors import InputError
from s2i_runtime.images import NonFiniteOutput, grid, save_png, to_uint8
from s2i_runtime.interpolate import interpolate
from s2i_runtime.noise import draw_noise, noise_block


def test_noise_depends_only_on_seed_position_and_image():
    z, eps = draw_noise(7, 3, 1, 100, 128)
    assert z.shape == (100,) and eps.shape == (128,) and z.dtype == np.float32
    z2, eps2 = draw_noise(7, 3, 1, 100, 128)
    assert np.array_equal(z, z2) and np.array_equal(eps, eps2)
    for other in [(8, 3, 1), (7, 4, 1), (7, 3, 0)]:
        assert not np.array_equal(draw_noise(*other, 100, 128)[0], z)
    block_z, block_eps = noise_block(7, 3, 3, 100, 128)
    assert np.array_equal(block_z[1], z) and np.array_equal(block_eps[1], eps)
    # the documented recipe, so other implementations (Triton clients, notebooks) can reproduce it
    rng = np.random.default_rng([7, 3, 1])
    assert np.array_equal(rng.standard_normal(100, dtype=np.float32), z)


@pytest.mark.parametrize("seed", [-1, 1.5, "3", True])
def test_bad_seeds_are_input_errors(seed):
    with pytest.raises(InputError):
        draw_noise(seed, 0, 0, 4, 3)


def test_interpolate_endpoints_and_midpoint():
    a, b = np.array([0.0, 2.0, -1.0]), np.array([1.0, 0.0, 1.0])
    line = interpolate(a, b, 5)
    assert line.shape == (5, 3) and line.dtype == np.float32
    assert np.array_equal(line[0], a.astype(np.float32)) and np.array_equal(line[-1], b.astype(np.float32))
    np.testing.assert_allclose(line[2], [0.5, 1.0, 0.0])
    with pytest.raises(InputError):
        interpolate(a, b, 1)
    with pytest.raises(InputError):
        interpolate(a, np.zeros(4), 3)


def test_to_uint8_maps_range_and_refuses_nan():
    image = np.stack([np.full((2, 2), -1.0), np.zeros((2, 2)), np.full((2, 2), 2.0)]).astype(np.float32)
    pixels = to_uint8(image)
    assert pixels.shape == (2, 2, 3) and pixels.dtype == np.uint8
    assert pixels[0, 0].tolist() == [0, 128, 255]  # -1 -> 0, 0 -> 127.5 rounds to 128, clipped 2 -> 255
    image[1, 0, 0] = np.nan
    with pytest.raises(NonFiniteOutput, match="NaN/Inf"):
        to_uint8(image)


def test_grid_layout_and_atomic_png(tmp_path):
    tiles = [Image.new("RGB", (4, 3), (i * 40, 0, 0)) for i in range(5)]
    sheet = grid(tiles, columns=2, padding=1)
    assert sheet.size == (2 * 4 + 1, 3 * 3 + 2)
    assert sheet.getpixel((5, 4)) == (120, 0, 0)  # row 1, column 1 = tile 3
    save_png(sheet, tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").size == sheet.size
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]  # no temporary left behind


def test_plan_batches_sorts_by_length_and_caps_batch():
    lengths = [500, 70, 3000, 64, 900, 65]
    batches = plan_batches(lengths, 2, min_frames=64, max_frames=3000)
    assert [b.indices for b in batches] == [(3, 5), (1, 0), (4, 2)]
    assert [b.width for b in batches] == [96, 512, 3000]
    assert sorted(i for b in batches for i in b.indices) == list(range(6))
    assert batch_width(10, 64, 3000) == 64
    assert batch_width(2999, 64, 3000) == 3000  # rounding never passes max_frames


def test_pad_features_uses_floor_and_carries_lengths():
    feats = [np.zeros((40, 3), np.float32), np.ones((40, 5), np.float32)]
    mel, lengths = pad_features(feats, 8, -80.0)
    assert mel.shape == (2, 40, 8) and lengths.tolist() == [3, 5]
    assert (mel[0, :, 3:] == -80).all() and (mel[1, :, :5] == 1).all() and (mel[1, :, 5:] == -80).all()


def test_dynamic_batcher_merges_concurrent_requests():
    seen = []

    def run(items):
        seen.append(list(items))
        time.sleep(0.01)
        return [item * 10 for item in items]

    batcher = DynamicBatcher(run, max_batch=8, max_wait_ms=200)
    results = {}
    barrier = threading.Barrier(4)

    def caller(n):
        barrier.wait()
        results[n] = batcher.run([n, n + 100])

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert results == {n: [n * 10, (n + 100) * 10] for n in range(4)}
    assert max(batcher.batch_sizes) > 2  # requests from different threads shared a batch
    assert all(size <= 8 for size in batcher.batch_sizes)


def test_dynamic_batcher_hands_errors_to_callers_and_refuses_after_close():
    def run(items):
        raise InputError("boom")

    batcher = DynamicBatcher(run, max_batch=4, max_wait_ms=0)
    with pytest.raises(InputError, match="boom"):
        batcher.run([1, 2])
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.run([1])
