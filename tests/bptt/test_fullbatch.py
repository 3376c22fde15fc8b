"""Full-batch L-BFGS and CG across workers equal one process on the whole batch."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from distlstm.bptt import FullBatchConfig, fullbatch_closure, train_fullbatch
from distlstm.data.longlag import LongLagData, adding_problem
from distlstm.models.networks import SequenceRegressor

CFG = FullBatchConfig(steps=3, max_iter=5)


def model() -> SequenceRegressor:
    torch.manual_seed(0)  # the matrix-batch setting: peepholes, no forget gate, sharpened gates, float64
    return SequenceRegressor(2, 4, cell="peephole", forget_gate=False, alpha=3.75, pooling="last",
                             head_bias=True).double()


def data():
    return adding_problem(64, 24, torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", ["lbfgs", "cg"])
def test_full_batch_methods_learn_the_adding_problem(method):
    net = model()
    first = fullbatch_closure(net, data(), len(data()))().item()
    forwards = [0]
    net.register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    result = train_fullbatch(net, data(), FullBatchConfig(method=method, steps=30 if method == "cg" else 5,
                                                          max_iter=10))
    assert result.losses[-1] < 0.5 * first
    assert result.evaluations == forwards[0] > len(result.losses)  # counted: one full-batch forward each
    # the reported loss is the loss at the final θ
    assert result.losses[-1] == pytest.approx(fullbatch_closure(net, data(), len(data()))().item(), rel=1e-12)


def test_cg_is_polak_ribiere_plus_on_a_quadratic():
    """On a convex quadratic, nonlinear CG with exact-enough line searches converges in ≈ n steps."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 1, bias=False).double()
    x = torch.randn(40, 6, dtype=torch.float64)
    y = x @ torch.randn(6, dtype=torch.float64)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, xs, lengths):
            return self.lin(xs[:, 0]).squeeze(-1)

    quad = LongLagData(x[:, None, :], torch.ones(40, dtype=torch.long), y)
    result = train_fullbatch(Net(), quad, FullBatchConfig(method="cg", steps=30))
    assert result.losses[-1] < 1e-12
    assert len(result.losses) <= 12


@pytest.mark.parametrize("method", ["lbfgs", "cg"])
def test_a_failing_line_search_is_reported_not_raised(method):
    net = model()
    for p in net.parameters():
        p.register_hook(lambda g: -g)  # the gradient points uphill: no step can decrease the loss
    before = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    start = fullbatch_closure(model(), data(), len(data()))().item()
    result = train_fullbatch(net, data(), FullBatchConfig(method=method, steps=5, max_iter=5))
    assert "line search" in result.status
    # unlike a converged run, θ never moved off its start and no loss below the first is reported
    torch.testing.assert_close(torch.cat([p.detach().reshape(-1) for p in net.parameters()]), before)
    assert len(result.losses) <= 1 and all(loss == pytest.approx(start, rel=1e-12) for loss in result.losses)


def test_the_callback_and_the_time_budget_stop_the_run():
    stopped = train_fullbatch(model(), data(), FullBatchConfig(method="cg", steps=50),
                              on_step=lambda progress: len(progress.losses) == 3)
    assert len(stopped.losses) == 3 and stopped.status == "stopped by the callback"
    timed = train_fullbatch(model(), data(), FullBatchConfig(steps=50, max_iter=2, seconds=1e-9))
    assert len(timed.losses) == 1 and timed.status == "time budget used"


def _worker(rank: int, world: int, port: int, method: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    net = model()
    losses = train_fullbatch(net, data(), replace(CFG, method=method), rank=rank, world_size=world).losses
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    Path(out, f"{rank}.json").write_text(json.dumps({"losses": losses, "theta": theta.tolist()}))
    dist.barrier()  # nobody tears the group down while a peer still uses it
    dist.destroy_process_group()


@pytest.mark.multiprocess
@pytest.mark.parametrize("method", ["lbfgs", "cg"])
def test_two_workers_take_the_steps_of_one_process(tmp_path, method):
    torch.set_num_threads(1)
    single = model()
    single_losses = train_fullbatch(single, data(), replace(CFG, method=method)).losses
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, method, str(tmp_path)), nprocs=2, join=True)
    runs = [json.loads(Path(tmp_path, f"{r}.json").read_text()) for r in range(2)]
    assert runs[0]["theta"] == runs[1]["theta"]  # identical on every rank, bit for bit
    theta = torch.tensor(runs[0]["theta"], dtype=torch.float64)
    expected = torch.cat([p.detach().reshape(-1) for p in single.parameters()])
    torch.testing.assert_close(theta, expected, atol=1e-8, rtol=0)  # sums in another order: rounding only
    assert runs[0]["losses"] == pytest.approx(single_losses, rel=1e-8)


def test_bad_settings():
    with pytest.raises(ValueError, match="steps must be at least 1"):
        FullBatchConfig(steps=0)
    with pytest.raises(ValueError, match="cg_c2 must lie in"):
        FullBatchConfig(cg_c2=1.0)
    with pytest.raises(ValueError, match="unknown full-batch method"):
        FullBatchConfig(method="newton")
    with pytest.raises(ValueError, match="cannot be split over 2 workers"):
        train_fullbatch(model(), adding_problem(1, 24, torch.Generator()), CFG, world_size=2)


def test_a_non_finite_full_batch_loss_names_the_step_and_keeps_the_last_model(tmp_path):
    from distlstm.bptt.fullbatch_run import run_fullbatch
    from distlstm.bptt.tasks import LongLagTask
    from distlstm.runs import load_checkpoint

    class Exploding(LongLagTask):
        def build_model(self, seed):
            net = super().build_model(seed)
            calls = [0]

            def poison(_module, _inputs, output):
                calls[0] += 1
                return output * float("nan") if calls[0] > 12 else output

            net.head.register_forward_hook(poison)
            return net

    task = Exploding(problem="adding", min_len=24, train_size=64, test_size=16)
    with pytest.raises(FloatingPointError, match=r"not finite.*\(during step \d+\); the model after step \d+ is kept"):
        run_fullbatch(task, FullBatchConfig(steps=20, max_iter=2), tmp_path, show_progress=False)
    model = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    assert all(torch.isfinite(t).all() for t in model.values())
