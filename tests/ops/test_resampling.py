"""Resamplers are unbiased; log-weight helpers are exact."""

from __future__ import annotations

import math

import pytest
import torch

from distlstm.ops.resampling import RESAMPLERS, effective_sample_size, normalize_log_weights, resample


@pytest.mark.parametrize("scheme", sorted(RESAMPLERS))
def test_expected_counts_equal_n_times_weights(scheme):
    gen = torch.Generator().manual_seed(0)
    W = torch.tensor([0.05, 0.3, 0.15, 0.4, 0.1], dtype=torch.float64)
    M, reps = 20, 4000
    counts = torch.zeros(5, dtype=torch.float64)
    for _ in range(reps):
        counts += torch.bincount(resample(W, M, scheme, gen), minlength=5)
    mean = counts / reps
    # Monte Carlo tolerance: 5 standard errors of a multinomial count, the worst case
    se = torch.sqrt(M * W * (1 - W) / reps)
    assert torch.all((mean - M * W).abs() < 5 * se + 1e-9), (mean, M * W)


@pytest.mark.parametrize("scheme", ["systematic", "residual"])
def test_low_variance_schemes_keep_floor_copies(scheme):
    W = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    idx = resample(W, 8, scheme, torch.Generator().manual_seed(1))
    assert torch.equal(torch.bincount(idx, minlength=3), torch.tensor([4, 2, 2]))


def test_log_weights_and_ess():
    logw, W = normalize_log_weights(torch.tensor([0.0, math.log(3.0)], dtype=torch.float64))
    torch.testing.assert_close(W, torch.tensor([0.25, 0.75], dtype=torch.float64))
    assert float(torch.logsumexp(logw, 0)) == pytest.approx(0.0, abs=1e-12)
    assert float(effective_sample_size(torch.full((10,), 0.1))) == pytest.approx(10.0)


def test_unknown_scheme_and_bad_count():
    W = torch.ones(3) / 3
    with pytest.raises(ValueError, match="unknown resampling scheme 'stratified'"):
        resample(W, 3, "stratified", torch.Generator())
    with pytest.raises(ValueError, match="cannot resample to 0"):
        resample(W, 0, "systematic", torch.Generator())


def test_covariance_checks_name_the_problem():
    from distlstm.ops.kalman import check_covariance

    with pytest.raises(FloatingPointError, match="here: the covariance has NaN/inf"):
        check_covariance(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), "here")
    with pytest.raises(FloatingPointError, match="not positive semi-definite"):
        check_covariance(torch.tensor([[1.0, 0.0], [0.0, -1e-3]]), "here")
    check_covariance(torch.eye(2), "fine")
