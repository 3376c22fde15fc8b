"""Diffusion EKF (Ergen & Kozat §3.1, DEKF): incremental update over the neighbourhood, then combine.

Time update as the EKF at every node. Measurement update at node k, incremental
over its neighbourhood's data (X_l, d_l), l ∈ N_k (k first, then its neighbours in
increasing order), re-linearising at the running estimate::

    ψ_k ← θ̂_{k,t|t-1},   P_k ← Σ_{k,t|t-1}
    for l in N_k:
        H = ∂h(·; X_l)/∂θ at ψ_k,   r = H P_k Hᵀ + σ²
        ψ_k ← ψ_k + P_k Hᵀ (d_l − h(ψ_k; X_l)) / r
        P_k ← P_k − P_k Hᵀ H P_k / r
    θ̂_{k,t|t} = Σ_{l ∈ N_k} c_kl ψ_l            (diffusion, Metropolis weights)
    Σ_{k,t|t} = P_k

Messages per node and step: its observation (T·p + 1 numbers) and ψ_k (n_θ numbers)
to every neighbour. Cost O(|N_k| · n_θ²) per node. With a linear h and a complete
graph every node processes all data exactly as a centralized EKF does.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from distlstm.models.functional import FunctionalModel
from distlstm.network.transport import Transport
from distlstm.online.base import NetworkAlgorithm, Observation, Prediction, check_theta
from distlstm.online.diffusion import diffusion_combine
from distlstm.online.ekf import EKF, EKFConfig, EKFState, time_update
from distlstm.ops.kalman import check_covariance, scalar_update


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

    def update(self, states: Mapping[int, EKFState], obs: Mapping[int, Observation],
               preds: Mapping[int, Prediction], transport: Transport,
               gens: Mapping[int, torch.Generator], step: int) -> dict[int, EKFState]:
        p = next(iter(obs.values())).x.shape[-1]
        received = transport.neighbour_exchange({k: pack_observation(obs[k]) for k in transport.local_nodes})
        psi, cov = {}, {}
        for k in transport.local_nodes:
            data = [obs[k]] + [unpack_observation(received[k][nb], p) for nb in sorted(received[k])]
            psi[k], cov[k] = self.incremental_update(states[k], data, f"node {k}, step {step}")
        combined = diffusion_combine(psi, transport)
        return {k: EKFState(combined[k], cov[k]) for k in transport.local_nodes}

    def incremental_update(self, state: EKFState, data: list[Observation], where: str) -> tuple[Tensor, Tensor]:
        """ψ and P after the time update and one measurement update per labelled observation."""
        psi, P, q = state.theta, state.P, self.cfg.q  # the time update (+ q I) rides on the first update
        for ob in data:
            if not ob.labelled:
                continue
            value, H = self.output_and_grad(psi, ob.x)
            upd = scalar_update(psi, P, H, torch.tensor(ob.d - float(value), dtype=P.dtype), self.cfg.sigma2,
                                self.cfg.joseph, q=q)
            psi, P, q = upd.a, upd.P, 0.0
        if q:  # no labelled observation: time update only
            P = time_update(P, q)
        check_covariance(P, f"DEKF at {where}")
        check_theta(psi, f"DEKF at {where}")
        return psi, P
