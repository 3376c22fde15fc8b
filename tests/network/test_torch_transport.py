"""The torch.distributed transport against the in-process one, over real processes (gloo, loopback)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from distlstm.network import InProcessTransport, make_topology
from distlstm.network.torch_transport import TorchDistTransport
from tests.launch import free_port, launch

pytestmark = pytest.mark.multiprocess
TOPOLOGY = {"name": "edges", "num_nodes": 4, "edges": [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)]}


def rounds(transport) -> dict:
    """One exchange and one routing round with node-dependent contents (some blocks empty)."""
    nodes = transport.local_nodes
    got = transport.neighbour_exchange({k: torch.arange(3, dtype=torch.float64) + 10 * k for k in nodes})
    outgoing = {k: {nb: torch.full((nb % 3, 2), float(k * 100 + nb), dtype=torch.float64)
                    for nb in transport.topology.neighbours(k)} for k in nodes}
    routed = transport.route(outgoing)
    return {"exchange": {k: {nb: v.tolist() for nb, v in got[k].items()} for k in nodes},
            "route": {k: {src: v.tolist() for src, v in routed[k].items()} for k in nodes},
            "bytes": [transport.stats.bytes[k] for k in nodes],
            "messages": [transport.stats.messages[k] for k in nodes]}


def _worker(rank: int, world: int, port: int, out: str, die: bool) -> None:
    from datetime import timedelta

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=20))
    topo = make_topology(**TOPOLOGY)
    if die and rank == 1:
        os._exit(3)  # a worker that dies before the round
    try:
        result = rounds(TorchDistTransport(topo, rank, world))
    except Exception as err:
        result = {"error": f"{type(err).__name__}: {err}"}
    Path(out, f"{rank}.json").write_text(json.dumps(result))
    if not die:
        dist.barrier()  # nobody tears the group down while a peer still uses it
        dist.destroy_process_group()


def spawn(world: int, tmp_path: Path, die: bool = False) -> list[dict]:
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, str(tmp_path), die)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    return [json.loads(Path(tmp_path, f"{r}.json").read_text()) if Path(tmp_path, f"{r}.json").exists() else {}
            for r in range(world)]


@pytest.mark.parametrize("world", [2, 4])
def test_rounds_equal_the_in_process_transport(tmp_path, world):
    reference = rounds(InProcessTransport(make_topology(**TOPOLOGY)))
    merged: dict = {"exchange": {}, "route": {}, "bytes": [], "messages": []}
    for part in spawn(world, tmp_path):
        assert "error" not in part, part
        for key in ("exchange", "route"):
            merged[key].update({int(k): {int(s): v for s, v in d.items()} for k, d in part[key].items()})
        merged["bytes"] += part["bytes"]
        merged["messages"] += part["messages"]
    assert merged == reference


def test_a_dead_worker_gives_an_error_not_a_hang(tmp_path):
    results = spawn(2, tmp_path, die=True)
    assert "rank 0, exchange with ranks [1]: a peer process stopped answering" in results[0].get("error", ""), results


def test_uneven_node_split_is_rejected():
    with pytest.raises(ValueError, match="cannot be spread evenly over 3 processes"):
        TorchDistTransport(make_topology("ring", 4), 0, 3)


def run_cli(args: list[str], out: Path, processes: int) -> dict:
    launch(args, out, processes, timeout=300)
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("algorithm", ["dpf", "dekf"])
def test_torchrun_gives_the_numbers_of_the_in_process_run(tmp_path, algorithm):
    args = ["online", "--algorithm", algorithm, "--nodes", "4", "--topology", "edges",
            "--edges", "0-1,1-2,2-3,3-0,0-2", "--steps", "12", "--no-progress"]
    if algorithm == "dpf":
        args += ["--particles", "40", "--walk-steps", "2"]
    single = run_cli(args, tmp_path / "one", 1)
    multi = run_cli(args, tmp_path / "two", 2)
    assert multi["processes"] == 2 and single["processes"] == 1
    for key in ("final_mse", "running_mse_end", "coverage95", "bytes_per_node_per_step", "messages_per_node_per_step"):
        assert multi[key] == single[key], key
