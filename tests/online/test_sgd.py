"""Online SGD's step θ + μ e ∇d̂ and its max_step clipping, by hand and on a linear model."""

from __future__ import annotations

import pytest
import torch

from distlstm.cli import main
from distlstm.network import InProcessTransport, make_topology
from distlstm.online import make_algorithm
from distlstm.online.sgd import SGDConfig, sgd_step
from tests.online.helpers import run_online

from .conftest import linear_streams

D = torch.float64


def test_sgd_step_by_hand_and_clipped():
    theta, grad = torch.tensor([1.0, -2.0], dtype=D), torch.tensor([3.0, 4.0], dtype=D)  # ‖∇‖ = 5
    torch.testing.assert_close(sgd_step(theta, grad, 0.5, SGDConfig(lr=0.1, max_step=None)),
                               theta + 0.05 * grad)  # step norm 0.25, not clipped in any case
    torch.testing.assert_close(sgd_step(theta, grad, 0.5, SGDConfig(lr=0.1, max_step=1.0)), theta + 0.05 * grad)
    # μ e ∇ = 0.1 · (−4) · (3, 4) has norm 2: clipped to norm 0.5 along the same direction
    torch.testing.assert_close(sgd_step(theta, grad, -4.0, SGDConfig(lr=0.1, max_step=0.5)),
                               theta - 0.5 * grad / 5)


def test_sgd_on_a_linear_model_is_the_lms_rule(linear_fm):
    """For d̂ = θᵀx, ∇d̂ = x: every node runs θ ← θ + μ (d − θᵀx) x (clipped), checked with a plain loop."""
    streams, _ = linear_streams(2, 15, 3, sigma=0.1, seed=4)
    cfg = {"lr": 0.2, "max_step": 0.3}
    result = run_online(make_algorithm("sgd", linear_fm, **cfg), streams, torch.zeros(3, dtype=D),
                        InProcessTransport(make_topology("line", 2)), seed=0)
    for node, stream in enumerate(streams):
        theta = torch.zeros(3, dtype=D)
        for ob in stream:
            x = ob.x[-1]
            step = 0.2 * (ob.d - float(theta @ x)) * x
            step = step * min(1.0, 0.3 / float(step.norm()))
            theta = theta + step
        torch.testing.assert_close(result.final_thetas[node], theta, atol=1e-12, rtol=0)


@pytest.mark.parametrize("algorithm", ["sgd", "dsgd", "pf", "dpf"])
def test_joseph_is_an_error_where_there_is_no_covariance(tmp_path, capsys, algorithm):
    assert main(["online", "--algorithm", algorithm, "--joseph", "--steps", "3", "--out", str(tmp_path),
                 "--no-progress"]) == 2
    assert f"--joseph does not apply to {algorithm}" in capsys.readouterr().err
