"""Adaptive σ² against the truth and the exact Kalman filter; the DEKF's two linearisations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from distlstm.experiments.calibration import wilson_interval
from distlstm.models.functional import FunctionalModel
from distlstm.network import InProcessTransport, make_topology
from distlstm.online import DEKF, EKF, PF, EKFConfig, PFConfig
from distlstm.online.base import Observation
from distlstm.ops.kalman import block_update
from distlstm.ops.noise import (
    ACI_STEP,
    FLOOR_FRACTION,
    Z95,
    initial_noise,
    interval_scale,
    noise_variance,
    update_level,
    update_noise,
    update_ratios,
)
from tests.online.helpers import SCHEDULES, dekf_block_update, run_online

from .conftest import D, kalman_reference, linear_streams

P_DIM = 3


def test_noise_estimate_is_the_forgetting_weighted_mean_of_the_samples():
    sigma0, window = 0.5, 4
    samples = [(1.0, 0.2), (0.1, 0.3), (2.0, 0.5)]  # (squared error, spread)
    noise = initial_noise(sigma0)
    for e2, s in samples:
        noise = update_noise(noise, e2, s, window)
    rho = 1 - 1 / window
    weights = [2.0 * rho**3] + [rho ** (2 - i) for i in range(3)]  # prior (2 samples), then z_1..z_3
    values = [sigma0] + [e2 - s for e2, s in samples]
    expected = sum(w * v for w, v in zip(weights, values, strict=True)) / sum(weights)
    assert float(noise[1]) == pytest.approx(expected, rel=1e-12)
    assert float(noise[0]) == pytest.approx(sum(weights), rel=1e-12)
    assert noise_variance(torch.tensor([3.0, -1.0], dtype=D), sigma0) == FLOOR_FRACTION * sigma0


def test_adaptive_sigma2_converges_to_the_true_noise_and_the_filter_to_the_exact_kalman_filter(linear_fm):
    """Start σ² 10× too large; the estimate reaches the true 0.09, and θ̂ the exact KF's with σ² = 0.09."""
    streams, _ = linear_streams(1, 800, P_DIM, 0.3, seed=11)
    cfg = EKFConfig(sigma2=0.9, q=0.0, s0=1.0, noise="adaptive", noise_window=100_000)
    ekf = EKF(linear_fm, cfg)
    state = ekf.init(torch.zeros(P_DIM, dtype=D), 0, torch.Generator())
    for ob in streams[0]:
        state = ekf.update_node(state, ob, ekf.predict(state, ob.x), torch.Generator(), "test")
    assert float(state.noise[1]) == pytest.approx(0.09, rel=0.12)
    theta_ref, _ = kalman_reference([[ob] for ob in streams[0]], P_DIM, 1.0, 0.0, 0.09)
    torch.testing.assert_close(state.theta, theta_ref, atol=0, rtol=1e-2)
    fixed = run_online(EKF(linear_fm, EKFConfig(sigma2=0.9, q=0.0, s0=1.0)), streams, torch.zeros(P_DIM, dtype=D),
                       InProcessTransport(make_topology("ring", 1)))
    adaptive = run_online(ekf, streams, torch.zeros(P_DIM, dtype=D), InProcessTransport(make_topology("ring", 1)))
    assert fixed.coverage95() > 0.99  # σ² 10× too large: intervals far too wide
    assert 0.93 < adaptive.coverage95() < 0.97


def test_pf_adaptive_sigma2_approaches_the_true_noise(linear_fm):
    streams, _ = linear_streams(1, 300, P_DIM, 0.3, seed=12)
    pf = PF(linear_fm, PFConfig(num_particles=300, sigma2=0.9, q=1e-4, s0=1.0, noise="adaptive",
                                noise_window=100_000))
    gen = torch.Generator().manual_seed(0)
    state = pf.init(torch.zeros(P_DIM, dtype=D), 0, gen)
    for ob in streams[0]:
        state = pf.update_node(state, ob, pf.predict(state, ob.x), gen, "test")
    assert float(state.noise[1]) == pytest.approx(0.09, rel=0.25)


