"""ES ask/tell against known answers: quadratics, linear functions, rank properties, shared noise."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distlstm.es import ESConfig, ask, centered_ranks, es_gradient, init, member_noise, population_noise, tell
from distlstm.es.shaping import shape

D = torch.float64


@pytest.mark.parametrize("shaping", ["centered_ranks", "zscore", "none"])
def test_gradient_estimate_points_along_the_true_gradient_of_a_quadratic(shaping):
    n = 10
    center = torch.linspace(-1, 1, n, dtype=D)
    state = init(torch.zeros(n, dtype=D))
    cfg = ESConfig(population=4000, sigma=0.05, shaping=shaping)
    thetas = ask(cfg, state)
    fitness = -((thetas - center) ** 2).sum(1)  # F(θ) = −|θ − c|², ∇F = −2(θ − c) = 2c at θ = 0
    g, _ = es_gradient(cfg, state, fitness)
    cosine = float(g @ center / (g.norm() * center.norm()))
    assert cosine > 0.9


def test_mirrored_sampling_is_exact_for_linear_functions():
    """For F = b + aᵀθ the antithetic pairs cancel b and θ: g = (2/P) Σ_i ε_i ε_iᵀ a exactly."""
    n, P = 6, 40
    a = torch.randn(n, dtype=D, generator=torch.Generator().manual_seed(0))
    state = init(torch.randn(n, dtype=D))
    for mirrored, exact in ((True, True), (False, False)):
        cfg = ESConfig(population=P, sigma=0.1, shaping="none", mirrored=mirrored)
        thetas = ask(cfg, state)
        g1, _ = es_gradient(cfg, state, 3.0 + thetas @ a)
        g2, _ = es_gradient(cfg, state, -7.0 + thetas @ a)  # another offset
        if exact:
            eps = population_noise(0, 0, range(0, P, 2), n, True, D)
            torch.testing.assert_close(g1, 2 / P * eps.T @ (eps @ a), atol=1e-12, rtol=0)
            torch.testing.assert_close(g1, g2, atol=1e-12, rtol=0)
        else:
            assert not torch.allclose(g1, g2)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=60))
def test_centered_ranks_lie_in_half_interval_and_sum_to_zero(values):
    r = centered_ranks(torch.tensor(values, dtype=D))
    assert float(r.min()) == -0.5 and float(r.max()) == 0.5
    assert abs(float(r.sum())) < 1e-9
    assert torch.equal(torch.argsort(r), torch.argsort(torch.tensor(values, dtype=D), stable=True))


def test_non_finite_fitness_is_dropped_and_counted():
    f = torch.tensor([1.0, float("nan"), 3.0, float("-inf"), 2.0], dtype=D)
    w, dropped = shape(f, "centered_ranks")
    assert dropped == 2 and w[1] == 0 and w[3] == 0
    torch.testing.assert_close(w[[0, 2, 4]], torch.tensor([-0.5, 0.5, 0.0], dtype=D))
    state = init(torch.zeros(3, dtype=D))
    new, metrics = tell(ESConfig(population=4, sigma=0.1), state, torch.tensor([1.0, float("nan"), 2.0, 0.5]))
    assert metrics["dropped"] == 1 and torch.isfinite(new.theta).all()


@pytest.mark.parametrize("kind", ["table", "seeded"])
def test_noise_is_identical_in_another_process(kind):
    here = member_noise(7, 3, 5, 16, mirrored=True, kind=kind)
    code = ("import torch; from distlstm.es import member_noise; "
            f"print(repr(member_noise(7, 3, 5, 16, mirrored=True, kind={kind!r}).tolist()))")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert torch.equal(here, torch.tensor(eval(there), dtype=here.dtype))
    assert torch.equal(member_noise(7, 3, 4, 16, True, kind=kind), -here)  # its mirrored twin
    assert not torch.equal(member_noise(7, 4, 5, 16, True, kind=kind), here)  # another generation
    assert not torch.equal(member_noise(8, 3, 5, 16, True, kind=kind), here)  # another run seed


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sigma": 0.0}, "sigma"), ({"sigma": -1.0}, "sigma"), ({"population": 7}, "even population"),
    ({"population": 1}, "population"), ({"optimizer": "rmsprop"}, "optimizer"), ({"shaping": "ranks"}, "shaping"),
    ({"lr": float("nan")}, "lr"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ESConfig(**kwargs)
    with pytest.raises(ValueError, match="fitness: expected shape"):
        es_gradient(ESConfig(population=4), init(torch.zeros(3)), torch.zeros(5))


def test_tell_with_the_noise_kept_from_ask_equals_tell_regenerating_it():
    from distlstm.es.strategy import noise

    cfg = ESConfig(population=8, sigma=0.1)
    state = init(torch.linspace(-1, 1, 5, dtype=D))
    eps = noise(cfg, state)
    thetas = ask(cfg, state, eps=eps)
    assert torch.equal(thetas, ask(cfg, state))
    fitness = -(thetas**2).sum(1)
    kept, _ = tell(cfg, state, fitness, eps)
    regenerated, _ = tell(cfg, state, fitness)
    assert torch.equal(kept.theta, regenerated.theta)
    with pytest.raises(ValueError, match=r"whole population's noise \(8, 5\), got \(4, 5\)"):
        tell(cfg, state, fitness, eps[:4])


def test_a_step_size_half_life_halves_the_step_every_g_generations():
    from distlstm.es.strategy import step_size

    cfg = ESConfig(population=4, lr=0.2, optimizer="sgd", shaping="none", mirrored=False, weight_decay=0.0,
                   lr_half_life=10)
    assert [step_size(cfg, t) for t in (0, 10, 20)] == pytest.approx([0.2, 0.1, 0.05])
    state = init(torch.zeros(3, dtype=D))._replace(generation=20)
    fitness = torch.tensor([1.0, -1.0, 0.5, 0.0], dtype=D)
    new, metrics = tell(cfg, state, fitness)
    g, _ = es_gradient(cfg, state, fitness)
    torch.testing.assert_close(new.theta, 0.05 * g)  # θ ← θ + α_t g with α_20 = α / 4
    assert metrics["lr"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="lr_half_life must be a positive number of generations, got 0"):
        ESConfig(lr_half_life=0)
