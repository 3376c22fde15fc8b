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

After nodes leave a run (:meth:`~distlstm.network.graphs.Topology.without`), the walk
and the exponents are those of the reduced graph, component by component: in a
component C the stationary law is deg(j)/2|E_C|, so the exponent is 2|E_C| / (K deg j)
(:func:`walk_exponents`), and each component's particles estimate the likelihood of
that component's data. A survivor with no neighbour left keeps its particles and
weighs them K times by the power 1/K: its own particle filter.

σ² is fixed or node j's adaptive estimate σ̂²_j from its own prediction innovations
(``noise="adaptive"``, as the PF): a particle visiting j is weighed with σ̂²_j.

Data never travels: a particle is weighted by the node it visits. Each move sends one
particle (n_θ numbers and its log-weight) to a neighbour. Cost O(K · N · n_θ) per node.
The error to the centralized posterior vanishes as N, K → ∞, at a rate set by the
walk's second-largest eigenvalue modulus.

| symbol | variable |
|---|---|
| K, N | ``cfg.walk_steps``, ``cfg.pf.num_particles`` |
| 2\\|E_C\\| / (K deg j) | ``exponent[j]`` (:func:`walk_exponents`) |
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from distlstm.models.functional import FunctionalModel
from distlstm.network.graphs import Topology
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


def walk_exponents(topology: Topology, walk_steps: int, nodes: Iterable[int]) -> dict[int, float]:
    """The likelihood power 2|E_C| / (K deg j) of every node j in ``nodes`` (1/K where j has no neighbour).

    |E_C| counts the edges of j's component: the whole graph's |E| while no node has
    left, a part's own edges once the graph fell apart.
    """
    out = {}
    for j in nodes:
        deg = topology.degree(j)
        out[j] = 2 * topology.component_edges(j) / (walk_steps * deg) if deg else 1.0 / walk_steps
    return out


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
        exponent = walk_exponents(topo, K, transport.local_nodes)
        sigma2 = {k: step_sigma2(pf, states[k].noise) for k in transport.local_nodes}
        noise = {k: next_noise(pf, states[k].noise, obs[k], preds[k], sigma2[k]) for k in transport.local_nodes}
        propagated = {k: ParticleState(jitter(states[k].particles, pf.q, gens[k]), states[k].logw, noise[k])
                      for k in transport.local_nodes}
        here = dict(propagated)
        for _ in range(K):
            here = {j: self._weigh(here[j], obs[j], exponent[j], sigma2[j]) for j in transport.local_nodes}
            if topo.num_edges:
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
        """Every particle moves to a uniformly chosen neighbour; blocks [θ | log ω] travel.

        A node without neighbours (its neighbours left the run) keeps its particles.
        """
        topo = transport.topology
        outgoing: dict[int, dict[int, Tensor]] = {}
        alone = [j for j in transport.local_nodes if not topo.degree(j)]
        for j in transport.local_nodes:
            nbs = topo.neighbours(j)
            if not nbs:
                continue
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
        return result | {j: here[j] for j in alone}
