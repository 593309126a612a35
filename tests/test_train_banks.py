"""In-memory Spoken-Shapes banks: padding, wrong images, the judge's held-out images, caching."""

import pytest
import torch
from train_tiny_data import make_tiny_shapes

from s2i_runtime.errors import InputError
from s2i_runtime.frontend import FrontendSpec
from s2i_train.data import vocabulary
from s2i_train.data.captions import names_background
from s2i_train.train.banks import load_caption_bank, load_image_bank
from s2i_train.train.judge import judge_holdout


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_shapes(tmp_path_factory.mktemp("banks"), images_per_class=4)


def test_image_bank_shapes_and_labels(tiny, tmp_path):
    bank = load_image_bank(tiny, "train", (64,), tmp_path)
    assert len(bank) == len(vocabulary.TRAIN_CLASSES) * 4
    assert bank.pixels[64].dtype == torch.uint8 and bank.pixels[64].shape[1:] == (3, 64, 64)
    images = bank.images([0, 1], 64)
    assert images.min() >= -1 and images.max() <= 1
    assert set(bank.class_ids.tolist()) == {c.class_id for c in vocabulary.TRAIN_CLASSES}
    # Cached: the second load reads the same pixels back.
    again = load_image_bank(tiny, "train", (64,), tmp_path)
    assert torch.equal(again.pixels[64], bank.pixels[64])
    assert list((tmp_path / "cache").glob("images-train-64-*.safetensors"))


def test_wrong_images_are_of_another_class(tiny):
    bank = load_image_bank(tiny, "train", (64,))
    rows = torch.arange(len(bank))
    wrong = bank.wrong_indices(rows)
    assert (bank.class_ids[wrong] != bank.class_ids[rows]).all()


def test_partners_share_the_given_attributes_and_are_other_images(tiny):
    bank = load_image_bank(tiny, "train", (64,))
    rows = torch.arange(len(bank))
    partners = bank.partner_indices(rows, (0, 1, 2), torch.Generator().manual_seed(0))
    assert (bank.attributes[partners, :3] == bank.attributes[rows, :3]).all()
    alone = torch.tensor([(bank.attributes[:, :3] == bank.attributes[r, :3]).all(dim=1).sum() == 1 for r in rows])
    assert torch.equal(partners == rows, alone)  # itself only when no other image matches
    assert not alone.all()
    assert torch.equal(partners, bank.partner_indices(rows, (0, 1, 2), torch.Generator().manual_seed(0)))


def test_captions_say_which_attributes_they_name(tiny):
    images = load_image_bank(tiny, "test", (64,))
    captions = load_caption_bank(tiny, "test", images)
    assert captions.spoken.shape == (len(captions), 4) and captions.spoken[:, :3].all()
    assert captions.spoken[:, 3].tolist() == [names_background(r["text"]) for r in captions.records]
    assert 0 < captions.spoken[:, 3].sum() < len(captions)


def test_captions_that_leave_the_shape_open_are_marked_and_left_out_of_the_fully_said(tiny, tmp_path):
    import json
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny, root)
    records = [json.loads(line) for line in (root / "captions.jsonl").read_text().splitlines()]
    extra = [{**r, "caption_index": 1, "audio": r["audio"].replace("_0.wav", "_1.wav"), "shape_said": False,
              "text": "something small and red"} for r in records[:5] if r["split"] == "train"]
    for r in extra:
        shutil.copy(root / r["audio"].replace("_1.wav", "_0.wav"), root / r["audio"])
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records + extra))
    images = load_image_bank(root, "train", (64,))
    captions = load_caption_bank(root, "train", images)
    shape_said = captions.spoken[:, 1]
    assert shape_said.tolist() == [True] * (len(captions) - len(extra)) + [False] * len(extra)
    assert captions.spoken[:, [0, 2]].all()
    full = captions.fully_said()
    assert len(full) == len(captions) - len(extra) and full.spoken[:, :3].all()
    assert [r["audio"] for r in full.records] == [r["audio"] for r in records if r["split"] == "train"]


def test_caption_batch_pads_with_the_floor_and_keeps_lengths(tiny):
    images = load_image_bank(tiny, "test", (64,))
    captions = load_caption_bank(tiny, "test", images)
    spec = FrontendSpec()
    mel, lengths = captions.batch([0, 1, 2])
    assert mel.shape[0] == 3 and mel.shape[1] == spec.n_mels
    assert mel.shape[2] == max(int(lengths.max()), spec.min_frames)
    for row, length in enumerate(lengths.tolist()):
        assert (mel[row, :, length:] == spec.pad_value).all()
        assert mel[row, :, :length].max() == 0.0  # dB relative to the utterance's maximum
    assert (captions.image_index < len(images)).all()


def test_judge_holdout_takes_the_same_share_of_every_class(tiny):
    bank = load_image_bank(tiny, "test", (64,))
    holdout = judge_holdout(bank, 0.5)
    for cls in bank.class_ids.unique():
        assert int(holdout[bank.class_ids == cls].sum()) == 2


def test_not_a_dataset(tmp_path):
    with pytest.raises(InputError, match="captions.jsonl"):
        load_image_bank(tmp_path, "train", (64,))