def test_fixed_noise_leaves_the_estimate_alone(linear_fm):
    streams, _ = linear_streams(1, 5, P_DIM, 0.3, seed=1)
    ekf = EKF(linear_fm, EKFConfig(sigma2=0.09))
    state = ekf.init(torch.zeros(P_DIM, dtype=D), 0, torch.Generator())
    for ob in streams[0]:
        state = ekf.update_node(state, ob, ekf.predict(state, ob.x), torch.Generator(), "test")
    torch.testing.assert_close(state.noise, initial_noise(0.09))


@pytest.mark.parametrize("bad", [{"noise": "auto"}, {"noise_window": 0}, {"linearisation": "joint"}])
def test_bad_noise_and_linearisation_settings_are_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        EKFConfig(**bad)


def diffusion_kalman_reference(streams: list[list[Observation]], topo, s0: float, q: float,
                               sigma2: float) -> list[Tensor]:
    """Textbook diffusion KF: every node filters its neighbourhood's data exactly, then Metropolis-combines θ."""
    k_all, steps = len(streams), len(streams[0])
    c = topo.metropolis_weights().to(D)
    thetas = [torch.zeros(P_DIM, dtype=D) for _ in range(k_all)]
    covs = [s0 * torch.eye(P_DIM, dtype=D) for _ in range(k_all)]
    for t in range(steps):
        psi, new_covs = [], []
        for k in range(k_all):
            hood = [k, *sorted(topo.neighbours(k))]
            theta, P = thetas[k], covs[k] + q * torch.eye(P_DIM, dtype=D)
            for j in hood:
                H = streams[j][t].x[-1].reshape(1, P_DIM)
                K = P @ H.T / float(H @ P @ H.T + sigma2)
                theta = theta + K[:, 0] * (streams[j][t].d - float(H @ theta))
                P = (torch.eye(P_DIM, dtype=D) - K @ H) @ P
            psi.append(theta)
            new_covs.append(P)
        thetas = [sum(c[k, j] * psi[j] for j in range(k_all)) for k in range(k_all)]
        covs = new_covs
    return thetas


@pytest.mark.parametrize("topology", ["ring", "complete"])
def test_block_and_sequential_dekf_equal_the_exact_diffusion_kalman_filter(linear_fm, topology):
    k_all, steps = 5, 15
    streams, _ = linear_streams(k_all, steps, P_DIM, 0.3, seed=5)
    transport = InProcessTransport(make_topology(topology, k_all))
    finals = {}
    for lin in ("block", "sequential"):
        cfg = EKFConfig(sigma2=0.09, q=1e-4, s0=1.0, linearisation=lin)
        finals[lin] = run_online(DEKF(linear_fm, cfg), streams, torch.zeros(P_DIM, dtype=D), transport).final_thetas
    reference = diffusion_kalman_reference(streams, transport.topology, 1.0, 1e-4, 0.09)
    for k in range(k_all):
        torch.testing.assert_close(finals["block"][k], finals["sequential"][k], atol=1e-10, rtol=0)
        torch.testing.assert_close(finals["block"][k], reference[k], atol=1e-10, rtol=0)
    if topology == "complete":  # every node sees all the data: the centralised KF
        central, _ = kalman_reference([[streams[j][t] for j in range(k_all)] for t in range(steps)], P_DIM, 1.0,
                                      1e-4, 0.09)
        torch.testing.assert_close(finals["block"][0], central, atol=1e-10, rtol=0)


