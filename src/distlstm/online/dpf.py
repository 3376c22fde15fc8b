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
When one process holds every node (the in-process transport, one rank) the walk is run on
particle indices and node j evaluates all the particles that ever visit it, once each,
in batched calls of about 1,000 rows or N (``_hops_in_process``; the same particles and
weights, bit for bit, as the hop-by-hop messages of ``_hops_routed``,
tests/online/test_dpf_fast.py). The model
evaluations then bound the step: N for the prediction plus one per distinct (particle,
node) pair visited, against the PF's 2N (on a ring with K = 4 a walk visits 3 distinct
nodes on average, so ≈ 4N: about twice a PF step's evaluations).
The error to the centralized posterior vanishes as N, K → ∞, at a rate set by the
walk's second-largest eigenvalue modulus.

| symbol | variable |
|---|---|
| K, N | ``cfg.walk_steps``, ``cfg.pf.num_particles`` |
| 2\\|E_C\\| / (K deg j) | ``exponent[j]`` (:func:`walk_exponents`) |
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

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
from distlstm.ops.resampling import normalize_log_weights, resample

CHUNK_ROWS = 1024  # particles per batched evaluation in the in-process walk (or one node's count if larger)


class Walk(NamedTuple):
    """The in-process walk's outcome: every particle's row of θ and log-weight, and where each ended."""

    theta: Tensor  # (M, n_θ): every node's propagated particles
    logw: Tensor  # (M,) after the walk's factors
    at: dict[int, Tensor]  # node → the rows that ended there
    own: dict[int, Tensor]  # node → the rows it started with

    def states(self, noise: Mapping[int, Tensor]) -> dict[int, ParticleState]:
        """Each node's particles and weights where the walk ended (before resampling)."""
        return {k: ParticleState(self.theta[ids], self.logw[ids], noise[k]) for k, ids in self.at.items()}


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
        if self._holds_every_node(transport):
            walk = self._hops_in_process(states, obs, exponent, sigma2, transport, gens)
            return {k: self._resampled(walk, k, states[k], noise[k], gens[k]) for k in transport.local_nodes}
        propagated = {k: ParticleState(jitter(states[k].particles, pf.q, gens[k]), states[k].logw, noise[k])
                      for k in transport.local_nodes}
        here = self._hops_routed(propagated, obs, exponent, sigma2, transport, gens)
        out = {}
        for k in transport.local_nodes:
            if here[k].particles.shape[0] == 0:
                out[k] = propagated[k]  # no particle arrived: keep the node's own set
            else:
                out[k] = resample_state(here[k], pf.num_particles, pf.resampling, gens[k])
        return out

    @staticmethod
    def _holds_every_node(transport: Transport) -> bool:
        """Whether this process holds every node still in the run (then the walk moves row indices, not rows)."""
        return transport.local_nodes == transport.topology.survivors

    def _resampled(self, walk: Walk, k: int, state: ParticleState, noise: Tensor,
                   gen: torch.Generator) -> ParticleState:
        """Node k's set after the in-process walk: :func:`resample_state` of the particles that ended at k,
        gathered once from the walk's rows (or its own propagated set if none did)."""
        ids = walk.at[k]
        if ids.shape[0] == 0:
            return ParticleState(walk.theta[walk.own[k]], state.logw, noise)
        pf = self.cfg.pf
        _, W = normalize_log_weights(walk.logw[ids])
        rows = ids[resample(W, pf.num_particles, pf.resampling, gen)]
        return ParticleState(walk.theta[rows], torch.full((pf.num_particles,), -math.log(pf.num_particles),
                                                          dtype=walk.logw.dtype), noise)

    def _hops_routed(self, propagated: Mapping[int, ParticleState], obs: Mapping[int, Observation],
                     exponent: Mapping[int, float], sigma2: Mapping[int, float], transport: Transport,
                     gens: Mapping[int, torch.Generator]) -> dict[int, ParticleState]:
        """The K hops as messages: weigh the particles present at every local node, send them on, K times.

        Used when other processes hold some of the nodes (particles then cross processes at every hop).
        """
        here = dict(propagated)
        for _ in range(self.cfg.walk_steps):
            here = {j: self._weigh(here[j], obs[j], exponent[j], sigma2[j]) for j in transport.local_nodes}
            if transport.topology.num_edges:
                here = self._walk(here, transport, gens)
        return here

    def _hops_in_process(self, states: Mapping[int, ParticleState], obs: Mapping[int, Observation],
                         exponent: Mapping[int, float], sigma2: Mapping[int, float], transport: Transport,
                         gens: Mapping[int, torch.Generator]) -> Walk:
        """The propagation and K hops of :meth:`_hops_routed` when this process holds every node, same numbers.

        Every node's propagated particles are drawn into one (M, n_θ) block of rows. A
        particle's θ does not change on the walk, only its place and weight, so the walk is
        simulated first on row indices (each node draws its moves from its own generator,
        in the same order and amounts as the routed walk); then node j evaluates every
        particle that visits it, once, in batched calls of ~1,000 rows or one node's count
        (a particle that comes back is not evaluated again); then each particle's log-weight
        adds its factors in the order it met them. Bytes are counted as if the rows [θ | log ω]
        had been sent.
        """
        nodes, q = transport.local_nodes, self.cfg.pf.q
        first = torch.tensor([0] + [states[k].particles.shape[0] for k in nodes]).cumsum(0).tolist()
        own = {k: torch.arange(first[c], first[c + 1]) for c, k in enumerate(nodes)}  # node k's particles
        theta = torch.empty(first[-1], states[nodes[0]].particles.shape[1], dtype=states[nodes[0]].particles.dtype)
        for c, k in enumerate(nodes):
            jitter(states[k].particles, q, gens[k], out=theta[first[c] : first[c + 1]])
        logw = torch.cat([states[k].logw for k in nodes])
        at = own
        visits = []
        for _ in range(self.cfg.walk_steps):
            visits.append(at)
            if transport.topology.num_edges:
                at = self._move(at, transport, gens, row_bytes=(theta.shape[1] + 1, theta.element_size()))
        factor = logw.new_zeros(theta.shape[0], len(nodes))  # factor[i, c]: the power of node c's likelihood
        # calls of ~1,000 rows or one node's set: a much larger vmapped call spills the per-particle weights
        # out of cache and costs more per row (hidden 8); a much smaller one pays the call's overhead
        chunk = max(CHUNK_ROWS, *(first[c + 1] - first[c] for c in range(len(nodes))))
        for c, j in enumerate(nodes):
            if not obs[j].labelled:
                continue
            for ids in torch.cat([v[j] for v in visits]).unique().split(chunk):
                h = self.output(theta[ids], obs[j].x)
                factor[ids, c] = exponent[j] * gaussian_loglik(obs[j].d, h, sigma2[j])
        column = torch.empty(theta.shape[0], dtype=torch.long)
        every = torch.arange(theta.shape[0])
        for v in visits:
            for c, j in enumerate(nodes):
                column[v[j]] = c
            logw = logw + factor[every, column]  # an unlabelled node's factor is 0: log ω unchanged
        return Walk(theta, logw, at, own)

    @staticmethod
    def _move(at: Mapping[int, Tensor], transport: Transport, gens: Mapping[int, torch.Generator],
              row_bytes: tuple[int, int]) -> dict[int, Tensor]:
        """One step of the walk on particle ids: :meth:`_walk`'s draws and order, without moving rows."""
        topo = transport.topology
        arriving: dict[int, dict[int, Tensor]] = {k: {} for k in at}
        for j, ids in at.items():
            nbs = topo.neighbours(j)
            if not nbs:
                continue
            choice = torch.randint(len(nbs), (ids.shape[0],), generator=gens[j])
            for i, nb in enumerate(nbs):
                block = ids[choice == i]
                if block.numel():
                    transport.stats.record_size(j, block.numel() * row_bytes[0], row_bytes[1])
                    arriving[nb][j] = block
        empty = torch.zeros(0, dtype=torch.long)
        return {k: (torch.cat([arriving[k][src] for src in sorted(arriving[k])]) if arriving[k] else empty)
                if topo.neighbours(k) else ids for k, ids in at.items()}

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
