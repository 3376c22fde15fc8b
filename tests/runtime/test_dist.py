"""runtime.dist: the launcher's environment, the process-group context, collectives and the θ checksum."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distlstm.runtime.dist import (
    DistEnv,
    all_gather_cat,
    all_reduce_,
    check_same_across_ranks,
    collective_device,
    init_distributed,
    keep_gloo_on_loopback,
    launched_env,
    process_group,
    worker_env,
)


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_launcher_environment(clean_env):
    assert launched_env() is None and worker_env() == DistEnv(0, 1, 0)
    with pytest.raises(RuntimeError, match="not launched by torchrun"):
        init_distributed()
    clean_env.setenv("RANK", "2")
    clean_env.setenv("WORLD_SIZE", "4")
    assert launched_env() == DistEnv(2, 4, 2) and not launched_env().is_main  # LOCAL_RANK defaults to RANK
    clean_env.setenv("LOCAL_RANK", "0")
    assert worker_env() == DistEnv(2, 4, 0)
    clean_env.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK 4 is outside WORLD_SIZE 4"):
        launched_env()
    clean_env.setenv("RANK", "one")
    with pytest.raises(ValueError, match="RANK/WORLD_SIZE must be integers, got 'one'/'4'"):
        launched_env()


def test_one_worker_needs_no_process_group(clean_env):
    with process_group(DistEnv(0, 1, 0)):
        assert not dist.is_initialized()
    t = torch.tensor([1.0, 2.0])
    assert all_gather_cat(t) is t and all_reduce_(t) is t and collective_device() == torch.device("cpu")
    check_same_across_ranks(t, "anything")  # nothing to compare with


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    result: dict = {}
    env = launched_env()
    assert env is not None
    with process_group(env):
        result["inside"] = dist.is_initialized()
        result["device"] = str(collective_device())
        result["gather"] = all_gather_cat(torch.tensor([[float(rank), 10.0 + rank]]), dim=1).tolist()
        result["sum"] = all_reduce_(torch.tensor([1.0, float(rank)])).tolist()
        result["max"] = all_reduce_(torch.tensor([float(rank)]), op=dist.ReduceOp.MAX).tolist()
        theta = torch.linspace(0, 1, 5, dtype=torch.float64)
        check_same_across_ranks(theta, "step 1")
        try:
            check_same_across_ranks(theta + (1e-12 if rank == 1 else 0.0), "step 2")
        except RuntimeError as err:
            result["diverged"] = str(err)
    result["after"] = dist.is_initialized()
    Path(out, f"{rank}.json").write_text(json.dumps(result))


@pytest.mark.multiprocess
def test_process_group_collectives_and_a_diverged_theta(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = json.loads(Path(tmp_path, f"{rank}.json").read_text())
        assert got["inside"] and not got["after"] and got["device"] == "cpu"
        assert got["gather"] == [[0.0, 10.0, 1.0, 11.0]] and got["sum"] == [2.0, 1.0] and got["max"] == [1.0]
        assert "workers hold different parameters after step 2" in got["diverged"]  # on every rank


def test_a_one_host_job_names_the_loopback_interface_for_gloo(clean_env):
    """Every worker on this host (torchrun's LOCAL_WORLD_SIZE = WORLD_SIZE): gloo is told to use loopback, unless
    the user named an interface; a job over several hosts is left alone (test_two_hosts.py runs both for real)."""
    loopback = next(name for name in ("lo", "lo0") if name in {n for _, n in socket.if_nameindex()})
    for local, world, given, expected in [("2", "2", None, loopback), ("2", "4", None, None),
                                          ("2", "2", "eth7", "eth7"), (None, "2", None, None)]:
        for name, value in (("LOCAL_WORLD_SIZE", local), ("WORLD_SIZE", world), ("GLOO_SOCKET_IFNAME", given)):
            if value is None:
                clean_env.delenv(name, raising=False)
            else:
                clean_env.setenv(name, value)
        keep_gloo_on_loopback()
        assert os.environ.get("GLOO_SOCKET_IFNAME") == expected, (local, world, given)
