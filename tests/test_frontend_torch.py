import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_frontend import SIGNALS, SR, TOLERANCE_DB, _speech_clips  # noqa: E402

from s2i_runtime.frontend import logmel_batch  # noqa: E402
from s2i_train.frontend import logmel_torch  # noqa: E402


def _padded(clips):
    waves = np.zeros((len(clips), max(len(c) for c in clips)), dtype=np.float32)
    for row, clip in zip(waves, clips, strict=True):
        row[: len(clip)] = clip
    return torch.from_numpy(waves), torch.tensor([len(c) for c in clips])


def test_torch_matches_numpy_on_mixed_length_batch():
    clips = [SIGNALS["white noise"], SIGNALS["0.05 s clip"], SIGNALS["tone 440 Hz"], SIGNALS["dc offset"]]
    clips.append(np.float32([0.3]))  # a single sample: reflection degenerates
    waves, lengths = _padded(clips)
    features, frame_lengths = logmel_torch(waves, lengths)
    expected, expected_lengths = logmel_batch(clips)
    assert features.dtype == torch.float32
    assert frame_lengths.tolist() == expected_lengths.tolist()
    assert features.shape == expected.shape
    assert np.abs(features.numpy() - expected).max() <= TOLERANCE_DB


def test_torch_padding_does_not_change_valid_frames():
    clip = SIGNALS["chirp"][: SR]
    alone, _ = logmel_torch(*_padded([clip]))
    waves, lengths = _padded([clip, SIGNALS["white noise"]])
    waves[0, len(clip):] = 0.7  # garbage beyond the length must be ignored
    batched, _ = logmel_torch(waves, lengths)
    frames = 1 + len(clip) // 160
    assert torch.equal(alone[0, :, :frames], batched[0, :, :frames])
    assert (batched[0, :, frames:] == -80.0).all()


def test_torch_matches_numpy_on_real_speech():
    clips = _speech_clips()
    features, _ = logmel_torch(*_padded(clips))
    expected, _ = logmel_batch(clips)
    assert np.abs(features.numpy() - expected).max() <= TOLERANCE_DB


def test_torch_rejects_bad_lengths():
    with pytest.raises(ValueError, match="length"):
        logmel_torch(torch.zeros(2, 100), torch.tensor([0, 100]))
