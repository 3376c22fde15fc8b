"""Long-lag synthetic tasks: the adding and multiplication problems (Hochreiter & Schmidhuber 1997).

Each step of a sequence is a pair (value, marker). Sequence lengths are drawn
uniformly from [T, T + T/10] (T = ``min_len``). Exactly two pairs are marked with
marker 1: one of the first ten pairs (its value is X1) and one of the first T/2 − 1
pairs not yet marked (X2). The first and the last pair carry marker −1 unless marked;
all others 0. If the first pair is marked, its value counts as 0. Only the end of a
sequence has a target:

* adding: values uniform in [−1, 1], target 0.5 + (X1 + X2) / 4 (the sum scaled to [0, 1]);
* multiplication: values uniform in [0, 1], target X1 · X2.

The information needed at the end lies up to T steps back: first-order methods on
truncated gradients fail here, which is what the full-batch, full-BPTT experiments
of the matrix-batch paper show.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class LongLagData:
    x: Tensor  # (N, T_max, 2) float64: value, marker; zero after each sequence's end
    lengths: Tensor  # (N,) int64
    y: Tensor  # (N,) float64 targets at the sequence ends

    def __len__(self) -> int:
        return self.y.shape[0]

    def shard(self, rank: int, world_size: int) -> LongLagData:
        """Rows [⌊rank·N/W⌋, ⌊(rank+1)·N/W⌋): one worker's share of the whole batch (sizes differ by ≤ 1).

        Uneven shares are exact for full-batch training: each worker's summed loss is
        divided by the global N, and the sums are added.
        """
        n = len(self)
        if world_size < 1 or n < world_size:
            raise ValueError(f"{n} samples cannot be split over {world_size} workers (each needs at least one)")
        part = slice(rank * n // world_size, (rank + 1) * n // world_size)
        return LongLagData(self.x[part], self.lengths[part], self.y[part])


def _long_lag(n: int, min_len: int, gen: torch.Generator, multiply: bool) -> LongLagData:
    if n < 1:
        raise ValueError(f"need at least one sample, got {n}")
    if min_len < 22:
        raise ValueError(f"min_len must be at least 22 (one of the first ten pairs and one of the first "
                         f"T/2 − 1 pairs are marked), got {min_len}")
    lengths = torch.randint(min_len, min_len + min_len // 10 + 1, (n,), generator=gen)
    t_max = int(lengths.max())
    low = 0.0 if multiply else -1.0
    values = low + (1.0 - low) * torch.rand(n, t_max, generator=gen, dtype=torch.float64)
    steps = torch.arange(t_max)
    valid = steps[None, :] < lengths[:, None]
    markers = torch.zeros(n, t_max, dtype=torch.float64)
    markers[:, 0] = -1.0
    markers[torch.arange(n), lengths - 1] = -1.0
    first = torch.randint(0, 10, (n,), generator=gen)
    second = torch.randint(0, min_len // 2 - 2, (n,), generator=gen)  # among T/2 − 1 pairs, one is taken
    second = second + (second >= first).long()
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    values[rows[(first == 0) | (second == 0)], 0] = 0.0  # a marked first pair counts as 0
    values = torch.where(valid, values, 0.0)
    x1, x2 = values[rows, first], values[rows, second]
    y = x1 * x2 if multiply else 0.5 + (x1 + x2) / 4.0
    return LongLagData(torch.stack([values, torch.where(valid, markers, 0.0)], -1), lengths, y)


def adding_problem(n: int, min_len: int, gen: torch.Generator) -> LongLagData:
    """``n`` adding-problem sequences of minimal length ``min_len``."""
    return _long_lag(n, min_len, gen, multiply=False)


def multiplication_problem(n: int, min_len: int, gen: torch.Generator) -> LongLagData:
    """``n`` multiplication-problem sequences of minimal length ``min_len``."""
    return _long_lag(n, min_len, gen, multiply=True)
