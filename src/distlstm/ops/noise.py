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

Matching the variance calibrates the interval only where the errors are Gaussian:
heavy-tailed or zero-inflated errors (price changes; sentence labels that are mostly
exactly 0) give a ±1.96√v interval that covers far more than 95%, and a σ² far from
the truth far less. **Interval calibration** therefore scales the reported predictive
variance, v ← c · v, with c from the node's last W normalised errors r_i = (d_i − d̂_i)² / v_i
(online split-conformal calibration on a sliding window)::

    c_t = r_(⌈(1 − α_t)(n + 1)⌉) / z²,     n = min(t − 1, W) errors so far, z = 1.96

(the order statistic of the n ratios; where that rank exceeds n, the largest ratio so
far, and c = 1 before the first error). With α_t fixed at α = 0.05 this is split-conformal
calibration: if the ratios were exchangeable, d̂ ± z √(c v) would cover the next label with
probability ≥ 95% whatever the error distribution. A price series is not exchangeable
(volatility clusters), and a window of W recent ratios then over- or under-covers
(0.98 on the exchange rates). **Adaptive conformal inference** (Gibbs & Candès, 2021)
steers the level by the misses themselves::

    α_{t+1} = α_t + γ (α − err_t),     err_t = 1 if d_t fell outside the interval of step t, else 0

which holds the long-run miss rate at α for any sequence: |mean(err) − α| ≤
(max(α₁, 1 − α₁) + γ) / (γ T) after T labelled steps (their Proposition 4.1). γ = ``ACI_STEP``.
c rescales the interval only; the filter's own update never sees it.

m itself is kept unclipped (a clipped running mean would be biased upwards); only the
value read out is floored, since z_t < 0 whenever the filter's own spread s_t exceeds
the squared error. This is the innovation-based adaptive estimate of Sage & Husa (1969)
with a constant forgetting factor; forgetting lets σ̂² follow a noise level that drifts
(volatility clusters in a price series). The state is one tensor [w, m] so that it
stacks into checkpoints with the rest of a node's filter state.

| symbol | variable |
|---|---|
| w, m | ``noise[0]``, ``noise[1]`` |
| σ₀², W (σ̂²) | ``sigma2``, ``window`` |
| t − 1, α_t, r_i, W (c) | ``noise[2]``, ``noise[3]``, ``noise[4:]`` (ring buffer), ``interval_window`` |
| α, γ | ``MISS_RATE``, ``ACI_STEP`` |
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

PRIOR_WEIGHT = 2.0  # the configured σ₀² counts as this many samples
FLOOR_FRACTION = 1e-2  # σ̂² never falls below this fraction of σ₀²


COVERAGE = 0.95
MISS_RATE = 1.0 - COVERAGE  # α: the target rate of labels outside the interval
Z95 = 1.959963984540054
ACI_STEP = 0.005  # γ: Gibbs & Candès's choice; α_t moves by γ·0.95 after a miss, γ·0.05 after a hit
HEAD = 4  # [w, m, errors seen, α_t] before the ring buffer of ratios


def initial_noise(sigma2: float, interval_window: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """[w₀, m₀, 0 errors seen, α₁, W empty ratio slots] = [PRIOR_WEIGHT, σ₀², 0, α, 0…]."""
    head = torch.tensor([PRIOR_WEIGHT, sigma2, 0.0, MISS_RATE], dtype=dtype)
    return torch.cat([head, torch.zeros(interval_window, dtype=dtype)])


def noise_variance(noise: Tensor, sigma2: float) -> float:
    """σ̂² = max(m, FLOOR_FRACTION · σ₀²), the variance a filter uses at this step."""
    return max(float(noise[1]), FLOOR_FRACTION * sigma2)


def interval_scale(noise: Tensor) -> float:
    """c, the factor on the predictive variance that calibrates the 95% interval (1 before the first error)."""
    window = noise.shape[0] - HEAD
    n = min(int(noise[2]), window)
    if n == 0:
        return 1.0
    rank = max(min(math.ceil((1.0 - float(noise[3])) * (n + 1)), n), 1)  # 1-based; α_t may leave [0, 1]
    ratio = float(torch.kthvalue(noise[HEAD : HEAD + n], rank).values)
    return max(ratio / (Z95 * Z95), 1e-12)


def update_noise(noise: Tensor, sq_error: float, spread: float, window: int) -> Tensor:
    """[w, m] after one labelled step with squared error (d − d̂)² and parameter spread s (log c kept)."""
    w = (1.0 - 1.0 / window) * float(noise[0]) + 1.0
    m = float(noise[1]) + (sq_error - spread - float(noise[1])) / w
    out = noise.clone()
    out[0], out[1] = w, m
    return out


def update_ratios(noise: Tensor, sq_error: float, var: float) -> Tensor:
    """The ring buffer with r = (d − d̂)² / v of this step added (v: the filter's own variance, before c)."""
    window = noise.shape[0] - HEAD
    out = noise.clone()
    out[HEAD + int(noise[2]) % window] = sq_error / var
    out[2] = noise[2] + 1
    return out


def update_level(noise: Tensor, missed: bool) -> Tensor:
    """α_{t+1} = α_t + γ (α − err_t): the adaptive conformal level after a label inside (err 0) or outside (1)."""
    out = noise.clone()
    out[3] = noise[3] + ACI_STEP * (MISS_RATE - float(missed))
    return out


NOISE_MODES = ("adaptive", "fixed")


def check_noise(noise: str, window: int, interval_window: int) -> None:
    """``noise`` must name a mode, ``window`` be a whole number ≥ 1 and ``interval_window`` one ≥ 0."""
    if isinstance(interval_window, bool) or not isinstance(interval_window, int) or interval_window < 0:
        raise ValueError(f"interval_window (errors the 95% interval is calibrated on; 0: off) must be a whole number "
                         f"≥ 0, got {interval_window!r}")
    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {NOISE_MODES} (adaptive: σ² estimated from the innovations), "
                         f"got {noise!r}")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"noise_window must be a whole number ≥ 1 (steps averaged by the adaptive noise estimate), "
                         f"got {window!r}")
