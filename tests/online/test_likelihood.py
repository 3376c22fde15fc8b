"""The particle filters' measurement likelihood log N(d; h, σ²) against torch.distributions."""

from __future__ import annotations

import math

import pytest
import torch

from distlstm.online.pf import gaussian_loglik


@pytest.mark.parametrize("sigma2", [1e-3, 0.09, 2.5])
def test_gaussian_loglik_is_the_normal_log_density(sigma2):
    h = torch.linspace(-2, 2, 9, dtype=torch.float64)
    expected = torch.distributions.Normal(h, math.sqrt(sigma2)).log_prob(torch.tensor(0.7, dtype=torch.float64))
    torch.testing.assert_close(gaussian_loglik(0.7, h, sigma2), expected, atol=1e-12, rtol=1e-12)
