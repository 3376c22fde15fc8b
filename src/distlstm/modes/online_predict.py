"""An online run's model out of its folder: node 0's estimate, and forecasts for another CSV.

The forecaster cuts the new file into windows exactly as the run did (the same
target, inputs, window, horizon and past-target feature) and scales it:

* ``causal`` runs — with the new file's own statistics of earlier rows (as the run
  scaled its own file), so the first ``warmup`` rows of the new file only feed them;
* fitted runs (``standardize`` / ``minmax`` / ``none``) — with the maps fitted on the
  run's file, never refitted on the new one.

Each forecast is node 0's predictive distribution at the end of the run, without
further updates: mean d̂ and, where the algorithm has one, variance v (EKF/DEKF:
H Σ Hᵀ + q‖H‖² + σ²; PF/DPF: the particles' weighted spread + σ²; times the node's
interval calibration factor c where the run has ``interval_window``), mapped back to the
target's units: ``shift + scale · d̂`` and the 95% interval ``± 1.96 · scale · √v``.
A stateful EKF carries its LSTM state from each window to the next through the file
(its filter run forward with no labels).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from distlstm.data.forecast import check_rows_for_run, forecast_windows
from distlstm.data.observation import Observation
from distlstm.data.table import read_table
from distlstm.models.functional import FunctionalModel
from distlstm.models.networks import SequenceRegressor
from distlstm.modes import LoadedRun
from distlstm.online import make_algorithm
from distlstm.online.base import LocalAlgorithm, NetworkAlgorithm, OnlineAlgorithm, State
from distlstm.online.records import Z95, node_generator
from distlstm.ops.psd import check_psd


def _model(art: Mapping[str, Any]) -> SequenceRegressor:
    """The run's model architecture (runs from before ``single_bias`` have two biases per gate)."""
    return SequenceRegressor(int(art["input_size"]), int(art["hidden"]),
                             single_bias=bool(art.get("single_bias", False))).double()


def node_state(algorithm: OnlineAlgorithm, states: Mapping[str, torch.Tensor], node: int) -> State:
    """Node ``node``'s algorithm state from the checkpoint's stacked per-node tensors."""
    theta0 = algorithm.fm.flatten()
    kind = type(algorithm.init(theta0, node, torch.Generator()))
    return kind(*(states[f][node].clone() for f in kind._fields))


class OnlineForecaster:
    """Forecasts of a finished online run for a CSV with the run's columns (see the module docstring)."""

    def __init__(self, artifacts: Mapping[str, Any], states: Mapping[str, torch.Tensor], seed: int) -> None:
        if "columns" not in artifacts:
            raise ValueError("this online run was not trained on a CSV file (it has no column names), so it has no "
                             "forecaster")
        self.art = dict(artifacts)
        model = _model(artifacts)
        self.algorithm = make_algorithm(str(artifacts["algorithm"]), FunctionalModel(model),
                                        **dict(artifacts["settings"]))
        self.state = node_state(self.algorithm, states, 0)
        if getattr(self.state, "P", None) is not None:  # its predictive variance comes from Σ
            check_psd(self.state.P, "node 0's filter state in the checkpoint")
        self.gen = node_generator(seed, 0)

    def check_columns(self, names: list[str], path: Path) -> None:
        """The file must have the run's columns: an error names the missing and the extra ones."""
        run_cols = list(self.art["columns"])
        if names == run_cols:
            return
        missing = [c for c in run_cols if c not in names]
        extra = [c for c in names if c not in run_cols]
        what = "; ".join(part for part in (f"missing {missing}" if missing else "",
                                           f"extra {extra}" if extra else "") if part)
        raise ValueError(f"{path} has columns {names}, the run was trained on {run_cols} "
                         f"({what or 'another order'}); give a CSV with the run's columns in the same order")

    def __call__(self, path: Path | str) -> list[dict[str, Any]]:
        path = Path(path)
        table = read_table(path)
        if not table.has_header and self.art["has_header"]:
            raise ValueError(f"{path} has no header; the run's CSV had the columns {self.art['columns']}")
        self.check_columns(list(table.names), path)
        art = self.art
        fitted = art["scaling"] != "causal"
        check_rows_for_run(table, window=int(art["window"]), horizon=int(art["horizon"]), scaling=str(art["scaling"]),
                           warmup=int(art["warmup"]))
        fc = forecast_windows(table, int(art["target_index"]), list(art["input_indices"]), window=int(art["window"]),
                              horizon=int(art["horizon"]), scaling=str(art["scaling"]), warmup=int(art["warmup"]),
                              past_target=bool(art["past_target"]),
                              maps=[tuple(m) for m in art["maps"]] if fitted else None)
        rows = []
        state = self.state
        for i in range(len(fc)):
            x = fc.x[i]
            pred = self.algorithm.predict(state, x)
            shift, scale = float(fc.shift[i]), float(fc.scale[i])
            half = Z95 * scale * math.sqrt(pred.var) if math.isfinite(pred.var) else None
            mean = shift + scale * pred.mean
            d = float(fc.d[i])
            rows.append({"row": fc.label_lines[i], "target": shift + scale * d if math.isfinite(d) else None,
                         "prediction": mean, "lower": None if half is None else mean - half,
                         "upper": None if half is None else mean + half})
            if art.get("settings", {}).get("stateful"):  # carry the LSTM state to the next window, no label
                local = self.algorithm.local if isinstance(self.algorithm, NetworkAlgorithm) else self.algorithm
                assert isinstance(local, LocalAlgorithm)
                state = local.update_node(state, Observation(x, math.nan), pred, self.gen, where=f"{path} row {i}")
        return rows


def load_online(ckpt: Mapping[str, Any], folder: Path) -> LoadedRun:
    """:class:`LoadedRun` of an online run: node 0's model and, for a CSV run, its forecaster."""
    state = ckpt["state"]
    art = dict(state["artifacts"])
    model = _model(art)
    model.load_state_dict(state["model"])
    config = dict(ckpt["config"])
    seed = int(config.get("loop", {}).get("seed", 0))
    forecaster = OnlineForecaster(art, state["algorithm"]["states"], seed) if "columns" in art else None
    return LoadedRun(folder=Path(folder), mode="online", command=str(config.get("command", "online")),
                     step=int(ckpt["step"]), config=config, model=model, artifacts=art, forecaster=forecaster)
