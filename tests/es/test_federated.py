"""Federated ES: each client scores every member on its own shard, only fitnesses cross the wire, and W
processes equal one process simulating the C clients bit for bit."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from distlstm.data.text import CharVocab, load_text
from distlstm.data.text_shards import client_shards, holdout_split
from distlstm.es.fitness import char_fitness
from distlstm.es.strategy import ask, init, tell
from distlstm.es.text import build_model, client_windows
from distlstm.modes.es import ESMode, ESRunConfig
from distlstm.runtime.comm import LocalComm, TorchDistComm

SMALL = dict(hidden=8, population=8, windows=2, window=8, eval_chars=300)
STEPS = 3


def federated(split: str, clients: int | None = None, **kw: Any) -> ESRunConfig:
    return ESRunConfig(data_split=split, clients=clients, **{**SMALL, **kw})


def run_steps(cfg: ESRunConfig, comm: Any, steps: int = STEPS, seed: int = 3) -> ESMode:
    mode = ESMode(cfg)
    mode.init(comm, seed)
    for g in range(steps):
        mode.step(g + 1)
    return mode


@pytest.mark.parametrize("split", ["iid", "by-play"])
def test_the_update_uses_the_sum_of_every_clients_fitness_on_its_own_shard(split):
    """The mode against a hand-written federated loop: shards, per-client windows, Σ_c F_c, tell."""
    cfg = federated(split, clients=3)
    mode = run_steps(cfg, LocalComm())
    text = load_text()
    ids = CharVocab.from_text(text).encode(text)
    segments, val = holdout_split(text, ids, "play")
    shards = client_shards(segments, 3, split, seed=3, min_length=cfg.window + 1)
    fm = build_model(len(mode.vocab), "rnn", 8, seed=3)
    es = cfg.strategy_config(3)
    state = init(fm.flatten())
    for _ in range(STEPS):
        thetas = ask(es, state)
        total = sum(char_fitness(fm, thetas, *client_windows(shards[c], 3, state.generation, c, 2, 8))
                    for c in range(3))
        state, _ = tell(es, state, total)
    torch.testing.assert_close(mode.state.theta, state.theta, rtol=0, atol=1e-6)
    assert torch.equal(mode.val_ids, val[:301])  # validation on the held-out play
    assert mode.summary()["fitness_bytes_per_generation"] == 3 * 8 * 4
    assert mode.summary()["evaluations"] == STEPS * 8 * 3


def test_the_clients_windows_come_from_their_own_plays_only():
    mode = ESMode(federated("by-play", clients=7))
    mode.init(LocalComm(), 0)
    for c, shard in mode.shards.items():
        x, y = client_windows(shard, 0, 0, c, 16, 8)
        rows = torch.cat([x, y[:, -1:]], 1)
        text = shard.segments[0].ids  # one play per client
        found = [any(torch.equal(text[a : a + 9], row) for a in range(len(text) - 8)) for row in rows[:4]]
        assert all(found), (c, shard.names)


def test_bad_federated_settings_name_the_flag():
    with pytest.raises(ValueError, match="--clients 2 needs a federated --data-split"):
        ESRunConfig(clients=2)
    with pytest.raises(ValueError, match="unknown data split 'everyone'"):
        ESRunConfig(data_split="everyone")
    with pytest.raises(ValueError, match="at most 7 clients or --data-split iid"):
        ESMode(federated("by-play", clients=8)).init(LocalComm(), 0)


class RecordingComm(TorchDistComm):
    """A process of the group that records what each collective sends."""

    sent: list[tuple[str, list[int], str]]

    def _log(self, op: str, t: torch.Tensor) -> None:
        self.sent.append((op, list(t.shape), str(t.dtype)))

    def all_gather_cat(self, tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
        self._log("all_gather_cat", tensor)
        return super().all_gather_cat(tensor, dim)

    def all_reduce_(self, tensor: torch.Tensor, op: Any = "sum") -> torch.Tensor:
        self._log("all_reduce_", tensor)
        return super().all_reduce_(tensor, op)

    def broadcast_(self, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
        self._log("broadcast_", tensor)
        return super().broadcast_(tensor, src)

    def check_same(self, theta: torch.Tensor, when: str) -> None:
        self.sent.append(("check_same", [2], "checksum"))  # two numbers of θ, not θ
        super().check_same(theta, when)


CASES = (("by-play", 2), ("iid", 4))  # one client per process, and two


def _worker(rank: int, world: int, port: int, out: str) -> None:
    from distlstm.runtime.dist import init_distributed, shutdown_distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    env = init_distributed(timeout_s=60)
    results = {}
    for split, clients in CASES:
        comm = RecordingComm(env)
        comm.sent = []
        mode = run_steps(federated(split, clients), comm)
        results[f"{split}-{clients}"] = {"theta": mode.state.theta.tolist(), "sent": comm.sent,
                                         "clients": sorted(mode.shards), "train_ids": len(mode.train_ids)}
        if rank == 0:  # the in-process simulation of the same clients, on the same thread count
            results[f"{split}-{clients}-local"] = {"theta": run_steps(federated(split, clients),
                                                                      LocalComm()).state.theta.tolist()}
    Path(out, f"{rank}.json").write_text(json.dumps(results))
    shutdown_distributed()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.multiprocess
def test_two_processes_send_only_fitnesses_and_equal_the_in_process_clients(tmp_path):
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads(Path(tmp_path, f"{r}.json").read_text()) for r in range(2)]
    for split, clients in CASES:
        key, here = f"{split}-{clients}", clients // 2
        local = ranks[0][f"{key}-local"]["theta"]
        for r, res in enumerate(ranks):
            assert res[key]["theta"] == local, (key, r)  # bit for bit
            assert res[key]["clients"] == list(range(r * here, (r + 1) * here))  # only its own clients' data
            assert res[key]["train_ids"] == 0
            # per generation: this process's clients' P fitnesses each, and the θ checksum — no text, no θ
            step = [["all_gather_cat", [here * 8], "torch.float32"], ["check_same", [2], "checksum"]]
            assert res[key]["sent"] == step * STEPS, (key, r)
