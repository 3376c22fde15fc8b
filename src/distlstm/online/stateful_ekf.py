"""EKF on the augmented state [carry; θ] (Ergen & Kozat §2, the stateful choice).

The carry s = (h, c) left by sequence t−1 is the initial state of sequence t at the
same node, and is filtered with θ. With the carry before X_t in the state::

    a_{t-1} = [s_{t-1}; θ]
    d_t     = h(s_{t-1}, θ; X_t) + ε_t               measurement
    s_t     = g(s_{t-1}, θ; X_t)                      carry after X_t
    θ_t     = θ_{t-1} + e_t,  e ~ N(0, q I)           (carry: N(0, q_carry I), default 0)

One step: measurement update with H = [∂h/∂s, ∂h/∂θ] (time update + q on the θ block
folded in), then the carry moves through X_t, linearised at the updated estimate::

    F = [[A, B], [0, I]],   A = ∂g/∂s (n_s × n_s),  B = ∂g/∂θ (n_s × n_θ)
    Σ ← F Σ Fᵀ:  T = [A B] Σ  (n_s × n_a);   Σ_ss ← T [A B]ᵀ,  Σ_sθ ← T_θ,  Σ_θθ unchanged

Only the n_s carry rows change, so the cost is O(n_s · n_a²) — never a dense
n_a × n_a × n_a product. Σ₀ = diag(s0_carry on the carry, s0 on θ); the first carry is
zero. Jacobians come from one reverse-mode call per linearisation (1 + n_s outputs).

The model must accept ``state=`` and ``return_state=True`` (as
:class:`~distlstm.models.networks.SequenceRegressor` does). Stateful filtering is a
single-node algorithm: a carry belongs to one node's stream.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torch.func import functional_call, jacrev

from distlstm.models.functional import FunctionalModel
from distlstm.online.base import LocalAlgorithm, Observation, Prediction, check_theta
from distlstm.online.ekf import EKFConfig, time_update
from distlstm.online.noise import next_noise, reported_variance, step_sigma2
from distlstm.ops.kalman import check_covariance, scalar_update
from distlstm.ops.noise import initial_noise


class StatefulEKFState(NamedTuple):
    a: Tensor  # (n_s + n_θ,) [carry; θ]
    P: Tensor  # (n_a, n_a)
    noise: Tensor  # (2,) the adaptive σ² estimate (see EKF)


class StatefulEKF(LocalAlgorithm):
    """EKF on [carry; θ] at every node, no communication (``make_algorithm('ekf', fm, stateful=True)``)."""

    name = "ekf"

    def __init__(self, fm: FunctionalModel, cfg: EKFConfig | None = None) -> None:
        super().__init__(fm)
        self.cfg = cfg or EKFConfig(stateful=True)
        init_state = getattr(fm.module, "init_state", None)
        if not callable(init_state):
            raise ValueError(f"the stateful EKF needs a model with a carried state and init_state() "
                             f"(e.g. SequenceRegressor), got {type(fm.module).__name__}")
        state = init_state(1, dtype=torch.float64)
        self.carry_shapes = [tuple(s.shape) for s in state]
        self.n_s = sum(math.prod(shape) for shape in self.carry_shapes)

    def _carry(self, s: Tensor) -> tuple[Tensor, ...]:
        parts, offset = [], 0
        for shape in self.carry_shapes:
            size = math.prod(shape)
            parts.append(s[offset : offset + size].view(shape))
            offset += size
        return tuple(parts)

    def _measure_and_carry(self, a: Tensor, x: Tensor) -> Tensor:
        """[h(s, θ; X); g(s, θ; X)] as one vector (1 + n_s,)."""
        s, theta = a[: self.n_s], a[self.n_s :]
        params = self.fm.spec.unflatten(theta)
        d_hat, state = functional_call(self.fm.module, params, (x.unsqueeze(0),),
                                       {"state": self._carry(s), "return_state": True})
        return torch.cat([d_hat.reshape(1), *[part.reshape(-1) for part in state]])

    def _linearise(self, a: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """Value (1 + n_s,) and Jacobian (1 + n_s, n_a) at a."""

        def f(a: Tensor) -> tuple[Tensor, Tensor]:
            out = self._measure_and_carry(a, x)
            return out, out

        jac, out = jacrev(f, has_aux=True)(a)
        return out.detach(), jac.detach()

    def _q(self, like: Tensor) -> Tensor:
        q = torch.full_like(like, self.cfg.q)
        q[: self.n_s] = self.cfg.q_carry
        return q

    def init(self, theta0: Tensor, node: int, gen: torch.Generator) -> StatefulEKFState:
        a = torch.cat([theta0.new_zeros(self.n_s), theta0])
        diag = torch.full_like(a, self.cfg.s0)
        diag[: self.n_s] = self.cfg.s0_carry
        return StatefulEKFState(a, torch.diag(diag), initial_noise(self.cfg.sigma2, self.cfg.interval_window, a.dtype))

    def predict(self, state: StatefulEKFState, x: Tensor) -> Prediction:
        out, jac = self._linearise(state.a, x)
        H = jac[0]
        var = float(H @ (state.P @ H)) + float((self._q(H) * H) @ H) + step_sigma2(self.cfg, state.noise)
        return Prediction(float(out[0]), reported_variance(self.cfg, state.noise, var), H)

    def update_node(self, state: StatefulEKFState, obs: Observation, pred: Prediction, gen: torch.Generator,
                    where: str) -> StatefulEKFState:
        a, P, noise = state
        q = self._q(a)
        sigma2 = step_sigma2(self.cfg, noise)
        if obs.labelled:
            upd = scalar_update(a, P, pred.aux, torch.tensor(obs.d - pred.mean, dtype=P.dtype), sigma2,
                                self.cfg.joseph, q=q)
            a, P = upd.a, upd.P
        else:
            P = time_update(P, q)
        a, P = self._propagate_carry(a, P, obs.x)
        check_covariance(P, f"stateful EKF at {where}")
        check_theta(a, f"stateful EKF at {where}")
        return StatefulEKFState(a, P, next_noise(self.cfg, noise, obs, pred, sigma2))

    def _propagate_carry(self, a: Tensor, P: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """s ← g(s, θ; X) and Σ ← F Σ Fᵀ, touching only the carry rows and columns of ``P``, which it writes:
        a fresh tensor of this step's update, not the state's."""
        n_s = self.n_s
        out, jac = self._linearise(a, x)
        M = jac[1:]  # (n_s, n_a) = [A B]
        T = M @ P  # (n_s, n_a)
        P[:n_s, :] = T
        P[:, :n_s] = T.mT
        P[:n_s, :n_s] = T @ M.mT
        P[:n_s, :n_s] = 0.5 * (P[:n_s, :n_s] + P[:n_s, :n_s].mT)  # n_s × n_s: negligible
        return torch.cat([out[1:], a[n_s:]]), P

    def estimate(self, state: StatefulEKFState) -> Tensor:
        return state.a[self.n_s :]
