"""DPF's in-process walk (indices moved, every visited pair evaluated once) gives the particles of the routed walk.

``reference_update`` is the DPF step as it was before the in-process path existed (particles [θ | log ω]
sent hop by hop through the transport, weighed at every visit), copied here so the comparison does not
depend on the module's own routed path. Same seed, same particles and bytes counted, bit for bit, and the
same log-weights before resampling (after it they are all −log N, so that is where a change would show).
"""

from __future__ import annotations

import math

import pytest
import torch

from distlstm.data.observation import Observation
from distlstm.network import InProcessTransport, make_topology
from distlstm.online import DPF, DPFConfig, PFConfig, regressor
from distlstm.online.dpf import Walk, walk_exponents
from distlstm.online.noise import next_noise, step_sigma2
from distlstm.online.pf import ParticleState, gaussian_loglik, jitter, resample_state


def reference_update(alg, states, obs, preds, transport, gens, walked):
    """The DPF update before the in-process path (commit 29860f9), verbatim but for names."""
    topo, pf = transport.topology, alg.cfg.pf
    K = alg.cfg.walk_steps
    exponent = walk_exponents(topo, K, transport.local_nodes)
    sigma2 = {k: step_sigma2(pf, states[k].noise) for k in transport.local_nodes}
    noise = {k: next_noise(pf, states[k].noise, obs[k], preds[k], sigma2[k]) for k in transport.local_nodes}
    propagated = {k: ParticleState(jitter(states[k].particles, pf.q, gens[k]), states[k].logw, noise[k])
                  for k in transport.local_nodes}

    def weigh(state, ob, power, s2):
        if state.particles.shape[0] == 0 or not ob.labelled:
            return state
        h = alg.output(state.particles, ob.x)
        return ParticleState(state.particles, state.logw + power * gaussian_loglik(ob.d, h, s2), state.noise)

    def walk(here):
        outgoing = {}
        alone = [j for j in transport.local_nodes if not topo.degree(j)]
        for j in transport.local_nodes:
            nbs = topo.neighbours(j)
            if not nbs:
                continue
            choice = torch.randint(len(nbs), (here[j].particles.shape[0],), generator=gens[j])
            block = torch.cat([here[j].particles, here[j].logw[:, None]], 1)
            outgoing[j] = {nb: block[choice == i] for i, nb in enumerate(nbs)}
        received = transport.route(outgoing)
        n = next(iter(here.values())).particles.shape[1]
        result = {}
        for k in transport.local_nodes:
            blocks = [received[k][src] for src in sorted(received[k])]
            rows = torch.cat(blocks) if blocks else here[k].particles.new_zeros(0, n + 1)
            result[k] = ParticleState(rows[:, :n], rows[:, n], here[k].noise)
        return result | {j: here[j] for j in alone}

    here = dict(propagated)
    for _ in range(K):
        here = {j: weigh(here[j], obs[j], exponent[j], sigma2[j]) for j in transport.local_nodes}
        if topo.num_edges:
            here = walk(here)
    walked.append(here)
    return {k: propagated[k] if here[k].particles.shape[0] == 0
            else resample_state(here[k], pf.num_particles, pf.resampling, gens[k]) for k in transport.local_nodes}


def run_steps(update, alg, topology, steps=3, seed=0):
    """``steps`` DPF steps on an LSTM regressor's particles; a third of the (node, step) labels are missing."""
    fm = alg.fm
    theta0 = fm.flatten()
    gens = {k: torch.Generator().manual_seed(seed + k) for k in range(topology.num_nodes)}
    transport = InProcessTransport(topology)
    states = {k: alg.init(theta0, k, gens[k]) for k in transport.local_nodes}
    data = torch.Generator().manual_seed(100 + seed)
    walked: list = []
    for t in range(steps):
        obs = {k: Observation(torch.randn(6, 3, generator=data, dtype=torch.float64),
                              float(torch.randn((), generator=data)) if (k + t) % 3 else math.nan)
               for k in range(topology.num_nodes)}
        preds = {k: alg.predict(states[k], obs[k].x) for k in transport.local_nodes}
        states = update(alg, states, obs, preds, transport, gens, walked)
    return states, transport.stats, walked


def recorded(hops, walked):
    """``hops`` that also records each node's particles and weights where the walk ended."""
    def run(*args):
        here = hops(*args)
        walked.append(here.states({k: s.noise for k, s in args[0].items()}) if isinstance(here, Walk) else here)
        return here
    return run


def fast_update(alg, states, obs, preds, transport, gens, walked):
    alg._hops_in_process = recorded(alg._hops_in_process, walked)
    try:
        return alg.update(states, obs, preds, transport, gens, 0)
    finally:
        del alg._hops_in_process


def routed_update(alg, states, obs, preds, transport, gens, walked):
    alg._hops_routed = recorded(alg._hops_routed, walked)
    alg._holds_every_node = lambda transport: False  # what a process holding only some nodes runs
    try:
        return alg.update(states, obs, preds, transport, gens, 0)
    finally:
        del alg._hops_routed, alg._holds_every_node


@pytest.mark.parametrize(("graph", "particles", "walk", "lost"), [
    ("ring", 40, 4, ()),
    ("star", 3, 3, ()),  # so few particles that some nodes receive none and keep their own
    ("complete", 25, 2, ()),
    ("line", 30, 4, (1,)),  # node 0 is left alone: it weighs its own particles K times
    ("ring", 400, 4, ()),  # ≈ 1,200 particles visit each node: evaluated in more than one call
])
@pytest.mark.parametrize("update", [fast_update, routed_update])
def test_dpf_paths_give_the_old_steps_particles(graph, particles, walk, lost, update):
    fm, _ = regressor(3, 4, seed=1)
    topology = make_topology(graph, 5).without(lost)
    alg = DPF(fm, DPFConfig(walk_steps=walk, pf=PFConfig(num_particles=particles, q=1e-3, s0=0.5, sigma2=0.1)))
    got, got_stats, got_walked = run_steps(update, alg, topology)
    want, want_stats, want_walked = run_steps(reference_update, alg, topology)
    for k in want:
        assert torch.equal(got[k].particles, want[k].particles), k
        assert torch.equal(got[k].noise, want[k].noise), k
    assert len(got_walked) == len(want_walked) == 3
    for got_here, want_here in zip(got_walked, want_walked, strict=True):
        for k in want_here:
            assert torch.equal(got_here[k].particles, want_here[k].particles), k
            assert torch.equal(got_here[k].logw, want_here[k].logw), k
    assert (got_stats.messages, got_stats.bytes) == (want_stats.messages, want_stats.bytes)
    assert sum(want_stats.bytes) > 0 or topology.num_edges == 0


def test_the_in_process_path_is_taken_when_every_node_is_here(monkeypatch):
    fm, _ = regressor(3, 4, seed=1)
    alg = DPF(fm, DPFConfig(walk_steps=2, pf=PFConfig(num_particles=10)))
    calls = []
    monkeypatch.setattr(DPF, "_hops_routed", lambda self, *a: calls.append(1))
    run_steps(lambda a, *args: a.update(*args[:-1], 0), alg, make_topology("ring", 4), steps=1)
    assert calls == []
