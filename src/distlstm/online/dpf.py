"""Markov-chain distributed particle filter (MCDPF, Lee & West; Ergen & Kozat's DPF).

Every node holds N particles. At every time step:

1. every node propagates its particles through the state transition (as the PF);
2. the particles walk on the graph for K steps: at each step a particle at node j
   multiplies its weight by the local likelihood raised to a correcting power, then
   moves to a uniformly chosen neighbour of j (simple random walk)::

       ω ← ω · N(d_j; h(θ; X_j), σ²) ^ (2|E| / (K · deg j))

   The walk's stationary law is deg(j)/2|E|, so the product of a particle's factors
   tends to Π_j p(d_j | θ): the centralized likelihood of all nodes' data;
3. each node's particles form its posterior; its estimate is their weighted mean;
   the node resamples to N. If no particle ended at a node it keeps its own
   propagated set (the note's choice).

σ² is fixed or node j's adaptive estimate σ̂²_j from its own prediction innovations
(``noise="adaptive"``, as the PF): a particle visiting j is weighed with σ̂²_j.

Data never travels: a particle is weighted by the node it visits. Each move sends one
particle (n_θ numbers and its log-weight) to a neighbour. Cost O(K · N · n_θ) per node.
The error to the centralized posterior vanishes as N, K → ∞, at a rate set by the
walk's second-largest eigenvalue modulus.

| symbol | variable |
|---|---|
| K, N | ``cfg.walk_steps``, ``cfg.pf.num_particles`` |
| 2\\|E\\| / (K deg j) | ``exponent[j]`` |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from distlstm.models.functional import FunctionalModel
from distlstm.network.transport import Transport
from distlstm.online.base import NetworkAlgorithm, Observation, Prediction
from distlstm.online.noise import next_noise, step_sigma2
from distlstm.online.pf import (
    PF,
    ParticleState,
    PFConfig,
    gaussian_loglik,
    jitter,
    resample_state,
)


@dataclass(frozen=True)
class DPFConfig:
    walk_steps: int = 4  # K
    pf: PFConfig = field(default_factory=PFConfig)

    def __post_init__(self) -> None:
        if isinstance(self.walk_steps, bool) or not isinstance(self.walk_steps, int) or self.walk_steps < 1:
            raise ValueError(f"walk_steps (K) must be an int ≥ 1, got {self.walk_steps!r}")


class DPF(NetworkAlgorithm):
    """Markov-chain distributed particle filter (state, prediction and estimate as the PF)."""

    name = "dpf"

    def __init__(self, fm: FunctionalModel, cfg: DPFConfig | None = None) -> None:
        cfg = cfg or DPFConfig()
        super().__init__(fm, PF(fm, cfg.pf))
        self.cfg = cfg

    def update(self, states: Mapping[int, ParticleState], obs: Mapping[int, Observation],
               preds: Mapping[int, Prediction], transport: Transport,
               gens: Mapping[int, torch.Generator], step: int) -> dict[int, ParticleState]:
        topo, pf = transport.topology, self.cfg.pf
        K = self.cfg.walk_steps
        exponent = {j: 2 * topo.num_edges / (K * topo.degree(j)) if topo.num_edges else 1.0 / K
                    for j in transport.local_nodes}
        sigma2 = {k: step_sigma2(pf, states[k].noise) for k in transport.local_nodes}
        noise = {k: next_noise(pf, states[k].noise, obs[k], preds[k], sigma2[k]) for k in transport.local_nodes}
        propagated = {k: ParticleState(jitter(states[k].particles, pf.q, gens[k]), states[k].logw, noise[k])
                      for k in transport.local_nodes}
        here = dict(propagated)
        for _ in range(K):
            here = {j: self._weigh(here[j], obs[j], exponent[j], sigma2[j]) for j in transport.local_nodes}
            if topo.num_nodes > 1:
                here = self._walk(here, transport, gens)
        out = {}
        for k in transport.local_nodes:
            if here[k].particles.shape[0] == 0:
                out[k] = propagated[k]  # no particle arrived: keep the node's own set
            else:
                out[k] = resample_state(here[k], pf.num_particles, pf.resampling, gens[k])
        return out

    def _weigh(self, state: ParticleState, ob: Observation, power: float, sigma2: float) -> ParticleState:
        if state.particles.shape[0] == 0 or not ob.labelled:
            return state
        h = self.output(state.particles, ob.x)
        return ParticleState(state.particles, state.logw + power * gaussian_loglik(ob.d, h, sigma2), state.noise)

    def _walk(self, here: Mapping[int, ParticleState], transport: Transport,
              gens: Mapping[int, torch.Generator]) -> dict[int, ParticleState]:
        """Every particle moves to a uniformly chosen neighbour; blocks [θ | log ω] travel."""
        topo = transport.topology
        outgoing: dict[int, dict[int, Tensor]] = {}
        for j in transport.local_nodes:
            nbs = topo.neighbours(j)
            m = here[j].particles.shape[0]
            choice = torch.randint(len(nbs), (m,), generator=gens[j])
            block = torch.cat([here[j].particles, here[j].logw[:, None]], 1)
            outgoing[j] = {nb: block[choice == i] for i, nb in enumerate(nbs)}
        received = transport.route(outgoing)
        n = next(iter(here.values())).particles.shape[1]
        result = {}
        for k in transport.local_nodes:
            blocks = [received[k][src] for src in sorted(received[k])]
            rows = torch.cat(blocks) if blocks else here[k].particles.new_zeros(0, n + 1)
            result[k] = ParticleState(rows[:, :n], rows[:, n], here[k].noise)  # σ̂² stays at its node
        return result
