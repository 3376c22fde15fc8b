"""Full-batch, full-BPTT training with L-BFGS or nonlinear CG, the batch split across workers (map-reduce).

The matrix-batch paper trains on the whole training set at once with full BPTT
and a batch method, the batch spread over machines whose losses and gradients are
summed. With worker r holding shard S_r of the N samples::

    L(θ)  = Σ_r L_r(θ),      L_r(θ) = (1/N) Σ_{i ∈ S_r} (d̂_i(θ) − d_i)²
    ∇L(θ) = Σ_r ∇L_r(θ)                                  (one all_reduce of [L_r; ∇L_r])

Every evaluation — each optimizer step and every trial of the strong-Wolfe line
search — goes through the same closure, so all ranks see identical (L, ∇L) and take
identical steps (checked: a θ checksum is compared across ranks after every step).
float64 by default: the paper found single precision unstable with batch optimizers.

Optimizers:

* ``lbfgs`` — ``torch.optim.LBFGS`` with the strong-Wolfe line search;
* ``cg`` — nonlinear conjugate gradient, Polak–Ribière+ (Nocedal & Wright §5.2)::

      β_{k+1} = max(0, g_{k+1}ᵀ(g_{k+1} − g_k) / g_kᵀg_k),   p_{k+1} = −g_{k+1} + β_{k+1} p_k

  with a Wolfe line search (c₁ = 1e−4, c₂ = ``cg_c2`` = 0.1, Nocedal & Wright's usual
  choice for CG; SciPy's default 0.4 took about twice as long on the multiplication
  problem) — SciPy's ``minimize(method="CG")``,
  which is exactly this (so we do not write our own), driven with θ as one float64
  vector. Every rank runs the same SciPy code on the same all-reduced values and so
  takes the same decisions.

A line search that finds no decrease ends the run with a status saying so, not a crash.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from distlstm.data.longlag import LongLagData
from distlstm.runtime.dist import all_reduce_, check_same_across_ranks

METHODS = ("lbfgs", "cg")


def _reduce(loss: Tensor, params: list[nn.Parameter]) -> Tensor:
    """Sum the loss and every gradient over all workers, in one all_reduce."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([loss.detach().reshape(1)] + [g.reshape(-1) for g in grads])
    all_reduce_(flat)
    offset = 1
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n
    return flat[0]


def fullbatch_closure(model: nn.Module, shard: LongLagData, total: int, world_size: int = 1,
                      zero_grad: Callable[[], None] | None = None) -> Callable[[], Tensor]:
    """The closure an optimizer calls: this worker's share of the loss, summed over all workers."""
    params = [p for p in model.parameters() if p.requires_grad]

    def closure() -> Tensor:
        if zero_grad is not None:
            zero_grad()
        pred = model(shard.x, shard.lengths)
        loss = ((pred - shard.y) ** 2).sum() / total
        loss.backward()
        loss = _reduce(loss, params) if world_size > 1 else loss.detach()
        if not torch.isfinite(loss):
            raise FloatingPointError("the full-batch loss is not finite; lower the gate sharpness α or lr")
        return loss

    return closure


