"""The one online run loop: predict, record, update — for every algorithm.

``run_online`` drives any :class:`~distlstm.online.base.OnlineAlgorithm` over
per-node streams of observations on a topology and returns per-step metrics:
squared prediction errors, predictive variances (95% interval coverage), skipped
labels, bytes and messages sent, and seconds per step.

Randomness: node k's generator is seeded from ``(seed, k)``; the common initial θ₀
comes from the model as built under ``torch.manual_seed(seed)`` by the caller.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from distlstm.network.transport import Transport
from distlstm.online.base import Observation, OnlineAlgorithm, Prediction

Z95 = 1.959963984540054


def node_generator(seed: int, node: int) -> torch.Generator:
    """Node k's generator, derived from the run seed and the node id."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + 7919 * int(node) + 1)


@dataclass
class OnlineResult:
    """Per-step, per-node records of one online run (lists indexed [step][node])."""

    algorithm: str
    num_nodes: int
    sq_errors: list[list[float]] = field(default_factory=list)  # NaN where the label was missing
    variances: list[list[float]] = field(default_factory=list)  # NaN where not modelled
    bytes_per_step: list[float] = field(default_factory=list)  # mean over nodes
    messages_per_step: list[float] = field(default_factory=list)
    seconds: float = 0.0
    skipped_labels: int = 0
    final_thetas: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.sq_errors)

    def mse_curve(self) -> list[float]:
        """Node-averaged squared error at each step (labelled nodes only)."""
        return [_nanmean(row) for row in self.sq_errors]

    def running_mse(self) -> list[float]:
        """Time-averaged MSE up to each step: the paper's learning curve."""
        out, total, count = [], 0.0, 0
        for row in self.sq_errors:
            vals = [v for v in row if not math.isnan(v)]
            total += sum(vals)
            count += len(vals)
            out.append(total / count if count else math.nan)
        return out

    def final_mse(self, fraction: float = 0.2) -> float:
        """Mean squared error over the last ``fraction`` of the steps."""
        start = int(self.steps * (1 - fraction))
        return _nanmean([v for row in self.sq_errors[start:] for v in row])

    def coverage95(self) -> float:
        """Fraction of labels inside the 95% predictive interval (NaN without variances)."""
        hits, total = 0, 0
        for errs, vars_ in zip(self.sq_errors, self.variances, strict=True):
            for e, v in zip(errs, vars_, strict=True):
                if math.isnan(e) or math.isnan(v):
                    continue
                total += 1
                hits += e <= Z95 * Z95 * v
        return hits / total if total else math.nan

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(self.steps, 1)

    @property
    def bytes_per_node_per_step(self) -> float:
        return sum(self.bytes_per_step) / max(self.steps, 1)


def squared_error(d: float, d_hat: float) -> float:
    """(d − d̂)², saturating at inf instead of raising OverflowError."""
    e = d - d_hat
    return e * e if abs(e) < 1e150 else math.inf


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def check_streams(streams: Sequence[Sequence[Observation]], num_nodes: int) -> int:
    """Validate per-node streams; returns the number of steps (the shortest stream)."""
    if len(streams) != num_nodes:
        raise ValueError(f"expected one stream per node ({num_nodes}), got {len(streams)}")
    lengths = [len(s) for s in streams]
    if min(lengths) == 0:
        raise ValueError(f"every node needs at least one observation; stream lengths {lengths}")
    p = streams[0][0].x.shape[-1]
    for k, stream in enumerate(streams):
        for t, ob in enumerate(stream):
            if ob.x.dim() != 2 or ob.x.shape[0] < 1 or ob.x.shape[1] != p:
                raise ValueError(f"node {k}, step {t}: expected a sequence of shape (T ≥ 1, {p}), "
                                 f"got {tuple(ob.x.shape)}")
            if not bool(torch.isfinite(ob.x).all()):
                raise ValueError(f"node {k}, step {t}: the input sequence contains NaN/inf")
    return min(lengths)


def run_online(algorithm: OnlineAlgorithm, streams: Sequence[Sequence[Observation]], theta0: torch.Tensor,
               transport: Transport, *, seed: int = 0, steps: int | None = None,
               progress: bool = False) -> OnlineResult:
    """Run ``algorithm`` over the streams: at each step every node predicts, then all update."""
    num_nodes = transport.topology.num_nodes
    total = check_streams(streams, num_nodes)
    steps = total if steps is None else min(steps, total)
    nodes = transport.local_nodes
    gens = {k: node_generator(seed, k) for k in nodes}
    states = {k: algorithm.init(theta0, k, gens[k]) for k in nodes}
    result = OnlineResult(algorithm.name, num_nodes)
    start = time.perf_counter()
    bar = tqdm(range(steps), desc=algorithm.name, disable=not progress, unit="step", leave=False)
    for t in bar:
        obs = {k: streams[k][t] for k in nodes}
        preds: dict[int, Prediction] = {k: algorithm.predict(states[k], obs[k].x) for k in nodes}
        errors, variances = [], []
        for k in nodes:
            where = f"{algorithm.name} at node {k}, step {t}"
            if not math.isfinite(preds[k].mean):
                raise FloatingPointError(f"{where}: the prediction is {preds[k].mean}; the estimate diverged")
            if obs[k].labelled:
                errors.append(squared_error(obs[k].d, preds[k].mean))
                if math.isinf(errors[-1]):
                    raise FloatingPointError(f"{where}: the squared prediction error overflows (label {obs[k].d:.3g}, "
                                             f"prediction {preds[k].mean:.3g}); check the data's scale")
            else:
                errors.append(math.nan)
                result.skipped_labels += 1
            variances.append(preds[k].var)
        result.sq_errors.append(errors)
        result.variances.append(variances)
        before = list(transport.stats.bytes), list(transport.stats.messages)
        states = algorithm.update(states, obs, preds, transport, gens, t)
        result.bytes_per_step.append((sum(transport.stats.bytes) - sum(before[0])) / num_nodes)
        result.messages_per_step.append((sum(transport.stats.messages) - sum(before[1])) / num_nodes)
    result.seconds = time.perf_counter() - start
    result.final_thetas = {k: algorithm.estimate(states[k]) for k in nodes}
    return result
