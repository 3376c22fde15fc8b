"""Network topologies and the matrices the distributed algorithms need.

A :class:`Topology` is a connected undirected graph on nodes ``0 … K-1``. It gives

* neighbourhoods ``N_k`` (including k) and degrees (excluding k);
* Metropolis combination weights (Ergen & Kozat, for DEKF and diffusion SGD)::

      c_kl = 1 / max(n_k, n_l)   for l ∈ N_k, l ≠ k      (n_k = |N_k|)
      c_kk = 1 − Σ_{l ≠ k} c_kl,                         0 elsewhere

  symmetric and doubly stochastic;
* the simple random-walk matrix ``A_jl / deg(j)`` of the Markov-chain distributed
  particle filter, and its second-largest eigenvalue modulus (SLEM), which governs
  how fast the walk mixes.

A disconnected graph is an error: no algorithm here can reach consensus on one. The
one exception is a graph that lost nodes during a run (:meth:`Topology.without`): the
lost nodes stay as isolated ids (so node k keeps its stream and generator), and the
survivors may fall apart into components, each of which goes on alone.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import networkx as nx
import numpy as np
import torch


@dataclass(frozen=True)
class Topology:
    """A connected undirected graph on nodes 0 … K-1 (no self-loops).

    ``lost`` names nodes that left the run (:meth:`without`): they have no edges, and
    the survivors need not be connected.
    """

    graph: nx.Graph
    name: str = "custom"
    lost: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        g = self.graph
        k = g.number_of_nodes()
        if k == 0:
            raise ValueError("a topology needs at least one node")
        if set(g.nodes) != set(range(k)):
            raise ValueError(f"nodes must be 0 … {k - 1}, got {sorted(g.nodes)}")
        if nx.number_of_selfloops(g):
            raise ValueError("self-loops are not allowed (a node is always its own neighbour)")
        stray = sorted(j for j in self.lost if j not in g or g.degree[j])
        if stray:
            raise ValueError(f"lost nodes must be graph nodes without edges, got {stray}")
        if not self.lost and not nx.is_connected(g):
            parts = [sorted(c) for c in nx.connected_components(g)]
            raise ValueError(f"the graph is disconnected (components {parts}); every node must reach every other")

    @property
    def num_nodes(self) -> int:
        return self.graph.number_of_nodes()

    @property
    def num_edges(self) -> int:
        return self.graph.number_of_edges()

    @property
    def survivors(self) -> list[int]:
        """The nodes still in the run (all of them unless :meth:`without` removed some), sorted."""
        return [j for j in range(self.num_nodes) if j not in self.lost]

    def without(self, nodes: Iterable[int]) -> Topology:
        """The reduced graph after ``nodes`` left: their edges removed, the other nodes keep their ids."""
        gone = set(nodes)
        bad = sorted(j for j in gone if not (isinstance(j, int) and 0 <= j < self.num_nodes))
        if bad:
            raise ValueError(f"nodes {bad} are not in this {self.num_nodes}-node graph")
        g = self.graph.copy()
        g.remove_edges_from([e for e in self.graph.edges if e[0] in gone or e[1] in gone])
        return Topology(g, self.name, self.lost | gone)

    def components(self) -> list[list[int]]:
        """The survivors' connected components, each sorted, in order of their smallest node."""
        return sorted(sorted(c) for c in nx.connected_components(self.graph.subgraph(self.survivors)))

    def component_edges(self, k: int) -> int:
        """|E_C|: the number of edges of the component that holds node k."""
        return self._edges_by_node[k]

    @functools.cached_property
    def _edges_by_node(self) -> dict[int, int]:
        out = {}
        for part in nx.connected_components(self.graph):
            edges = self.graph.subgraph(part).number_of_edges()
            out.update(dict.fromkeys(part, edges))
        return out

    def neighbours(self, k: int) -> list[int]:
        """Neighbours of k, excluding k, sorted."""
        return sorted(self.graph.neighbors(k))

    def neighbourhood(self, k: int) -> list[int]:
        """N_k: k and its neighbours, sorted."""
        return sorted([k, *self.graph.neighbors(k)])

    def degree(self, k: int) -> int:
        return int(self.graph.degree[k])

    def adjacency(self) -> torch.Tensor:
        """(K, K) float64 0/1 adjacency matrix."""
        return torch.from_numpy(nx.to_numpy_array(self.graph, nodelist=range(self.num_nodes), dtype=np.float64))

    def metropolis_weights(self) -> torch.Tensor:
        """(K, K) Metropolis combination matrix C, symmetric and doubly stochastic."""
        k = self.num_nodes
        c = torch.zeros(k, k, dtype=torch.float64)
        size = [len(self.neighbourhood(j)) for j in range(k)]
        for a, b in self.graph.edges:
            c[a, b] = c[b, a] = 1.0 / max(size[a], size[b])
        c += torch.diag(1.0 - c.sum(1))
        return c

    def random_walk_matrix(self) -> torch.Tensor:
        """(K, K) transition matrix of the simple random walk, rows A_j· / deg(j); an isolated node stays put."""
        a = self.adjacency()
        deg = a.sum(1, keepdim=True)
        return torch.where(deg > 0, a / deg.clamp(min=1), torch.eye(self.num_nodes, dtype=a.dtype))

    def slem(self, of: str = "walk") -> float:
        """Second-largest eigenvalue modulus of the random-walk (``of="walk"``) or Metropolis matrix.

        The Metropolis matrix has a strictly positive diagonal (c_kk ≥ 1/n_k), so its
        SLEM is < 1 on every connected graph. The simple random walk is periodic on a
        bipartite graph (a ring of even length, a line, a star): its SLEM is then 1,
        though its time averages — what the DPF uses — still converge.
        """
        if of not in ("walk", "metropolis"):
            raise ValueError(f"of must be 'walk' or 'metropolis', got {of!r}")
        if self.num_nodes == 1:
            return 0.0
        if of == "metropolis":
            m = self.metropolis_weights()
        else:
            # P = D^-1 A is similar to the symmetric D^-1/2 A D^-1/2: same (real) eigenvalues.
            a = self.adjacency()
            d = a.sum(1).rsqrt()
            m = d[:, None] * a * d[None, :]
        eig = torch.linalg.eigvalsh(m).abs().sort(descending=True).values
        return float(eig[1])


