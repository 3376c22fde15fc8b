"""Particle weights and resampling, as small pure functions on log-weights.

Every scheme maps normalised weights W (N,) and a target count M to M ancestor
indices A (M,) such that E[#{m : A_m = i}] = M·W_i (unbiased), drawing from an
explicit ``torch.Generator``. Call ``RESAMPLERS[name](W, M, gen)``.

* ``multinomial`` — M independent draws from W.
* ``systematic`` — one uniform U, points (U + m)/M through the CDF (lowest variance
  in practice; the default).
* ``residual`` — ⌊M·W_i⌋ copies deterministically, the remainder by multinomial.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Resampler = Callable[[Tensor, int, torch.Generator], Tensor]
RESAMPLERS: dict[str, Resampler] = {}


def resampling_scheme(fn: Resampler) -> Resampler:
    """Register ``fn`` under its name."""
    RESAMPLERS[fn.__name__] = fn
    return fn


def normalize_log_weights(logw: Tensor) -> tuple[Tensor, Tensor]:
    """Shift log-weights (N,) so they log-sum to 0; returns (logW, W)."""
    logw = logw - torch.logsumexp(logw, 0)
    return logw, logw.exp()


def effective_sample_size(W: Tensor) -> Tensor:
    """ESS = 1 / Σ W_i² for normalised weights W (N,)."""
    return 1.0 / (W * W).sum()


def inverse_cdf(points: Tensor, W: Tensor) -> Tensor:
    """Indices i with CDF_{i-1} ≤ point < CDF_i, for sorted points in [0, 1)."""
    cdf = torch.cumsum(W, 0)
    cdf = cdf / cdf[-1]
    return torch.searchsorted(cdf, points, right=True).clamp_(max=len(W) - 1)


@resampling_scheme
def multinomial(W: Tensor, M: int, gen: torch.Generator) -> Tensor:
    return torch.multinomial(W, M, replacement=True, generator=gen)


@resampling_scheme
def systematic(W: Tensor, M: int, gen: torch.Generator) -> Tensor:
    u = torch.rand((), generator=gen, dtype=W.dtype)
    return inverse_cdf((u + torch.arange(M, dtype=W.dtype)) / M, W)


@resampling_scheme
def residual(W: Tensor, M: int, gen: torch.Generator) -> Tensor:
    copies = torch.floor(M * W).long()
    deterministic = torch.repeat_interleave(torch.arange(len(W)), copies)
    rest = M - int(copies.sum())
    if rest == 0:
        return deterministic
    leftover = M * W - copies
    return torch.cat([deterministic, torch.multinomial(leftover / leftover.sum(), rest, replacement=True,
                                                       generator=gen)])


def resample(W: Tensor, M: int, scheme: str, gen: torch.Generator) -> Tensor:
    """Ancestor indices (M,) by the named scheme."""
    if scheme not in RESAMPLERS:
        raise ValueError(f"unknown resampling scheme {scheme!r}; expected one of {sorted(RESAMPLERS)}")
    if M < 1:
        raise ValueError(f"cannot resample to {M} particles")
    return RESAMPLERS[scheme](W, M, gen)
