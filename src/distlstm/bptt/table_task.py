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

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distlstm._flags import option
from distlstm.bptt.tasks import Batch, ShuffledMinibatches, model_from_spec
from distlstm.data.forecast import check_rows_for_run, forecast_windows
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
        self.maps, self.columns = fc.maps, len(table.names)

    def model_spec(self) -> dict[str, Any]:
        """The model (kind, :class:`SequenceRegressor` arguments, dtype) and how the table was windowed and scaled.

        Everything :func:`forecast_table` needs to forecast new rows without the training data.
        """
        return {"kind": "csv", "dtype": self.dtype,
                "config": {"input_size": len(self.features), "hidden_size": self.hidden, "num_layers": self.layers,
                           "cell": self.cell, "pooling": "last", "head_bias": True, **self.cell_options},
                "target": self.target, "inputs": list(self.inputs), "features": list(self.features),
                "columns": self.columns, "window": self.window, "horizon": self.horizon,
                "past_target": self.past_target, "maps": [list(m) for m in self.maps]}

    def build_model(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return model_from_spec(self.model_spec())

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

    def describe(self) -> dict[str, Any]:
        """Figures for summary.json: the data, and the test MSE of predicting the training mean."""
        baseline = float(((self.train.y.mean() - self.test.y) ** 2).mean()) * self.scale**2
        return {"test_mse_mean_predictor": baseline, "test_mse_units": f"{self.target}'s units squared",
                "features": self.features, "training_windows": len(self.train), "test_windows": len(self.test)}


@torch.no_grad()
def forecast_table(model: nn.Module, spec: Mapping[str, Any], path: str | Path) -> list[dict[str, Any]]:
    """``model``'s forecast for every window of the CSV at ``path``, in the target's own units.

    ``spec`` is the training task's :meth:`TableTask.model_spec`: the windows are built
    and scaled as in training (the scaler fitted on the training rows). One row per
    window: ``row`` (the label's line in the file), ``target`` (None where the cell is
    empty), ``prediction``, and ``lower`` / ``upper`` None (no interval).
    """
    table = read_table(path)
    if len(table.names) != spec["columns"]:
        raise ValueError(f"{path} has {len(table.names)} column(s); the model was trained on a table of "
                         f"{spec['columns']} ({', '.join(spec['features'])} among them)")
    check_rows_for_run(table, window=spec["window"], horizon=spec["horizon"], scaling="none", warmup=0)
    fc = forecast_windows(table, spec["target"], spec["inputs"], window=spec["window"], horizon=spec["horizon"],
                          scaling="none", past_target=spec["past_target"], maps=spec["maps"])
    weight = next(model.parameters())
    pred = fc.to_data_units(model(fc.x.to(weight.device, weight.dtype)).double().cpu())
    target = fc.to_data_units(fc.d)
    return [{"row": line, "target": float(t) if bool(torch.isfinite(t)) else None, "prediction": float(p),
             "lower": None, "upper": None} for line, t, p in zip(fc.label_lines, target, pred, strict=True)]
