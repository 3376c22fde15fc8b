"""Sampled softmax and the log-uniform sampler against closed forms and the full softmax."""

import math

import pytest
import torch
import torch.nn.functional as F

from distlstm.models.softmax import Candidates, LogUniformSampler, sampled_softmax_loss


def test_log_uniform_probabilities_are_the_formula_and_sum_to_one() -> None:
    s = LogUniformSampler(50)
    k = torch.arange(50, dtype=torch.float64)
    assert torch.allclose(s.probs, (torch.log(k + 2) - torch.log(k + 1)) / math.log(51))
    assert float(s.probs.sum()) == pytest.approx(1.0)


def test_draws_with_replacement_have_the_formula_frequencies() -> None:
    s = LogUniformSampler(20)
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(20, dtype=torch.float64)
    for _ in range(50):
        counts += torch.bincount(s.sample(2_000, gen, unique=False).ids, minlength=20)
    freq = counts / counts.sum()
    assert torch.allclose(freq, s.probs, atol=3e-3)  # 100k draws: standard error ≤ 1.6e-3


def test_unique_draws_are_distinct_and_inclusion_follows_the_expected_count() -> None:
    s = LogUniformSampler(30)
    gen = torch.Generator().manual_seed(1)
    included = torch.zeros(30, dtype=torch.float64)
    expected = torch.zeros(30, dtype=torch.float64)
    runs = 4000
    all_ids = torch.arange(30)
    for _ in range(runs):
        c = s.sample(8, gen)
        assert len(set(c.ids.tolist())) == 8
        assert c.tries >= 8
        included[c.ids] += 1
        expected += s.log_expected_count(all_ids, c).exp()
    # TF's expected count 1 − (1 − Q)^T at the drawn T: a close approximation of the inclusion probability.
    assert torch.allclose(included / runs, expected / runs, atol=0.03)
    assert float((included / runs).sum()) == pytest.approx(8.0)


def test_more_unique_candidates_than_classes_is_an_error_naming_both() -> None:
    with pytest.raises(ValueError, match=r"num_sampled=11.*10 classes"):
        LogUniformSampler(10).sample(11, torch.Generator())


def _sampled_gradient_error(num_sampled: int, draws: int = 300) -> float:
    """‖mean sampled-softmax gradient − full-softmax gradient‖ / ‖full‖ on a 40-word vocabulary."""
    gen = torch.Generator().manual_seed(0)
    V, p, N = 40, 5, 6
    w = torch.randn(V, p, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(V, generator=gen, dtype=torch.float64)
    h = torch.randn(N, p, generator=gen, dtype=torch.float64)
    y = torch.randint(0, V, (N,), generator=gen)
    (full,) = torch.autograd.grad(F.cross_entropy(h @ w.t() + b, y), [w])
    sampler = LogUniformSampler(V)
    total = sum(sampled_softmax_loss(w, b, h, y, sampler.sample(num_sampled, gen), sampler) for _ in range(draws))
    (mean,) = torch.autograd.grad(total / draws, [w])  # the mean of the draws' gradients
    return float((mean - full).norm() / full.norm())


def test_sampled_gradient_expectation_approaches_the_full_softmax() -> None:
    errors = [_sampled_gradient_error(s) for s in (4, 20, 36)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.1 < errors[0]


def test_all_classes_as_unique_candidates_give_the_full_softmax_loss() -> None:
    gen = torch.Generator().manual_seed(2)
    V, p = 7, 3
    w, b = torch.randn(V, p, generator=gen, dtype=torch.float64), torch.randn(V, generator=gen, dtype=torch.float64)
    h, y = torch.randn(4, p, generator=gen, dtype=torch.float64), torch.tensor([0, 3, 6, 3])
    sampler = LogUniformSampler(V)
    # Every class drawn with certainty (T → ∞): log E[count] = 0, accidental hits removed.
    everything = Candidates(torch.arange(V), 1e9, True)
    loss = sampled_softmax_loss(w, b, h, y, everything, sampler)
    assert float(loss) == pytest.approx(float(F.cross_entropy(h @ w.t() + b, y)), rel=1e-9)


def test_bad_shapes_are_reported() -> None:
    sampler = LogUniformSampler(5)
    with pytest.raises(ValueError, match="inputs must be"):
        sampled_softmax_loss(torch.zeros(5, 2), torch.zeros(5), torch.zeros(3, 2), torch.zeros(4, dtype=torch.long),
                             sampler.sample(2, torch.Generator()), sampler)
