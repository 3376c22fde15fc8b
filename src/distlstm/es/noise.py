"""Perturbations regenerated from (seed, generation, index): only seeds need to be shared.

Member j of generation g uses ε from a generator seeded by (seed, g, j // 2) when
sampling is mirrored (member 2i gets +ε_i, member 2i+1 gets −ε_i), or (seed, g, j)
otherwise. Every worker can rebuild any member's ε, so workers exchange only scalar
fitnesses. The seed mixing is a fixed integer formula, identical in every process.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MIX = (1_000_003, 7_919, 104_729)


def noise_seed(seed: int, generation: int, index: int) -> int:
    """A 63-bit seed for (run seed, generation, noise index)."""
    return (seed * _MIX[0] + generation * _MIX[1] * 65_537 + index * _MIX[2] + 12_345) % (2**63 - 1)


def member_noise(seed: int, generation: int, member: int, n: int, mirrored: bool,
                 dtype: torch.dtype = torch.float32) -> Tensor:
    """ε (n,) of one population member, with its mirrored sign applied."""
    index, sign = (member // 2, 1.0 - 2.0 * (member % 2)) if mirrored else (member, 1.0)
    gen = torch.Generator().manual_seed(noise_seed(seed, generation, index))
    return sign * torch.randn(n, generator=gen, dtype=dtype)


def population_noise(seed: int, generation: int, members: range, n: int, mirrored: bool,
                     dtype: torch.dtype = torch.float32) -> Tensor:
    """ε (len(members), n) for a range of members (each mirrored pair drawn once)."""
    rows, cache = [], {}
    for j in members:
        index = j // 2 if mirrored else j
        if index not in cache:
            gen = torch.Generator().manual_seed(noise_seed(seed, generation, index))
            cache[index] = torch.randn(n, generator=gen, dtype=dtype)
        sign = -1.0 if mirrored and j % 2 else 1.0
        rows.append(cache[index] if sign > 0 else -cache[index])
    return torch.stack(rows) if rows else torch.empty(0, n, dtype=dtype)
