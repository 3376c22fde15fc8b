"""One labelled sequence: the unit of data every online algorithm consumes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Observation:
    """One node's data at one time step: a sequence ``x`` (T, p) and its label ``d`` (NaN: no label)."""

    x: Tensor
    d: float

    @property
    def labelled(self) -> bool:
        return math.isfinite(self.d)
