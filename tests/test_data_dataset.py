import numpy as np
import pytest
import torch
from data_helpers import tiny_shapes_root

from s2i_runtime.audio import load_audio
from s2i_runtime.frontend import FrontendSpec, logmel
from s2i_train.data import features as features_module
from s2i_train.data.dataset import SpokenShapesDataset, collate
from s2i_train.data.records import DatasetError


@pytest.fixture(scope="session")
def tiny_shapes(tmp_path_factory):
    return tiny_shapes_root(tmp_path_factory)


def test_item_contents(tiny_shapes, tmp_path):
    torch.manual_seed(0)
    ds = SpokenShapesDataset(tiny_shapes, "train", image_sizes=(32, 64), cache_dir=tmp_path)
    assert len(ds) == 96
    item = ds[5]
    assert item["mel"].dtype == torch.float32 and item["mel"].shape == (40, item["length"])
    assert [tuple(im.shape) for im in item["images"]] == [(3, 32, 32), (3, 64, 64)]
    assert -1.0 <= float(item["images"][1].min()) and float(item["images"][1].max()) <= 1.0
    assert item["wrong_class_id"] != item["class_id"]
    assert set(item["attributes"]) == {"colour", "shape", "size", "background"}
    record = ds.records[5]
    expected = logmel(load_audio(record.audio[0]), FrontendSpec())
    np.testing.assert_array_equal(item["mel"].numpy(), expected)


def test_features_are_cached(tiny_shapes, tmp_path, monkeypatch):
    # Test images carry several spoken captions (espeak and a recorded voice); one seed picks the same one.
    ds = SpokenShapesDataset(tiny_shapes, "test", cache_dir=tmp_path, with_wrong=False)
    torch.manual_seed(0)
    first = ds[0]["mel"]
    assert len(list(tmp_path.rglob("*.npy"))) == 1

    def fail(*args):
        raise AssertionError("recomputed a cached feature")

    monkeypatch.setattr(features_module, "compute_features", fail)
    again = SpokenShapesDataset(tiny_shapes, "test", cache_dir=tmp_path, with_wrong=False)
    torch.manual_seed(0)
    torch.testing.assert_close(again[0]["mel"], first)
    # A different front-end spec misses the cache.
    other = SpokenShapesDataset(tiny_shapes, "test", cache_dir=tmp_path, frontend=FrontendSpec(fmin=30.0))
    with pytest.raises(AssertionError, match="recomputed"):
        other[0]


def test_collate_pads_with_the_db_floor(tiny_shapes, tmp_path):
    ds = SpokenShapesDataset(tiny_shapes, "train", cache_dir=tmp_path)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["mel"].shape[0] == 8 and batch["mel"].shape[1] == 40
    assert batch["mel"].shape[2] == max(64, int(batch["lengths"].max()))
    for row, length in zip(batch["mel"], batch["lengths"], strict=True):
        assert torch.all(row[:, length:] == -80.0)
        assert float(row[:, :length].max()) == 0.0
    assert batch["images"][0].shape == (8, 3, 64, 64)
    assert batch["wrong_images"][0].shape == (8, 3, 64, 64)
    assert torch.all(batch["wrong_class_id"] != batch["class_id"])
    assert batch["attributes"]["shape"].shape == (8,)


def test_split_disagreeing_with_classes_is_an_error(tiny_shapes, tmp_path):
    import json
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_shapes, copy, ignore=shutil.ignore_patterns("cache"))
    train = json.loads((copy / "train" / "filenames.json").read_text())
    test = json.loads((copy / "test" / "filenames.json").read_text())
    (copy / "train" / "filenames.json").write_text(json.dumps(train + test[:1]))
    with pytest.raises(DatasetError, match="red_circle"):
        SpokenShapesDataset(copy, "train")
    (copy / "train" / "filenames.json").write_text(json.dumps(train))
    (copy / "audio" / f"{train[3]}_0.wav").unlink()
    with pytest.raises(DatasetError, match=f"{train[3]}_0.wav: audio file is missing"):
        SpokenShapesDataset(copy, "train")
    ds = SpokenShapesDataset(copy, "train", skip_bad=True)
    assert len(ds) == 95 and len(ds.loaded.skipped) == 1
