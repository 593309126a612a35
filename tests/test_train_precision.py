"""bf16 training: what runs under autocast, what does not, and the config's check."""

import pytest
import torch
from torch import nn

from s2i_runtime.errors import InputError
from s2i_train.models.masking import MaskedBatchNorm1d
from s2i_train.train.config import load_config
from s2i_train.train.precision import autocast, backward


def test_bf16_runs_convolutions_in_bf16_and_fp32_leaves_them_alone():
    conv = nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 8, 8)
    with autocast("bf16"):
        assert conv(x).dtype == torch.bfloat16
    with autocast("fp32"):
        assert conv(x).dtype == torch.float32


class _RecordAutocast(torch.autograd.Function):
    seen: list[bool] = []

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        _RecordAutocast.seen.append(torch.is_autocast_enabled("cpu"))
        return grad


def test_backward_runs_outside_autocast_and_gradients_stay_fp32():
    linear = nn.Linear(4, 3)
    _RecordAutocast.seen.clear()
    with autocast("bf16"):
        out = linear(_RecordAutocast.apply(torch.randn(5, 4, requires_grad=True)))
        assert out.dtype == torch.bfloat16
        backward(out.float().square().mean())
        assert torch.is_autocast_enabled("cpu")  # switched back on after the backward pass
    assert _RecordAutocast.seen == [False]
    assert linear.weight.grad.dtype == torch.float32


def test_masked_batchnorm_statistics_are_fp32_under_bf16():
    norm = MaskedBatchNorm1d(4)
    x = (torch.randn(3, 4, 10) * 3 + 100).bfloat16()
    mask = torch.ones(3, 1, 10, dtype=torch.bool)
    mask[0, :, 6:] = False
    with autocast("bf16"):
        out = norm(x, mask)
    valid = x.float().transpose(1, 2)[mask.squeeze(1)]  # (valid steps, C)
    assert norm.running_mean.dtype == torch.float32
    assert torch.allclose(norm.running_mean, 0.1 * valid.mean(0), rtol=1e-5)
    assert out.dtype == torch.float32


def test_unknown_precision_is_an_input_error():
    with pytest.raises(InputError, match=r"config\.run: precision must be one of fp32, bf16, auto; got 'fp16'"):
        load_config(None, ['run.precision="fp16"'])


def test_auto_precision_is_bf16_only_where_the_cpu_has_it_and_is_saved_concrete(tmp_path):
    from s2i_train.train.precision import hardware_bf16, resolve_precision
    from s2i_train.train.runner import resolve_config

    expected = "bf16" if hardware_bf16() else "fp32"
    assert resolve_precision("auto") == expected
    assert resolve_precision("fp32") == "fp32" and resolve_precision("bf16") == "bf16"
    config = resolve_config(tmp_path / "run", None, ['run.precision="auto"'], tmp_path)
    assert config.run.precision == expected
