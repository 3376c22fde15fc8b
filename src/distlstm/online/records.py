"""What an online run records, and the figures computed from the records.

At every step every node predicts its label before seeing it; the run keeps, per
step and node, the squared error (d − d̂)² (NaN: no label) and the predictive
variance (NaN where the algorithm has none), and per step the bytes and messages
sent (mean over nodes) and the step's seconds. The learning curve, final MSE and
95% coverage are pure functions of these records, so a resumed run (whose records
come back from its checkpoint) reports exactly what an uninterrupted one does.

Randomness: node k's generator is seeded from ``(seed, k)`` (:func:`node_generator`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from distlstm.online.base import Observation

Z95 = 1.959963984540054


def node_generator(seed: int, node: int) -> torch.Generator:
    """Node k's generator, derived from the run seed and the node id."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + 7919 * int(node) + 1)


@dataclass
class OnlineRecords:
    """Per-step, per-node records of one online run (lists indexed [step][node])."""

    algorithm: str
    num_nodes: int
    sq_errors: list[list[float]] = field(default_factory=list)  # NaN where the label was missing
    variances: list[list[float]] = field(default_factory=list)  # NaN where not modelled
    bytes_per_step: list[float] = field(default_factory=list)  # mean over nodes
    messages_per_step: list[float] = field(default_factory=list)
    seconds: float = 0.0
    skipped_labels: int = 0
    _total: float = 0.0  # running sums of the squared errors and their count (the running MSE)
    _count: int = 0

    def append(self, errors: list[float], variances: list[float], sent_bytes: float, messages: float,
               seconds: float) -> None:
        """One step's records: every node's squared error and variance, the mean bytes and messages per node."""
        self.sq_errors.append(errors)
        self.variances.append(variances)
        self.bytes_per_step.append(sent_bytes)
        self.messages_per_step.append(messages)
        self.seconds += seconds
        self.skipped_labels += sum(math.isnan(e) for e in errors)
        vals = [v for v in errors if not math.isnan(v)]
        self._total += sum(vals)
        self._count += len(vals)

    @property
    def running_mse_now(self) -> float:
        """The running MSE after the last step (the last point of :meth:`running_mse`)."""
        return self._total / self._count if self._count else math.nan

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """The records as float64 tensors (what a checkpoint stores)."""
        k = self.num_nodes
        return {"sq_errors": torch.tensor(self.sq_errors, dtype=torch.float64).reshape(-1, k),
                "variances": torch.tensor(self.variances, dtype=torch.float64).reshape(-1, k),
                "bytes": torch.tensor(self.bytes_per_step, dtype=torch.float64),
                "messages": torch.tensor(self.messages_per_step, dtype=torch.float64),
                "seconds": torch.tensor(self.seconds, dtype=torch.float64)}

    @classmethod
    def from_tensors(cls, algorithm: str, num_nodes: int, saved: dict[str, torch.Tensor]) -> OnlineRecords:
        """The records :meth:`to_tensors` stored (the running sums rebuilt in the same order)."""
        out = cls(algorithm, num_nodes)
        for errors, variances, b, m in zip(saved["sq_errors"].tolist(), saved["variances"].tolist(),
                                           saved["bytes"].tolist(), saved["messages"].tolist(), strict=True):
            out.append(errors, variances, b, m, 0.0)
        out.seconds = float(saved["seconds"])
        return out

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
