"""Property-based checks (hypothesis) of the numerical kernels and the input parsers.

Kalman: the rank-1 update equals the textbook matrix form for random n, σ², scalar or
per-coordinate q, standard or Joseph. Resamplers: zero-weight particles are never drawn,
systematic counts lie in {⌊MW⌋, ⌈MW⌉}. Graphs: random connected edge lists give doubly
stochastic Metropolis weights and an in-process transport that delivers every message.
Parsers (CSV series, edge lists, ``--cell-opt``): any text gives a value or a ValueError
/ argparse error naming the input — never another exception.
"""

from __future__ import annotations

import argparse
import math
import string

import networkx as nx
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from distlstm._argtypes import cell_option
from distlstm.data.series import load_series
from distlstm.network import InProcessTransport, Topology, parse_edges
from distlstm.ops.kalman import scalar_update
from distlstm.ops.resampling import RESAMPLERS, resample

D = torch.float64


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), seed=st.integers(0, 10_000), sigma2=st.floats(1e-3, 10.0),
       q=st.one_of(st.just(0.0), st.floats(1e-6, 1.0), st.just("vector")), joseph=st.booleans(),
       innovation=st.floats(-5.0, 5.0))
def test_rank_one_kalman_update_is_the_textbook_update(n, seed, sigma2, q, joseph, innovation):
    gen = torch.Generator().manual_seed(seed)
    m = torch.randn(n, n, generator=gen, dtype=D)
    P = m @ m.T / n + 0.1 * torch.eye(n, dtype=D)
    P = 0.5 * (P + P.T)
    a, H = torch.randn(n, generator=gen, dtype=D), torch.randn(n, generator=gen, dtype=D)
    q_value = torch.rand(n, generator=gen, dtype=D) * 0.1 if q == "vector" else q
    upd = scalar_update(a, P, H, torch.tensor(innovation, dtype=D), sigma2, joseph, q=q_value)
    Pp = P + torch.diag(q_value if isinstance(q_value, torch.Tensor) else torch.full((n,), q_value, dtype=D))
    S = H @ Pp @ H + sigma2
    K = Pp @ H / S
    I_KH = torch.eye(n, dtype=D) - torch.outer(K, H)
    P_ref = I_KH @ Pp @ I_KH.T + sigma2 * torch.outer(K, K) if joseph else I_KH @ Pp
    scale = float(Pp.abs().max())
    torch.testing.assert_close(upd.a, a + K * innovation, atol=1e-10 * (1 + abs(innovation)) * scale, rtol=1e-9)
    torch.testing.assert_close(upd.P, P_ref, atol=1e-10 * scale, rtol=1e-9)
    torch.testing.assert_close(upd.r, S)
    assert torch.equal(upd.P, upd.P.T)
    # the posterior variance along H shrinks: H Σ⁺ Hᵀ = σ² · H Σ Hᵀ / (H Σ Hᵀ + σ²)
    hph = H @ Pp @ H
    assert float(H @ upd.P @ H) == pytest.approx(float(sigma2 * hph / (hph + sigma2)), rel=1e-6, abs=1e-9 * scale)


weights = st.lists(st.one_of(st.just(0.0), st.floats(1e-3, 1.0)), min_size=1, max_size=12).filter(
    lambda w: sum(w) > 0)


@settings(max_examples=80, deadline=None)
@given(w=weights, M=st.integers(1, 40), scheme=st.sampled_from(sorted(RESAMPLERS)), seed=st.integers(0, 10_000))
def test_zero_weight_particles_are_never_drawn(w, M, scheme, seed):
    W = torch.tensor(w, dtype=D)
    W = W / W.sum()
    idx = resample(W, M, scheme, torch.Generator().manual_seed(seed))
    assert idx.shape == (M,) and idx.dtype == torch.long
    assert bool((W[idx] > 0).all()), (W, idx)


@settings(max_examples=80, deadline=None)
@given(w=weights, M=st.integers(1, 40), seed=st.integers(0, 10_000))
def test_systematic_counts_are_floor_or_ceiling(w, M, seed):
    W = torch.tensor(w, dtype=D)
    W = W / W.sum()
    counts = torch.bincount(resample(W, M, "systematic", torch.Generator().manual_seed(seed)), minlength=len(w))
    expected = M * W
    assert bool((counts >= torch.floor(expected - 1e-9)).all() and (counts <= torch.ceil(expected + 1e-9)).all()), \
        (counts, expected)


