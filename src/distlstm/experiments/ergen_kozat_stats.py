"""Seeds, confidence intervals and the tuning protocol of the Ergen & Kozat reproduction.

* :class:`Interval` — mean ± 95% confidence interval of a figure over seeds, Student t:
  x̄ ± t_{0.975, n−1} · s / √n (s the sample standard deviation; no interval from one seed);
* :func:`pairwise_verdicts` — an ordering of two algorithms counts only where their
  intervals do not overlap: *agree* / *disagree* with the paper, or *unresolved*;
* the paper's tuning protocol (Ergen & Kozat §4): on the exchange rates every algorithm
  is set to reach the **same final error** and convergence speed is compared
  (:func:`choose_equal_final`); on the sentences every algorithm is set to the **same
  speed** and the final error is compared (:func:`choose_equal_speed`). Speed there is
  :func:`settle_step`, the step from which the running MSE stays within 10% of its end
  value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from scipy import stats

SETTLE_TOLERANCE = 0.1  # settle_step: within 10% of the end value
FINAL_TOLERANCE = 0.05  # choose_equal_final: "the same final error" = within 5% of the common target


@dataclass(frozen=True)
class Interval:
    """Mean and 95% confidence interval (Student t) of one figure over seeds."""

    mean: float
    lo: float
    hi: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Interval:
        vals = tuple(float(v) for v in values if v is not None and not math.isnan(v))
        if not vals:
            return cls(math.nan, math.nan, math.nan, ())
        mean = sum(vals) / len(vals)
        if len(vals) == 1:
            return cls(mean, math.nan, math.nan, vals)
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        half = float(stats.t.ppf(0.975, len(vals) - 1)) * sd / math.sqrt(len(vals))
        return cls(mean, mean - half, mean + half, vals)

    def as_dict(self) -> dict[str, Any]:
        return {"mean": _none(self.mean), "ci95": [_none(self.lo), _none(self.hi)], "values": list(self.values)}


def _none(v: float) -> float | None:
    return None if math.isnan(v) else v


def compare(a: Interval, b: Interval) -> int:
    """−1 if a's interval lies wholly below b's, +1 if wholly above, 0 if they overlap (or either is missing)."""
    if math.isnan(a.lo) or math.isnan(b.lo):
        return 0
    return -1 if a.hi < b.lo else 1 if a.lo > b.hi else 0


def pairwise_verdicts(figures: Mapping[str, Interval], paper: Sequence[str], paper_lower_first: bool) -> dict[str, Any]:
    """The paper's order, pair by pair, against separated intervals.

    ``paper`` lists algorithms in the paper's order; ``paper_lower_first`` says whether
    that order is from low to high figures (fastest first on the exchange rates) or from
    high to low (highest error first on the sentences). Pairs with a missing name do not count.
    """
    agree: list[str] = []
    disagree: list[str] = []
    unresolved: list[str] = []
    for a, b in combinations([n for n in paper if n in figures], 2):
        c = compare(figures[a], figures[b])
        expected = -1 if paper_lower_first else 1
        (unresolved if c == 0 else agree if c == expected else disagree).append(f"{a}/{b}")
    return {"agree": agree, "disagree": disagree, "unresolved": unresolved}


def settle_step(running: Sequence[float], tolerance: float = SETTLE_TOLERANCE) -> int:
    """The first step (1-based) from which the running MSE stays within ``tolerance`` of its end value."""
    if not running:
        return 0
    end = running[-1]
    step = len(running)
    for t in range(len(running) - 1, -1, -1):
        if abs(running[t] - end) > tolerance * abs(end):
            break
        step = t + 1
    return step


@dataclass(frozen=True)
class GridPoint:
    """One tuning run: the factor on the algorithm's tuned setting and its figures."""

    factor: float
    settings: dict[str, Any]
    final_mse: float
    mean_running_mse: float
    settle_step: int


def choose_equal_final(grid: Mapping[str, Sequence[GridPoint]],
                       tolerance: float = FINAL_TOLERANCE) -> tuple[dict[str, GridPoint], float]:
    """Equal final error: the common target is the worst algorithm's best final MSE (every algorithm
    can reach it); each algorithm takes its fastest point (lowest mean running MSE) whose final
    MSE is within ``tolerance`` of the target or below it."""
    target = max(min(p.final_mse for p in points) for points in grid.values())
    chosen = {}
    for name, points in grid.items():
        ok = [p for p in points if p.final_mse <= target * (1 + tolerance)]
        chosen[name] = min(ok, key=lambda p: p.mean_running_mse)
    return chosen, target


def choose_equal_speed(grid: Mapping[str, Sequence[GridPoint]]) -> tuple[dict[str, GridPoint], float]:
    """Equal speed: the common target is the median settle step of every grid point; each algorithm
    takes the point whose settle step is nearest to it (ties: the lower final MSE)."""
    steps = sorted(p.settle_step for points in grid.values() for p in points)
    mid = len(steps) // 2
    target = float(steps[mid]) if len(steps) % 2 else 0.5 * (steps[mid - 1] + steps[mid])
    chosen = {name: min(points, key=lambda p: (abs(p.settle_step - target), p.final_mse))
              for name, points in grid.items()}
    return chosen, target
