"""encoders.state.load_state: the one strict state-dict check names what does not fit."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from encoders.state import StateDictError, load_state


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))


def test_exact_state_loads():
    source, target = net(), nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    load_state(target, source.state_dict(), "src")
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_missing_unexpected_and_mis_shaped_are_all_named():
    state = net().state_dict()
    state.pop("1.bias")
    state["2.weight"] = torch.zeros(1)
    state["0.weight"] = torch.zeros(7, 3)
    with pytest.raises(StateDictError) as err:
        load_state(net(), state, "ckpt/model.pt")
    msg = str(err.value)
    assert msg.startswith("ckpt/model.pt does not fit the model")
    assert "1 missing [1.bias]" in msg and "1 unexpected [2.weight]" in msg
    assert "0.weight: saved (7, 3) vs model (4, 3)" in msg


def test_allowed_missing_keys_pass():
    state = net().state_dict()
    state.pop("1.bias")
    load_state(net(), state, "x", allow_missing={"1.bias"})
    with pytest.raises(StateDictError, match=r"1 missing \[1.weight\]"):
        load_state(net(), {k: v for k, v in state.items() if k != "1.weight"}, "x", allow_missing={"1.bias"})
