"""Extended Kalman filter measurement updates: one scalar measurement (rank 1), or m at once (rank m).

For a measurement d = h(a) + ε, ε ~ N(0, σ²), linearised at the prior mean with
row Jacobian H (1, n)::

    u = Σ Hᵀ                 (n,)   prior cross-covariance of a and d
    r = H Σ Hᵀ + σ²          scalar innovation variance
    K = u / r                (n,)   Kalman gain
    â ← â + K (d − h(â))
    Σ ← Σ − K Kᵀ r           standard form (= Σ − Σ Hᵀ H Σ / r)

Joseph form, ``(I − K H) Σ (I − K H)ᵀ + K σ² Kᵀ``, expanded for rank one::

    Σ ← Σ − K uᵀ − u Kᵀ + (H Σ Hᵀ + σ²) K Kᵀ

Both are O(n²) — never an n × n × n product — and the outer product is never
materialised. The time update Σ + q I of a random-walk
state is folded in (Σ_pred Hᵀ = Σ Hᵀ + q Hᵀ). The standard form is computed as
Σ − w wᵀ with w = √r K: entries (i, j) and (j, i) are then the same product w_i w_j, so
a symmetric Σ stays symmetric bit for bit with one read and one write of Σ (tested).
The Joseph form, a rank-2 update, is symmetrised explicitly.

| symbol | variable |
|---|---|
| â, Σ | ``a``, ``P`` |
| H | ``H`` (n,) |
| d − h(â) | ``innovation`` |
| σ² | ``sigma2`` |

**Block update** (:func:`block_update`): m scalar measurements d_l = h_l(a) + ε_l,
ε ~ N(0, σ² I), all linearised at the same prior mean, rows H (m, n)::

    U = Σ_pred Hᵀ (n, m),   S = H U + σ² I = L Lᵀ (m, m),   W = U L⁻ᵀ (n, m)
    â ← â + W L⁻¹ (d − h(â)),      Σ ← Σ_pred − W Wᵀ

which is the information-form update Σ⁻¹ ← Σ_pred⁻¹ + Hᵀ H / σ²,
â ← â + Σ Hᵀ (d − h(â)) / σ² written without inverting Σ; for a linear h it equals m
scalar updates in sequence. One pass over Σ for U, then the rank-m downdate Σ − W Wᵀ:
up to ``DOWNDATE_ROWS`` rows elementwise (:func:`downdate`, exactly symmetric like the
rank-1 update: one pass of a C++ loop for a large float64 Σ, else one ATen pass per
row), above that one matrix product and a symmetrisation (:func:`symmetrise_`). At
n = 584 and m = 3 the ATen passes took a third of the time of the product and
symmetrisation (side by side in one process).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from distlstm.ops import downdate_kernel, memory


class KalmanUpdate(NamedTuple):
    a: Tensor  # (n,) posterior mean
    P: Tensor  # (n, n) posterior covariance
    r: Tensor  # () innovation variance H Σ Hᵀ + σ²


def scalar_update(a: Tensor, P: Tensor, H: Tensor, innovation: Tensor, sigma2: float,
                  joseph: bool = False, q: float | Tensor = 0.0, PH: Tensor | None = None) -> KalmanUpdate:
    """Time update Σ + diag(q), then one measurement update with a scalar measurement.

    Args:
        a: (n,) prior mean; P: (n, n) covariance *before* the time update; H: (n,)
        innovation: d − h(a); sigma2: σ²; joseph: Joseph-form covariance;
        q: process noise variance, a scalar (q I) or per coordinate (n,);
        PH: Σ Hᵀ if the caller already has it (saves a pass over Σ).
    """
    has_q = isinstance(q, Tensor) or q != 0.0
    PH = P @ H if PH is None else PH
    u = PH + q * H if has_q else PH  # Σ_pred Hᵀ, (n,)
    r = H @ u + sigma2
    K = u / r
    a = a + K * innovation
    if joseph:  # (I − K H) Σ (I − K H)ᵀ + K σ² Kᵀ = Σ − K uᵀ − u Kᵀ + r K Kᵀ
        P = torch.addr(P, K, u, alpha=-1.0, out=memory.empty_like(P))
        P = symmetrise_(P.addr_(u, K, alpha=-1.0).addr_(K, K, alpha=float(r)))
    else:
        P = downdate(P, (K * r.sqrt())[None])
    if has_q:
        P.diagonal().add_(q)  # P is a fresh tensor: safe to write in place
    return KalmanUpdate(a, P, r)


def block_update(a: Tensor, P: Tensor, H: Tensor, innovations: Tensor, sigma2: float, joseph: bool = False,
                 q: float = 0.0, PH: Tensor | None = None) -> KalmanUpdate:
    """Time update Σ + q I, then m scalar measurements at once, all linearised at ``a`` (see the module docstring).

    Args:
        a: (n,) prior mean; P: (n, n) covariance *before* the time update; H: (m, n) rows;
        innovations: (m,) d − h(a); sigma2: σ² of every measurement; joseph: Joseph-form covariance;
        q: process noise variance (q I); PH: what the caller already has of Σ Hᵀ: the first row's (n,)
        (the EKF prediction's), so only the other rows multiply Σ, or every row's (n, m).

    Returns the posterior and S (m, m) as ``r``.
    """
    if PH is None:
        U = P @ H.mT  # (n, m)
    elif PH.dim() == 2:
        U = PH
    else:
        U = torch.cat([PH[:, None], P @ H[1:].mT], 1)
    if q:
        U = U + q * H.mT
    S = H @ U
    S.diagonal().add_(sigma2)
    L = torch.linalg.cholesky(S)
    Wt = torch.linalg.solve_triangular(L, U.mT, upper=False)  # Wᵀ = L⁻¹ Uᵀ (m, n), rows contiguous
    a = a + torch.linalg.solve_triangular(L, innovations[:, None], upper=False)[:, 0] @ Wt
    if joseph:  # (I − K H) Σ (I − K H)ᵀ + σ² K Kᵀ = Σ − K Uᵀ − U Kᵀ + W Wᵀ, K = W L⁻¹
        K = torch.linalg.solve_triangular(L.mT, Wt, upper=True).mT
        P = symmetrise_(P - K @ U.mT - U @ K.mT + Wt.mT @ Wt)  # matmul blocking need not round (i, j), (j, i) alike
    elif Wt.shape[0] <= DOWNDATE_ROWS:
        P = downdate(P, Wt)
    else:
        P = symmetrise_(torch.addmm(P, Wt.mT, Wt, alpha=-1.0, out=memory.empty_like(P)))
    if q:
        P.diagonal().add_(q)
    return KalmanUpdate(a, P, S)


DOWNDATE_ROWS = 4  # up to this rank, m elementwise passes over Σ beat one matmul and a symmetrisation


def downdate(P: Tensor, rows: Tensor) -> Tensor:
    """Σ − Σ_k w_k w_kᵀ for the rows w_k of ``rows`` (m, n): a new tensor, symmetric bit for bit if Σ is.

    Each entry is P_ij − w_i w_j rounded once per row (not BLAS ger or gemm, whose
    blocking need not round (i, j) and (j, i) alike), so no symmetrisation is needed. A
    large float64 Σ goes through the C++ loop of :mod:`~distlstm.ops.downdate_kernel`
    (one pass over Σ for all the rows, the same numbers); otherwise one ATen pass per row.
    """
    out = memory.empty_like(P)
    kernel = downdate_kernel.kernel_for(P, rows)
    return downdate_kernel.aten_passes(P, rows, out) if kernel is None else kernel.downdate(P, rows.contiguous(), out)


def symmetrise_(P: Tensor, tile: int = 256, in_place_from: int = 1024) -> Tensor:
    """(P + Pᵀ)/2, the numbers of ``0.5 * (P + P.mT)`` bit for bit; in P (not shared) once n ≥ ``in_place_from``.

    In place it goes tile by tile (block (I, J) with its mirror (J, I), both in cache), so no
    n × n temporary is allocated: for a large Σ a fresh n × n tensor costs several passes'
    worth of page faults, and a transposed read of the whole matrix misses the cache on every
    row. A small Σ fits in cache, where the plain expression is quicker than the tiles' calls.
    Entries (i, j) and (j, i) both get 0.5 (P_ij + P_ji).
    """
    n = P.shape[0]
    if n < in_place_from:
        return 0.5 * (P + P.mT)
    for i in range(0, n, tile):
        rows = slice(i, min(i + tile, n))
        for j in range(i, n, tile):
            cols = slice(j, min(j + tile, n))
            mean = 0.5 * (P[rows, cols] + P[cols, rows].mT)  # read both before either is written
            P[rows, cols] = mean
            P[cols, rows] = mean.mT
    return P


def check_covariance(P: Tensor, where: str) -> None:
    """Raise ``FloatingPointError`` if Σ is non-finite or has a negative diagonal (not PSD).

    One reduction over Σ (a finite sum means finite entries), not an elementwise pass.
    """
    if not bool(torch.isfinite(P.sum())):
        raise FloatingPointError(f"{where}: the covariance has NaN/inf entries; the filter diverged "
                                 "(lower the initial covariance s0 or the process noise q, or raise σ²)")
    diag_min = float(P.diagonal().min())
    if diag_min < 0:
        raise FloatingPointError(f"{where}: the covariance is not positive semi-definite (diagonal entry "
                                 f"{diag_min:.3g} < 0); try joseph=True or a larger σ²")
