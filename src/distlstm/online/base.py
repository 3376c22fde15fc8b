"""What every online algorithm shares: observations, predictions, the algorithm contract.

Online protocol (Ergen & Kozat §3), at every time step t and every node k:

1. **predict** d̂_{k,t} (and, where the algorithm has one, a predictive variance)
   from the current estimate, before the label is seen (``predict_nodes``: every node
   at once, so a distributed algorithm may exchange sequences first);
2. receive d_{k,t}; the squared error (d − d̂)² is recorded;
3. **update** — every node at once, since distributed algorithms exchange messages
   with their neighbours through a :class:`~distlstm.network.transport.Transport`.

An algorithm object holds only fixed settings; per-node state is a NamedTuple of
tensors, replaced (never mutated) by ``update``. A NaN label means "no label": the
node records nothing, and its measurement update is skipped (θ unchanged).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor

from distlstm.data.observation import Observation
from distlstm.models.functional import FunctionalModel
from distlstm.network.transport import Transport


class Prediction(NamedTuple):
    """Predictive mean and variance of d before the label (variance NaN if not modelled)."""

    mean: float
    var: float
    aux: Any = None  # algorithm-specific values reused by update (e.g. the EKF's H)


__all__ = ["LocalAlgorithm", "NetworkAlgorithm", "Observation", "OnlineAlgorithm", "Prediction", "State",
           "check_positive", "check_theta"]

State = Any  # a NamedTuple of tensors, one per algorithm


def check_positive(value: float, name: str) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


class OnlineAlgorithm(ABC):
    """Fixed settings of one algorithm; ``init``/``predict``/``update`` are pure in the state."""

    name: ClassVar[str]
    communicates: ClassVar[bool] = False

    def __init__(self, fm: FunctionalModel) -> None:
        self.fm = fm

    def output(self, theta: Tensor, x: Tensor) -> Tensor:
        """h(θ; X): the model's estimate for one sequence x (T, p), for θ (n,) → () or Θ (B, n) → (B,)."""
        out = self.fm(theta, x.unsqueeze(0))
        return out[..., 0]

    def output_and_grad(self, theta: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """h(θ; X) and ∂h/∂θ (n,)."""
        return self.fm.value_and_grad(theta, x.unsqueeze(0))

    @abstractmethod
    def init(self, theta0: Tensor, node: int, gen: torch.Generator) -> State:
        """The node's state before any data, around the common initial θ0."""

    @abstractmethod
    def predict(self, state: State, x: Tensor) -> Prediction:
        """Predictive mean (and variance) of d for sequence x (T, p)."""

    def predict_nodes(self, states: Mapping[int, State], xs: Mapping[int, Tensor],
                      transport: Transport) -> dict[int, Prediction]:
        """Every local node's prediction for its sequence ``xs[k]``: ``predict`` at each.

        A distributed algorithm may use this round to send its neighbours what its update
        will need before the labels come (the DEKF sends its sequence, and differentiates
        its neighbours' together with its own); every process calls it at the same step.
        """
        return {k: self.predict(states[k], xs[k]) for k in transport.local_nodes}

    @abstractmethod
    def update(self, states: Mapping[int, State], obs: Mapping[int, Observation],
               preds: Mapping[int, Prediction], transport: Transport,
               gens: Mapping[int, torch.Generator], step: int) -> dict[int, State]:
        """Every local node's next state after seeing its label (and its neighbours' messages)."""

    @abstractmethod
    def estimate(self, state: State) -> Tensor:
        """The node's point estimate θ̂ (n,)."""


class LocalAlgorithm(OnlineAlgorithm):
    """An algorithm whose nodes never communicate: ``update`` maps ``update_node`` over nodes."""

    def update(self, states: Mapping[int, State], obs: Mapping[int, Observation],
               preds: Mapping[int, Prediction], transport: Transport,
               gens: Mapping[int, torch.Generator], step: int) -> dict[int, State]:
        return {k: self.update_node(states[k], obs[k], preds[k], gens[k], where=f"node {k}, step {step}")
                for k in transport.local_nodes}

    @abstractmethod
    def update_node(self, state: State, obs: Observation, pred: Prediction, gen: torch.Generator,
                    where: str) -> State:
        """One node's update on its own label."""


class NetworkAlgorithm(OnlineAlgorithm):
    """A distributed algorithm built on a local one: same per-node state, prediction and
    estimate as ``local``; only ``update`` (which talks to neighbours) is its own."""

    communicates = True

    def __init__(self, fm: FunctionalModel, local: LocalAlgorithm) -> None:
        super().__init__(fm)
        self.local = local

    def init(self, theta0: Tensor, node: int, gen: torch.Generator) -> State:
        return self.local.init(theta0, node, gen)

    def predict(self, state: State, x: Tensor) -> Prediction:
        return self.local.predict(state, x)

    def estimate(self, state: State) -> Tensor:
        return self.local.estimate(state)


def check_theta(theta: Tensor, where: str) -> None:
    if not bool(torch.isfinite(theta).all()):
        raise FloatingPointError(f"{where}: the parameter estimate became NaN/inf; lower the step size")
