import json
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from s2i_train.data import safe_pickle
from s2i_train.data.dataset import SpeechImageDataset, collate
from s2i_train.data.published import crop_to_bbox, detect_layout, load_li, load_places, load_s2igan, load_split
from s2i_train.data.records import DatasetError
from s2i_train.data.speech import wav_bytes


def _wav(path, seconds=0.8, freq=220.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    path.write_bytes(wav_bytes(0.3 * np.sin(2 * np.pi * freq * t) * (1 + np.sin(2 * np.pi * 3 * t))))


def _jpg(path, size=(100, 80), colour=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _pickle(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(value, protocol=2))


S2IGAN = {"train": ["001.Albatross/alb_1", "001.Albatross/alb_2", "002.Gull/gull_1"], "test": ["003.Wren/wren_1"]}


@pytest.fixture()
def s2igan_root(tmp_path):
    root = tmp_path / "birds"
    for split, keys in S2IGAN.items():
        _pickle(root / split / "filenames.pickle", keys)
        _pickle(root / split / "class_info.pickle", [int(k[:3]) for k in keys])
        for key in keys:
            _jpg(root / "CUB_200_2011" / "images" / f"{key}.jpg")
            for k in range(10):
                _wav(root / "audio" / key / f"{key.split('/')[1]}_{k}.wav", freq=200 + 10 * k)
    return root


def test_s2igan_layout(s2igan_root):
    assert detect_layout(s2igan_root) == "s2igan"
    train = load_s2igan(s2igan_root, "train")
    test = load_s2igan(s2igan_root, "test")
    assert [r.key for r in train.records] == S2IGAN["train"]
    assert train.class_names == test.class_names == ["001.Albatross", "002.Gull", "003.Wren"]
    assert [r.class_id for r in train.records] == [0, 0, 1] and test.records[0].class_id == 2
    assert all(len(r.audio) == 10 for r in train.records)
    ds = SpeechImageDataset(train, image_sizes=(64,))
    batch = collate([ds[i] for i in range(3)])
    assert batch["mel"].shape[:2] == (3, 40) and batch["images"][0].shape == (3, 3, 64, 64)
    assert batch["attributes"] == {}


def test_s2igan_flat_flowers_images(tmp_path):
    root = tmp_path / "flowers"
    keys = ["class_00001/image_00001", "class_00002/image_00002"]
    _pickle(root / "train" / "filenames.pickle", keys)
    for key in keys:
        _jpg(root / "jpg" / f"{key.split('/')[1]}.jpg")
        _wav(root / "audio" / key / "c0.wav")
    loaded = load_split(root, "train")
    assert [r.image.name for r in loaded.records] == ["image_00001.jpg", "image_00002.jpg"]


def test_cub_bounding_box_crop(s2igan_root):
    cub = s2igan_root / "CUB_200_2011"
    image = Image.new("RGB", (100, 80), (0, 0, 255))
    image.paste((0, 255, 0), (5, 5, 35, 35))  # exactly the StackGAN crop of the box below
    image.save(cub / "images" / "001.Albatross" / "alb_1.jpg", format="PNG")  # lossless, whatever the name
    (cub / "images.txt").write_text("1 001.Albatross/alb_1.jpg\n2 001.Albatross/alb_2.jpg\n")
    (cub / "bounding_boxes.txt").write_text("1 10.0 10.0 20.0 20.0\n2 0.0 0.0 100.0 80.0\n")
    assert crop_to_bbox((100, 80), (10.0, 10.0, 20.0, 20.0)) == (5, 5, 35, 35)
    train = load_s2igan(s2igan_root, "train")
    assert train.records[0].bbox == (10.0, 10.0, 20.0, 20.0) and train.records[2].bbox is None
    ds = SpeechImageDataset(train, image_sizes=(32,), with_wrong=False)
    pixels = ds[0]["images"][0]
    assert float(pixels[1].mean()) > 0.9 and float(pixels[2].mean()) < -0.9  # all green, no blue


def test_s2igan_bad_items(s2igan_root):
    missing = s2igan_root / "audio" / "001.Albatross" / "alb_2"
    for wav in missing.glob("*.wav"):
        wav.unlink()
    with pytest.raises(DatasetError, match=str(missing)):
        load_s2igan(s2igan_root, "train")
    loaded = load_s2igan(s2igan_root, "train", skip_bad=True)
    assert len(loaded.records) == 2 and len(loaded.skipped) == 1

    broken = s2igan_root / "audio" / "002.Gull" / "gull_1" / "gull_1_3.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    loaded = load_s2igan(s2igan_root, "train", skip_bad=True)
    assert len(loaded.records) == 1 and len(loaded.skipped) == 2
    assert "gull_1_3.wav: unreadable audio" in loaded.skipped[1]

    (s2igan_root / "audio" / "003.Wren" / "wren_1" / "wren_1_0.wav").write_bytes(b"not audio at all")
    with pytest.raises(DatasetError, match="wren_1_0.wav: unreadable audio"):
        load_s2igan(s2igan_root, "test")


def test_s2igan_class_info_disagreeing_with_folders(s2igan_root):
    _pickle(s2igan_root / "train" / "class_info.pickle", [1, 2, 2])  # alb_2 claims the gull's label
    with pytest.raises(DatasetError, match=r"001\.Albatross: class folder disagrees"):
        load_s2igan(s2igan_root, "train")
    _pickle(s2igan_root / "train" / "class_info.pickle", [1, 1])
    with pytest.raises(DatasetError, match="class_info.pickle: expected 3 class labels"):
        load_s2igan(s2igan_root, "train")


def test_s2igan_missing_split_file_names_it(s2igan_root):
    os.remove(s2igan_root / "test" / "filenames.pickle")
    with pytest.raises(DatasetError, match=r"test/filenames.pickle: file is missing"):
        load_s2igan(s2igan_root, "test")


def test_li_layout(tmp_path):
    root = tmp_path / "li"
    entries = {"train": [("Laysan_Albatross", "a1"), ("Gull", "g1")], "test": [("Wren", "w1")]}
    for split, items in entries.items():
        data = []
        for cls, name in items:
            _jpg(root / "images" / cls / f"{name}.jpg")
            audio = [f"audio/{cls}/{name}_{k}.wav" for k in range(2)]
            for a in audio:
                _wav(root / a)
            data.append({"image": f"images/{cls}/{name}.jpg", "class": cls, "text": ["t0", "t1"], "audio": audio})
        (root / f"{split}.json").write_text(json.dumps({"data": data}))
    assert detect_layout(root) == "li"
    train, test = load_li(root, "train"), load_li(root, "test")
    assert train.class_names == ["Gull", "Laysan_Albatross", "Wren"] == test.class_names
    assert [r.class_id for r in train.records] == [1, 0] and test.records[0].class_id == 2
    assert len(train.records[0].audio) == 2
    # The flowers variant: {img, class, text, wav}.
    flowers = tmp_path / "flowers"
    _jpg(flowers / "jpg" / "image_1.jpg")
    _jpg(flowers / "jpg" / "image_2.jpg")
    _wav(flowers / "wav" / "image_1_0.wav")
    _wav(flowers / "wav" / "image_2_0.wav")
    data = [
        {"img": "jpg/image_1.jpg", "class": 7, "text": ["x"], "wav": ["wav/image_1_0.wav"]},
        {"img": "jpg/image_2.jpg", "class": 9, "text": "y", "wav": "wav/image_2_0.wav"},
    ]
    (flowers / "train.json").write_text(json.dumps({"data": data}))
    loaded = load_split(flowers, "train")
    assert [r.class_name for r in loaded.records] == ["7", "9"]
    (flowers / "wav" / "image_2_0.wav").unlink()
    with pytest.raises(DatasetError, match="image_2_0.wav: audio file is missing"):
        load_split(flowers, "train")


def test_places_layout(tmp_path):
    root = tmp_path / "places"
    data = []
    for i, cls in enumerate(["b/bedroom", "k/kitchen", "b/bedroom"]):
        _jpg(root / "images" / cls / f"img{i}.jpg")
        _wav(root / "wavs" / f"utt{i}.wav")
        data.append(
            {
                "wav": f"utt{i}.wav",
                "image": f"{cls}/img{i}.jpg",
                "uttid": f"U{i}",
                "speaker": "S1",
                "asr_text": "a bedroom",
            }
        )
    (root / "train.json").write_text(json.dumps({"image_base_path": "images", "audio_base_path": "wavs", "data": data}))
    assert detect_layout(root) == "places"
    loaded = load_split(root, "train")
    assert loaded.class_names == ["b/bedroom", "k/kitchen"]
    assert [r.class_id for r in loaded.records] == [0, 1, 0]
    assert [len(r.audio) for r in loaded.records] == [1, 1, 1]
    assert loaded.records[1].key == "U1"
    direct = load_places(root / "train.json")
    assert [r.key for r in direct.records] == ["U0", "U1", "U2"]
    ds = SpeechImageDataset(loaded, image_sizes=(16,))
    torch.manual_seed(1)
    assert ds[0]["wrong_class_id"] == 1


def test_unknown_layout_names_the_folder(tmp_path):
    with pytest.raises(DatasetError, match="not a known dataset layout"):
        load_split(tmp_path, "train")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_safe_pickle_admits_only_builtin_data(tmp_path):
    assert safe_pickle.loads(pickle.dumps(["a/b", 1, 2.5, (3, None), {"k": {1, 2}}, b"x"], protocol=2)) == [
        "a/b",
        1,
        2.5,
        (3, None),
        {"k": {1, 2}},
        b"x",
    ]
    with pytest.raises(pickle.UnpicklingError, match="posix.system|os.system"):
        safe_pickle.loads(pickle.dumps(_Evil()))
    with pytest.raises(pickle.UnpicklingError, match="numpy"):
        safe_pickle.loads(pickle.dumps(np.arange(3)))
    bad = tmp_path / "x.pickle"
    bad.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(DatasetError, match="x.pickle: cannot load pickle safely"):
        safe_pickle.load(bad)
    # A Python 2 pickle of byte strings (as StackGAN's filenames.pickle) reads as str.
    py2 = b"(lp0\nS'001.Black_footed_Albatross/Black_Footed_Albatross_0046_18'\np1\na."
    assert safe_pickle.loads(py2) == ["001.Black_footed_Albatross/Black_Footed_Albatross_0046_18"]