@dataclass(frozen=True)
class FullBatchConfig:
    method: str = "lbfgs"  # lbfgs or cg
    steps: int = 50  # L-BFGS: optimizer steps of max_iter iterations each; CG: iterations
    max_iter: int = 20  # L-BFGS iterations per step (the history carries over between steps)
    history_size: int = 50
    lr: float = 1.0  # L-BFGS initial step length
    cg_c2: float = 0.1  # CG: curvature constant of the Wolfe line search (smaller: more exact searches)
    seconds: float | None = None  # stop after this much optimisation time

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown full-batch method {self.method!r}; expected one of {METHODS}")
        for name in ("steps", "max_iter", "history_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 1e-4 < self.cg_c2 < 1:
            raise ValueError(f"cg_c2 must lie in (c1 = 1e-4, 1), got {self.cg_c2}")


@dataclass
class FullBatchResult:
    losses: list[float] = field(default_factory=list)  # after each step (L-BFGS) or iteration (CG)
    evaluations: int = 0  # loss + gradient evaluations over the whole training set, line searches included
    seconds: float = 0.0  # optimisation time, callbacks excluded
    status: str = "step budget used"


class _Stop(Exception):
    """Raised inside the optimizer to end the run from a callback."""


def train_fullbatch(model: nn.Module, data: LongLagData, cfg: FullBatchConfig, *, rank: int = 0,
                    world_size: int = 1, on_step: Callable[[FullBatchResult], bool] | None = None) -> FullBatchResult:
    """Minimise the full-batch MSE with ``cfg.method``, this worker holding its shard of ``data``.

    ``on_step(result)`` runs after each step with the progress so far (the step is
    ``len(result.losses)``; its own time is not counted) and may return True to stop,
    e.g. once the test error is small enough.
    """
    shard = data.shard(rank, world_size)
    params = [p for p in model.parameters() if p.requires_grad]
    result = FullBatchResult()

    def zero_grad() -> None:
        for p in params:
            p.grad = None

    closure = fullbatch_closure(model, shard, len(data), world_size, zero_grad=zero_grad)
    last: dict[str, Any] = {}

    def counted() -> Tensor:
        """The closure, remembering its last point: asking again at the same θ costs nothing."""
        theta = parameters_to_vector(params).detach()
        if "theta" in last and torch.equal(theta, last["theta"]):
            for p, g in zip(params, last["grads"], strict=True):
                p.grad = g.clone()
            return last["loss"]
        result.evaluations += 1
        loss = closure()
        last.update(theta=theta.clone(), loss=loss.detach(), grads=[p.grad.detach().clone() for p in params
                                                                     if p.grad is not None])
        return loss

    clock = [time.perf_counter()]

    def after_step(loss: float) -> None:
        result.seconds += time.perf_counter() - clock[0]
        step = len(result.losses)
        check_same_across_ranks(parameters_to_vector(params).detach(), f"step {step + 1}")
        result.losses.append(loss)
        stop = on_step is not None and on_step(result)
        if stop:
            result.status = "stopped by the callback"
        elif cfg.seconds is not None and result.seconds >= cfg.seconds:
            result.status = "time budget used"
        clock[0] = time.perf_counter()
        if result.status != "step budget used":
            raise _Stop

    with contextlib.suppress(_Stop):
        (_lbfgs if cfg.method == "lbfgs" else _cg)(params, counted, cfg, after_step, result)
    return result


def _lbfgs(params: list[nn.Parameter], closure: Callable[[], Tensor], cfg: FullBatchConfig,
           after_step: Callable[[float], None], result: FullBatchResult) -> None:
    opt = torch.optim.LBFGS(params, lr=cfg.lr, max_iter=cfg.max_iter, history_size=cfg.history_size,
                            line_search_fn="strong_wolfe")
    for _ in range(cfg.steps):
        start = float(opt.step(closure))  # LBFGS returns the loss it started from
        loss = float(closure())  # at the new θ; usually remembered from the line search
        stalled = not loss < start
        if stalled:
            result.status = "converged or line search found no decrease"
        after_step(loss)
        if stalled:
            return


def _cg(params: list[nn.Parameter], closure: Callable[[], Tensor], cfg: FullBatchConfig,
        after_step: Callable[[float], None], result: FullBatchResult) -> None:
    from scipy.optimize import minimize

    def value_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        vector_to_parameters(torch.from_numpy(theta).to(params[0]), params)
        loss = float(closure())
        grad = parameters_to_vector([p.grad if p.grad is not None else torch.zeros_like(p) for p in params])
        return loss, grad.double().numpy()

    def callback(intermediate_result: Any) -> None:
        after_step(float(intermediate_result.fun))

    x0 = parameters_to_vector(params).detach().double().numpy()
    res = minimize(value_and_grad, x0, jac=True, method="CG", callback=callback,
                   options={"maxiter": cfg.steps, "gtol": 0.0, "c2": cfg.cg_c2})
    vector_to_parameters(torch.from_numpy(res.x).to(params[0]), params)
    if res.status == 2:
        result.status = f"line search failed: {res.message}"
