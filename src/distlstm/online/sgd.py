"""Online SGD at every node, and diffusion SGD (adapt-then-combine) across the network.

SGD (Ergen & Kozat §3), with e = d − d̂ and the model gradient ∇_θ d̂::

    θ ← θ + μ e ∇_θ d̂

Diffusion SGD (a first-order distributed baseline; adapt, then combine with the
Metropolis weights c_kl over the neighbourhood N_k)::

    ψ_k = θ_k + μ e_k ∇ d̂_k
    θ_k = Σ_{l ∈ N_k} c_kl ψ_l

Each node sends ψ_k (n_θ numbers) to each neighbour per step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from distlstm.models.functional import FunctionalModel
from distlstm.network.transport import Transport
from distlstm.online.base import (
    LocalAlgorithm,
    NetworkAlgorithm,
    Observation,
    Prediction,
    check_positive,
    check_theta,
)
from distlstm.online.diffusion import diffusion_combine


@dataclass(frozen=True)
class SGDConfig:
    lr: float = 0.05  # μ
    max_step: float | None = 1.0  # clip |μ e| ‖∇d̂‖ to this norm (None: no clipping)

    def __post_init__(self) -> None:
        check_positive(self.lr, "lr (μ)")
        if self.max_step is not None:
            check_positive(self.max_step, "max_step")


class SGDState(NamedTuple):
    theta: Tensor  # (n,)


def sgd_step(theta: Tensor, grad: Tensor, error: float, cfg: SGDConfig) -> Tensor:
    """θ + μ e ∇d̂, with the step's norm clipped to ``max_step``."""
    step = cfg.lr * error * grad
    if cfg.max_step is not None:
        norm = float(step.norm())
        if norm > cfg.max_step:
            step = step * (cfg.max_step / norm)
    return theta + step


class SGD(LocalAlgorithm):
    """Online SGD at every node, no communication."""

    name = "sgd"

    def __init__(self, fm: FunctionalModel, cfg: SGDConfig | None = None) -> None:
        super().__init__(fm)
        self.cfg = cfg or SGDConfig()

    def init(self, theta0: Tensor, node: int, gen: torch.Generator) -> SGDState:
        return SGDState(theta0.clone())

    def predict(self, state: SGDState, x: Tensor) -> Prediction:
        value, grad = self.output_and_grad(state.theta, x)
        return Prediction(float(value), float("nan"), grad)

    def update_node(self, state: SGDState, obs: Observation, pred: Prediction, gen: torch.Generator,
                    where: str) -> SGDState:
        if not obs.labelled:
            return state
        theta = sgd_step(state.theta, pred.aux, obs.d - pred.mean, self.cfg)
        check_theta(theta, where)
        return SGDState(theta)

    def estimate(self, state: SGDState) -> Tensor:
        return state.theta


class DiffusionSGD(NetworkAlgorithm):
    """Adapt-then-combine diffusion SGD with Metropolis weights (state and prediction as SGD)."""

    name = "dsgd"

    def __init__(self, fm: FunctionalModel, cfg: SGDConfig | None = None) -> None:
        cfg = cfg or SGDConfig()
        super().__init__(fm, SGD(fm, cfg))
        self.cfg = cfg

    def update(self, states: Mapping[int, SGDState], obs: Mapping[int, Observation],
               preds: Mapping[int, Prediction], transport: Transport,
               gens: Mapping[int, torch.Generator], step: int) -> dict[int, SGDState]:
        assert isinstance(self.local, SGD)
        psi = {k: self.local.update_node(states[k], obs[k], preds[k], gens[k], f"node {k}, step {step}").theta
               for k in transport.local_nodes}
        return {k: SGDState(theta) for k, theta in diffusion_combine(psi, transport).items()}