@st.composite
def connected_edges(draw):
    k = draw(st.integers(2, 9))
    # a random spanning tree (each node joins an earlier one), then random extra edges
    edges = {(draw(st.integers(0, j - 1)), j) for j in range(1, k)}
    extra = draw(st.lists(st.tuples(st.integers(0, k - 1), st.integers(0, k - 1)), max_size=12))
    edges |= {(min(a, b), max(a, b)) for a, b in extra if a != b}
    return k, sorted(edges)


@settings(max_examples=50, deadline=None)
@given(graph=connected_edges(), seed=st.integers(0, 1000))
def test_random_connected_graphs_weights_and_transport(graph, seed):
    k, edges = graph
    text = ",".join(f"{a}-{b}" for a, b in edges)
    assert parse_edges(text) == edges
    g = nx.Graph(edges)
    g.add_nodes_from(range(k))
    topo = Topology(g)
    c = topo.metropolis_weights()
    torch.testing.assert_close(c, c.T)
    torch.testing.assert_close(c.sum(1), torch.ones(k, dtype=D))
    degree = dict(g.degree())
    for a, b in edges:  # Metropolis by hand: 1 / (1 + max(deg a, deg b))
        assert float(c[a, b]) == pytest.approx(1 / (1 + max(degree[a], degree[b])))
    assert topo.slem("metropolis") < 1.0
    tr = InProcessTransport(topo)
    got = tr.neighbour_exchange({j: torch.full((2,), float(j)) for j in range(k)})
    for j in range(k):
        assert sorted(got[j]) == sorted(g.neighbors(j))
        assert all(torch.equal(v, torch.full((2,), float(src))) for src, v in got[j].items())
    gen = torch.Generator().manual_seed(seed)
    blocks = {j: {nb: torch.full((int(torch.randint(0, 3, (), generator=gen)), 2), float(10 * j + nb))
                  for nb in g.neighbors(j)} for j in range(k)}
    routed = tr.route(blocks)
    for j in range(k):
        expected = {src: blocks[src][j] for src in g.neighbors(j) if blocks[src][j].shape[0]}
        assert sorted(routed[j]) == sorted(expected)
        assert all(torch.equal(routed[j][src], expected[src]) for src in expected)
    assert sum(tr.stats.bytes) == 8 * 2 * len(edges) + sum(4 * b.numel() for d in blocks.values() for b in d.values())


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=string.digits + "-, ²٣x", max_size=20))
def test_edge_parser_gives_edges_or_a_clear_error(text):
    try:
        edges = parse_edges(text)
    except ValueError as err:
        assert "edges must look like" in str(err)
    else:
        assert all(isinstance(a, int) and isinstance(b, int) and a >= 0 and b >= 0 for a, b in edges)
        assert parse_edges(",".join(f"{a}-{b}" for a, b in edges)) == edges


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=20))
def test_cell_opt_gives_a_finite_number_or_a_clear_error(text):
    try:
        key, value = cell_option(text)
    except argparse.ArgumentTypeError as err:
        assert "expected KEY=VALUE" in str(err) or "must be a finite number" in str(err)
    else:
        assert key.isidentifier() and text.startswith(key + "=") and math.isfinite(value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                                        st.text(alphabet="ab ,\"", max_size=3)), min_size=1, max_size=3),
                     max_size=6),
       column=st.one_of(st.none(), st.integers(-2, 3), st.sampled_from(["a", "value"])))
@example(rows=[["1"], ["2"], ["3"]], column=-1).via("a negative index once read the last column")
@example(rows=[["1"], ["2"], ["3"]], column=-2).via("and once raised an IndexError")
def test_csv_loader_gives_a_finite_series_or_a_clear_error(tmp_path, rows, column):
    path = tmp_path / "series.csv"
    path.write_text("\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    try:
        values = load_series(path, column)
    except ValueError as err:
        assert str(path) in str(err) or "column" in str(err)
    else:
        assert values.dtype == D and values.ndim == 1 and len(values) >= 3 and bool(torch.isfinite(values).all())
        assert not isinstance(column, int) or column >= 0
