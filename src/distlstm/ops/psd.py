"""Is a covariance Σ still a covariance? A Cholesky test, cheap enough to run every k filter steps.

The filters' own per-step check (``ops/kalman.py: check_covariance``) reads one sum
(NaN/inf) and the diagonal; a Σ can keep a positive diagonal and finite entries while
an eigenvalue goes negative (a round-off drift of the standard-form update, a bad
resumed state). Σ is positive semidefinite iff Σ + εI has a Cholesky factor for every
ε > 0; ``torch.linalg.cholesky_ex`` answers without raising, in n³/3 flops. The jitter
ε = n · eps(dtype) · max diag Σ · 10 keeps a valid but nearly singular Σ from failing
on round-off. Σ must also be symmetric (Cholesky reads one triangle only).
"""

from __future__ import annotations

import torch
from torch import Tensor

SYMMETRY_RTOL = 1e-6  # |Σ − Σᵀ| ≤ SYMMETRY_RTOL · max |Σ_ii|


def psd_problem(P: Tensor) -> str | None:
    """None when ``P`` (n, n) is a finite symmetric positive semidefinite matrix, else what is wrong with it."""
    if P.dim() != 2 or P.shape[0] != P.shape[1]:
        return f"it has shape {tuple(P.shape)}, not (n, n)"
    if not bool(torch.isfinite(P.sum())):
        return "it has NaN/inf entries"
    diag = P.diagonal()
    scale = float(diag.abs().max()) if P.numel() else 0.0
    if float(diag.min()) < 0:
        return f"its diagonal has a negative entry ({float(diag.min()):.3g})"
    asym = float((P - P.mT).abs().max()) if P.numel() else 0.0
    if asym > SYMMETRY_RTOL * max(scale, torch.finfo(P.dtype).tiny):
        return f"it is not symmetric (max |Σ − Σᵀ| = {asym:.3g}, max diagonal {scale:.3g})"
    n = P.shape[0]
    jitter = 10.0 * n * torch.finfo(P.dtype).eps * scale
    _, info = torch.linalg.cholesky_ex(P + jitter * torch.eye(n, dtype=P.dtype, device=P.device))
    if int(info) == 0:
        return None
    eig = torch.linalg.eigvalsh(0.5 * (P + P.mT))
    return (f"it is not positive semidefinite (smallest eigenvalue {float(eig[0]):.3g}, largest "
            f"{float(eig[-1]):.3g})")


def check_psd(P: Tensor, where: str, fix: str = "") -> None:
    """Raise ``FloatingPointError`` naming ``where`` (node and step) unless ``P`` is a valid covariance."""
    problem = psd_problem(P)
    if problem is not None:
        raise FloatingPointError(f"{where}: the covariance Σ is no longer a covariance: {problem}"
                                 + (f"; {fix}" if fix else ""))
