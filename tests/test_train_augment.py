"""SpecAugment masking for the speech encoder: where masks fall, what they write, determinism."""

import torch

from s2i_train.train.augment import SpecAugmentConfig, spec_augment, warp_frequency

PAD = -80.0


def _batch():
    mel = torch.rand(3, 40, 200) * 50 - 40  # never equal to the pad value
    lengths = torch.tensor([200, 120, 64])
    mel[1, :, 120:] = PAD
    mel[2, :, 64:] = PAD
    return mel, lengths


def test_disabled_config_returns_the_input_unchanged():
    mel, lengths = _batch()
    out = spec_augment(mel, lengths, SpecAugmentConfig(), PAD, torch.Generator().manual_seed(0))
    assert out is mel


def test_time_masks_stay_inside_valid_frames_and_write_the_pad_value():
    mel, lengths = _batch()
    config = SpecAugmentConfig(time_masks=2, time_mask_frames=30)
    out = spec_augment(mel, lengths, config, PAD, torch.Generator().manual_seed(1))
    changed = out != mel
    assert torch.all(out[changed] == PAD)
    for row, length in enumerate(lengths.tolist()):
        masked_frames = changed[row].any(0)
        assert not masked_frames[length:].any()  # padding was already PAD and stays so
        # whole frames (every band) are masked, at most 2 spans of <= 30 frames
        assert torch.equal(changed[row][:, masked_frames].all(0), masked_frames[masked_frames])
        assert int(masked_frames.sum()) <= 60


def test_frequency_masks_cover_whole_bands_within_the_utterance():
    mel, lengths = _batch()
    config = SpecAugmentConfig(freq_masks=1, freq_mask_bands=6)
    out = spec_augment(mel, lengths, config, PAD, torch.Generator().manual_seed(2))
    changed = out != mel
    for row, length in enumerate(lengths.tolist()):
        bands = changed[row].any(1)
        assert int(bands.sum()) <= 6
        assert torch.all(changed[row][bands, :length])
        if bands.any():
            idx = torch.nonzero(bands).flatten()
            assert int(idx[-1] - idx[0]) + 1 == len(idx)  # one contiguous span


def test_same_generator_seed_gives_the_same_masks():
    mel, lengths = _batch()
    config = SpecAugmentConfig(time_masks=2, freq_masks=2)
    a = spec_augment(mel, lengths, config, PAD, torch.Generator().manual_seed(7))
    b = spec_augment(mel, lengths, config, PAD, torch.Generator().manual_seed(7))
    c = spec_augment(mel, lengths, config, PAD, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_frequency_warp_moves_a_formant_by_the_drawn_factor_and_keeps_padding():
    mel = torch.full((2, 40, 10), PAD)
    mel[:, 20, :8] = 0.0  # one loud band in the valid frames; frames 8.. are padding
    gen = torch.Generator().manual_seed(3)
    out = warp_frequency(mel, 0.1, gen)
    alpha = 1.0 + (2.0 * torch.rand(2, generator=torch.Generator().manual_seed(3)) - 1.0) * 0.1
    for row in range(2):
        peak = int(out[row, :, 0].argmax())
        assert abs(peak - 20 * float(alpha[row])) <= 1.0  # band f reads f / alpha: the peak moves to 20 alpha
        assert torch.all(out[row, :, 8:] == PAD)
    assert torch.allclose(warp_frequency(mel, 1e-9, gen), mel, atol=1e-4)


def test_frequency_warp_alone_enables_augmentation():
    mel, lengths = _batch()
    config = SpecAugmentConfig(freq_warp=0.1)
    assert config.enabled
    out = spec_augment(mel, lengths, config, PAD, torch.Generator().manual_seed(4))
    assert out.shape == mel.shape and not torch.equal(out, mel)
    assert torch.all(out[1, :, 120:] == PAD)
