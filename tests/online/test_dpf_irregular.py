"""DPF on a star, where the degree in 2|E| / (K · deg j) matters: against the exact centralized posterior."""

from __future__ import annotations

import torch

from distlstm.data.observation import Observation
from distlstm.network import InProcessTransport, make_topology
from distlstm.network.graphs import Topology
from distlstm.online import DPF, DPFConfig, PFConfig
from tests.online.helpers import run_online

from .conftest import D, linear_streams

P_DIM, STEPS, SIGMA2, Q, S0, K_WALK = 3, 3, 1.0, 1e-3, 4.0, 16
STAR_DEGREES = [3, 1, 1, 1]


def weighted_kalman(streams: list[list[Observation]], powers: list[float]) -> torch.Tensor:
    """Posterior mean of θ for d = θᵀx_T + ε when node j's likelihood is raised to ``powers[j]``
    (variance σ²/power): powers all 1 is the exact centralized posterior."""
    theta, P = torch.zeros(P_DIM, dtype=D), S0 * torch.eye(P_DIM, dtype=D)
    for t in range(STEPS):
        P = P + Q * torch.eye(P_DIM, dtype=D)
        for j, stream in enumerate(streams):
            h = stream[t].x[-1]
            r = float(h @ P @ h) + SIGMA2 / powers[j]
            gain = P @ h / r
            theta = theta + gain * (stream[t].d - float(h @ theta))
            P = P - torch.outer(gain, h @ P)
    return theta


def star_data() -> list[list[Observation]]:
    """Hub 0's labels come from θ* + 1.5, the leaves' from θ*, so how much the hub's data count moves the mean.
    The three leaves see the same observations: a particle's K/2 leaf visits then raise the leaf likelihood to
    exactly (K/2)·2|E|/(K·1) = 3 whichever leaves it visits, and the DPF's weights are the centralized
    likelihood itself (no randomness from the walk, only Monte Carlo error)."""
    streams, _ = linear_streams(2, STEPS, P_DIM, 0.3, seed=7)
    shift = 1.5 * torch.ones(P_DIM, dtype=D)
    hub = [Observation(ob.x, ob.d + float(ob.x[-1] @ shift)) for ob in streams[0]]
    return [hub, streams[1], streams[1], streams[1]]


def dpf_mean(linear_fm, streams, seeds=range(2)) -> torch.Tensor:
    """The DPF's estimate averaged over nodes and seeds (averaging shrinks the Monte Carlo error)."""
    pf = PFConfig(num_particles=1000, sigma2=SIGMA2, q=Q, s0=S0, ess_threshold=1.0)
    thetas = []
    for s in seeds:
        res = run_online(DPF(linear_fm, DPFConfig(walk_steps=K_WALK, pf=pf)), streams, torch.zeros(P_DIM, dtype=D),
                         InProcessTransport(make_topology("star", 4)), seed=s)
        thetas += list(res.final_thetas.values())
    return torch.stack(thetas).mean(0)


def test_dpf_on_a_star_needs_each_nodes_own_degree(linear_fm, monkeypatch):
    assert [make_topology("star", 4).degree(j) for j in range(4)] == STAR_DEGREES
    streams = star_data()
    exact = weighted_kalman(streams, [1.0] * 4)
    # a walk of K steps visits node j about K·deg j/2|E| times, so a DPF with a wrong degree d' raises node j's
    # likelihood to deg j / d' in all: with the mean degree 1.5 the hub counts twice, each leaf 2/3
    mean_degree = 1.5
    skewed = weighted_kalman(streams, [d / mean_degree for d in STAR_DEGREES])
    assert float((exact - skewed).norm()) > 0.3  # the two posteriors are far apart

    right = dpf_mean(linear_fm, streams)
    monkeypatch.setattr(Topology, "degree", lambda self, k: mean_degree)
    wrong = dpf_mean(linear_fm, streams)
    # measured: right 0.08 from the exact posterior mean (0.34 from the skewed one); wrong 0.43 from it
    assert float((right - exact).norm()) < 0.5 * float((right - skewed).norm())
    assert float((wrong - exact).norm()) > 3 * float((right - exact).norm())
