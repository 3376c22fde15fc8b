"""The measurement noise σ² a filter uses at each step: fixed, or the adaptive estimate of :mod:`distlstm.ops.noise`.

Shared by the EKF, DEKF, PF and DPF: each keeps the estimate's state (``noise``, [w, m])
in its per-node state, reads σ² before the label (:func:`step_sigma2`, used by both
the prediction and the update of the step) and moves the estimate with the label's
squared error (:func:`next_noise`).
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from distlstm.online.base import Observation, Prediction
from distlstm.ops.noise import noise_variance, update_noise


class NoiseSettings(Protocol):
    @property
    def sigma2(self) -> float: ...  # σ₀²: the fixed value, or the adaptive estimate's prior
    @property
    def noise(self) -> str: ...  # "adaptive" or "fixed"
    @property
    def noise_window(self) -> int: ...


def step_sigma2(cfg: NoiseSettings, noise: Tensor) -> float:
    """The σ² of this step: the adaptive estimate σ̂² from ``noise``, or the configured value."""
    return noise_variance(noise, cfg.sigma2) if cfg.noise == "adaptive" else cfg.sigma2


def next_noise(cfg: NoiseSettings, noise: Tensor, obs: Observation, pred: Prediction, sigma2: float) -> Tensor:
    """The estimate after this step's label (unchanged if fixed or unlabelled); ``sigma2`` is the step's σ².

    The parameter part of the predictive variance is ``pred.var − sigma2``.
    """
    if cfg.noise != "adaptive" or not obs.labelled:
        return noise
    return update_noise(noise, (obs.d - pred.mean) ** 2, pred.var - sigma2, cfg.noise_window)
