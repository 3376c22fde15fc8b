"""Fitness shaping: map raw fitnesses F (P,) to the weights of the ES gradient estimate.

* ``centered_ranks`` (Salimans et al. 2017): ranks scaled to [−0.5, 0.5], summing to
  zero — invariant to any monotone transform of F and robust to outliers;
* ``zscore`` (the federated-ES source): (F − mean) / std.

Non-finite fitnesses are dropped (weight 0) before shaping.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def centered_ranks(f: Tensor) -> Tensor:
    """Ranks of f (P,) mapped linearly to [−0.5, 0.5]; ties broken by index."""
    p = f.shape[0]
    if p == 1:
        return torch.zeros_like(f)
    ranks = torch.empty_like(f)
    ranks[torch.argsort(f, stable=True)] = torch.arange(p, dtype=f.dtype)
    return ranks / (p - 1) - 0.5


def zscore(f: Tensor) -> Tensor:
    std = f.std() if f.shape[0] > 1 else f.new_tensor(0.0)
    return (f - f.mean()) / std if float(std) > 0 else torch.zeros_like(f)


def identity(f: Tensor) -> Tensor:
    """Raw fitnesses (for analysis and tests; sensitive to the fitness's offset and scale)."""
    return f.clone()


SHAPINGS: dict[str, Callable[[Tensor], Tensor]] = {"centered_ranks": centered_ranks, "zscore": zscore,
                                                   "none": identity}


def shape(f: Tensor, how: str) -> tuple[Tensor, int]:
    """Shaped weights (P,) with 0 for non-finite fitnesses, and how many were dropped."""
    if how not in SHAPINGS:
        raise ValueError(f"unknown fitness shaping {how!r}; expected one of {sorted(SHAPINGS)}")
    ok = torch.isfinite(f)
    weights = torch.zeros_like(f)
    if bool(ok.any()):
        weights[ok] = SHAPINGS[how](f[ok])
    return weights, int((~ok).sum())
