"""Drive an algorithm object over streams through the online mode and the run loop (no run folder)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from distlstm.data.observation import Observation
from distlstm.modes.online import OnlineMode, OnlineProblem
from distlstm.network.transport import Transport
from distlstm.online import DPF, OnlineAlgorithm
from distlstm.online.records import OnlineRecords
from distlstm.runs.config import LoopConfig
from distlstm.runs.loop import run


def settings_of(algorithm: OnlineAlgorithm) -> dict[str, Any]:
    """The ``make_algorithm`` settings that rebuild ``algorithm``."""
    cfg = algorithm.cfg  # type: ignore[attr-defined]
    if isinstance(algorithm, DPF):
        return {"walk_steps": cfg.walk_steps, **asdict(cfg.pf)}
    return asdict(cfg)


def run_online(algorithm: OnlineAlgorithm, streams: list[list[Observation]], theta0: torch.Tensor,
               transport: Transport, *, seed: int = 0, steps: int | None = None) -> OnlineRecords:
    """The records of ``algorithm`` (its model, settings, θ₀) on ``streams``, with ``final_thetas`` attached."""
    mode = OnlineMode(OnlineProblem(streams), algorithm.name, settings_of(algorithm), transport.topology,
                      model=lambda _seed: (algorithm.fm, theta0))
    assert mode.max_steps is not None
    total = mode.max_steps if steps is None else min(steps, mode.max_steps)
    run(mode, LoopConfig(steps=total, seed=seed, progress=False), folder=None)
    records = mode.records
    records.final_thetas = mode.final_thetas()  # type: ignore[attr-defined]
    return records


SCHEDULES = ("rows in the update", "rows in the prediction")


def dekf_block_update(dekf, state, data, schedule):
    """ψ and P of node 0's block update with its observation ``data[0]`` and its neighbours' ``data[1:]``, its
    neighbours' rows computed in the update (after ``predict``) or in the prediction round (``predict_nodes``,
    node 0 on a complete graph with its neighbours, each holding ``state``)."""
    from distlstm.network import InProcessTransport, make_topology

    sigma2 = dekf.cfg.sigma2
    if schedule == "rows in the update":
        pred = dekf.predict(state, data[0].x)
        return dekf.block_update(state, data[0], pred, *dekf._rows_now(state, data), sigma2, "test")
    transport = InProcessTransport(make_topology("complete", len(data)))
    preds = dekf.predict_nodes(dict.fromkeys(range(len(data)), state), {k: ob.x for k, ob in enumerate(data)},
                               transport)
    rows = preds[0].aux[2]
    assert rows.nodes == list(range(1, len(data)))
    labels = state.theta.new_tensor([ob.d for ob in data[1:]])
    return dekf.block_update(state, data[0], preds[0], labels, rows.values, rows.rows, sigma2, "test", rows.PH)
