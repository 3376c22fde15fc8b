"""Perturbations regenerated from (seed, generation, index): only seeds need to be shared.

Member j of generation g uses noise index i = j // 2 when sampling is mirrored (member
2i gets +ε_i, member 2i+1 gets −ε_i), or i = j otherwise. Every worker can rebuild any
member's ε, so workers exchange only scalar fitnesses. Two ways to turn (seed, g, i)
into ε_i, both identical in every process:

- ``table`` (the default; OpenAI-ES's shared noise table, Salimans et al. 2017 §2.1):
  every process holds the same block of standard normals (fixed seed, at least 2^24 of
  them and 16 n), and ε_i = table[o_i : o_i + n] with offset o_i drawn from (seed, g).
  A generation's noise is a gather of slices instead of P normal draws of n each: on
  the ES benchmark's RNN (n = 13,641, P = 256) 1.5 ms against 9.4 ms (BENCHMARKS.md).
- ``seeded``: ε_i drawn afresh from a generator seeded by (seed, g, i).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

NOISE_KINDS = ("table", "seeded")
_MIX = (1_000_003, 7_919, 104_729)
_TABLE_SEED = 20_170_310  # fixed: every run shares the table; the run seed picks the offsets
_MIN_TABLE = 1 << 24
_BLOCK = 1024


def noise_seed(seed: int, generation: int, index: int) -> int:
    """A 63-bit seed for (run seed, generation, noise index)."""
    return (seed * _MIX[0] + generation * _MIX[1] * 65_537 + index * _MIX[2] + 12_345) % (2**63 - 1)


def table_size(n: int) -> int:
    """Length of the noise table for n parameters: a power of two ≥ max(2^24, 16 n), so that the
    slices of one generation rarely overlap."""
    return max(_MIN_TABLE, 1 << (16 * n - 1).bit_length())


@lru_cache(maxsize=2)
def noise_table(size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The shared table of ``size`` standard normals (the same in every process and run)."""
    return torch.randn(size, generator=torch.Generator().manual_seed(_TABLE_SEED), dtype=dtype)


def table_offsets(seed: int, generation: int, indices: list[int], n: int) -> Tensor:
    """o_i: where ε_i starts in the table, for noise indices i of one generation.

    Offsets are drawn in blocks of 1,024 indices from a generator seeded by (seed, g, −1 − block),
    so o_i does not depend on which other indices a worker asks for.
    """
    idx = torch.tensor(indices)
    block_of = idx // _BLOCK
    offsets = torch.empty_like(idx)
    for b in block_of.unique().tolist():
        gen = torch.Generator().manual_seed(noise_seed(seed, generation, -1 - b))
        block = torch.randint(0, table_size(n) - n + 1, (_BLOCK,), generator=gen)
        here = block_of == b
        offsets[here] = block[idx[here] % _BLOCK]
    return offsets


def _noise_indices(members: range, mirrored: bool) -> list[int]:
    """The noise index i of each member: j // 2 for mirrored pairs (odd members take −ε_i), else j."""
    return [j // 2 for j in members] if mirrored else list(members)


def member_noise(seed: int, generation: int, member: int, n: int, mirrored: bool,
                 dtype: torch.dtype = torch.float32, kind: str = "table") -> Tensor:
    """ε (n,) of one population member, with its mirrored sign applied."""
    return population_noise(seed, generation, range(member, member + 1), n, mirrored, dtype, kind)[0]


def population_noise(seed: int, generation: int, members: range, n: int, mirrored: bool,
                     dtype: torch.dtype = torch.float32, kind: str = "table") -> Tensor:
    """ε (len(members), n) for a range of members (seeded: each mirrored pair's ε_i drawn once)."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise {kind!r}; expected one of {NOISE_KINDS}")
    if len(members) == 0:
        return torch.empty(0, n, dtype=dtype)
    indices = _noise_indices(members, mirrored)
    if kind == "table":
        offsets = table_offsets(seed, generation, indices, n)
        eps = noise_table(table_size(n), dtype).unfold(0, n, 1).index_select(0, offsets)  # a gather, no draws
        if mirrored:  # the odd members, every second row: negated in place (no second buffer)
            eps[members.start % 2 ^ 1 :: 2].neg_()
        return eps
    cache: dict[int, Tensor] = {}
    rows = []
    for j, index in zip(members, indices, strict=True):
        if index not in cache:
            gen = torch.Generator().manual_seed(noise_seed(seed, generation, index))
            cache[index] = torch.randn(n, generator=gen, dtype=dtype)
        rows.append(-cache[index] if mirrored and j % 2 else cache[index])
    return torch.stack(rows)
