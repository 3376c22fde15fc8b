"""Ergen & Kozat's θ (one bias per gate) against nn.LSTM, and what the two-bias θ does to an EKF."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from distlstm.data.observation import Observation
from distlstm.online import EKF, EKFConfig, regressor

D = torch.float64


@pytest.mark.parametrize(("task", "p", "n", "paper_n_theta"), [("exchange", 1, 4, 100), ("sentences", 9, 8, 584)])
def test_single_bias_theta_has_the_papers_size(task, p, n, paper_n_theta):
    """n_θ = n + 4(np + n² + n): 100 on the exchange task (p = 1, n = 4), 584 on sentences (p = 9, n = 8)."""
    assert regressor(p, n, seed=0, single_bias=True)[0].numel == paper_n_theta == n + 4 * (n * p + n * n + n)
    assert regressor(p, n, seed=0)[0].numel == paper_n_theta + 4 * n  # nn.LSTM's layout: b_ih and b_hh


def reference(theta_parts: dict[str, torch.Tensor], x: torch.Tensor, p: int, n: int) -> torch.Tensor:
    """d̂ = wᵀ mean_j y_j by torch.nn.LSTM with b_ih = the paper's b and b_hh = 0 (differentiable in the parts)."""
    lstm = nn.LSTM(p, n, batch_first=True).double()
    params = {"weight_ih_l0": theta_parts["rnn.weight_ih_l0"], "weight_hh_l0": theta_parts["rnn.weight_hh_l0"],
              "bias_ih_l0": theta_parts["rnn.bias_ih_l0"], "bias_hh_l0": torch.zeros(4 * n, dtype=D)}
    y, _ = functional_call(lstm, params, (x,))
    return y.mean(dim=1) @ theta_parts["head.linear.weight"].reshape(n)


def test_single_bias_model_equals_nn_lstm_with_a_zero_second_bias():
    p, n = 3, 5
    fm, theta0 = regressor(p, n, seed=1, single_bias=True)
    assert [name for name in fm.spec.names if "bias" in name] == ["rnn.bias_ih_l0"]
    gen = torch.Generator().manual_seed(2)
    theta = theta0 + 0.3 * torch.randn(fm.numel, generator=gen, dtype=D)
    x = torch.randn(4, 6, p, generator=gen, dtype=D)
    parts = fm.spec.unflatten(theta)
    torch.testing.assert_close(fm(theta, x), reference(parts, x, p, n), atol=1e-12, rtol=0)
    # and H = ∂d̂/∂θ, the EKF's measurement Jacobian, against autograd through nn.LSTM
    value, grad = fm.value_and_grad(theta, x[:1])
    leaf = theta.clone().requires_grad_(True)
    ref = reference(fm.spec.unflatten(leaf), x[:1], p, n)
    (ref_grad,) = torch.autograd.grad(ref.sum(), leaf)
    torch.testing.assert_close(value, ref[0].detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(grad, ref_grad, atol=1e-12, rtol=0)


def ekf_predictions(fm, theta0, P0, stream, cfg):
    ekf = EKF(fm, cfg)
    state, out = ekf.init(theta0, 0, torch.Generator())._replace(P=P0), []
    for ob in stream:
        pred = ekf.predict(state, ob.x)
        out.append(pred.mean)
        state = ekf.update_node(state, ob, pred, torch.Generator(), where="test")
    return torch.tensor(out, dtype=D)


def test_two_bias_theta_is_the_papers_ekf_with_a_doubled_bias_prior():
    """θ₂ = (…, b_ih, b_hh) enters the output through b = b_ih + b_hh only: an EKF on θ₂ with Σ₀ = s₀I is
    the EKF on the paper's θ with prior 2s₀ on b, so it is *not* the paper's EKF with s₀I."""
    p, n, s0 = 1, 4, 0.5
    fm2, theta2 = regressor(p, n, seed=3)
    fm1, _ = regressor(p, n, seed=3, single_bias=True)
    parts = fm2.spec.unflatten(theta2)
    theta1 = fm1.spec.flatten({**parts, "rnn.bias_ih_l0": parts["rnn.bias_ih_l0"] + parts["rnn.bias_hh_l0"]})
    gen = torch.Generator().manual_seed(4)
    series = torch.cumsum(0.3 * torch.randn(62, generator=gen, dtype=D), 0)
    stream = [Observation(series[t - 2 : t].reshape(2, 1), float(series[t])) for t in range(2, 62)]
    cfg = EKFConfig(sigma2=0.01, q=0.0, s0=s0)

    two = ekf_predictions(fm2, theta2, s0 * torch.eye(fm2.numel, dtype=D), stream, cfg)
    plain = ekf_predictions(fm1, theta1, s0 * torch.eye(fm1.numel, dtype=D), stream, cfg)
    doubled_prior = torch.full((fm1.numel,), s0, dtype=D)
    doubled_prior[fm1.spec.slice("rnn.bias_ih_l0")] = 2 * s0
    doubled = ekf_predictions(fm1, theta1, torch.diag(doubled_prior), stream, cfg)

    torch.testing.assert_close(two, doubled, atol=1e-9, rtol=0)
    assert float((two - plain).abs().max()) > 1e-3
