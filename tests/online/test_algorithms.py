"""Every online algorithm, end to end: learning, reproducibility, bad labels, bad settings, accounting."""

from __future__ import annotations

import math

import pytest
import torch

from distlstm.data.observation import Observation
from distlstm.experiments.teacher import teacher_streams
from distlstm.network import InProcessTransport, make_topology
from distlstm.online import ALGORITHMS, EKF, EKFConfig, make_algorithm, regressor
from tests.online.helpers import run_online

from .conftest import D, linear_streams

FAST = {  # small particle counts keep the suite quick
    "sgd": {"lr": 0.05}, "dsgd": {"lr": 0.05},
    "ekf": {"sigma2": 0.01, "q": 1e-6, "s0": 0.1}, "dekf": {"sigma2": 0.01, "q": 1e-6, "s0": 0.1},
    "pf": {"num_particles": 300, "sigma2": 0.02, "q": 1e-4, "s0": 0.1},
    "dpf": {"num_particles": 300, "sigma2": 0.05, "q": 1e-4, "s0": 0.1, "walk_steps": 2},
}


@pytest.fixture(scope="module")
def teacher():
    streams, _theta_star = teacher_streams(4, 120, noise=0.05, seed=0)
    fm, theta0 = regressor(2, 4, seed=1)
    no_learning = sum((ob.d - float(fm(theta0, ob.x.unsqueeze(0))[0])) ** 2
                      for s in streams for ob in s[96:]) / (4 * 24)
    return streams, fm, theta0, no_learning


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_every_algorithm_learns_the_teacher_below_no_learning(teacher, name):
    streams, fm, theta0, no_learning = teacher
    res = run_online(make_algorithm(name, fm, **FAST[name]), streams, theta0,
                     InProcessTransport(make_topology("ring", 4)), seed=0)
    assert res.final_mse() < 0.6 * no_learning, (res.final_mse(), no_learning)
    assert all(torch.isfinite(t).all() for t in res.final_thetas.values())


@pytest.mark.parametrize("name", ["pf", "dpf", "dekf"])
def test_same_seed_same_numbers(teacher, name):
    streams, fm, theta0, _ = teacher
    runs = [run_online(make_algorithm(name, fm, **FAST[name]), [s[:15] for s in streams], theta0,
                       InProcessTransport(make_topology("ring", 4)), seed=seed) for seed in (3, 3, 4)]
    assert runs[0].sq_errors == runs[1].sq_errors
    assert all(torch.equal(runs[0].final_thetas[k], runs[1].final_thetas[k]) for k in range(4))
    if name != "dekf":  # DEKF draws no random numbers
        assert runs[0].sq_errors != runs[2].sq_errors


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_nan_labels_are_skipped_and_counted(teacher, name):
    streams, fm, theta0, _ = teacher
    holey = [[Observation(ob.x, math.nan) if t % 3 == 1 else ob for t, ob in enumerate(s[:12])] for s in streams]
    res = run_online(make_algorithm(name, fm, **FAST[name]), holey, theta0,
                     InProcessTransport(make_topology("ring", 4)), seed=0)
    assert res.skipped_labels == 4 * 4
    assert all(math.isnan(res.sq_errors[t][k]) for t in (1, 4, 7, 10) for k in range(4))
    assert all(torch.isfinite(t).all() for t in res.final_thetas.values())


def test_a_nan_label_leaves_the_ekf_estimate_unchanged(teacher):
    _, fm, theta0, _ = teacher
    ekf = EKF(fm, EKFConfig(q=1e-3))
    state = ekf.init(theta0, 0, torch.Generator())
    x = torch.randn(3, 2, dtype=D)
    new = ekf.update_node(state, Observation(x, math.nan), ekf.predict(state, x), torch.Generator(), "t")
    assert torch.equal(new.theta, state.theta)
    torch.testing.assert_close(new.P, state.P + 1e-3 * torch.eye(fm.numel, dtype=D))


def test_a_diverging_ekf_covariance_stops_with_the_step_named(linear_fm):
    streams, _ = linear_streams(2, 4, 3, 0.3, seed=0)
    # at step 0 θ = 0 predicts 0 (a finite error), but H = x_T = (1e200, 0, 0) makes H Σ Hᵀ overflow
    streams[1][0] = Observation(torch.tensor([[0.0, 0, 0], [1e200, 0, 0]], dtype=D), 0.5)
    with pytest.raises(FloatingPointError, match=r"EKF at node 1, step 0: the covariance has NaN/inf"):
        run_online(EKF(linear_fm), streams, torch.zeros(3, dtype=D), InProcessTransport(make_topology("ring", 2)))


