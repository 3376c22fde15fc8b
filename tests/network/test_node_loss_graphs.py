"""Graphs that lost nodes: the reduced graph, its components, Metropolis weights and random walk.

The independent reference is the survivors' induced subgraph built by networkx and relabelled
0 … S-1: a fresh connected :class:`Topology` whose matrices must equal the reduced graph's
survivor block.
"""

from __future__ import annotations

import networkx as nx
import pytest
import torch

from distlstm.network import Topology, make_topology, parse_edges


def fresh(topo: Topology, survivors: list[int]) -> Topology:
    """The survivors' subgraph as a topology of its own (nodes renumbered in order)."""
    sub = nx.convert_node_labels_to_integers(topo.graph.subgraph(survivors), ordering="sorted")
    plain = nx.Graph()
    plain.add_nodes_from(range(len(survivors)))
    plain.add_edges_from(sub.edges)
    return Topology(plain)


def test_a_star_that_loses_its_hub_falls_apart_into_singletons():
    reduced = make_topology("star", 5).without([0])
    assert reduced.lost == {0} and reduced.survivors == [1, 2, 3, 4]
    assert reduced.num_edges == 0 and reduced.components() == [[1], [2], [3], [4]]
    assert torch.equal(reduced.metropolis_weights(), torch.eye(5, dtype=torch.float64))  # each keeps its own ψ
    assert torch.equal(reduced.random_walk_matrix(), torch.eye(5, dtype=torch.float64))  # nobody walks


def test_a_line_cut_in_the_middle_goes_on_as_two_parts():
    reduced = make_topology("line", 5).without([2])
    assert reduced.components() == [[0, 1], [3, 4]]
    assert reduced.neighbours(1) == [0] and reduced.neighbours(3) == [4]
    assert [reduced.component_edges(k) for k in (0, 1, 3, 4)] == [1, 1, 1, 1]
    # losing more later: ids stay, the lost set grows
    again = reduced.without([4])
    assert again.lost == {2, 4} and again.components() == [[0, 1], [3]]


@pytest.mark.parametrize("seed", range(6))
def test_reduced_metropolis_weights_are_doubly_stochastic_and_equal_the_survivors_own_graph(seed):
    gen = torch.Generator().manual_seed(seed)
    topo = make_topology("erdos-renyi", 9, p=0.4, seed=seed)
    gone = torch.randperm(9, generator=gen)[: 1 + seed % 3].tolist()
    reduced = topo.without(gone)
    c = reduced.metropolis_weights()
    assert torch.allclose(c, c.T)
    assert torch.allclose(c.sum(0), torch.ones(9, dtype=torch.float64))
    assert torch.allclose(c.sum(1), torch.ones(9, dtype=torch.float64))
    live = reduced.survivors
    assert bool((c[gone][:, live] == 0).all()), "no weight on a lost node"
    walk = reduced.random_walk_matrix()
    assert torch.allclose(walk.sum(1), torch.ones(9, dtype=torch.float64))
    for part in reduced.components():  # each part: the matrices of its own graph, nothing across parts
        own = fresh(topo, part)
        assert torch.allclose(c[part][:, part], own.metropolis_weights())
        assert torch.allclose(walk[part][:, part], own.random_walk_matrix() if len(part) > 1
                              else torch.ones(1, 1, dtype=torch.float64))
        others = [j for j in live if j not in part]
        assert bool((c[part][:, others] == 0).all()) and bool((walk[part][:, others] == 0).all())


def test_no_lost_nodes_changes_nothing():
    topo = make_topology("edges", 4, edges=parse_edges("0-1,1-2,2-3,3-0,0-2"))
    same = topo.without([])
    assert same.survivors == [0, 1, 2, 3] and torch.equal(same.metropolis_weights(), topo.metropolis_weights())
    assert [same.component_edges(k) for k in range(4)] == [5] * 4


def test_bad_removals_and_lost_nodes_with_edges():
    topo = make_topology("ring", 4)
    with pytest.raises(ValueError, match=r"nodes \[7\] are not in this 4-node graph"):
        topo.without([7])
    with pytest.raises(ValueError, match="lost nodes must be graph nodes without edges"):
        Topology(topo.graph, lost=frozenset({1}))
    with pytest.raises(ValueError, match="disconnected"):  # a graph that lost nothing must still be connected
        Topology(make_topology("line", 3).without([1]).graph)
