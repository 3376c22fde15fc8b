"""The EKF on [carry; θ]: exact on a linear model with a carried state; useful on a stateful teacher."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from distlstm.data.observation import Observation
from distlstm.experiments.teacher import teacher_streams
from distlstm.models.functional import FunctionalModel
from distlstm.network import InProcessTransport, make_topology
from distlstm.online import EKFConfig, StatefulEKF, make_algorithm, regressor
from tests.online.helpers import run_online

D = torch.float64
P_DIM, M = 2, 3


class LinearCarry(nn.Module):
    """h_j = W h_{j-1} + U x_j over the sequence; d = θᵀ x_T + cᵀ h_T. Linear in [h_0; θ]."""

    def __init__(self, gen: torch.Generator) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(P_DIM, dtype=D))
        self.register_buffer("W", 0.6 * torch.randn(M, M, generator=gen, dtype=D) / M**0.5)
        self.register_buffer("U", torch.randn(M, P_DIM, generator=gen, dtype=D))
        self.register_buffer("c", torch.randn(M, generator=gen, dtype=D))

    def init_state(self, batch: int, *, dtype: torch.dtype | None = None) -> tuple[Tensor]:
        return (torch.zeros(1, batch, M, dtype=D),)

    def forward(self, x: Tensor, state: tuple[Tensor] | None = None, return_state: bool = False):
        h = state[0][0] if state is not None else torch.zeros(x.shape[0], M, dtype=D)
        for j in range(x.shape[1]):
            h = h @ self.W.T + x[:, j] @ self.U.T
        d = x[:, -1] @ self.theta + h @ self.c
        return (d, (h.unsqueeze(0),)) if return_state else d


def kalman_with_carry(model: LinearCarry, stream: list[Observation], s0: float, s0_carry: float, q: float,
                      sigma2: float, q_carry: float = 0.0) -> tuple[Tensor, Tensor]:
    """Textbook Kalman filter on a = [h_0; θ]: h_T = A h_0 + b with A = W^T, b = Σ_j W^{T-j} U x_j."""
    n = M + P_DIM
    a = torch.zeros(n, dtype=D)
    P = torch.diag(torch.tensor([s0_carry] * M + [s0] * P_DIM, dtype=D))
    Q = torch.diag(torch.tensor([q_carry] * M + [q] * P_DIM, dtype=D))
    W, U, c = model.W, model.U, model.c
    for ob in stream:
        A, b = torch.eye(M, dtype=D), torch.zeros(M, dtype=D)
        for xj in ob.x:
            A, b = W @ A, W @ b + U @ xj
        H = torch.cat([c @ A, ob.x[-1]]).reshape(1, n)
        P = P + Q
        S = H @ P @ H.T + sigma2
        K = P @ H.T / S
        a = a + (K * (ob.d - (H @ a + c @ b))).reshape(n)
        P = (torch.eye(n, dtype=D) - K @ H) @ P
        F = torch.block_diag(A, torch.eye(P_DIM, dtype=D))
        a = F @ a + torch.cat([b, torch.zeros(P_DIM, dtype=D)])
        P = F @ P @ F.T
    return a, P


def linear_carry_stream(model: LinearCarry, steps: int, gen: torch.Generator) -> list[Observation]:
    theta_star = torch.randn(P_DIM, generator=gen, dtype=D)
    h, stream = torch.zeros(1, M, dtype=D), []
    for _ in range(steps):
        x = torch.randn(int(torch.randint(1, 4, (), generator=gen)), P_DIM, generator=gen, dtype=D)
        for xj in x:
            h = h @ model.W.T + xj @ model.U.T
        stream.append(Observation(x, float(x[-1] @ theta_star + h[0] @ model.c) + 0.1 * float(torch.randn(()))))
    return stream


@pytest.mark.parametrize("joseph", [False, True])
def test_stateful_ekf_equals_kalman_filter_on_a_linear_carried_model(joseph):
    gen = torch.Generator().manual_seed(0)
    model = LinearCarry(gen)
    stream = linear_carry_stream(model, 30, gen)
    cfg = EKFConfig(sigma2=0.01, q=1e-3, s0=1.0, s0_carry=0.5, stateful=True, joseph=joseph)
    ekf = make_algorithm("ekf", FunctionalModel(model), **{k: getattr(cfg, k) for k in
                                                            ("sigma2", "q", "s0", "s0_carry", "stateful", "joseph")})
    assert isinstance(ekf, StatefulEKF) and ekf.n_s == M
    state = ekf.init(torch.zeros(P_DIM, dtype=D), 0, torch.Generator())
    for ob in stream:
        state = ekf.update_node(state, ob, ekf.predict(state, ob.x), torch.Generator(), "test")
    a_ref, P_ref = kalman_with_carry(model, stream, 1.0, 0.5, 1e-3, 0.01)
    torch.testing.assert_close(state.a, a_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(state.P, P_ref, atol=1e-10, rtol=0)


def test_process_noise_on_the_whole_state_equals_kalman_filter():
    """The paper's e_t covers [carry; θ]: q_carry on the carry rows, against the textbook filter."""
    gen = torch.Generator().manual_seed(1)
    model = LinearCarry(gen)
    stream = linear_carry_stream(model, 20, gen)
    ekf = make_algorithm("ekf", FunctionalModel(model), sigma2=0.01, q=1e-3, s0=1.0, s0_carry=0.5, q_carry=0.02,
                         stateful=True)
    state = ekf.init(torch.zeros(P_DIM, dtype=D), 0, torch.Generator())
    for ob in stream:
        state = ekf.update_node(state, ob, ekf.predict(state, ob.x), torch.Generator(), "test")
    a_ref, P_ref = kalman_with_carry(model, stream, 1.0, 0.5, 1e-3, 0.01, q_carry=0.02)
    torch.testing.assert_close(state.a, a_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(state.P, P_ref, atol=1e-10, rtol=0)
    a_none, _ = kalman_with_carry(model, stream, 1.0, 0.5, 1e-3, 0.01)
    assert float((a_none - a_ref).norm()) > 1e-4  # the carry's noise changes the estimate


def test_stateful_ekf_beats_stateless_on_a_stateful_teacher():
    """Short sequences (1–2 steps) whose labels depend on the node's carried teacher state."""
    fm, theta0 = regressor(2, 4, seed=1)
    totals = {False: 0.0, True: 0.0}
    for seed in (2, 3):
        streams, _ = teacher_streams(2, 150, stateful=True, noise=0.05, min_len=1, max_len=2, seed=seed)
        mse = {}
        for stateful in (False, True):
            alg = make_algorithm("ekf", fm, sigma2=0.01, q=1e-6, s0=0.1, stateful=stateful)
            mse[stateful] = run_online(alg, streams, theta0, InProcessTransport(make_topology("ring", 2))).final_mse()
            totals[stateful] += mse[stateful]
        assert mse[True] < mse[False], (seed, mse)
    assert totals[True] < 0.9 * totals[False], totals


def test_stateful_settings_are_checked():
    fm, _ = regressor(2, 4, seed=1)
    with pytest.raises(ValueError, match="DEKF filters θ only"):
        make_algorithm("dekf", fm, stateful=True)
    with pytest.raises(ValueError, match="s0_carry must be ≥ 0"):
        make_algorithm("ekf", fm, stateful=True, s0_carry=-1.0)

    class NoCarry(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(2))

    with pytest.raises(ValueError, match="needs a model with a carried state"):
        make_algorithm("ekf", FunctionalModel(NoCarry()), stateful=True)


@pytest.mark.parametrize("joseph", [False, True])
def test_an_update_leaves_the_state_it_was_given_unchanged(joseph):
    """The update writes the carry's rows into its own fresh Σ, never into the caller's (labelled or not)."""
    gen = torch.Generator().manual_seed(1)
    model = LinearCarry(gen)
    stream = linear_carry_stream(model, 4, gen)
    ekf = StatefulEKF(FunctionalModel(model), EKFConfig(sigma2=0.01, q=1e-3, s0_carry=0.5, stateful=True,
                                                         joseph=joseph))
    state = ekf.init(torch.zeros(P_DIM, dtype=D), 0, torch.Generator())
    for ob in (stream[0], Observation(stream[1].x, float("nan")), stream[2]):
        kept = [t.clone() for t in state]
        new = ekf.update_node(state, ob, ekf.predict(state, ob.x), torch.Generator(), "test")
        assert all(torch.equal(t, k) for t, k in zip(state, kept, strict=True))
        assert new.P.data_ptr() != state.P.data_ptr() and not torch.equal(new.P, state.P)
        state = new
