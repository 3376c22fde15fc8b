"""Running online algorithms on streams and writing what a user reads: CSV, PNG, summary.

Shared by ``distlstm online`` (one algorithm on a user's series) and the Ergen &
Kozat reproduction (every algorithm on two data sets, plus sweeps).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distlstm.data.observation import Observation
from distlstm.models.functional import FunctionalModel
from distlstm.models.networks import SequenceRegressor
from distlstm.network.graphs import Topology
from distlstm.network.transport import InProcessTransport, Transport
from distlstm.online import make_algorithm, run_online
from distlstm.online.loop import OnlineResult
from distlstm.runs import plot_curves, write_csv

# Settings tuned on the exchange-rate task (hidden 4, standardised series); see docs/online.md.
DEFAULT_SETTINGS: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 0.1},
    "dsgd": {"lr": 0.1},
    "ekf": {"sigma2": 0.01, "q": 1e-6, "s0": 0.1},
    "dekf": {"sigma2": 0.01, "q": 1e-6, "s0": 0.1},
    "pf": {"num_particles": 500, "sigma2": 0.01, "q": 1e-3, "s0": 0.5},
    "dpf": {"num_particles": 500, "sigma2": 0.01, "q": 1e-3, "s0": 0.5, "walk_steps": 4},
}


@dataclass(frozen=True)
class RunSummary:
    """The figures every online run reports (``summary.json`` entries)."""

    dataset: str
    algorithm: str
    final_mse: float
    mse_naive: float
    running_mse_end: float
    mean_running_mse: float  # area under the learning curve / steps: lower = faster convergence
    coverage95: float
    seconds_per_step: float
    bytes_per_node_per_step: float
    messages_per_node_per_step: float
    skipped_labels: int
    steps: int
    n_theta: int
    settings: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def regressor(input_size: int, hidden: int, seed: int) -> tuple[FunctionalModel, torch.Tensor]:
    """Ergen & Kozat's model in float64, and the common initial θ₀ drawn from ``seed``."""
    torch.manual_seed(seed)
    fm = FunctionalModel(SequenceRegressor(input_size, hidden).double())
    return fm, fm.flatten()


def run_one(name: str, streams: Sequence[Sequence[Observation]], fm: FunctionalModel, theta0: torch.Tensor,
            topology: Topology, *, seed: int, settings: Mapping[str, Any] | None = None,
            dataset: str = "", mse_naive: float = math.nan, steps: int | None = None,
            progress: bool = False, transport: Transport | None = None) -> tuple[OnlineResult, RunSummary]:
    """Run one algorithm with its default settings overridden by ``settings``.

    ``transport`` defaults to all nodes in this process; with a
    :class:`~distlstm.network.torch_transport.TorchDistTransport` each process runs its
    own nodes and the records of all processes are gathered on every rank.
    """
    merged = {**DEFAULT_SETTINGS.get(name, {}), **(settings or {})}
    algorithm = make_algorithm(name, fm, **dict(merged))
    transport = transport or InProcessTransport(topology)
    result = run_online(algorithm, streams, theta0, transport, seed=seed, steps=steps, progress=progress)
    if not isinstance(transport, InProcessTransport):
        from distlstm.online.gather import gather_result

        result = gather_result(result, transport)
    running = result.running_mse()
    summary = RunSummary(
        dataset=dataset, algorithm=name, final_mse=result.final_mse(), mse_naive=mse_naive,
        running_mse_end=running[-1], mean_running_mse=sum(running) / len(running),
        coverage95=result.coverage95(), seconds_per_step=result.seconds_per_step,
        bytes_per_node_per_step=result.bytes_per_node_per_step,
        messages_per_node_per_step=sum(result.messages_per_step) / max(result.steps, 1),
        skipped_labels=result.skipped_labels, steps=result.steps, n_theta=fm.numel, settings=merged)
    return result, summary


def write_curves(out: Path, stem: str, results: Mapping[str, OnlineResult], title: str,
                 reference: Mapping[str, float] | None = None) -> None:
    """``{stem}.csv`` (per-step node-averaged and running MSE per algorithm) and ``{stem}.png``."""
    steps = max(r.steps for r in results.values())
    rows = []
    curves = {name: r.mse_curve() for name, r in results.items()}
    runnings = {name: r.running_mse() for name, r in results.items()}
    for t in range(steps):
        row: dict[str, Any] = {"step": t + 1}
        for name in results:
            row[f"{name}_mse"] = _fmt(curves[name][t]) if t < len(curves[name]) else ""
            row[f"{name}_running_mse"] = _fmt(runnings[name][t]) if t < len(runnings[name]) else ""
        rows.append(row)
    write_csv(out / f"{stem}.csv", rows)
    plot_curves(out / f"{stem}.png",
                {name: (list(range(1, len(r) + 1)), r) for name, r in runnings.items()},
                xlabel="time step (per node)", ylabel="running MSE (averaged over nodes)", title=title,
                hlines=reference, logy=True)


def _fmt(v: float) -> str:
    return "" if math.isnan(v) else f"{v:.6g}"
