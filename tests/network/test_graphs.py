"""Topologies, Metropolis weights, random-walk matrices and the transport's accounting."""

from __future__ import annotations

import math

import networkx as nx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distlstm.network import InProcessTransport, Topology, make_topology, parse_edges


@settings(max_examples=40, deadline=None)
@given(k=st.integers(2, 12), p=st.floats(0.2, 1.0), seed=st.integers(0, 10_000))
def test_metropolis_weights_are_symmetric_and_doubly_stochastic(k, p, seed):
    topo = make_topology("erdos-renyi", k, p=p, seed=seed)
    c = topo.metropolis_weights()
    torch.testing.assert_close(c, c.T)
    torch.testing.assert_close(c.sum(0), torch.ones(k, dtype=torch.float64))
    torch.testing.assert_close(c.sum(1), torch.ones(k, dtype=torch.float64))
    assert torch.all(c >= 0)
    a = topo.adjacency() + torch.eye(k, dtype=torch.float64)
    assert torch.all(c[a == 0] == 0)  # only neighbours get weight
    assert topo.slem("metropolis") < 1.0
    if not nx.is_bipartite(topo.graph):
        assert topo.slem("walk") < 1.0


@pytest.mark.parametrize("name", ["ring", "line", "star", "grid", "complete", "geometric", "erdos-renyi"])
def test_named_topologies_are_connected_with_stochastic_walks(name):
    topo = make_topology(name, 6, seed=3)
    assert topo.num_nodes == 6 and nx.is_connected(topo.graph)
    torch.testing.assert_close(topo.random_walk_matrix().sum(1), torch.ones(6, dtype=torch.float64))


def test_slem_against_closed_forms_and_eigenvalues():
    # ring of 5: walk eigenvalues cos(2πj/5), so SLEM = |cos(4π/5)| = cos(π/5); every Metropolis weight is 1/3,
    # eigenvalues 1/3 + 2/3·cos(2πj/5), of which 1/3 + 2/3·cos(2π/5) ≈ 0.539 has the largest modulus after 1
    ring5 = make_topology("ring", 5)
    assert ring5.slem() == pytest.approx(math.cos(math.pi / 5), abs=1e-12)
    assert ring5.slem("metropolis") == pytest.approx(1 / 3 + 2 / 3 * math.cos(2 * math.pi / 5), abs=1e-12)
    # the reproduction's irregular graph: against the walk matrix P = D⁻¹A and the Metropolis matrix directly
    topo = make_topology("edges", 4, edges=parse_edges("0-1,1-2,2-3,3-0,0-2"))
    for of, matrix in (("walk", topo.random_walk_matrix()), ("metropolis", topo.metropolis_weights())):
        eig = torch.linalg.eigvals(matrix).abs().sort(descending=True).values
        assert float(eig[0]) == pytest.approx(1.0, abs=1e-12)
        assert topo.slem(of) == pytest.approx(float(eig[1]), abs=1e-12)
        assert topo.slem(of) < 0.99
    # a bipartite graph's walk is periodic: eigenvalue −1; its Metropolis matrix still mixes
    assert make_topology("ring", 4).slem() == pytest.approx(1.0)
    assert make_topology("ring", 4).slem("metropolis") == pytest.approx(1 / 3, abs=1e-12)  # 1/3 + 2/3·cos(π/2)


def test_metropolis_by_hand_on_a_line():
    c = make_topology("line", 3).metropolis_weights()
    # n = (2, 3, 2): c_01 = c_12 = 1/max(2, 3) = 1/3; the diagonal takes the rest
    expected = torch.tensor([[2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3], [0, 1 / 3, 2 / 3]], dtype=torch.float64)
    torch.testing.assert_close(c, expected)


def test_bad_topologies():
    g = nx.Graph([(0, 1), (2, 3)])
    with pytest.raises(ValueError, match="disconnected"):
        Topology(g)
    with pytest.raises(ValueError, match="disconnected"):
        make_topology("edges", 4, edges=[(0, 1), (2, 3)])
    with pytest.raises(ValueError, match="unknown topology 'torus'"):
        make_topology("torus", 4)
    with pytest.raises(ValueError, match="number of nodes"):
        make_topology("ring", 0)
    with pytest.raises(ValueError, match="edges must look like"):
        parse_edges("0-1,2")
    assert parse_edges("0-1, 1-2") == [(0, 1), (1, 2)]


def test_transport_counts_what_it_sends():
    topo = make_topology("star", 4)  # hub 0 with leaves 1, 2, 3
    tr = InProcessTransport(topo)
    values = {k: torch.full((5,), float(k)) for k in range(4)}
    got = tr.neighbour_exchange(values)
    assert sorted(got[0]) == [1, 2, 3] and torch.equal(got[1][0], values[0])
    assert tr.stats.messages == [3, 1, 1, 1] and tr.stats.bytes == [60, 20, 20, 20]
    tr.stats.reset()
    block = torch.arange(6.0).view(2, 3)
    routed = tr.route({0: {1: block, 2: torch.ones(0, 3)}, 1: {0: torch.zeros(1, 3)}})
    assert sorted(routed) == [0, 1, 2, 3]
    assert list(routed[0]) == [1] and torch.equal(routed[0][1], torch.zeros(1, 3))
    assert list(routed[1]) == [0] and torch.equal(routed[1][0], block)
    assert routed[2] == {} and routed[3] == {}  # an empty block is not delivered, nor counted
    assert tr.stats.bytes == [24, 12, 0, 0]
    with pytest.raises(ValueError, match="only send to its neighbours"):
        tr.route({1: {2: torch.ones(1, 3)}})
