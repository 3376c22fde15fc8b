"""The measurement noise σ² a filter uses at each step: fixed, or the adaptive estimate of :mod:`distlstm.ops.noise`.

Shared by the EKF, DEKF, PF and DPF: each keeps the estimate's state (``noise``,
[w, m, count, α_t, ratios…]) in its per-node state, reads σ² before the label (:func:`step_sigma2`,
used by both the prediction and the update of the step), reports its predictive
variance scaled by the interval calibration c (:func:`reported_variance`), and moves
both with the label's squared error (:func:`next_noise`).
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor

from distlstm.online.base import Observation, Prediction
from distlstm.ops.noise import Z95, interval_scale, noise_variance, update_level, update_noise, update_ratios


class NoiseSettings(Protocol):
    @property
    def sigma2(self) -> float: ...  # σ₀²: the fixed value, or the adaptive estimate's prior
    @property
    def noise(self) -> str: ...  # "adaptive" or "fixed"
    @property
    def noise_window(self) -> int: ...
    @property
    def interval_window(self) -> int: ...  # errors the interval is calibrated on; 0: off


def step_sigma2(cfg: NoiseSettings, noise: Tensor) -> float:
    """The σ² of this step: the adaptive estimate σ̂² from ``noise``, or the configured value."""
    return noise_variance(noise, cfg.sigma2) if cfg.noise == "adaptive" else cfg.sigma2


def reported_variance(cfg: NoiseSettings, noise: Tensor, var: float) -> float:
    """The predictive variance a filter reports: its own ``var`` (= spread + σ²) times the interval scale c."""
    return interval_scale(noise) * var if cfg.interval_window else var


def next_noise(cfg: NoiseSettings, noise: Tensor, obs: Observation, pred: Prediction, sigma2: float) -> Tensor:
    """σ̂² and c after this step's label (unchanged when unlabelled); ``sigma2`` is the step's σ².

    ``pred.var`` is the reported variance; the filter's own is ``pred.var / c``, its
    parameter part ``pred.var / c − sigma2``.
    """
    if not obs.labelled:
        return noise
    sq_error = (obs.d - pred.mean) ** 2
    own = pred.var / interval_scale(noise) if cfg.interval_window else pred.var
    if cfg.interval_window:
        noise = update_level(update_ratios(noise, sq_error, own), missed=sq_error > Z95 * Z95 * pred.var)
    if cfg.noise == "adaptive":
        noise = update_noise(noise, sq_error, own - sigma2, cfg.noise_window)
    return noise
