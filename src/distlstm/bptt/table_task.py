"""``--task csv``: sequence regression / forecasting on a user's table, for DDP and full-batch training.

From a CSV (one row per time step) the task forecasts ``target`` ``horizon`` rows after
a window of ``window`` rows of the ``inputs`` (and, by default, the target's past
values) — the windows of ``data/forecast.py``. The split is in time: the last
``test_fraction`` of the rows is the test part; a window belongs to the test set when
its label row lies there (its inputs may reach back into the training rows: that past
is known when forecasting), to the training set otherwise, so no training label comes
after a test label. The scaler is fitted on the training rows only. Windows with a
missing target are dropped. Training minimises the MSE of the scaled target; the
metric is the test MSE in the target's own units (squared), reported beside the MSE
of predicting the training mean.

Minibatches: every epoch the training windows are shuffled by a generator seeded from
(seed, epoch) and cut into global batches (``data.partition.epoch_batches``), so W
workers with b windows each take the steps of one process with W·b.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distlstm._flags import option
from distlstm.bptt.tasks import Batch, ShuffledMinibatches, regressor_from_spec
from distlstm.data.forecast import forecast_windows
from distlstm.data.longlag import LongLagData
from distlstm.data.table import read_table
from distlstm.models.cells import State


@dataclass
class TableTask(ShuffledMinibatches):
    """Forecast a CSV column from a window of past rows; see the module docstring."""

    data: str
    target: str
    inputs: tuple[str, ...] = ()
    rank: int = 0
    world_size: int = 1
    window: int = 16
    horizon: int = 1
    past_target: bool = True
    test_fraction: float = 0.2
    scaling: str = "standardize"  # fitted on the training rows: standardize, minmax or none
    batch_size: int = 32  # b, windows per worker
    hidden: int = 16
    layers: int = 1
    cell: str = "lstm"
    cell_options: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float64"
    metric: str = "test_mse"
    stateful: bool = False
    unit = "windows"  # the rows of a minibatch, as errors name them

    def __post_init__(self) -> None:
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"the test fraction must lie in (0, 1), got {self.test_fraction} "
                             f"(fix {option('test_fraction', '--test-fraction')})")
        if self.scaling == "causal":
            raise ValueError("the csv task fits its scaler on the training rows; choose standardize, minmax or none")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        table = read_table(self.data)
        split = len(table) - round(len(table) * self.test_fraction)  # rows [0, split) train the model and scaler
        fc = forecast_windows(table, self.target, self.inputs, window=self.window, horizon=self.horizon,
                              scaling=self.scaling, past_target=self.past_target, fit_rows=split)
        label_rows = fc.ends + self.horizon - 1
        labelled = torch.isfinite(fc.d)
        parts = {"training": labelled & (label_rows < split), "test": labelled & (label_rows >= split)}
        for name, rows in parts.items():
            if not bool(rows.any()):
                raise ValueError(f"{self.data} has {len(table)} rows; with a window of {self.window}, a horizon of "
                                 f"{self.horizon} and a test fraction of {self.test_fraction} the {name} part holds "
                                 f"no labelled window; change {option('test_fraction', '--test-fraction')} or "
                                 f"{option('window', '--window')}, or add rows")
        lengths = torch.full((len(fc),), self.window, dtype=torch.long)
        dtype = getattr(torch, self.dtype)
        self.train, self.test = (LongLagData(fc.x[rows].to(dtype), lengths[rows], fc.d[rows].to(dtype))
                                 for rows in parts.values())
        self.scale = float(fc.scale[0])  # one map fitted on the training rows
        self.features = fc.features
        self.maps = fc.maps

    def model_spec(self) -> dict[str, Any]:
        """What rebuilding the model needs (:func:`~distlstm.bptt.tasks.regressor_from_spec`)."""
        return {"kind": "sequence-regressor", "dtype": self.dtype,
                "config": {"input_size": len(self.features), "hidden_size": self.hidden, "num_layers": self.layers,
                           "cell": self.cell, "pooling": "last", "head_bias": True, **self.cell_options}}

    def build_model(self, seed: int) -> nn.Module:
        return regressor_from_spec(self.model_spec(), seed)

    def batch(self, step: int, seed: int) -> Batch:
        rows = self.batch_rows(step, seed)
        return Batch(self.train.x[rows], self.train.y[rows], None, True)

    def loss(self, model: nn.Module, batch: Batch, state: State | None) -> tuple[Tensor, State | None]:
        return ((model(batch.x) - batch.y) ** 2).mean(), None

    def full_batch(self) -> LongLagData:
        """The whole training set, for full-batch L-BFGS / CG (loss: MSE of the scaled target)."""
        return self.train

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> float:
        """Test MSE in the target's own units (squared)."""
        device = next(model.parameters()).device
        pred = model(self.test.x.to(device)).cpu()
        return float(((pred - self.test.y) ** 2).mean()) * self.scale**2

    def forecast_artifacts(self) -> dict[str, Any]:
        """What forecasting new rows needs besides the model (:func:`table_forecaster`): columns, window, scaler."""
        return {"target": self.target, "inputs": list(self.inputs), "window": self.window, "horizon": self.horizon,
                "past_target": self.past_target, "scaling": self.scaling, "maps": [list(m) for m in self.maps or ()],
                "features": list(self.features)}

    def describe(self) -> dict[str, Any]:
        """Figures for summary.json: the data, and the test MSE of predicting the training mean."""
        baseline = float(((self.train.y.mean() - self.test.y) ** 2).mean()) * self.scale**2
        return {"test_mse_mean_predictor": baseline, "test_mse_units": f"{self.target}'s units squared",
                "features": self.features, "training_windows": len(self.train), "test_windows": len(self.test)}


def table_forecaster(model: nn.Module, artifacts: dict[str, Any]) -> Callable[[str | Path], list[dict[str, Any]]]:
    """Forecasts of a trained csv model on a table with the training columns, in the target's own units.

    ``artifacts`` is :meth:`TableTask.forecast_artifacts` (stored in the run's
    checkpoint); the windows of the new table are scaled with the scaler fitted on the
    training rows. One row per window: ``row`` (the label's line in the file),
    ``target`` (None where the cell is empty), ``prediction``, and ``lower`` / ``upper``
    None (no intervals: a point estimate).
    """
    maps = [tuple(m) for m in artifacts["maps"]]

    @torch.no_grad()
    def forecast(path: str | Path) -> list[dict[str, Any]]:
        fc = forecast_windows(read_table(path), artifacts["target"], artifacts["inputs"],
                              window=artifacts["window"], horizon=artifacts["horizon"],
                              scaling=artifacts["scaling"], past_target=artifacts["past_target"], maps=maps)
        dtype = next(model.parameters()).dtype
        predicted = fc.to_data_units(model(fc.x.to(dtype)).to(fc.shift.dtype))
        actual = fc.to_data_units(fc.d)
        return [{"row": line, "target": float(a) if bool(torch.isfinite(a)) else None, "prediction": float(p),
                 "lower": None, "upper": None} for line, a, p in zip(fc.label_lines, actual, predicted, strict=True)]

    return forecast
