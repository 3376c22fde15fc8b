"""Innovation-matching (Sage–Husa) estimate of a scalar measurement-noise variance σ².

A filter predicts d_t with mean d̂_t and variance v_t = s_t + σ², where s_t is the
part its parameter uncertainty contributes (EKF: H Σ_{t|t-1} Hᵀ + q‖H‖²; particle
filter: the particles' weighted spread of h). A calibrated filter has
E[(d_t − d̂_t)²] = s_t + σ², so every labelled step gives an unbiased sample of σ²::

    z_t = (d_t − d̂_t)² − s_t

The estimate is a weighted mean of these samples with forgetting factor
ρ = 1 − 1/W (W: the ``window``, the effective number of recent steps it averages)
and the configured σ₀² as a prior worth ``PRIOR_WEIGHT`` samples::

    w_t = ρ w_{t-1} + 1,      m_t = m_{t-1} + (z_t − m_{t-1}) / w_t      (w_0 = PRIOR_WEIGHT, m_0 = σ₀²)
    σ̂²_t = max(m_t, FLOOR_FRACTION · σ₀²)

m itself is kept unclipped (a clipped running mean would be biased upwards); only the
value read out is floored, since z_t < 0 whenever the filter's own spread s_t exceeds
the squared error. This is the innovation-based adaptive estimate of Sage & Husa (1969)
with a constant forgetting factor; forgetting lets σ̂² follow a noise level that drifts
(volatility clusters in a price series). The state is one tensor [w, m] so that it
stacks into checkpoints with the rest of a node's filter state.

| symbol | variable |
|---|---|
| w, m | ``noise[0]``, ``noise[1]`` |
| σ₀², W | ``sigma2``, ``window`` |
"""

from __future__ import annotations

import torch
from torch import Tensor

PRIOR_WEIGHT = 2.0  # the configured σ₀² counts as this many samples
FLOOR_FRACTION = 1e-2  # σ̂² never falls below this fraction of σ₀²


def initial_noise(sigma2: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """[w₀, m₀] = [PRIOR_WEIGHT, σ₀²]."""
    return torch.tensor([PRIOR_WEIGHT, sigma2], dtype=dtype)


def noise_variance(noise: Tensor, sigma2: float) -> float:
    """σ̂² = max(m, FLOOR_FRACTION · σ₀²), the variance a filter uses at this step."""
    return max(float(noise[1]), FLOOR_FRACTION * sigma2)


def update_noise(noise: Tensor, sq_error: float, spread: float, window: int) -> Tensor:
    """[w, m] after one labelled step with squared error (d − d̂)² and parameter spread s."""
    w = (1.0 - 1.0 / window) * float(noise[0]) + 1.0
    m = float(noise[1]) + (sq_error - spread - float(noise[1])) / w
    return noise.new_tensor([w, m])


NOISE_MODES = ("adaptive", "fixed")


def check_noise(noise: str, window: int) -> None:
    """``noise`` must name a mode and ``window`` be a whole number ≥ 1."""
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES} (adaptive: σ² estimated from the innovations), "
                         f"got {noise!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"noise_window must be a whole number ≥ 1 (steps averaged by the adaptive noise estimate), "
                         f"got {window!r}")
