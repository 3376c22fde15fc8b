"""The DPF's likelihood exponent 2|E| / (K · deg j) on the reproduction's irregular graph, by hand."""

from __future__ import annotations

import pytest
import torch

from distlstm.network import InProcessTransport, make_topology, parse_edges
from distlstm.online import DPF, DPFConfig, PFConfig
from tests.online.helpers import run_online

from .conftest import linear_streams

D = torch.float64


def test_each_visit_raises_the_likelihood_to_two_edges_over_walk_steps_times_degree(linear_fm, monkeypatch):
    topo = make_topology("edges", 4, edges=parse_edges("0-1,1-2,2-3,3-0,0-2"))  # |E| = 5, degrees 3, 2, 3, 2
    powers: dict[int, set[float]] = {}
    dpf = DPF(linear_fm, DPFConfig(walk_steps=2, pf=PFConfig(num_particles=10)))
    weigh = DPF._weigh

    def spy(self, state, ob, power, sigma2):  # on the class: the run builds its own DPF from dpf's settings
        node = next(j for j in range(4) if ob is current[j])
        powers.setdefault(node, set()).add(round(power, 12))
        return weigh(self, state, ob, power, sigma2)

    streams, _ = linear_streams(4, 2, 3, sigma=0.1, seed=0)
    current = [stream[0] for stream in streams]
    monkeypatch.setattr(DPF, "_weigh", spy)
    # the hop-by-hop walk weighs at every visit through _weigh; the in-process path gives the same weights
    # (tests/online/test_dpf_fast.py)
    monkeypatch.setattr(DPF, "_holds_every_node", staticmethod(lambda transport: False))
    run_online(dpf, [s[:1] for s in streams], torch.zeros(3, dtype=D), InProcessTransport(topo), seed=0)
    three, two = round(10 / (2 * 3), 12), round(10 / (2 * 2), 12)
    assert powers == {0: {three}, 1: {two}, 2: {three}, 3: {two}}
    # over a stationary walk (π_j = deg j / 2|E|) the expected power per node per step is K · π_j · exponent_j = 1
    for j, power in powers.items():
        assert 2 * (topo.degree(j) / 10) * next(iter(power)) == pytest.approx(1.0)
