"""Extended Kalman filter on θ at every node (Ergen & Kozat §3.1, no communication).

State-space form (stateless default: every sequence starts from c₀ = y₀ = 0)::

    θ_t = θ_{t-1} + e_t,          e_t ~ N(0, Q),  Q = q I
    d_t = h(θ_t; X_t) + ε_t,      ε_t ~ N(0, σ²)

Time update (F = I, so no dense F Σ Fᵀ):   Σ_{t|t-1} = Σ_{t-1|t-1} + q I
Measurement update with H = ∂h/∂θ at θ̂_{t|t-1} (one reverse-mode pass), rank one
(:func:`distlstm.ops.kalman.scalar_update`)::

    r = H Σ Hᵀ + σ²,   K = Σ Hᵀ / r,   θ̂ ← θ̂ + K (d − h(θ̂)),   Σ ← Σ − K Kᵀ r

Predictive distribution of d before the label: mean h(θ̂_{t-1}), variance
H Σ_{t|t-1} Hᵀ + σ². Σ₀ = s₀ I. Cost O(n_θ²) time and memory per step.

σ² is either fixed (``noise="fixed"``: the configured value throughout, the default) or
estimated online from the innovations (``noise="adaptive"``, :mod:`distlstm.ops.noise`,
starting at the configured value); the step's update uses the σ̂² its prediction used.
With ``interval_window=W`` (the run default, W = 100) the reported variance is scaled by
the conformal factor c of the node's last W normalised errors, at a level steered by the
node's own misses (adaptive conformal inference, :mod:`distlstm.ops.noise`), so that the 95% interval
covers 95% (docs/results/calibration); the filter's update never sees c.

| symbol | variable |
|---|---|
| θ̂, Σ | ``state.theta``, ``state.P`` |
| s₀, q, σ² | ``cfg.s0``, ``cfg.q``, ``cfg.sigma2`` (σ̂²: ``state.noise``) |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from distlstm.models.functional import FunctionalModel
from distlstm.online.base import LocalAlgorithm, Observation, Prediction, check_positive, check_theta
from distlstm.online.noise import next_noise, reported_variance, step_sigma2
from distlstm.ops import memory
from distlstm.ops.kalman import check_covariance, scalar_update
from distlstm.ops.noise import check_noise, initial_noise

LINEARISATIONS = ("block", "sequential")


@dataclass(frozen=True)
class EKFConfig:
    sigma2: float = 0.01  # σ², measurement noise variance
    q: float = 1e-6  # process noise: Q = q I
    s0: float = 0.1  # initial covariance: Σ₀ = s₀ I
    joseph: bool = False  # Joseph-form covariance update
    stateful: bool = False  # filter [carry; θ] (see stateful_ekf.py) instead of θ alone
    s0_carry: float = 0.0  # initial variance of the carry (stateful only); the first carry is zero
    q_carry: float = 0.0  # process noise on the carry (stateful only); the paper's e_t covers the whole state
    noise: str = "fixed"  # or "adaptive": σ² estimated from the innovations (ops/noise.py)
    noise_window: int = 100  # steps the adaptive σ² estimate averages over (forgetting 1 − 1/W)
    interval_window: int = 0  # calibrate the 95% interval on this many recent errors (ops/noise.py); 0: off
    linearisation: str = "block"  # DEKF only: "block" (at the predicted state) or "sequential" (at the running ψ)

    def __post_init__(self) -> None:
        check_positive(self.sigma2, "sigma2 (σ²)")
        check_noise(self.noise, self.noise_window, self.interval_window)
        if self.linearisation not in LINEARISATIONS:
            raise ValueError(f"linearisation must be one of {LINEARISATIONS}, got {self.linearisation!r}")
        check_positive(self.s0, "s0")
        if not self.s0_carry >= 0:
            raise ValueError(f"s0_carry must be ≥ 0, got {self.s0_carry}")
        if not self.q_carry >= 0:
            raise ValueError(f"q_carry must be ≥ 0, got {self.q_carry}")
        if not self.q >= 0:
            raise ValueError(f"q (process noise) must be ≥ 0, got {self.q}")


class EKFState(NamedTuple):
    theta: Tensor  # (n,) θ̂_{t-1|t-1}
    P: Tensor  # (n, n) Σ_{t-1|t-1}
    noise: Tensor  # (2,) the adaptive σ² estimate's [weight, mean] (constant with noise="fixed")


def time_update(P: Tensor, q: float | Tensor) -> Tensor:
    """Σ_{t|t-1} = Σ_{t-1|t-1} + q I (F = I), or + diag(q) for per-coordinate q (n,): a fresh tensor unless q = 0."""
    if not isinstance(q, Tensor) and not q:
        return P
    out = memory.empty_like(P).copy_(P)  # no n × n identity: one pass, and the diagonal
    out.diagonal().add_(q)
    return out


class EKF(LocalAlgorithm):
    """EKF on θ at every node, no communication."""

    name = "ekf"

    def __init__(self, fm: FunctionalModel, cfg: EKFConfig | None = None) -> None:
        super().__init__(fm)
        self.cfg = cfg or EKFConfig()

    def init(self, theta0: Tensor, node: int, gen: torch.Generator) -> EKFState:
        n = theta0.shape[0]
        return EKFState(theta0.clone(), self.cfg.s0 * torch.eye(n, dtype=theta0.dtype),
                        initial_noise(self.cfg.sigma2, self.cfg.interval_window, theta0.dtype))

    def predict(self, state: EKFState, x: Tensor) -> Prediction:
        value, H = self.output_and_grad(state.theta, x)
        return self.prediction(state, value, H)

    def prediction(self, state: EKFState, value: Tensor, H: Tensor, PH: Tensor | None = None) -> Prediction:
        """Mean h(θ̂) and variance H Σ_{t|t-1} Hᵀ + σ² from the model's output ``value`` and its row ``H`` at θ̂
        (and Σ Hᵀ if the caller has it); ``aux`` = (H, Σ Hᵀ) for the update."""
        PH = state.P @ H if PH is None else PH
        sigma2 = step_sigma2(self.cfg, state.noise)
        var = float(H @ PH) + self.cfg.q * float(H @ H) + sigma2
        return Prediction(float(value), reported_variance(self.cfg, state.noise, var), (H, PH))

    def update_node(self, state: EKFState, obs: Observation, pred: Prediction, gen: torch.Generator,
                    where: str) -> EKFState:
        if not obs.labelled:
            return EKFState(state.theta, time_update(state.P, self.cfg.q), state.noise)
        H, PH = pred.aux
        sigma2 = step_sigma2(self.cfg, state.noise)
        upd = scalar_update(state.theta, state.P, H, torch.tensor(obs.d - pred.mean, dtype=state.P.dtype),
                            sigma2, self.cfg.joseph, q=self.cfg.q, PH=PH)
        check_covariance(upd.P, f"EKF at {where}")
        check_theta(upd.a, f"EKF at {where}")
        return EKFState(upd.a, upd.P, next_noise(self.cfg, state.noise, obs, pred, sigma2))

    def estimate(self, state: EKFState) -> Tensor:
        return state.theta
