"""Filters against exact references on a linear-Gaussian model."""

from __future__ import annotations

import pytest
import torch

from distlstm.network import InProcessTransport, make_topology
from distlstm.online import DEKF, DPF, EKF, PF, DPFConfig, EKFConfig, PFConfig
from tests.online.helpers import run_online

from .conftest import D, kalman_reference, linear_streams

P_DIM = 3


@pytest.mark.parametrize("joseph", [False, True])
@pytest.mark.parametrize("q", [0.0, 1e-3])
def test_ekf_equals_exact_kalman_filter(linear_fm, joseph, q):
    streams, _ = linear_streams(1, 40, P_DIM, 0.3, seed=0)
    cfg = EKFConfig(sigma2=0.09, q=q, s0=2.0, joseph=joseph)
    result = run_online(EKF(linear_fm, cfg), streams, torch.zeros(P_DIM, dtype=D),
                        InProcessTransport(make_topology("ring", 1)))
    theta_ref, _ = kalman_reference([[ob] for ob in streams[0]], P_DIM, 2.0, q, 0.09)
    torch.testing.assert_close(result.final_thetas[0], theta_ref, atol=1e-10, rtol=0)


def test_ekf_covariance_and_predictive_variance_match_kalman(linear_fm):
    streams, _ = linear_streams(1, 15, P_DIM, 0.3, seed=1)
    ekf = EKF(linear_fm, EKFConfig(sigma2=0.09, q=1e-3, s0=2.0))
    state = ekf.init(torch.zeros(P_DIM, dtype=D), 0, torch.Generator())
    for t, ob in enumerate(streams[0]):
        pred = ekf.predict(state, ob.x)
        _, P_ref = kalman_reference([[o] for o in streams[0][:t]], P_DIM, 2.0, 1e-3, 0.09)
        H = ob.x[-1]
        assert pred.var == pytest.approx(float(H @ (P_ref + 1e-3 * torch.eye(P_DIM, dtype=D)) @ H) + 0.09, rel=1e-10)
        state = ekf.update_node(state, ob, pred, torch.Generator(), "test")
    _, P_ref = kalman_reference([[o] for o in streams[0]], P_DIM, 2.0, 1e-3, 0.09)
    torch.testing.assert_close(state.P, P_ref, atol=1e-10, rtol=0)


def test_dekf_on_complete_graph_equals_centralized_ekf(linear_fm):
    k, steps = 4, 12
    streams, _ = linear_streams(k, steps, P_DIM, 0.3, seed=2)
    cfg = EKFConfig(sigma2=0.09, q=1e-4, s0=1.0)
    result = run_online(DEKF(linear_fm, cfg), streams, torch.zeros(P_DIM, dtype=D),
                        InProcessTransport(make_topology("complete", k)))
    theta_ref, _ = kalman_reference([[streams[j][t] for j in range(k)] for t in range(steps)], P_DIM, 1.0, 1e-4,
                                    0.09)
    for node in range(k):
        torch.testing.assert_close(result.final_thetas[node], theta_ref, atol=1e-10, rtol=0)


def test_dekf_on_a_ring_beats_isolated_ekf(linear_fm):
    streams, theta_star = linear_streams(6, 25, P_DIM, 0.5, seed=3)
    cfg = EKFConfig(sigma2=0.25, q=0.0, s0=1.0)
    transport = InProcessTransport(make_topology("ring", 6))
    err = {}
    for alg in (EKF(linear_fm, cfg), DEKF(linear_fm, cfg)):
        res = run_online(alg, streams, torch.zeros(P_DIM, dtype=D), transport)
        err[alg.name] = sum(float((t - theta_star).norm()) for t in res.final_thetas.values())
    assert err["dekf"] < 0.7 * err["ekf"]


def pf_error(linear_fm, num: int, seed: int) -> float:
    streams, _ = linear_streams(1, 20, P_DIM, 0.3, seed=4)
    cfg = PFConfig(num_particles=num, sigma2=0.09, q=1e-3, s0=1.0)
    res = run_online(PF(linear_fm, cfg), streams, torch.zeros(P_DIM, dtype=D),
                     InProcessTransport(make_topology("ring", 1)), seed=seed)
    theta_ref, _ = kalman_reference([[ob] for ob in streams[0]], P_DIM, 1.0, 1e-3, 0.09)
    return float((res.final_thetas[0] - theta_ref).norm())


def test_pf_posterior_mean_approaches_kalman_as_particles_grow(linear_fm):
    streams, _ = linear_streams(1, 20, P_DIM, 0.3, seed=4)
    _, P_ref = kalman_reference([[ob] for ob in streams[0]], P_DIM, 1.0, 1e-3, 0.09)
    spread = float(P_ref.trace().sqrt())  # the exact posterior's standard deviation (norm)
    errors = [sum(pf_error(linear_fm, n, s) for s in range(3)) / 3 for n in (50, 500, 20000)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.5 * spread


def dpf_error(linear_fm, walk_steps: int, num: int, seeds: range) -> float:
    k, steps = 4, 10
    streams, _ = linear_streams(k, steps, P_DIM, 0.3, seed=5)
    pf = PFConfig(num_particles=num, sigma2=0.09, q=1e-3, s0=1.0, ess_threshold=1.0)
    theta_ref, _ = kalman_reference([[streams[j][t] for j in range(k)] for t in range(steps)], P_DIM, 1.0, 1e-3,
                                    0.09)
    total = 0.0
    for s in seeds:
        res = run_online(DPF(linear_fm, DPFConfig(walk_steps=walk_steps, pf=pf)), streams,
                         torch.zeros(P_DIM, dtype=D), InProcessTransport(make_topology("ring", k)), seed=s)
        total += sum(float((t - theta_ref).norm()) for t in res.final_thetas.values()) / k
    return total / len(seeds)


def test_dpf_approaches_the_centralized_posterior_as_k_grows(linear_fm):
    """The centralized posterior (all nodes' data) is exact here: the Kalman filter."""
    k1 = dpf_error(linear_fm, 1, 400, range(3))
    k8 = dpf_error(linear_fm, 8, 400, range(3))
    assert k8 < 0.6 * k1
    assert k8 < 0.15


def test_dpf_message_accounting_is_one_particle_per_move(linear_fm):
    streams, _ = linear_streams(4, 3, P_DIM, 0.3, seed=6)
    num, walk = 30, 3
    res = run_online(DPF(linear_fm, DPFConfig(walk_steps=walk, pf=PFConfig(num_particles=num))), streams,
                     torch.zeros(P_DIM, dtype=D), InProcessTransport(make_topology("ring", 4)))
    # every particle moves at every walk step; each move carries n_θ + 1 float64 numbers
    assert res.bytes_per_node_per_step == pytest.approx(walk * num * (P_DIM + 1) * 8)
