"""Particle filter (SIR) on θ at every node (Ergen & Kozat §3.2, no communication).

The importance density is the state transition, so the weight update is the
likelihood (all in log-weights)::

    θ^i_t = θ^i_{t-1} + e^i_t,                e ~ N(0, q I)
    log ω^i_t = log ω^i_{t-1} + log N(d_t; h(θ^i_t; X_t), σ²)
    θ̂_t = Σ_i ω^i_t θ^i_t                       (posterior mean, MSE-optimal)

Resample (systematic by default) when ESS = 1/Σ(ω^i)² < ``ess_threshold``·N
(0.5 by default; ``ess_threshold=1.0`` resamples at every step, as the paper does).
Prediction before the label is the predictive mean Σ_i ω^i_{t-1} h(θ^i_{t-1}; X_t),
with variance Σ_i ω^i (h_i − d̂)² + σ². All particles go through the model in one
batched call (:class:`~distlstm.models.functional.FunctionalModel`). Θ₀ ~ N(θ₀, s₀ I).

σ² is fixed (``noise="fixed"``, the default) or estimated from the innovations
(``noise="adaptive"``; :mod:`distlstm.ops.noise` with the particles' spread
Σ_i ω^i (h_i − d̂)² as the parameter part of the predictive variance); the likelihood
uses the same σ̂² as the prediction. ``interval_window`` calibrates the reported
variance as in the EKF.

| symbol | variable |
|---|---|
| θ^i, log ω^i | ``state.particles`` (N, n), ``state.logw`` (N,) |
| q, σ², s₀ | ``cfg.q``, ``cfg.sigma2`` (σ̂²: ``state.noise``), ``cfg.s0`` |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from distlstm.models.functional import FunctionalModel
from distlstm.online.base import LocalAlgorithm, Observation, Prediction, check_positive
from distlstm.online.noise import next_noise, reported_variance, step_sigma2
from distlstm.ops.noise import check_noise, initial_noise
from distlstm.ops.resampling import RESAMPLERS, effective_sample_size, normalize_log_weights, resample


@dataclass(frozen=True)
class PFConfig:
    num_particles: int = 200  # N
    sigma2: float = 0.01  # σ²
    q: float = 1e-5  # jitter variance per step
    s0: float = 0.01  # initial spread: Θ₀ ~ N(θ₀, s₀ I)
    resampling: str = "systematic"
    ess_threshold: float = 0.5  # resample when ESS < threshold · N; 1.0 = every step
    noise: str = "fixed"  # or "adaptive": σ² estimated from the innovations (ops/noise.py)
    noise_window: int = 100  # steps the adaptive σ² estimate averages over
    interval_window: int = 0  # calibrate the 95% interval on this many recent errors (ops/noise.py); 0: off

    def __post_init__(self) -> None:
        if isinstance(self.num_particles, bool) or not isinstance(self.num_particles, int) or self.num_particles < 1:
            raise ValueError(f"num_particles (N) must be an int ≥ 1, got {self.num_particles!r}")
        check_positive(self.sigma2, "sigma2 (σ²)")
        check_noise(self.noise, self.noise_window, self.interval_window)
        check_positive(self.s0, "s0")
        if not self.q >= 0:
            raise ValueError(f"q (jitter variance) must be ≥ 0, got {self.q}")
        if self.resampling not in RESAMPLERS:
            raise ValueError(f"unknown resampling scheme {self.resampling!r}; expected one of {sorted(RESAMPLERS)}")
        if not 0.0 <= self.ess_threshold <= 1.0:
            raise ValueError(f"ess_threshold must be in [0, 1], got {self.ess_threshold}")


class ParticleState(NamedTuple):
    particles: Tensor  # (N, n)
    logw: Tensor  # (N,) normalised log-weights
    noise: Tensor  # (2,) the adaptive σ² estimate's [weight, mean] (constant with noise="fixed")


def initial_particles(theta0: Tensor, num: int, s0: float, noise: Tensor, gen: torch.Generator) -> ParticleState:
    jitter0 = torch.randn(num, theta0.shape[0], generator=gen, dtype=theta0.dtype)
    logw = torch.full((num,), -math.log(num), dtype=theta0.dtype)
    return ParticleState(theta0 + math.sqrt(s0) * jitter0, logw, noise)


def jitter(particles: Tensor, q: float, gen: torch.Generator, out: Tensor | None = None) -> Tensor:
    """θ^i + e^i, e ~ N(0, q I): the state transition (written into ``out`` if given)."""
    if q == 0:
        return particles if out is None else out.copy_(particles)
    if out is None:
        out = torch.empty_like(particles)
    torch.randn(particles.shape, generator=gen, dtype=particles.dtype, out=out)
    return out.mul_(math.sqrt(q)).add_(particles)  # in the draws' buffer: no N × n_θ temporaries


def gaussian_loglik(d: float, h: Tensor, sigma2: float) -> Tensor:
    """log N(d; h, σ²) for every particle's output h (N,)."""
    return -0.5 * (d - h) ** 2 / sigma2 - 0.5 * math.log(2 * math.pi * sigma2)


