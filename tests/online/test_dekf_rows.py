"""The block DEKF's neighbour Jacobian rows (one forward, one batched backward) against one
forward/backward per observation, on the LSTM regressor, with sequences of one length and of several."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from distlstm.models.functional import FunctionalModel
from distlstm.network import InProcessTransport, make_topology
from distlstm.online import DEKF, EKFConfig, regressor
from distlstm.online.base import Observation
from tests.online.helpers import SCHEDULES, dekf_block_update

D = torch.float64


def per_observation(fm: FunctionalModel, theta: Tensor, xs: list[Tensor]) -> tuple[Tensor, Tensor]:
    """The reference: h(θ; X_l) and ∂h/∂θ by a separate forward and backward for each sequence."""
    pairs = [fm.value_and_grad(theta, x.unsqueeze(0)) for x in xs]
    return torch.stack([v for v, _ in pairs]), torch.stack([g for _, g in pairs])


@pytest.mark.parametrize("lengths", [(10, 10), (10, 7, 12), (1, 5)])
def test_rows_equal_the_per_observation_gradients(lengths):
    fm, theta0 = regressor(4, 6, seed=1)
    gen = torch.Generator().manual_seed(sum(lengths))
    theta = theta0 + 0.3 * torch.randn(fm.numel, generator=gen, dtype=D)  # away from the initialiser's θ
    xs = [torch.randn(t, 4, generator=gen, dtype=D) for t in lengths]
    values, rows = DEKF(fm)._jacobian_rows(theta, xs)
    ref_values, ref_rows = per_observation(fm, theta, xs)
    assert rows.shape == (len(lengths), fm.numel)
    assert float(ref_rows.abs().max()) > 1e-2  # the rows are not trivially zero
    torch.testing.assert_close(values, ref_values, atol=1e-12, rtol=0)
    torch.testing.assert_close(rows, ref_rows, atol=1e-12, rtol=0)
    if len(set(lengths)) > 1:  # padding must not leak: each row is its own sequence's, not a neighbour's
        assert float((rows[0] - rows[1]).abs().max()) > 1e-3


class TanhLast(nn.Module):
    """d̂ = tanh(θᵀ x_T): a model without ``lengths``, so unequal sequences go one by one."""

    def __init__(self, p: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(p, dtype=D))

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x[:, -1] @ self.w)


def test_a_model_without_lengths_gets_its_unequal_sequences_one_by_one():
    fm = FunctionalModel(TanhLast(3))
    gen = torch.Generator().manual_seed(2)
    theta = torch.randn(3, generator=gen, dtype=D)
    xs = [torch.randn(t, 3, generator=gen, dtype=D) for t in (2, 4)]
    values, rows = DEKF(fm)._jacobian_rows(theta, xs)
    by_hand = torch.stack([(1 - torch.tanh(x[-1] @ theta) ** 2) * x[-1] for x in xs])  # ∂ tanh(θᵀx)/∂θ
    torch.testing.assert_close(rows, by_hand, atol=1e-12, rtol=0)
    torch.testing.assert_close(values, torch.stack([torch.tanh(x[-1] @ theta) for x in xs]), atol=1e-12, rtol=0)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_block_update_with_neighbours_of_other_lengths_is_the_information_form(schedule):
    """The whole node update on the LSTM, neighbours of lengths 7 and 12 beside the node's 10, against
    Σ⁻¹ ← Σ_pred⁻¹ + HᵀH/σ², ψ = θ̂ + Σ Hᵀ e / σ² built from per-observation rows with explicit inverses;
    the neighbours' rows differentiated in the update or, with the node's own, in the prediction round."""
    fm, theta0 = regressor(3, 2, seed=4)  # n_θ = 48: small enough to invert Σ
    gen = torch.Generator().manual_seed(5)
    data = [Observation(torch.randn(t, 3, generator=gen, dtype=D), float(torch.randn((), generator=gen)))
            for t in (10, 7, 12)]
    sigma2, q, s0 = 0.05, 1e-3, 0.4
    dekf = DEKF(fm, EKFConfig(sigma2=sigma2, q=q, s0=s0))
    state = dekf.init(theta0, 0, gen)
    psi, P = dekf_block_update(dekf, state, data, schedule)

    values, H = per_observation(fm, theta0, [ob.x for ob in data])
    e = torch.tensor([ob.d for ob in data], dtype=D) - values
    P_post = torch.linalg.inv(torch.eye(fm.numel, dtype=D) / (s0 + q) + H.T @ H / sigma2)
    torch.testing.assert_close(P, P_post, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(psi, theta0 + P_post @ H.T @ e / sigma2, atol=1e-12, rtol=1e-9)


def test_rows_in_the_prediction_round_give_the_run_of_rows_in_the_update():
    """Six steps on a ring, sequences of several lengths and missing labels (NaN, and an infinite one that is no label
    either, as ``Observation.labelled`` says): the same states (to rounding) and
    predictions either way; the prediction round adds one message per neighbour and no number."""
    fm, theta0 = regressor(3, 4, seed=2)
    gen = torch.Generator().manual_seed(8)
    streams = [[Observation(torch.randn(int(torch.randint(3, 9, (), generator=gen)), 3, generator=gen, dtype=D),
                            math.nan if (k, t) in {(1, 2), (0, 4)} else math.inf if (k, t) == (2, 3)
                            else float(torch.randn((), generator=gen)))
                for t in range(6)] for k in range(4)]
    dekf = DEKF(fm)

    def run(in_prediction: bool):
        transport = InProcessTransport(make_topology("ring", 4))
        states = {k: dekf.init(theta0, k, torch.Generator()) for k in range(4)}
        predictions = []
        for t in range(6):
            obs = {k: streams[k][t] for k in range(4)}
            if in_prediction:
                preds = dekf.predict_nodes(states, {k: ob.x for k, ob in obs.items()}, transport)
            else:
                preds = {k: dekf.predict(states[k], obs[k].x) for k in range(4)}
            predictions += [(preds[k].mean, preds[k].var) for k in range(4)]
            states = dekf.update(states, obs, preds, transport, {}, t)
        return states, torch.tensor(predictions, dtype=D), transport.stats

    early, early_preds, early_stats = run(True)
    late, late_preds, late_stats = run(False)
    assert float((early[0].theta - theta0).abs().max()) > 1e-3  # the filter moved
    for k in range(4):
        torch.testing.assert_close(early[k].theta, late[k].theta, atol=1e-12, rtol=0)
        torch.testing.assert_close(early[k].P, late[k].P, atol=1e-12, rtol=0)
    torch.testing.assert_close(early_preds, late_preds, atol=1e-12, rtol=0)
    assert early_stats.bytes == late_stats.bytes
    assert [m - n for m, n in zip(early_stats.messages, late_stats.messages, strict=True)] == [6 * 2] * 4
