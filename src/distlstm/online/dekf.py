"""Diffusion EKF (Ergen & Kozat §3.1, DEKF): a measurement update over the neighbourhood, then combine.

Time update as the EKF at every node. Measurement update at node k with its
neighbourhood's data (X_l, d_l), l ∈ N_k, in one of two linearisations
(``linearisation``):

**block** (the default) — Cattivelli & Sayed's diffusion EKF, the "iterative scheme"
the paper cites: every measurement is linearised at the same predicted state
θ̂_{k,t|t-1}, so the |N_k| measurements form one linear model and are absorbed at
once, in information form (:func:`distlstm.ops.kalman.block_update`)::

    H_l = ∂h(·; X_l)/∂θ at θ̂_{k,t|t-1},  e_l = d_l − h(θ̂_{k,t|t-1}; X_l)      (rows of H, e)
    Σ_k⁻¹ ← Σ_{k,t|t-1}⁻¹ + Hᵀ H / σ²,    ψ_k = θ̂_{k,t|t-1} + Σ_k Hᵀ e / σ²

(Cattivelli & Sayed write it as an incremental loop over l with the innovation
d_l − h_l(θ̂_{t|t-1}) − H_l (ψ_k − θ̂_{t|t-1}): the same numbers.) One pass over Σ for
Σ Hᵀ and one rank-|N_k| downdate; the node's own H is its prediction's.

**sequential** — re-linearising at the running estimate (k first, then its
neighbours in increasing order), the project's first reading of the paper, whose
formulas were lost in extraction::

    ψ_k ← θ̂_{k,t|t-1},   P_k ← Σ_{k,t|t-1}
    for l in N_k:
        H = ∂h(·; X_l)/∂θ at ψ_k,   r = H P_k Hᵀ + σ²
        ψ_k ← ψ_k + P_k Hᵀ (d_l − h(ψ_k; X_l)) / r
        P_k ← P_k − P_k Hᵀ H P_k / r

For a linear h the two are the same filter; for a nonlinear one they differ (tested).
Both then combine::

    θ̂_{k,t|t} = Σ_{l ∈ N_k} c_kl ψ_l            (diffusion, Metropolis weights)
    Σ_{k,t|t} = P_k

σ² is fixed or estimated from the node's own innovations as in the EKF. Messages per
node and step: its observation (T·p + 1 numbers) and ψ_k (n_θ numbers) to every
neighbour. Cost O(|N_k| · n_θ²) per node (sequential: |N_k| passes; block: two).
With a linear h and a complete graph every node processes all data exactly as a
centralized EKF does.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from distlstm.models.functional import FunctionalModel
from distlstm.network.transport import Transport
from distlstm.online.base import NetworkAlgorithm, Observation, Prediction, check_theta
from distlstm.online.diffusion import diffusion_combine
from distlstm.online.ekf import EKF, EKFConfig, EKFState, time_update
from distlstm.online.noise import next_noise, step_sigma2
from distlstm.ops.kalman import block_update, check_covariance, scalar_update


def pack_observation(obs: Observation) -> Tensor:
    """[x.flatten(); d] as one message (the receiver knows p)."""
    return torch.cat([obs.x.reshape(-1), obs.x.new_tensor([obs.d])])


def unpack_observation(message: Tensor, p: int) -> Observation:
    return Observation(message[:-1].view(-1, p), float(message[-1]))


class DEKF(NetworkAlgorithm):
    """Diffusion EKF with Metropolis combination of θ (state, prediction and estimate as the EKF)."""

    name = "dekf"

    def __init__(self, fm: FunctionalModel, cfg: EKFConfig | None = None) -> None:
        cfg = cfg or EKFConfig()
        if cfg.stateful:
            raise ValueError("DEKF filters θ only: a carry belongs to one node's stream, and a neighbour's "
                             "sequence does not continue it; use the stateful EKF at each node instead")
        super().__init__(fm, EKF(fm, cfg))
        self.cfg = cfg
        self._takes_lengths = "lengths" in inspect.signature(fm.module.forward).parameters

    def update(self, states: Mapping[int, EKFState], obs: Mapping[int, Observation],
               preds: Mapping[int, Prediction], transport: Transport,
               gens: Mapping[int, torch.Generator], step: int) -> dict[int, EKFState]:
        p = next(iter(obs.values())).x.shape[-1]
        received = transport.neighbour_exchange({k: pack_observation(obs[k]) for k in transport.local_nodes})
        psi, cov, noise = {}, {}, {}
        update = self.block_update if self.cfg.linearisation == "block" else self.incremental_update
        for k in transport.local_nodes:
            data = [obs[k]] + [unpack_observation(received[k][nb], p) for nb in sorted(received[k])]
            sigma2 = step_sigma2(self.cfg, states[k].noise)
            psi[k], cov[k] = update(states[k], data, preds[k], sigma2, f"node {k}, step {step}")
            noise[k] = next_noise(self.cfg, states[k].noise, obs[k], preds[k], sigma2)
        combined = diffusion_combine(psi, transport)
        return {k: EKFState(combined[k], cov[k], noise[k]) for k in transport.local_nodes}

    def block_update(self, state: EKFState, data: list[Observation], pred: Prediction, sigma2: float,
                     where: str) -> tuple[Tensor, Tensor]:
        """ψ and P after the time update and one block update, every measurement linearised at θ̂_{t|t-1}.

        ``data[0]`` is the node's own observation, whose H and h(θ̂) are ``pred``'s.
        """
        own = data[0].labelled
        others = [ob for ob in data[1:] if ob.labelled]
        rows = [pred.aux[0]] if own else []
        innovations = [data[0].d - pred.mean] if own else []
        if others:
            values, jac = self._jacobian_rows(state.theta, [ob.x for ob in others])
            rows += list(jac)
            innovations += [ob.d - float(v) for ob, v in zip(others, values, strict=True)]
        if not rows:
            return state.theta, time_update(state.P, self.cfg.q)
        upd = block_update(state.theta, state.P, torch.stack(rows), state.P.new_tensor(innovations), sigma2,
                           self.cfg.joseph, q=self.cfg.q, PH=pred.aux[1] if own else None)
        check_covariance(upd.P, f"DEKF at {where}")
        check_theta(upd.a, f"DEKF at {where}")
        return upd.a, upd.P

    def _jacobian_rows(self, theta: Tensor, xs: list[Tensor]) -> tuple[Tensor, Tensor]:
        """h(θ; X_l) (m,) and the rows ∂h/∂θ (m, n_θ): one forward over all m sequences, one backward
        (:meth:`~distlstm.models.functional.FunctionalModel.jacobian`).

        Sequences of different lengths are padded, with their ``lengths``, for a model that
        takes them (:class:`~distlstm.models.networks.SequenceRegressor`); any other model
        then gets one forward/backward per sequence.
        """
        if all(x.shape == xs[0].shape for x in xs):
            return self.fm.jacobian(theta, torch.stack(xs))
        if self._takes_lengths:
            lengths = torch.tensor([x.shape[0] for x in xs])
            return self.fm.jacobian(theta, pad_sequence(xs, batch_first=True), lengths=lengths)
        pairs = [self.output_and_grad(theta, x) for x in xs]
        return torch.stack([v for v, _ in pairs]), torch.stack([g for _, g in pairs])

    def incremental_update(self, state: EKFState, data: list[Observation], pred: Prediction, sigma2: float,
                           where: str) -> tuple[Tensor, Tensor]:
        """ψ and P after the time update and one measurement update per labelled observation, each
        linearised at the running ψ."""
        psi, P, q = state.theta, state.P, self.cfg.q  # the time update (+ q I) rides on the first update
        for ob in data:
            if not ob.labelled:
                continue
            value, H = self.output_and_grad(psi, ob.x)
            upd = scalar_update(psi, P, H, torch.tensor(ob.d - float(value), dtype=P.dtype), sigma2,
                                self.cfg.joseph, q=q)
            psi, P, q = upd.a, upd.P, 0.0
        if q:  # no labelled observation: time update only
            P = time_update(P, q)
        check_covariance(P, f"DEKF at {where}")
        check_theta(psi, f"DEKF at {where}")
        return psi, P
