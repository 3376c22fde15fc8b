"""Evolution strategies as ask/tell on a flat θ (Salimans et al. 2017; the federated-ES source).

Population of P members θ_j = θ + σ ε_j (ε regenerated from shared seeds, see
:mod:`distlstm.es.noise`). With shaped fitnesses F̃ (see :mod:`distlstm.es.shaping`)
the search-gradient estimate of E[F(θ + σε)] is::

    g = 1/(P σ) Σ_j F̃_j ε_j

and the mean moves uphill: plain SGD θ ← θ + α g (the source's rule, with z-scored
F), or Adam on −g; weight decay adds −λ θ to g (OpenAI-ES's L2 penalty). With a
half-life G the step size of generation t is α_t = α · 2^(−t/G) (a function of the
generation alone, so a resumed run continues the schedule exactly).

| symbol | variable |
|---|---|
| P, σ, α, λ | ``cfg.population``, ``cfg.sigma``, ``cfg.lr``, ``cfg.weight_decay`` |
| θ, generation | ``state.theta``, ``state.generation`` |
| Adam moments | ``state.m``, ``state.v`` |

``STRATEGIES`` holds the presets: ``openai-es`` (mirrored sampling, centred ranks,
Adam, weight decay) and ``plain`` (the source: independent noise, z-scored fitness,
plain SGD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from distlstm.es.noise import NOISE_KINDS, population_noise
from distlstm.es.shaping import SHAPINGS, shape


@dataclass(frozen=True)
class ESConfig:
    population: int = 256  # P
    sigma: float = 0.02  # σ
    lr: float = 0.01  # α
    optimizer: str = "adam"  # adam | sgd
    shaping: str = "centered_ranks"  # centered_ranks | zscore
    mirrored: bool = True
    weight_decay: float = 0.005  # λ
    seed: int = 0
    beta1: float = 0.9
    beta2: float = 0.999
    lr_half_life: float | None = None  # G, in generations; None: constant α
    noise: str = "table"  # table: slices of a shared noise table | seeded: a generator per ε_i

    def __post_init__(self) -> None:
        if isinstance(self.population, bool) or not isinstance(self.population, int) or self.population < 2:
            raise ValueError(f"population must be an int ≥ 2, got {self.population!r}")
        if self.mirrored and self.population % 2:
            raise ValueError(f"mirrored sampling needs an even population, got {self.population}")
        for name in ("sigma", "lr"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.noise not in NOISE_KINDS:
            raise ValueError(f"unknown noise {self.noise!r}; expected one of {NOISE_KINDS}")
        if self.shaping not in SHAPINGS:
            raise ValueError(f"unknown fitness shaping {self.shaping!r}; expected one of {sorted(SHAPINGS)}")
        if self.lr_half_life is not None and not (math.isfinite(self.lr_half_life) and self.lr_half_life > 0):
            raise ValueError(f"lr_half_life must be a positive number of generations, got {self.lr_half_life!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be ≥ 0, got {self.weight_decay}")


STRATEGIES: dict[str, ESConfig] = {
    "openai-es": ESConfig(),
    "plain": ESConfig(optimizer="sgd", shaping="zscore", mirrored=False, weight_decay=0.0, lr=0.01),
}


class ESState(NamedTuple):
    theta: Tensor  # (n,)
    m: Tensor  # (n,) Adam first moment
    v: Tensor  # (n,) Adam second moment
    generation: int


def init(theta0: Tensor) -> ESState:
    return ESState(theta0.detach().clone(), torch.zeros_like(theta0), torch.zeros_like(theta0), 0)


def noise(cfg: ESConfig, state: ESState, members: range | None = None) -> Tensor:
    """ε (len(members), n) of the requested members (all by default), regenerated from the seeds."""
    members = range(cfg.population) if members is None else members
    return population_noise(cfg.seed, state.generation, members, state.theta.shape[0], cfg.mirrored,
                            state.theta.dtype, cfg.noise)


def ask(cfg: ESConfig, state: ESState, members: range | None = None, eps: Tensor | None = None) -> Tensor:
    """Θ (len(members), n): the parameters of the requested members (all by default); ``eps``: their
    :func:`noise`, when the caller already holds it."""
    return torch.add(state.theta, noise(cfg, state, members) if eps is None else eps, alpha=cfg.sigma)


def es_gradient(cfg: ESConfig, state: ESState, fitness: Tensor, eps: Tensor | None = None) -> tuple[Tensor, int]:
    """g = 1/(P σ) Σ_j F̃_j ε_j (ascent direction), and the number of dropped members.

    ``eps`` is the whole population's :func:`noise` when the caller kept it from :func:`ask`
    (one process, or federated clients that score every member); else it is regenerated.
    """
    if fitness.shape != (cfg.population,):
        raise ValueError(f"fitness: expected shape ({cfg.population},), got {tuple(fitness.shape)}")
    weights, dropped = shape(fitness.to(state.theta.dtype), cfg.shaping)
    if eps is None:
        eps = noise(cfg, state)
    elif eps.shape != (cfg.population, state.theta.shape[0]):
        raise ValueError(f"eps: expected the whole population's noise ({cfg.population}, {state.theta.shape[0]}), "
                         f"got {tuple(eps.shape)}")
    return weights @ eps / (cfg.population * cfg.sigma), dropped


def step_size(cfg: ESConfig, generation: int) -> float:
    """α_t: the step size of ``generation`` (α, or α · 2^(−t/G) with a half-life G)."""
    return cfg.lr if cfg.lr_half_life is None else cfg.lr * 2.0 ** (-generation / cfg.lr_half_life)


def tell(cfg: ESConfig, state: ESState, fitness: Tensor, eps: Tensor | None = None) -> tuple[ESState, dict[str, float]]:
    """Move θ uphill on the shaped fitnesses of all P members; returns the new state and metrics."""
    g, dropped = es_gradient(cfg, state, fitness, eps)
    if cfg.weight_decay:
        g = g - cfg.weight_decay * state.theta
    t = state.generation + 1
    lr = step_size(cfg, state.generation)
    if cfg.optimizer == "sgd":
        theta, m, v = state.theta + lr * g, state.m, state.v
    else:  # Adam on the loss −F, i.e. ascent on g
        m = cfg.beta1 * state.m + (1 - cfg.beta1) * g
        v = cfg.beta2 * state.v + (1 - cfg.beta2) * g * g
        step = lr * (m / (1 - cfg.beta1**t)) / ((v / (1 - cfg.beta2**t)).sqrt() + 1e-8)
        theta = state.theta + step
    finite = fitness[torch.isfinite(fitness)]
    metrics = {"fitness_mean": float(finite.mean()) if finite.numel() else math.nan,
               "fitness_max": float(finite.max()) if finite.numel() else math.nan,
               "dropped": float(dropped), "grad_norm": float(g.norm()), "lr": lr}
    return ESState(theta, m, v, t), metrics


__all__ = ["STRATEGIES", "ESConfig", "ESState", "ask", "es_gradient", "init", "noise", "step_size", "tell"]
