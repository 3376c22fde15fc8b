"""A worker killed mid-run under torchrun: the survivors go on and give the simulator's numbers.

Four nodes on a line 0-1-2-3, one torchrun agent per node (as on four machines: a single
torchrun stops all its workers when one fails). The worker of node 1 kills itself with SIGKILL
before step 10 (``--drop-node 1@10``); the survivors notice within ``--collective-timeout``,
agree on the store of node 0's agent, form a new gloo group and go on: node 0 alone, 2-3 as a
pair. The reference is the same run in one process, where ``--drop-node`` removes the node at
the same step: metrics, records and summary must be equal (timings and worker counts aside).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distlstm.cli import main
from distlstm.runs.metrics import read_metrics

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]
NODES = 4
FAST = {"dsgd": [], "dekf": [], "dpf": ["--particles", "20", "--walk-steps", "2"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def launch_nodes(args: list[str], out: Path, logs: Path, timeout: float) -> dict[int, int | None]:
    """One ``torchrun --nnodes 4 --node-rank i`` per node; returns each agent's exit code (None: it waited on).

    A surviving agent waits in torchrun's exit barrier for the dead node's agent (300 s); once its
    worker has exited, the test stops it.
    """
    port = free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    agents = []
    for i in range(NODES):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--rdzv-backend", "static", "--master-addr",
               "127.0.0.1", "--master-port", str(port), f"--nnodes={NODES}", f"--node-rank={i}",
               "--nproc-per-node=1", "-m", "distlstm.cli", *args, "--out", str(out)]
        with open(logs / f"agent{i}.log", "w") as log:
            agents.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            done = (out / "summary.json").exists() and all(a.poll() is not None or not children(a.pid)
                                                           for a in agents)
            if done or any(a.poll() not in (None, 0) for a in agents[:1]):
                break
            time.sleep(0.5)
        return {i: a.poll() for i, a in enumerate(agents)}
    finally:
        for a in agents:
            if a.poll() is None:
                a.send_signal(signal.SIGTERM)
        for a in agents:
            try:
                a.wait(30)
            except subprocess.TimeoutExpired:
                a.kill()


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.mark.parametrize("algorithm", list(FAST))
def test_a_killed_worker_leaves_survivors_that_match_the_simulator(tmp_path, algorithm):
    args = ["online", "--algorithm", algorithm, "--nodes", str(NODES), "--topology", "line", "--steps", "24",
            "--drop-node", "1@10", "--on-node-loss", "continue", "--no-progress", *FAST[algorithm]]
    codes = launch_nodes([*args, "--collective-timeout", "20"], tmp_path / "mp", tmp_path, timeout=300)
    logs = {i: (tmp_path / f"agent{i}.log").read_text() for i in range(NODES)}
    assert codes[1] not in (None, 0) and "SIGKILL" in logs[1], logs[1][-2000:]
    for i in (0, 2, 3):  # a worker's error would be prefixed by its rank (the agent's own, from our SIGTERM, not)
        assert codes[i] in (None, 0) and not re.search(r"\[rank\d\]:.*Traceback", logs[i]), logs[i][-3000:]
    assert "node 1 left at step 10; the survivors fell apart into 2 parts that go on alone: {0} {2,3}" in logs[0]

    assert main([*args, "--out", str(tmp_path / "sim")]) == 0
    mp = json.loads((tmp_path / "mp" / "summary.json").read_text())
    sim = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert mp["workers"] == mp["processes"] == 3 and sim["processes"] == 1
    varying = {"seconds", "seconds_per_step", "workers", "processes"}
    assert {k: v for k, v in mp.items() if k not in varying} == {k: v for k, v in sim.items() if k not in varying}
    assert mp["node_loss"] == [{"step": 10, "nodes": [1], "survivors": [0, 2, 3], "components": [[0], [2, 3]]}]
    assert without_timing(read_metrics(tmp_path / "mp" / "metrics.csv")) == \
        without_timing(read_metrics(tmp_path / "sim" / "metrics.csv"))