def test_an_overflowing_prediction_error_stops_with_the_step_named(teacher):
    streams, fm, theta0, _ = teacher
    bad = [list(s[:6]) for s in streams]
    bad[2][3] = Observation(bad[2][3].x, 1e300)
    with pytest.raises(FloatingPointError, match=r"ekf at node 2, step 3: the squared prediction error overflows"):
        run_online(EKF(fm), bad, theta0, InProcessTransport(make_topology("ring", 4)))


@pytest.mark.parametrize(("name", "settings", "message"), [
    ("ekf", {"sigma2": 0.0}, "sigma2"), ("dekf", {"sigma2": -1.0}, "sigma2"),
    ("pf", {"num_particles": 0}, "num_particles"), ("dpf", {"walk_steps": 0}, "walk_steps"),
    ("pf", {"sigma2": float("nan")}, "sigma2"), ("sgd", {"lr": 0.0}, "lr"),
    ("pf", {"resampling": "stratified"}, "resampling"), ("ekf", {"q": -1.0}, "q"),
])
def test_invalid_settings_are_rejected(teacher, name, settings, message):
    _, fm, _, _ = teacher
    with pytest.raises(ValueError, match=message):
        make_algorithm(name, fm, **settings)
    with pytest.raises(ValueError, match="unknown algorithm 'rls'"):
        make_algorithm("rls", fm)


def test_bad_streams_are_rejected(teacher):
    streams, fm, theta0, _ = teacher
    transport = InProcessTransport(make_topology("ring", 4))
    with pytest.raises(ValueError, match="one stream per node"):
        run_online(EKF(fm), streams[:3], theta0, transport)
    bad = [list(s[:3]) for s in streams]
    bad[1][2] = Observation(torch.full((3, 2), math.nan, dtype=D), 0.0)
    with pytest.raises(ValueError, match="node 1, step 2: the input sequence contains NaN"):
        run_online(EKF(fm), bad, theta0, transport)
    bad[1][2] = Observation(torch.zeros(3, 5, dtype=D), 0.0)
    with pytest.raises(ValueError, match=r"node 1, step 2: expected a sequence of shape \(T ≥ 1, 2\)"):
        run_online(EKF(fm), bad, theta0, transport)


def test_diffusion_on_a_complete_graph_reaches_consensus(teacher):
    streams, fm, theta0, _ = teacher
    res = run_online(make_algorithm("dsgd", fm, lr=0.05), [s[:10] for s in streams], theta0,
                     InProcessTransport(make_topology("complete", 4)))
    for k in range(1, 4):  # c_kl = 1/4 for all pairs: every node holds the same average
        torch.testing.assert_close(res.final_thetas[k], res.final_thetas[0])


def test_bytes_sent_match_what_each_algorithm_sends(teacher):
    streams, fm, theta0, _ = teacher
    n = fm.numel
    short = [s[:5] for s in streams]
    lengths = [[ob.x.shape[0] for ob in s] for s in short]
    expected = {
        "sgd": 0.0, "ekf": 0.0, "pf": 0.0,
        "dsgd": 2 * n * 8,  # ψ to each of 2 ring neighbours
        # own observation (T·p + 1 numbers) and ψ to each neighbour, averaged over nodes and steps
        "dekf": 2 * 8 * (n + sum(l_ * 2 + 1 for row in lengths for l_ in row) / 20),
        "dpf": 2 * 300 * (n + 1) * 8,  # K walk steps × N particles × (θ, log-weight)
    }
    for name, value in expected.items():
        res = run_online(make_algorithm(name, fm, **FAST[name]), short, theta0,
                         InProcessTransport(make_topology("ring", 4)))
        assert res.bytes_per_node_per_step == pytest.approx(value), name


def test_ekf_predictive_interval_is_calibrated_on_a_linear_gaussian_model(linear_fm):
    streams, _ = linear_streams(4, 300, 3, 0.3, seed=9)
    res = run_online(EKF(linear_fm, EKFConfig(sigma2=0.09, q=0.0, s0=1.0)), streams, torch.zeros(3, dtype=D),
                     InProcessTransport(make_topology("ring", 4)))
    assert 0.92 < res.coverage95() < 0.98
