"""Strict state-dict loading, the one copy: ``load_state_dict`` with its incompatible keys turned
into one error that names the first offenders (and the source), minus keys the caller expects
to be absent (frozen weights that come back from a local path)."""
from __future__ import annotations

from collections.abc import Collection, Mapping

from torch import Tensor, nn

SHOWN = 5   # keys quoted in an error message


class StateDictError(ValueError):
    """A state dict does not fit the module it is loaded into."""


def _head(keys: list[str]) -> str:
    return ", ".join(keys[:SHOWN]) + (f" … (+{len(keys) - SHOWN})" if len(keys) > SHOWN else "")


def load_state(module: nn.Module, state: Mapping[str, Tensor], source: object,
               allow_missing: Collection[str] = ()) -> None:
    """Load ``state`` into ``module``; missing (except ``allow_missing``), unexpected or mis-shaped
    keys raise ``StateDictError`` naming ``source``."""
    own = module.state_dict()
    mis_shaped = sorted(k for k, v in state.items() if k in own and v.shape != own[k].shape)
    result = module.load_state_dict({k: v for k, v in state.items() if k not in mis_shaped}, strict=False)
    missing = sorted(k for k in result.missing_keys if k not in allow_missing and k not in mis_shaped)
    unexpected = sorted(result.unexpected_keys)
    if missing or unexpected or mis_shaped:
        shapes = [f"{k}: saved {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mis_shaped]
        raise StateDictError(f"{source} does not fit the model: {len(missing)} missing [{_head(missing)}]; "
                             f"{len(unexpected)} unexpected [{_head(unexpected)}]; "
                             f"{len(mis_shaped)} mis-shaped [{_head(shapes)}]")