def predictive(h: Tensor, logw: Tensor, sigma2: float) -> Prediction:
    """Mixture mean and variance of d from particle outputs h (N,) and log-weights."""
    _, W = normalize_log_weights(logw)
    mean = float(W @ h)
    return Prediction(mean, float(W @ (h - mean) ** 2) + sigma2)


def weighted_mean(state: ParticleState) -> Tensor:
    """θ̂ = Σ ω^i θ^i."""
    _, W = normalize_log_weights(state.logw)
    return W @ state.particles


def resample_state(state: ParticleState, num: int, scheme: str, gen: torch.Generator) -> ParticleState:
    """``num`` particles drawn by ``scheme``, equally weighted."""
    _, W = normalize_log_weights(state.logw)
    idx = resample(W, num, scheme, gen)
    return ParticleState(state.particles[idx], torch.full((num,), -math.log(num), dtype=state.logw.dtype),
                         state.noise)


class PF(LocalAlgorithm):
    """SIR particle filter on θ at every node, no communication."""

    name = "pf"

    def __init__(self, fm: FunctionalModel, cfg: PFConfig | None = None) -> None:
        super().__init__(fm)
        self.cfg = cfg or PFConfig()

    def init(self, theta0: Tensor, node: int, gen: torch.Generator) -> ParticleState:
        return initial_particles(theta0, self.cfg.num_particles, self.cfg.s0,
                                 initial_noise(self.cfg.sigma2, self.cfg.interval_window, theta0.dtype), gen)

    def predict(self, state: ParticleState, x: Tensor) -> Prediction:
        pred = predictive(self.output(state.particles, x), state.logw, step_sigma2(self.cfg, state.noise))
        return Prediction(pred.mean, reported_variance(self.cfg, state.noise, pred.var))

    def update_node(self, state: ParticleState, obs: Observation, pred: Prediction, gen: torch.Generator,
                    where: str) -> ParticleState:
        particles = jitter(state.particles, self.cfg.q, gen)
        if not obs.labelled:
            return ParticleState(particles, state.logw, state.noise)
        h = self.output(particles, obs.x)
        sigma2 = step_sigma2(self.cfg, state.noise)
        logw, W = normalize_log_weights(state.logw + gaussian_loglik(obs.d, h, sigma2))
        if not bool(torch.isfinite(logw).all()):
            raise FloatingPointError(f"PF at {where}: particle weights became NaN; raise sigma2")
        new = ParticleState(particles, logw, next_noise(self.cfg, state.noise, obs, pred, sigma2))
        if float(effective_sample_size(W)) < self.cfg.ess_threshold * self.cfg.num_particles or \
                self.cfg.ess_threshold >= 1.0:
            new = resample_state(new, self.cfg.num_particles, self.cfg.resampling, gen)
        return new

    def estimate(self, state: ParticleState) -> Tensor:
        return weighted_mean(state)
