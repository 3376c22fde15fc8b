"""The communicator's local implementation, peer-failure classification and orphan protection."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from distlstm.network.graphs import make_topology
from distlstm.network.transport import InProcessTransport
from distlstm.runtime.comm import LocalComm, open_comm
from distlstm.runtime.dist import DistEnv, is_peer_failure


def test_local_comm_is_one_process():
    with open_comm(DistEnv(0, 1, 0)) as comm:
        assert isinstance(comm, LocalComm) and comm.is_main and comm.world_size == 1
        t = torch.arange(3.0)
        assert comm.all_reduce_(t, "max") is t and torch.equal(comm.all_gather_cat(t), t)
        assert comm.broadcast_(t) is t and not comm.is_peer_failure(RuntimeError("Connection closed by peer"))
        assert isinstance(comm.transport(make_topology("ring", 3)), InProcessTransport)


def test_peer_failures_are_told_apart_from_bugs():
    assert is_peer_failure(RuntimeError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]"))
    assert is_peer_failure(torch.distributed.DistBackendError("NCCL communicator was aborted"))
    assert not is_peer_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_peer_failure(ValueError("timed out"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux only")
def test_a_worker_dies_with_its_launcher(tmp_path):
    pid_file = tmp_path / "worker.pid"
    worker = textwrap.dedent(f"""
        import time, pathlib
        from distlstm.runtime.dist import die_with_parent
        die_with_parent()
        pathlib.Path({str(pid_file)!r}).write_text(str(__import__("os").getpid()))
        time.sleep(60)
    """)
    launcher = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {worker!r}]); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", launcher])
    try:
        for _ in range(200):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.05)
        pid = int(pid_file.read_text())
        parent.kill()  # kill -9 of the launcher
        parent.wait()
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, 9)
        pytest.fail("the worker outlived its launcher")
    finally:
        parent.kill()
