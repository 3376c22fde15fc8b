"""Full-batch L-BFGS across workers equals one process on the whole batch."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from distlstm.bptt import FullBatchConfig, train_fullbatch
from distlstm.data.longlag import adding_problem
from distlstm.models.networks import SequenceRegressor

CFG = FullBatchConfig(steps=3, max_iter=5)


def model() -> SequenceRegressor:
    torch.manual_seed(0)  # the matrix-batch setting: peepholes, no forget gate, sharpened gates, float64
    return SequenceRegressor(2, 4, cell="peephole", forget_gate=False, alpha=3.75, pooling="last",
                             head_bias=True).double()


def data():
    return adding_problem(64, 24, torch.Generator().manual_seed(1))


def test_lbfgs_learns_the_adding_problem():
    net = model()
    losses = train_fullbatch(net, data(), FullBatchConfig(steps=5, max_iter=10))
    assert losses[-1] < 0.5 * losses[0]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    net = model()
    losses = train_fullbatch(net, data(), CFG, rank=rank, world_size=world)
    theta = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    Path(out, f"{rank}.json").write_text(json.dumps({"losses": losses, "theta": theta.tolist()}))
    dist.barrier()  # nobody tears the group down while a peer still uses it
    dist.destroy_process_group()


@pytest.mark.multiprocess
def test_two_workers_take_the_steps_of_one_process(tmp_path):
    torch.set_num_threads(1)
    single = model()
    single_losses = train_fullbatch(single, data(), CFG)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    runs = [json.loads(Path(tmp_path, f"{r}.json").read_text()) for r in range(2)]
    assert runs[0]["theta"] == runs[1]["theta"]  # identical on every rank, bit for bit
    theta = torch.tensor(runs[0]["theta"], dtype=torch.float64)
    expected = torch.cat([p.detach().reshape(-1) for p in single.parameters()])
    torch.testing.assert_close(theta, expected, atol=1e-8, rtol=0)  # sums in another order: rounding only
    assert runs[0]["losses"] == pytest.approx(single_losses, rel=1e-8)


def test_bad_settings():
    with pytest.raises(ValueError, match="steps must be at least 1"):
        FullBatchConfig(steps=0)
    with pytest.raises(ValueError, match="cannot be split evenly"):
        train_fullbatch(model(), adding_problem(5, 24, torch.Generator()), CFG, world_size=2)
