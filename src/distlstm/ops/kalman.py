"""Extended Kalman filter measurement update for a scalar measurement (rank-1).

For a measurement d = h(a) + ε, ε ~ N(0, σ²), linearised at the prior mean with
row Jacobian H (1, n)::

    u = Σ Hᵀ                 (n,)   prior cross-covariance of a and d
    r = H Σ Hᵀ + σ²          scalar innovation variance
    K = u / r                (n,)   Kalman gain
    â ← â + K (d − h(â))
    Σ ← Σ − K Kᵀ r           standard form (= Σ − Σ Hᵀ H Σ / r)

Joseph form, ``(I − K H) Σ (I − K H)ᵀ + K σ² Kᵀ``, expanded for rank one::

    Σ ← Σ − K uᵀ − u Kᵀ + (H Σ Hᵀ + σ²) K Kᵀ

Both are O(n²) — never an n × n × n product. The result is symmetrised.

| symbol | variable |
|---|---|
| â, Σ | ``a``, ``P`` |
| H | ``H`` (n,) |
| d − h(â) | ``innovation`` |
| σ² | ``sigma2`` |
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class KalmanUpdate(NamedTuple):
    a: Tensor  # (n,) posterior mean
    P: Tensor  # (n, n) posterior covariance
    r: Tensor  # () innovation variance H Σ Hᵀ + σ²


def symmetrize(P: Tensor) -> Tensor:
    """(P + Pᵀ) / 2: removes the asymmetry rounding adds."""
    return 0.5 * (P + P.mT)


def innovation_variance(P: Tensor, H: Tensor, sigma2: float) -> Tensor:
    """r = H Σ Hᵀ + σ² for H (n,)."""
    return H @ (P @ H) + sigma2


def scalar_update(a: Tensor, P: Tensor, H: Tensor, innovation: Tensor, sigma2: float,
                  joseph: bool = False) -> KalmanUpdate:
    """One EKF measurement update with a scalar measurement (see module docstring)."""
    u = P @ H  # (n,)
    r = H @ u + sigma2
    K = u / r
    a = a + K * innovation
    if joseph:  # (I − K H) Σ (I − K H)ᵀ + K σ² Kᵀ, expanded for rank one
        return KalmanUpdate(a, symmetrize(P - torch.outer(K, u) - torch.outer(u, K) + r * torch.outer(K, K)), r)
    return KalmanUpdate(a, symmetrize(P - r * torch.outer(K, K)), r)


def check_covariance(P: Tensor, where: str) -> None:
    """Raise ``FloatingPointError`` if Σ is non-finite or has a negative diagonal (not PSD)."""
    if not bool(torch.isfinite(P).all()):
        raise FloatingPointError(f"{where}: the covariance has NaN/inf entries; the filter diverged "
                                 "(lower the initial covariance s0 or the process noise q, or raise σ²)")
    diag_min = float(P.diagonal().min())
    if diag_min < 0:
        raise FloatingPointError(f"{where}: the covariance is not positive semi-definite (diagonal entry "
                                 f"{diag_min:.3g} < 0); try joseph=True or a larger σ²")