def _edge_list(edges: Iterable[tuple[int, int]]) -> nx.Graph:
    g = nx.Graph()
    edges = list(edges)
    if not edges:
        raise ValueError("the edge list is empty")
    g.add_edges_from(edges)
    return g


def _check_nodes(k: int, minimum: int = 1) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < minimum:
        raise ValueError(f"the number of nodes must be an int ≥ {minimum}, got {k!r}")
    return k


def _random_connected(build: Callable[[int], nx.Graph], seed: int, what: str, tries: int = 200) -> nx.Graph:
    """Redraw a random graph (seeds seed, seed+1, …) until it is connected."""
    for attempt in range(tries):
        g = build(seed + attempt)
        if nx.is_connected(g):
            return g
    raise ValueError(f"no connected {what} in {tries} draws; raise the edge probability or radius")


def make_topology(name: str, num_nodes: int, *, seed: int = 0, p: float = 0.5, radius: float | None = None,
                  edges: Iterable[tuple[int, int]] | None = None) -> Topology:
    """Build a named topology on ``num_nodes`` nodes.

    Names: ``ring``, ``line``, ``star`` (hub 0), ``grid`` (as square as possible),
    ``complete``, ``geometric`` (random geometric graph in the unit square, ``radius``
    defaults to the connectivity threshold √(2 log K / K)), ``erdos-renyi`` (edge
    probability ``p``), ``edges`` (the given ``edges``). Random graphs are redrawn
    from ``seed`` upwards until connected.
    """
    k = _check_nodes(num_nodes)
    if name == "ring":
        g = nx.cycle_graph(k) if k > 2 else nx.path_graph(k)
    elif name == "line":
        g = nx.path_graph(k)
    elif name == "star":
        g = nx.star_graph(k - 1)
    elif name == "complete":
        g = nx.complete_graph(k)
    elif name == "grid":
        rows = max(r for r in range(1, math.isqrt(k) + 1) if k % r == 0)
        g = nx.convert_node_labels_to_integers(nx.grid_2d_graph(rows, k // rows), ordering="sorted")
    elif name == "geometric":
        r = radius if radius is not None else min(1.5, math.sqrt(2 * math.log(max(k, 2)) / k) * 1.2)
        g = _random_connected(lambda s: nx.random_geometric_graph(k, r, seed=s), seed, "random geometric graph")
    elif name in ("erdos-renyi", "er"):
        if not 0 < p <= 1:
            raise ValueError(f"edge probability p must be in (0, 1], got {p}")
        g = _random_connected(lambda s: nx.gnp_random_graph(k, p, seed=s), seed, "Erdős–Rényi graph")
    elif name == "edges":
        if edges is None:
            raise ValueError("topology 'edges' needs an edge list")
        g = _edge_list(edges)
    else:
        raise ValueError(f"unknown topology {name!r}; expected one of {list(TOPOLOGIES)}")
    if k == 1:
        g = nx.empty_graph(1)
    plain = nx.Graph()
    plain.add_nodes_from(range(g.number_of_nodes()))
    plain.add_edges_from(g.edges)
    return Topology(plain, name)


TOPOLOGIES = ("ring", "line", "star", "grid", "complete", "geometric", "erdos-renyi", "edges")


def parse_edges(text: str) -> list[tuple[int, int]]:
    """Parse ``"0-1,1-2,2-0"`` into an edge list."""
    edges = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        a, sep, b = part.partition("-")
        if not sep or not (a.isascii() and a.isdigit() and b.isascii() and b.isdigit()):  # not '²' or '٣'
            raise ValueError(f"edges must look like '0-1,1-2', got {part!r}")
        edges.append((int(a), int(b)))
    return edges
