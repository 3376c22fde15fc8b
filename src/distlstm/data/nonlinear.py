"""A synthetic nonlinear series with a known noise level, for checking predictive intervals.

Second-order nonlinear autoregression with Gaussian noise::

    y_t = a sin(b y_{t-1}) + c y_{t-2} + σ ε_t,     ε_t ~ N(0, 1),  y_0 = y_1 = 0

(a, b, c) = (0.8, 1.5, −0.3) by default: a bounded, stationary map whose one-step
predictive law given (y_{t-2}, y_{t-1}) is exactly N(a sin(b y_{t-1}) + c y_{t-2}, σ²),
so a calibrated forecaster that has learnt the map covers the label with its 95%
interval 95% of the time, and its noise estimate should approach σ². Forecast
y_t from the window (y_{t-2}, y_{t-1}) as for any series (:func:`distlstm.data.series.windows`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def nonlinear_ar(length: int, noise_std: float = 0.3, seed: int = 0, a: float = 0.8, b: float = 1.5,
                 c: float = -0.3, burn_in: int = 100) -> Tensor:
    """``length`` values (float64) of the series above, after ``burn_in`` discarded steps; noise from ``seed``."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a whole number ≥ 1, got {length!r}")
    if not (math.isfinite(noise_std) and noise_std >= 0):
        raise ValueError(f"noise_std must be a finite number ≥ 0, got {noise_std!r}")
    gen = torch.Generator().manual_seed(seed)
    eps = (noise_std * torch.randn(length + burn_in, generator=gen, dtype=torch.float64)).tolist()
    y = [0.0, 0.0]
    for e in eps:
        y.append(a * math.sin(b * y[-1]) + c * y[-2] + e)
    return torch.tensor(y[2 + burn_in:], dtype=torch.float64)
