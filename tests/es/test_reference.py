"""ES against independent references: ``torch.optim`` for ``tell``, one member at a time for the fitness."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call

from distlstm.es import ESConfig, ask, es_gradient, init, population_noise, tell
from distlstm.es.fitness import char_fitness
from distlstm.es.shaping import shape
from distlstm.es.text import build_model

D = torch.float64


@pytest.mark.parametrize(("optimizer", "weight_decay", "shaping", "mirrored"), [
    ("adam", 0.0, "centered_ranks", True), ("adam", 0.05, "centered_ranks", True), ("sgd", 0.0, "zscore", False),
    ("sgd", 0.05, "zscore", False), ("adam", 0.01, "zscore", False),
])
def test_tell_is_torch_optim_on_minus_the_search_gradient(optimizer, weight_decay, shaping, mirrored):
    """θ ← optim.step with grad −ĝ (weight decay as torch's L2 term λθ), generation after generation."""
    n = 7
    center = torch.linspace(-1, 2, n, dtype=D)
    cfg = ESConfig(population=12, sigma=0.1, lr=0.05, optimizer=optimizer, shaping=shaping, mirrored=mirrored,
                   weight_decay=weight_decay, seed=3)
    state = init(torch.randn(n, dtype=D, generator=torch.Generator().manual_seed(0)))
    p = torch.nn.Parameter(state.theta.clone())
    opt = (torch.optim.Adam([p], lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, weight_decay=weight_decay)
           if optimizer == "adam" else torch.optim.SGD([p], lr=cfg.lr, weight_decay=weight_decay))
    for _ in range(6):
        fitness = -((ask(cfg, state) - center) ** 2).sum(1)
        g_hat, _ = es_gradient(cfg, state, fitness)
        state, metrics = tell(cfg, state, fitness)
        p.grad = -g_hat
        opt.step()
        torch.testing.assert_close(state.theta, p.detach(), atol=1e-12, rtol=1e-12)
        assert metrics["fitness_max"] == pytest.approx(float(fitness.max()))
    assert state.generation == 6


def test_search_gradient_by_hand():
    """ĝ = 1/(Pσ) Σ_j F̃_j ε_j with F̃ the z-scores, computed here with an explicit loop."""
    cfg = ESConfig(population=6, sigma=0.3, shaping="zscore", mirrored=False, seed=5)
    state = init(torch.zeros(4, dtype=D))
    fitness = torch.tensor([0.3, -1.0, 2.0, 0.0, 0.5, 1.5], dtype=D)
    z = (fitness - fitness.mean()) / fitness.std()
    expected = torch.zeros(4, dtype=D)
    for j in range(6):
        expected += z[j] * population_noise(5, 0, range(j, j + 1), 4, False, D)[0]
    g, dropped = es_gradient(cfg, state, fitness)
    torch.testing.assert_close(g, expected / (6 * 0.3))
    assert dropped == 0
    torch.testing.assert_close(ask(cfg, state)[2], 0.3 * population_noise(5, 0, range(2, 3), 4, False, D)[0])


def test_fitness_across_chunk_boundaries_equals_one_member_at_a_time():
    """130 members cross the 64-member chunks twice; each F_j is recomputed alone by functional_call."""
    fm = build_model(11, "rnn", 6, seed=0)
    gen = torch.Generator().manual_seed(1)
    thetas = fm.flatten() + 0.3 * torch.randn(130, fm.numel, generator=gen)
    x = torch.randint(0, 11, (2, 5), generator=gen)
    y = torch.randint(0, 11, (2, 5), generator=gen)
    f = char_fitness(fm, thetas, x, y)
    assert f.shape == (130,)
    for j in (0, 63, 64, 65, 127, 128, 129):
        logits, _ = functional_call(fm.module, fm.spec.unflatten(thetas[j]), (x,))
        expected = -F.cross_entropy(logits.reshape(-1, 11), y.reshape(-1))
        torch.testing.assert_close(f[j], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(char_fitness(fm, thetas, x, y, chunk=7), f, atol=1e-6, rtol=1e-6)


@settings(max_examples=30, deadline=None)
@given(population=st.integers(1, 20).map(lambda k: 2 * k), workers=st.integers(1, 5), mirrored=st.booleans(),
       seed=st.integers(0, 1000), generation=st.integers(0, 50))
def test_worker_slices_of_the_noise_concatenate_to_the_population(population, workers, mirrored, seed, generation):
    """Any split of the members into contiguous worker ranges regenerates exactly the full population's ε."""
    full = population_noise(seed, generation, range(population), 5, mirrored, D)
    bounds = sorted({0, population, *(population * w // workers for w in range(workers))})
    parts = [population_noise(seed, generation, range(a, b), 5, mirrored, D) for a, b in pairwise(bounds)]
    assert torch.equal(torch.cat(parts), full)
    if mirrored:
        assert torch.equal(full[1::2], -full[0::2])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.floats(-1e3, 1e3), st.just(float("nan")), st.just(float("inf"))), min_size=2,
                max_size=30), st.sampled_from(["centered_ranks", "zscore", "none"]))
def test_shaping_drops_exactly_the_non_finite(values, how):
    f = torch.tensor(values, dtype=D)
    w, dropped = shape(f, how)
    bad = ~torch.isfinite(f)
    assert dropped == int(bad.sum()) and bool((w[bad] == 0).all()) and bool(torch.isfinite(w).all())
    if how == "centered_ranks" and int((~bad).sum()) > 1:
        assert abs(float(w.sum())) < 1e-9 and float(w.max()) == 0.5