class TanhLast(nn.Module):
    """d̂ = 2 tanh(θᵀ x_T): nonlinear in θ."""

    def __init__(self, p: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(p, dtype=D))

    def forward(self, x: Tensor) -> Tensor:
        return 2 * torch.tanh(x[:, -1] @ self.w)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_on_a_nonlinear_model_block_is_the_information_form_update_and_differs_from_sequential(schedule):
    fm = FunctionalModel(TanhLast(P_DIM))
    gen = torch.Generator().manual_seed(3)
    theta = 0.5 * torch.randn(P_DIM, generator=gen, dtype=D)
    data = [Observation(torch.randn(2, P_DIM, generator=gen, dtype=D), float(torch.randn((), generator=gen)))
            for _ in range(3)]
    sigma2, q = 0.05, 1e-3
    dekf = DEKF(fm, EKFConfig(sigma2=sigma2, q=q, s0=0.7))
    state = dekf.local.init(theta, 0, gen)
    psi_block, P_block = dekf_block_update(dekf, state, data, schedule)
    psi_seq, P_seq = dekf.incremental_update(state, data, dekf.predict(state, data[0].x), sigma2, "test")

    # by hand: Jacobian rows at the predicted state, information form
    def h(th: Tensor, ob: Observation) -> Tensor:
        return 2 * torch.tanh(ob.x[-1] @ th)

    H = torch.stack([torch.autograd.functional.jacobian(lambda th, ob=ob: h(th, ob), theta) for ob in data])
    e = torch.tensor([ob.d - float(h(theta, ob)) for ob in data], dtype=D)
    P_pred = (0.7 + q) * torch.eye(P_DIM, dtype=D)
    P_post = torch.linalg.inv(torch.linalg.inv(P_pred) + H.T @ H / sigma2)
    torch.testing.assert_close(P_block, P_post, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(psi_block, theta + P_post @ H.T @ e / sigma2, atol=1e-12, rtol=1e-10)
    assert float((psi_block - psi_seq).norm()) > 1e-3
    assert float((P_block - P_seq).abs().max()) > 1e-4


@pytest.mark.parametrize("joseph", [False, True])
def test_block_update_equals_scalar_updates_in_sequence_on_a_linear_model(joseph):
    gen = torch.Generator().manual_seed(4)
    n, m = 6, 3
    A = torch.randn(n, n, generator=gen, dtype=D)
    P, a = A @ A.T + torch.eye(n, dtype=D), torch.randn(n, generator=gen, dtype=D)
    P = 0.5 * (P + P.T)  # a GEMM's A·Aᵀ is not bitwise symmetric; the update keeps a symmetric Σ so
    H, d = torch.randn(m, n, generator=gen, dtype=D), torch.randn(m, generator=gen, dtype=D)
    upd = block_update(a, P, H, d - H @ a, 0.2, joseph, q=0.01)
    ref_a, ref_P = a, P + 0.01 * torch.eye(n, dtype=D)
    for i in range(m):
        K = ref_P @ H[i] / (H[i] @ ref_P @ H[i] + 0.2)
        ref_a = ref_a + K * (d[i] - H[i] @ ref_a)
        ref_P = ref_P - torch.outer(K, H[i] @ ref_P)
    torch.testing.assert_close(upd.a, ref_a, atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(upd.P, ref_P, atol=1e-12, rtol=1e-10)
    assert bool((upd.P.mT == upd.P).all())


@pytest.mark.parametrize(("hits", "n"), [(0, 10), (7, 10), (81, 263), (950, 1000), (20, 20)])
def test_wilson_bounds_solve_the_score_equation(hits, n):
    """The Wilson bounds are the p with (p̂ − p)² = z² p (1 − p) / n (or 0 / 1 at the edges)."""
    z = 1.959963984540054
    low, high = wilson_interval(hits, n)
    p_hat = hits / n
    assert low <= p_hat <= high
    for p in (low, high):
        if 0 < p < 1:
            assert (p_hat - p) ** 2 == pytest.approx(z * z * p * (1 - p) / n, rel=1e-9)
    assert math.isclose(low, 0.0, abs_tol=1e-12) == (hits == 0)
    with pytest.raises(ValueError, match="hits"):
        wilson_interval(11, 10)


def test_interval_scale_is_the_conformal_quantile_of_the_last_window_of_ratios():
    window = 30
    noise = initial_noise(0.1, window)
    ratios = [float(i) for i in range(1, 41)]  # 40 ratios: the window keeps 11..40
    for i, r in enumerate(ratios):
        seen = sorted(ratios[max(0, i - window):i])
        rank = min(math.ceil(0.95 * (len(seen) + 1)), len(seen))  # the largest while fewer than 19
        assert interval_scale(noise) == (1.0 if i == 0 else pytest.approx(seen[rank - 1] / 1.959963984540054**2))
        noise = update_ratios(noise, r * 2.0, 2.0)  # (d − d̂)² / v = r
    kept = sorted(ratios[-window:])  # 11..40; rank ⌈0.95 · 31⌉ = 30: the largest
    assert interval_scale(noise) == pytest.approx(kept[29] / 1.959963984540054**2)


def test_the_adaptive_level_moves_by_gamma_times_alpha_minus_the_miss():
    noise = initial_noise(0.1, 10)
    assert float(noise[3]) == pytest.approx(0.05)
    hit, miss = update_level(noise, False), update_level(noise, True)
    assert float(hit[3]) == pytest.approx(0.05 + ACI_STEP * 0.05, rel=1e-12)
    assert float(miss[3]) == pytest.approx(0.05 - ACI_STEP * 0.95, rel=1e-12)
    torch.testing.assert_close(hit[torch.arange(14) != 3], noise[torch.arange(14) != 3])  # only α_t moves
    # a lower α_t asks for a higher order statistic of the window: c grows
    for r in range(1, 11):
        noise = update_ratios(noise, float(r), 1.0)
    low = noise.clone()
    low[3] = 0.3
    assert interval_scale(low) < interval_scale(noise)


def _window_coverage(adaptive: bool, steps: int = 4000, seed: int = 0) -> float:
    """Coverage of d̂ ± z√(c v) on errors whose scale cycles (volatility clusters), v = 1, window 100."""
    gen = torch.Generator().manual_seed(seed)
    noise, hits = initial_noise(0.1, 100), 0
    for t in range(steps):
        scale = math.exp(2.0 * math.sin(2 * math.pi * t / 400))
        sq_error = (float(torch.randn((), generator=gen, dtype=D)) * scale) ** 2
        missed = sq_error > Z95 * Z95 * interval_scale(noise)
        hits += not missed
        noise = update_ratios(noise, sq_error, 1.0)
        if adaptive:
            noise = update_level(noise, missed)
    return hits / steps


def test_adaptive_conformal_level_holds_coverage_where_a_sliding_window_does_not():
    """Gibbs & Candès: the miss-driven level keeps long-run coverage at 95% where the window's ratios lag the scale."""
    assert _window_coverage(adaptive=False) < 0.90  # the window's quantile trails a rising scale
    assert 0.94 < _window_coverage(adaptive=True) < 0.96


def test_interval_calibration_brings_uniform_noise_coverage_to_95_percent(linear_fm):
    """Uniform noise with its exact variance: the Gaussian ±1.96σ interval covers every label; calibrated, 95%."""
    gen = torch.Generator().manual_seed(7)
    theta_star = torch.randn(P_DIM, generator=gen, dtype=D)
    stream = []
    for _ in range(1500):
        x = torch.randn(2, P_DIM, generator=gen, dtype=D)
        stream.append(Observation(x, float(x[-1] @ theta_star + (2 * torch.rand((), generator=gen) - 1))))
    transport = InProcessTransport(make_topology("ring", 1))
    coverage = {}
    for window in (0, 100):
        cfg = EKFConfig(sigma2=1 / 3, q=0.0, s0=1.0, interval_window=window)  # U(−1, 1) has variance 1/3
        coverage[window] = run_online(EKF(linear_fm, cfg), [stream], torch.zeros(P_DIM, dtype=D),
                                      transport).coverage95()
    assert coverage[0] > 0.99
    assert 0.935 < coverage[100] < 0.965


def test_cli_settings_for_noise_interval_and_linearisation():
    from distlstm.modes.online import OnlineConfig

    cfg = OnlineConfig(algorithm="dekf", noise="adaptive", noise_window=50, interval_window=0,
                       linearisation="sequential")
    assert cfg.settings() == {"noise": "adaptive", "noise_window": 50, "interval_window": 0,
                              "linearisation": "sequential"}
    with pytest.raises(ValueError, match="linearisation"):
        OnlineConfig(algorithm="ekf", linearisation="block")
    with pytest.raises(ValueError, match="interval_window"):
        OnlineConfig(algorithm="sgd", interval_window=10)
    with pytest.raises(ValueError, match="interval_window"):
        EKFConfig(interval_window=-1)
