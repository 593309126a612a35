"""Training state on disk, the step-seeded data order and the loop's resume bookkeeping."""

import random

import numpy as np
import pytest
import torch

from s2i_runtime.errors import InputError
from s2i_train.train.loop import StepSampler
from s2i_train.train.state import (
    flatten_tree,
    latest_step,
    load_state,
    rng_state,
    save_state,
    set_rng_state,
    unflatten_tree,
)


def test_tree_round_trip_keeps_types_and_values():
    tree = {
        "a": torch.arange(6, dtype=torch.float32).view(2, 3),
        1: [1, 2.5, "x", None, True],
        "t": (np.arange(4, dtype=np.uint32), 7),
        "nested": {"b": torch.tensor(3, dtype=torch.int64)},
    }
    skeleton, tensors = flatten_tree(tree)
    back = unflatten_tree(skeleton, tensors)
    assert torch.equal(back["a"], tree["a"])
    assert back[1] == [1, 2.5, "x", None, True]
    assert isinstance(back["t"], tuple) and np.array_equal(back["t"][0], tree["t"][0])
    assert back["nested"]["b"].item() == 3


def test_optimizer_state_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    save_state(tmp_path, "demo", 5, {"opt": opt.state_dict()})
    step, tree = load_state(tmp_path, "demo")
    assert step == 5 and latest_step(tmp_path, "demo") == 5
    fresh = torch.optim.Adam(model.parameters(), lr=1e-2)
    fresh.load_state_dict(tree["opt"])
    for key, value in opt.state_dict()["state"][0].items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(fresh.state_dict()["state"][0][key]))


def test_save_state_keeps_only_newest(tmp_path):
    for step in (1, 2, 3):
        save_state(tmp_path, "s", step, {"x": torch.ones(1) * step})
    folders = sorted(p.name for p in (tmp_path / "state" / "s").glob("step-*"))
    assert folders == ["step-00000003"]
    assert load_state(tmp_path, "s")[1]["x"].item() == 3


def test_load_state_missing_is_input_error(tmp_path):
    with pytest.raises(InputError):
        load_state(tmp_path, "nothing")


def test_rng_state_round_trip():
    state = rng_state()
    first = (torch.rand(3), np.random.rand(), random.random())
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]


def test_step_sampler_is_a_function_of_the_step():
    a = StepSampler(10, 3, seed=1)
    b = StepSampler(10, 3, seed=1)
    assert [a.indices(s) for s in range(7)] == [b.indices(s) for s in reversed(range(7))][::-1]
    # One epoch (3 steps of 3) covers 9 distinct items.
    seen = sum((a.indices(s) for s in range(3)), [])
    assert len(set(seen)) == 9


def test_step_sampler_ranks_split_the_global_batch():
    whole = StepSampler(20, 4, seed=3, rank=0, world_size=1)
    r0 = StepSampler(20, 2, seed=3, rank=0, world_size=2)
    r1 = StepSampler(20, 2, seed=3, rank=1, world_size=2)
    for step in range(6):
        assert sorted(r0.indices(step) + r1.indices(step)) == sorted(whole.indices(step))


def test_step_sampler_small_dataset_fills_batches():
    s = StepSampler(3, 8, seed=0)
    assert len(s.indices(0)) == 8
