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
Σ Hᵀ and one rank-|N_k| downdate; in a run every row and its Σ Hᵀ come from the
prediction round (below).

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
node and step to every neighbour: its observation (T·p + 1 numbers) and ψ_k (n_θ
numbers); with the block linearisation in a run, three: its sequence (T·p), its label (1)
and ψ_k. Cost O(|N_k| · n_θ²) per node (sequential: |N_k| passes; block: two).

**When the rows are computed.** With the block linearisation every row is taken at
θ̂_{k,t|t-1}, which the node already holds when it predicts. So in a run (the
network-wide :meth:`predict_nodes`) the nodes send their sequences X_l before the
prediction, and each differentiates its own sequence and its neighbours' in one call
(one forward over the |N_k| sequences, one backward: about 1.2× one sequence's cost,
against 2.1× for its own row at the prediction and its neighbours' in the update); the
update then sends only the labels d_l. The same numbers travel (T·p, then 1), in one
more message per neighbour. Predictions made one node at a time (:meth:`predict`) leave
the neighbours' rows to the update, as before; the two schedules agree to rounding
(tested).
With a linear h and a complete graph every node processes all data exactly as a
centralized EKF does.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import NamedTuple

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


class NeighbourRows(NamedTuple):
    """What a node's prediction round computed for its neighbours' sequences, at its own θ̂_{k,t|t-1}."""

    nodes: list[int]  # the neighbours l, in increasing order
    values: Tensor  # (m,) h(θ̂; X_l)
    rows: Tensor  # (m, n_θ) ∂h(θ̂; X_l)/∂θ
    PH: Tensor  # (n_θ, m) Σ_{t-1|t-1} ∂h(θ̂; X_l)/∂θᵀ, from the same pass over Σ as the node's own row


class DEKF(NetworkAlgorithm):
    """Diffusion EKF with Metropolis combination of θ (state, prediction and estimate as the EKF)."""

    name = "dekf"

    def __init__(self, fm: FunctionalModel, cfg: EKFConfig | None = None) -> None:
        cfg = cfg or EKFConfig()
        if cfg.stateful:
            raise ValueError("DEKF filters θ only: a carry belongs to one node's stream, and a neighbour's "
                             "sequence does not continue it; use the stateful EKF at each node instead")
        self.ekf = EKF(fm, cfg)
        super().__init__(fm, self.ekf)
        self.cfg = cfg
        self._takes_lengths = "lengths" in inspect.signature(fm.module.forward).parameters

    def predict_nodes(self, states: Mapping[int, EKFState], xs: Mapping[int, Tensor],
                      transport: Transport) -> dict[int, Prediction]:
        """The EKF's predictions; with the block linearisation the nodes first send their sequences, and each
        differentiates its own and its neighbours' in one call (their rows ride in ``aux`` to the update)."""
        if self.cfg.linearisation != "block":
            return super().predict_nodes(states, xs, transport)
        received = transport.neighbour_exchange({k: xs[k].reshape(-1) for k in transport.local_nodes})
        preds = {}
        for k in transport.local_nodes:
            p = xs[k].shape[-1]
            nodes = sorted(received[k])
            values, rows = self._jacobian_rows(states[k].theta, [xs[k], *(received[k][j].view(-1, p) for j in nodes)])
            U = states[k].P @ rows.mT  # every row's Σ Hᵀ in one pass over Σ
            pred = self.ekf.prediction(states[k], values[0], rows[0], U[:, 0])
            preds[k] = pred._replace(aux=(*pred.aux, NeighbourRows(nodes, values[1:], rows[1:], U[:, 1:])))
        return preds

    def update(self, states: Mapping[int, EKFState], obs: Mapping[int, Observation],
               preds: Mapping[int, Prediction], transport: Transport,
               gens: Mapping[int, torch.Generator], step: int) -> dict[int, EKFState]:
        nodes = transport.local_nodes
        carried = [isinstance(preds[k].aux[-1], NeighbourRows) for k in nodes]  # predict_nodes sent the sequences
        if any(carried) and not all(carried):
            raise ValueError("DEKF.update: some predictions came from predict_nodes and some from predict; every "
                             "node of a step (and every process) must use the same")
        rows_known = self.cfg.linearisation == "block" and all(carried) and bool(nodes)
        if rows_known:
            received = transport.neighbour_exchange({k: obs[k].x.new_tensor([obs[k].d]) for k in nodes})
        else:
            received = transport.neighbour_exchange({k: pack_observation(obs[k]) for k in nodes})
        psi, cov, noise = {}, {}, {}
        for k in nodes:
            where = f"node {k}, step {step}"
            sigma2 = step_sigma2(self.cfg, states[k].noise)
            if rows_known:
                nb = preds[k].aux[2]
                if nb.nodes != sorted(received[k]):
                    raise RuntimeError(f"DEKF at node {k}, step {step}: the labels came from {sorted(received[k])}, "
                                       f"the sequences from {nb.nodes}")
                labels = torch.cat([received[k][j] for j in nb.nodes]) if nb.nodes else nb.values.new_empty(0)
                psi[k], cov[k] = self.block_update(states[k], obs[k], preds[k], labels, nb.values, nb.rows, sigma2,
                                                   where, nb.PH)
            else:
                p = obs[k].x.shape[-1]
                data = [obs[k]] + [unpack_observation(received[k][nb], p) for nb in sorted(received[k])]
                if self.cfg.linearisation == "block":
                    psi[k], cov[k] = self.block_update(states[k], obs[k], preds[k], *self._rows_now(states[k], data),
                                                       sigma2, where)
                else:
                    psi[k], cov[k] = self.incremental_update(states[k], data, preds[k], sigma2, where)
            noise[k] = next_noise(self.cfg, states[k].noise, obs[k], preds[k], sigma2)
        combined = diffusion_combine(psi, transport)
        return {k: EKFState(combined[k], cov[k], noise[k]) for k in nodes}

    def _rows_now(self, state: EKFState, data: list[Observation]) -> tuple[Tensor, Tensor, Tensor]:
        """The labelled neighbours' (``data[1:]``) labels, h(θ̂; X_l) and rows, differentiated in the update
        (when the predictions came one node at a time, without ``predict_nodes``)."""
        others = [ob for ob in data[1:] if ob.labelled]
        if not others:
            empty = state.theta.new_zeros(0)
            return empty, empty, state.theta.new_zeros(0, state.theta.shape[0])
        values, rows = self._jacobian_rows(state.theta, [ob.x for ob in others])
        return state.theta.new_tensor([ob.d for ob in others]), values, rows

    def block_update(self, state: EKFState, own: Observation, pred: Prediction, labels: Tensor, values: Tensor,
                     rows: Tensor, sigma2: float, where: str, PH: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """ψ and P after the time update and one block update, every measurement linearised at θ̂_{t|t-1}.

        The node's own row, Σ Hᵀ and h(θ̂) are ``pred``'s; the neighbours' ``labels`` d_l (NaN: none),
        ``values`` h(θ̂; X_l), ``rows`` ∂h/∂θ and, if known, ``PH`` Σ Hᵀ (n_θ, m) are at the same θ̂.
        """
        labelled = torch.isfinite(labels)  # as Observation.labelled: NaN (or ±inf) is no label
        if not bool(labelled.all()):
            labels, values, rows = labels[labelled], values[labelled], rows[labelled]
            PH = None if PH is None else PH[:, labelled]
        H = rows if not own.labelled else torch.cat([pred.aux[0][None], rows])
        innovations = labels - values
        if own.labelled:
            innovations = torch.cat([innovations.new_tensor([own.d - pred.mean]), innovations])
            PH = pred.aux[1] if PH is None else torch.cat([pred.aux[1][:, None], PH], 1)
        if H.shape[0] == 0:
            return state.theta, time_update(state.P, self.cfg.q)
        upd = block_update(state.theta, state.P, H, innovations, sigma2, self.cfg.joseph, q=self.cfg.q, PH=PH)
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
