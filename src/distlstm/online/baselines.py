"""Reference forecasters an online learner is compared with, on exactly the learner's steps.

Each reference plays the online protocol at every node: it predicts d_{k,t} from what
the node has seen before t, then sees the label. Its squared errors go into an
:class:`~distlstm.online.records.OnlineRecords` of the same shape as the learner's, so
``final_mse`` (the last 20% of the steps), the running MSE and its mean are computed by
the same functions over the same steps and nodes — a reference figure over all steps
next to a learner's figure over the last 20% (the old ``mse_naive``) is not a
comparison.

* ``last_value`` — d̂ = the last observed value of the target (the random-walk
  forecast); only where the caller knows which input is the target's past;
* ``mean_label`` — d̂ = the mean of the node's labels so far (0 before the first);
* ``linear_rls`` — d̂ = βᵀφ(X) with φ(X) = [x̄; x_m; 1] (mean-pooled input, last input,
  intercept), β fitted online by recursive least squares at each node (λ = 1,
  P₀ = δI). On a univariate window of two values φ spans [x_{m−1}; x_m; 1], so this is
  an AR(2) with intercept fitted online; on word vectors it is a linear model of the
  pooled sequence, the same pooling as the LSTM's.

RLS, per node (Haykin, *Adaptive Filter Theory*, §10)::

    k = P φ / (λ + φᵀ P φ),   β ← β + k (d − βᵀφ),   P ← (P − k φᵀ P) / λ
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from distlstm.data.observation import Observation
from distlstm.online.records import OnlineRecords, squared_error

REFERENCES = ("last_value", "mean_label", "linear_rls")
RLS_DELTA = 100.0  # P₀ = δ I: a weak prior on β for standardised data


def rls_features(x: Tensor) -> Tensor:
    """φ(X) = [x̄; x_m; 1] for a sequence x (T, p): (2p + 1,)."""
    return torch.cat([x.mean(dim=0), x[-1], x.new_ones(1)])


class RecursiveLeastSquares:
    """β fitted online to (φ, d) pairs by exponentially weighted least squares (λ = 1: plain)."""

    def __init__(self, dim: int, delta: float = RLS_DELTA, forgetting: float = 1.0) -> None:
        if not (delta > 0 and 0 < forgetting <= 1):
            raise ValueError(f"RLS needs delta > 0 and 0 < forgetting ≤ 1, got {delta}, {forgetting}")
        self.beta = torch.zeros(dim, dtype=torch.float64)
        self.P = delta * torch.eye(dim, dtype=torch.float64)
        self.forgetting = forgetting

    def predict(self, phi: Tensor) -> float:
        return float(self.beta @ phi)

    def update(self, phi: Tensor, d: float) -> None:
        Pphi = self.P @ phi
        gain = Pphi / (self.forgetting + float(phi @ Pphi))
        self.beta = self.beta + gain * (d - float(self.beta @ phi))
        self.P = (self.P - torch.outer(gain, Pphi)) / self.forgetting
        self.P = 0.5 * (self.P + self.P.mT)


def reference_records(streams: Sequence[Sequence[Observation]], steps: int,
                      last_values: Sequence[Sequence[float]] | None = None,
                      factors: Sequence[float] | None = None) -> dict[str, OnlineRecords]:
    """Records of every reference over the first ``steps`` steps of every node's stream.

    ``last_values[k][t]`` is the target's last observed value before node k's label at
    step t (NaN where unknown); without it there is no ``last_value`` reference.
    ``factors[t·K + k]`` (scale² of that observation) gives the records their MSEs in the
    target's own units too, as the learner's records have them.
    """
    num_nodes = len(streams)
    names = [n for n in REFERENCES if n != "last_value" or last_values is not None]
    out = {name: OnlineRecords(name, num_nodes) for name in names}
    sums, counts = [0.0] * num_nodes, [0] * num_nodes
    rls: list[RecursiveLeastSquares] = []
    for t in range(steps):
        errors: dict[str, list[float]] = {name: [] for name in names}
        for k in range(num_nodes):
            ob = streams[k][t]
            phi = rls_features(ob.x.to(torch.float64))
            if len(rls) < num_nodes:
                rls.append(RecursiveLeastSquares(phi.numel()))
            preds = {"mean_label": sums[k] / counts[k] if counts[k] else 0.0, "linear_rls": rls[k].predict(phi)}
            if last_values is not None:
                preds["last_value"] = float(last_values[k][t])
            for name in names:
                errors[name].append(squared_error(ob.d, preds[name]) if ob.labelled and math.isfinite(preds[name])
                                    else math.nan)
            if ob.labelled:
                sums[k] += ob.d
                counts[k] += 1
                rls[k].update(phi, ob.d)
        for name in names:
            out[name].append(errors[name], [math.nan] * num_nodes, 0.0, 0.0, 0.0,
                             factors[t * num_nodes:(t + 1) * num_nodes] if factors is not None else None)
    return out


def univariate_last_values(streams: Sequence[Sequence[Observation]]) -> list[list[float]] | None:
    """The last value of each window when the input is the target's own past alone (p = 1), else None."""
    if streams[0][0].x.shape[-1] != 1:
        return None
    return [[float(ob.x[-1, 0]) for ob in stream] for stream in streams]
