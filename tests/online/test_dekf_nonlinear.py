"""DEKF's sequential linearisation on a nonlinear model against a hand-written incremental EKF with Metropolis
combination (the block linearisation, the default, is checked against its information form in
test_noise_and_dekf.py)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distlstm.data.observation import Observation
from distlstm.models.functional import FunctionalModel
from distlstm.network import InProcessTransport, make_topology
from distlstm.online import DEKF, EKFConfig
from tests.online.helpers import run_online

D = torch.float64
P_DIM, SIGMA2, Q, S0 = 3, 0.05, 1e-3, 0.5


class TanhLast(nn.Module):
    """d̂ = tanh(θᵀ x_T): nonlinear, so the linearisation point and the order of the updates matter."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(P_DIM, dtype=D))

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x[:, -1] @ self.w)


def reference(streams: list[list[Observation]], steps: int, own_first: bool = True) -> list[Tensor]:
    """Every node: P + qI, then for l in (k, its neighbours in increasing order) an EKF update with
    H = (1 − tanh²(ψᵀx)) xᵀ at the running ψ; then θ_k = Σ_l c_kl ψ_l with the star's Metropolis weights
    (hub 0 with n_0 = 4, leaves n = 2: c_0l = c_l0 = 1/4, c_00 = 1/4, c_ll = 3/4)."""
    nbrs = {0: [1, 2, 3], 1: [0], 2: [0], 3: [0]}
    c = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.25, 0.75, 0, 0], [0.25, 0, 0.75, 0], [0.25, 0, 0, 0.75]],
                     dtype=D)
    theta = [torch.zeros(P_DIM, dtype=D) for _ in range(4)]
    P = [S0 * torch.eye(P_DIM, dtype=D) for _ in range(4)]
    for t in range(steps):
        psi = []
        for k in range(4):
            a, Pk = theta[k].clone(), P[k] + Q * torch.eye(P_DIM, dtype=D)
            for lnode in [k, *nbrs[k]] if own_first else [*nbrs[k], k]:
                x, d = streams[lnode][t].x[-1], streams[lnode][t].d
                y = torch.tanh(a @ x)
                H = (1 - y * y) * x
                r = float(H @ Pk @ H) + SIGMA2
                gain = Pk @ H / r
                a = a + gain * (d - float(y))
                Pk = Pk - torch.outer(gain, gain) * r
            psi.append(a)
            P[k] = Pk
        theta = [sum(c[k, j] * psi[j] for j in range(4)) for k in range(4)]
    return theta


def test_dekf_on_a_nonlinear_model_equals_the_hand_written_update():
    gen = torch.Generator().manual_seed(3)
    theta_star = torch.randn(P_DIM, generator=gen, dtype=D)
    streams = [[Observation(x, float(torch.tanh(x[-1] @ theta_star)) + 0.1 * float(torch.randn((), generator=gen,
                                                                                                   dtype=D)))
                for x in torch.randn(6, 2, P_DIM, generator=gen, dtype=D)] for _ in range(4)]
    fm = FunctionalModel(TanhLast())
    dekf = DEKF(fm, EKFConfig(sigma2=SIGMA2, q=Q, s0=S0, linearisation="sequential"))
    res = run_online(dekf, streams, torch.zeros(P_DIM, dtype=D), InProcessTransport(make_topology("star", 4)))
    ref = reference(streams, 6)
    for k in range(4):
        torch.testing.assert_close(res.final_thetas[k], ref[k], atol=1e-10, rtol=0)
    # the nonlinearity matters here: the node's own label last instead of first gives other numbers
    assert float((reference(streams, 6, own_first=False)[0] - res.final_thetas[0]).norm()) > 1e-4
