"""Four processes started as torchrun starts them equal the in-process run, for all six online algorithms.

The graph is the reproduction's irregular one (a 4-ring with the chord 0–2: degrees 3, 2, 3, 2), so
the DPF's exponents and the Metropolis weights differ between nodes, and one node per process makes
every neighbour message cross a process boundary. SGD, EKF and PF exchange nothing while running: they
test the gather of the per-process records and of the node states (the checkpoint's).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from distlstm.data.series import EXCHANGE_RATES, Scaler, load_series, split_round_robin, windows
from distlstm.experiments.ergen_kozat import ErgenKozatConfig
from distlstm.modes.online import OnlineMode, OnlineProblem, run_streams
from distlstm.network import make_topology, parse_edges
from tests.launch import free_port

pytestmark = pytest.mark.multiprocess
ALGORITHMS = ("sgd", "ekf", "pf", "dsgd", "dekf", "dpf")
SETTINGS = {"pf": {"num_particles": 30}, "dpf": {"num_particles": 30, "walk_steps": 2}}
STEPS = 8


def setup():
    series = load_series(EXCHANGE_RATES)[:80]
    streams = split_round_robin(windows(Scaler.fit(series)(series), 2), 4)
    topology = make_topology("edges", 4, edges=parse_edges(ErgenKozatConfig().edges))
    return streams, topology


def record(mode: OnlineMode) -> dict:
    result, summary = mode.records, mode.run_summary()
    states = mode.state_dict()["algorithm"]["states"]  # every node's, gathered
    kind = type(next(iter(mode.states.values())))
    thetas = {k: mode.algorithm.estimate(kind(*(states[f][k] for f in kind._fields))).tolist() for k in range(4)}
    return {"sq_errors": result.sq_errors, "variances": [[None if v != v else v for v in row]
                                                          for row in result.variances],
            "bytes": result.bytes_per_step, "messages": result.messages_per_step,
            "skipped": result.skipped_labels, "thetas": thetas,
            "final_mse": summary.final_mse, "coverage": None if summary.coverage95 != summary.coverage95
            else summary.coverage95}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    from distlstm.runtime.comm import TorchDistComm
    from distlstm.runtime.dist import init_distributed, shutdown_distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    env = init_distributed(timeout_s=60)
    streams, topology = setup()
    results = {}
    comm = TorchDistComm(env)
    for name in ALGORITHMS:
        results[name] = record(run_streams(OnlineProblem(streams), name, topology, settings=SETTINGS.get(name),
                                           steps=STEPS, comm=comm))
    Path(out, f"{rank}.json").write_text(json.dumps(results))
    shutdown_distributed()


def test_four_processes_equal_the_in_process_run_for_every_algorithm(tmp_path):
    mp.spawn(_worker, args=(4, free_port(), str(tmp_path)), nprocs=4, join=True)
    ranks = [json.loads(Path(tmp_path, f"{r}.json").read_text()) for r in range(4)]
    assert all(r == ranks[0] for r in ranks[1:])  # every rank holds the whole run
    streams, topology = setup()
    for name in ALGORITHMS:
        single = json.loads(json.dumps(record(run_streams(OnlineProblem(streams), name, topology,
                                                          settings=SETTINGS.get(name), steps=STEPS))))
        assert ranks[0][name] == single, name
        assert len(single["sq_errors"]) == STEPS
        if name in ("sgd", "ekf", "pf"):
            assert single["bytes"] == [0.0] * STEPS  # no communication
        else:
            assert min(single["bytes"]) > 0
