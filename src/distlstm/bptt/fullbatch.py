"""Full-batch, full-BPTT optimisation with L-BFGS or nonlinear CG, the batch split across workers (map-reduce).

The matrix-batch paper trains on the whole training set at once with full BPTT
and a batch method, the batch spread over machines whose losses and gradients are
summed. With worker r holding shard S_r of the N samples and the task's loss ℓ (the
mean over a batch, e.g. the squared error)::

    L(θ)  = Σ_r (|S_r| / N) ℓ(S_r; θ),                   (the mean of ℓ over all N samples)
    ∇L(θ) = Σ_r ∇[(|S_r| / N) ℓ(S_r; θ)]                 (one all_reduce of [L_r; ∇L_r])

Every evaluation — each optimizer step and every trial of the line search — goes
through :class:`FullBatchObjective`, so all workers see identical (L, ∇L) and take
identical steps (the caller compares a θ checksum across workers after every step).
float64 by default: the paper found single precision unstable with batch optimizers.

Optimizers, one *step* each:

* ``lbfgs`` — one ``torch.optim.LBFGS.step`` of ``max_iter`` iterations with the
  strong-Wolfe line search; its history (s, y pairs, H_diag, …) carries over between
  steps and lives in the optimizer's ``state_dict``;
* ``cg`` — one iteration of nonlinear conjugate gradient, Polak–Ribière+ by default
  (Nocedal & Wright §5.2), or Hestenes–Stiefel+ (``cg_update="hs"``, the default of
  minFunc, which the matrix-batch paper used); with y_k = g_{k+1} − g_k::

      β_{k+1} = max(0, g_{k+1}ᵀ y_k / g_kᵀg_k)   (PR+)   or   max(0, g_{k+1}ᵀ y_k / p_kᵀ y_k)   (HS+),
      p_{k+1} = −g_{k+1} + β_{k+1} p_k,
      θ_{k+1} = θ_k + α_k p_k,   α_k from a Wolfe line search (c₁ = 1e−4, c₂ = ``cg_c2``)

  (the Wolfe curvature condition makes p_kᵀ y_k ≥ (1 − c₂)|p_kᵀ g_k| > 0);

  written as a pure function of an explicit :class:`CGState` so a run can stop and
  resume between iterations, and made to take (with PR+) exactly the steps of SciPy's
  ``minimize(method="CG")``: the same line search (``_line_search_wolfe12``), its first
  trial step from L(θ_{k−1}), and its sufficient-descent check
  p_{k+1}ᵀg_{k+1} ≤ −0.01 ‖g_{k+1}‖² on top of the Wolfe conditions (Gilbert & Nocedal
  1992). c₂ = 0.1 by default, Nocedal & Wright's usual choice for CG; SciPy's 0.4 took
  about twice as long on the multiplication problem.

A line search that finds no decrease is reported (the step's result says so) rather
than raised; a non-finite loss raises :class:`FloatingPointError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize._optimize import _line_search_wolfe12, _LineSearchError
from torch import Tensor, nn
from torch.nn.utils import parameters_to_vector

from distlstm.runtime.comm import Communicator, LocalComm

METHODS = ("lbfgs", "cg")
CG_UPDATES = ("pr", "hs")  # Polak–Ribière+, Hestenes–Stiefel+
CG_C1 = 1e-4  # Armijo constant of the Wolfe line search (SciPy's default)
CG_SIGMA = 0.01  # sufficient descent: p_{k+1}ᵀg_{k+1} ≤ −σ ‖g_{k+1}‖² (SciPy's sigma_3)


@dataclass(frozen=True)
class FullBatchConfig:
    """The optimizer's settings (the step budget and time budget belong to the run loop)."""

    method: str = "lbfgs"  # lbfgs or cg
    max_iter: int = 20  # L-BFGS iterations per step (the history carries over between steps)
    history_size: int = 100  # L-BFGS: (s, y) pairs kept (torch's and minFunc's default; 50 crawled on the
    # multiplication problem's ill-conditioned valleys where 100 succeeds)
    lr: float = 1.0  # L-BFGS initial step length
    # L-BFGS: the smallest change of L or of θ (absolute) its line search and loop still act on. torch's
    # default 1e-9 ended the multiplication runs at L ≈ 2e-4, where the valley needs steps of ~1e-6.
    tolerance_change: float = 1e-14
    cg_c2: float = 0.1  # CG: curvature constant of the Wolfe line search (smaller: more exact searches)
    cg_update: str = "pr"  # CG: β of Polak–Ribière+ ("pr") or Hestenes–Stiefel+ ("hs")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown full-batch method {self.method!r}; expected one of {METHODS}")
        for name in ("max_iter", "history_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not self.tolerance_change >= 0:
            raise ValueError(f"tolerance_change must be non-negative, got {self.tolerance_change}")
        if not CG_C1 < self.cg_c2 < 1:
            raise ValueError(f"cg_c2 must lie in (c1 = {CG_C1:g}, 1), got {self.cg_c2}")
        if self.cg_update not in CG_UPDATES:
            raise ValueError(f"unknown CG update {self.cg_update!r}; expected one of {CG_UPDATES}")


class FullBatchObjective:
    """L(θ) and ∇L(θ) over the whole training set, summed over workers, counted, remembering its last point.

    ``local_loss()`` is this worker's share (|S_r| / N) ℓ(S_r; θ) at the model's
    current parameters. Asking again at the θ of the previous evaluation costs
    nothing (L-BFGS asks for the loss at the point its line search ended on), so
    ``evaluations`` counts passes over the training set.
    """

    def __init__(self, model: nn.Module, local_loss: Callable[[], Tensor], comm: Communicator | None = None) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.local_loss = local_loss
        self.comm = comm or LocalComm()
        self.evaluations = 0
        self._last: tuple[Tensor, Tensor, Tensor] | None = None  # θ, L, ∇L of the previous evaluation

    def theta(self) -> Tensor:
        """θ as one flat vector (a copy)."""
        return parameters_to_vector(self.params).detach().clone()

    def set_theta(self, theta: Tensor) -> None:
        """Copy the flat vector ``theta`` into the parameters."""
        offset = 0
        with torch.no_grad():
            for p in self.params:
                p.copy_(theta[offset : offset + p.numel()].view_as(p))
                offset += p.numel()

    def _set_grads(self, flat: Tensor) -> None:
        offset = 0
        for p in self.params:
            p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()

    def closure(self) -> Tensor:
        """L at the current θ, with ∇L left in the parameters' ``.grad`` (what a torch optimizer calls)."""
        theta = parameters_to_vector(self.params).detach()
        if self._last is not None and torch.equal(theta, self._last[0]):
            self._set_grads(self._last[2])
            return self._last[1].clone()
        for p in self.params:
            p.grad = None
        loss = self.local_loss()
        loss.backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([loss.detach().reshape(1)] + [g.reshape(-1) for g in grads])
        self.comm.all_reduce_(flat)  # [Σ_r L_r; Σ_r ∇L_r] in one collective
        self.evaluations += 1
        total, grad = flat[0], flat[1:]
        if not torch.isfinite(total):
            raise FloatingPointError(f"the full-batch loss is not finite ({float(total)}) at evaluation "
                                     f"{self.evaluations}: the model diverged; lower the step length lr (or, "
                                     "for the long-lag network, the gate sharpness α)")
        self._set_grads(grad)
        self._last = (theta.clone(), total.clone(), grad.clone())
        return total.clone()

    def value_and_grad(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """(L(θ), ∇L(θ)) at a flat float64 ``theta``, for the CG iteration (which works on NumPy vectors)."""
        self.set_theta(torch.from_numpy(theta).to(self.params[0]))
        loss = float(self.closure())
        grad = parameters_to_vector([p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params])
        return loss, grad.double().numpy()

    def state_dict(self) -> dict[str, Any]:
        """The evaluation count and the remembered point: a resumed run counts evaluations as an uninterrupted one."""
        last = {} if self._last is None else dict(zip(("theta", "loss", "grad"), self._last, strict=True))
        return {"evaluations": self.evaluations, "last": last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.evaluations = int(state["evaluations"])
        last = state["last"]
        self._last = (last["theta"], last["loss"], last["grad"]) if last else None


def lbfgs_max_eval(max_iter: int) -> int:
    """Evaluations one L-BFGS step may take: torch's default ⌊1.25 · max_iter⌋, and at least max_iter + 1.

    A step evaluates L once and then searches along each of its directions; the search
    gets the evaluations left (torch passes ``max_ls = max_eval − evaluations so far``).
    Below max_iter = 4 torch's default leaves fewer than one evaluation per iteration: with
    max_iter = 1 none, so a first trial step that raises L is returned as t = 0 and every
    later step repeats it (a run from the sparse start stalled at its first step that way).
    From max_iter = 4 on the two agree. A run resumed from a checkpoint written before this
    keeps the budget it was made with (torch restores ``param_groups``, ``max_eval`` included).
    """
    return max(max_iter * 5 // 4, max_iter + 1)


def make_lbfgs(params: list[nn.Parameter], cfg: FullBatchConfig) -> torch.optim.LBFGS:
    """``torch.optim.LBFGS`` with the strong-Wolfe line search; one ``step`` runs ``cfg.max_iter`` iterations
    within :func:`lbfgs_max_eval` evaluations."""
    return torch.optim.LBFGS(params, lr=cfg.lr, max_iter=cfg.max_iter, max_eval=lbfgs_max_eval(cfg.max_iter),
                             history_size=cfg.history_size, tolerance_change=cfg.tolerance_change,
                             line_search_fn="strong_wolfe")


def lbfgs_step(opt: torch.optim.LBFGS, closure: Callable[[], Tensor]) -> tuple[float, float]:
    """One L-BFGS step: (L before it, L after it). Equal values mean it found no decrease (or converged)."""
    start = float(opt.step(closure))  # LBFGS returns the loss it started from
    return start, float(closure())  # at the new θ: remembered from the line search's last evaluation


@dataclass(frozen=True)
class CGState:
    """Where nonlinear CG stands between two iterations (NumPy float64 vectors, as SciPy's loop keeps them).

    ``f_prev`` is L(θ_{k−1}); before the first iteration L(θ₀) + ‖g₀‖/2, SciPy's guess
    that makes the first trial step ≈ 1 in θ.
    """

    x: np.ndarray  # θ_k
    g: np.ndarray  # ∇L(θ_k)
    p: np.ndarray  # search direction p_k
    f: float  # L(θ_k)
    f_prev: float

    def state_dict(self) -> dict[str, Any]:
        return {"x": torch.from_numpy(self.x.copy()), "g": torch.from_numpy(self.g.copy()),
                "p": torch.from_numpy(self.p.copy()), "f": self.f, "f_prev": self.f_prev}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> CGState:
        return cls(state["x"].numpy().copy(), state["g"].numpy().copy(), state["p"].numpy().copy(),
                   float(state["f"]), float(state["f_prev"]))


ValueAndGrad = Callable[[np.ndarray], tuple[float, np.ndarray]]


def cg_start(x: np.ndarray, value_and_grad: ValueAndGrad) -> CGState:
    """The state before the first iteration: p₀ = −g₀."""
    f, g = value_and_grad(x)
    return CGState(x, g, -g, f, f + float(np.linalg.norm(g)) / 2)


def cg_iteration(state: CGState, value_and_grad: ValueAndGrad, c2: float, update: str = "pr") -> CGState | None:
    """One CG iteration from ``state`` (SciPy's ``_minimize_cg`` loop body); None if the line search fails.

    ``update`` is β's formula: "pr" (Polak–Ribière+, SciPy's) or "hs" (Hestenes–Stiefel+).

    ``value_and_grad`` should remember its last point: the line search asks for L and
    ∇L at the same θ separately.
    """
    xk, gk, pk = state.x, state.g, state.p
    gk_gk = float(np.dot(gk, gk))

    def f(x: np.ndarray) -> float:
        return value_and_grad(x)[0]

    def fprime(x: np.ndarray) -> np.ndarray:
        return value_and_grad(x)[1]

    if update not in CG_UPDATES:
        raise ValueError(f"unknown CG update {update!r}; expected one of {CG_UPDATES}")

    def direction(alpha: float, g_new: np.ndarray | None) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        x_new = xk + alpha * pk
        if g_new is None:
            g_new = fprime(x_new)
        y = g_new - gk
        denominator = gk_gk if update == "pr" else float(np.dot(pk, y))
        beta = max(0, np.dot(y, g_new) / denominator) if denominator > 0 else 0.0  # HS: p·y ≤ 0 off the Wolfe points
        return alpha, x_new, -g_new + beta * pk, g_new

    cached: list[Any] = [None]

    def descent_condition(alpha: float, _x: np.ndarray, _f: float, g_new: np.ndarray | None) -> bool:
        cached[:] = direction(alpha, g_new)
        _, _, p_new, g_new = cached
        if not np.any(g_new):  # a stationary point: SciPy accepts the step (‖g‖ ≤ gtol = 0)
            return True
        return bool(np.dot(p_new, g_new) <= -CG_SIGMA * np.dot(g_new, g_new))

    try:
        alpha, _, _, f_new, f_old, g_line = _line_search_wolfe12(
            f, fprime, xk, pk, gk, state.f, state.f_prev, c1=CG_C1, c2=c2, amin=1e-100, amax=1e100,
            extra_condition=descent_condition)
    except _LineSearchError:
        return None
    _, x_new, p_new, g_new = cached if alpha == cached[0] else direction(alpha, g_line)
    return CGState(x_new, g_new, p_new, float(f_new), float(f_old))
