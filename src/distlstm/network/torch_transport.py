"""The transport over ``torch.distributed``: graph nodes spread over processes.

Node k lives on rank ``k // (K / world_size)`` (K must be a multiple of the world
size; one process per node when they are equal). Each round posts every send and
receive at once (non-blocking), so no ordering between ranks can deadlock:

1. a header per neighbour message: int64 ``[rows, cols]`` (``cols = 0`` for a 1-D
   tensor, ``rows = 0`` for an empty block);
2. the payloads of the non-empty messages, as raw float tensors of that shape.

Only shapes and numbers cross the wire — nothing is unpickled. Headers and payloads
travel on the backend's device (the GPU under NCCL, which moves only CUDA tensors;
the CPU under gloo) and are handed back on the CPU, where the filters keep θ. Messages between two
nodes of the same process are handed over in memory. Accounting is the in-process
rule (payload bytes of every message to another node), so both transports report
the same figures, and with the same seeds both give the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.distributed as dist
from torch import Tensor

from distlstm.network.graphs import Topology
from distlstm.network.transport import Transport
from distlstm.runtime.dist import collective_device


def _header(t: Tensor, device: torch.device) -> Tensor:
    """int64 [rows, cols] of a 1-D (cols = 0) or 2-D tensor."""
    if t.dim() not in (1, 2):
        raise ValueError(f"the transport carries 1-D or 2-D tensors, got shape {tuple(t.shape)}")
    shape = [t.shape[0], 0] if t.dim() == 1 else list(t.shape)
    return torch.tensor(shape, dtype=torch.int64, device=device)


def _wait_all(requests: list[dist.Work | None], what: str) -> None:
    try:
        for r in requests:
            if r is not None:
                r.wait()
    except RuntimeError as err:
        raise RuntimeError(f"{what}: a peer process stopped answering (did a worker die? see its log). "
                           f"torch.distributed said: {str(err).splitlines()[0][:300]}") from err


class TorchDistTransport(Transport):
    """Neighbour rounds as point-to-point send/recv between the processes of a group."""

    def __init__(self, topology: Topology, rank: int, world_size: int, dtype: torch.dtype = torch.float64) -> None:
        super().__init__(topology)
        k = topology.num_nodes
        if world_size < 1 or k % world_size:
            raise ValueError(f"{k} nodes cannot be spread evenly over {world_size} processes; "
                             f"use a node count that is a multiple of the world size")
        self.rank, self.world_size, self.dtype = rank, world_size, dtype
        self.per_rank = k // world_size
        self.group_rank = {r: r for r in range(world_size)}  # launch rank → rank in the current process group

    def owner(self, node: int) -> int:
        """The launch rank of the process that runs ``node``."""
        return node // self.per_rank

    def regroup(self, ranks: list[int]) -> list[int]:
        """The process group now holds the launch ranks ``ranks`` (ascending), renumbered 0, 1, …

        Returns the nodes that left with the other processes (the caller reduces the graph).
        """
        self.group_rank = {r: i for i, r in enumerate(ranks)}
        return [k for k in self.topology.survivors if self.owner(k) not in self.group_rank]

    @property
    def local_nodes(self) -> list[int]:
        return [k for k in range(self.rank * self.per_rank, (self.rank + 1) * self.per_rank)
                if k not in self.topology.lost]

    def _tag(self, src: int, dst: int, phase: int) -> int:
        return (src * self.topology.num_nodes + dst) * 2 + phase

    def _exchange(self, outgoing: Mapping[tuple[int, int], Tensor],
                  incoming: list[tuple[int, int]]) -> dict[tuple[int, int], Tensor]:
        """Deliver ``outgoing[(src, dst)]``; receive the messages ``(src, dst)`` listed in ``incoming``."""
        for t in outgoing.values():
            if t.dtype != self.dtype:
                raise TypeError(f"the transport carries {self.dtype} tensors, got {t.dtype}")
        device = collective_device()
        delivered = {key: t for key, t in outgoing.items() if self.owner(key[1]) == self.rank}
        remote_out = {key: t.to(device).contiguous() for key, t in outgoing.items()
                      if self.owner(key[1]) != self.rank}
        remote_in = [key for key in incoming if self.owner(key[0]) != self.rank]
        headers_out = {key: _header(t, device) for key, t in remote_out.items()}
        headers_in = {key: torch.empty(2, dtype=torch.int64, device=device) for key in remote_in}
        to = self.group_rank
        reqs = [dist.isend(h, to[self.owner(key[1])], tag=self._tag(*key, 0)) for key, h in headers_out.items()]
        reqs += [dist.irecv(h, to[self.owner(key[0])], tag=self._tag(*key, 0)) for key, h in headers_in.items()]
        peers = sorted({self.owner(k[1]) for k in remote_out} | {self.owner(k[0]) for k in remote_in})
        what = f"rank {self.rank}, exchange with ranks {peers}"
        _wait_all(reqs, what)
        payloads = {}
        for key, h in headers_in.items():
            rows, cols = int(h[0]), int(h[1])
            if rows > 0:
                payloads[key] = torch.empty((rows, cols) if cols else (rows,), dtype=self.dtype, device=device)
        reqs = [dist.isend(t, to[self.owner(key[1])], tag=self._tag(*key, 1))
                for key, t in remote_out.items() if t.numel()]
        reqs += [dist.irecv(buf, to[self.owner(key[0])], tag=self._tag(*key, 1)) for key, buf in payloads.items()]
        _wait_all(reqs, what)
        delivered.update({key: buf.cpu() for key, buf in payloads.items()})
        return delivered

    def neighbour_exchange(self, values: Mapping[int, Tensor]) -> dict[int, dict[int, Tensor]]:
        nodes = self.local_nodes
        missing = [k for k in nodes if k not in values]
        if missing:
            raise ValueError(f"neighbour_exchange needs a value from every local node; missing {missing}")
        outgoing = {}
        for k in nodes:
            for nb in self.topology.neighbours(k):
                outgoing[(k, nb)] = values[k]
                self.stats.record(k, values[k])
        incoming = [(nb, k) for k in nodes for nb in self.topology.neighbours(k)]
        got = self._exchange(outgoing, incoming)
        return {k: {nb: got[(nb, k)] for nb in self.topology.neighbours(k)} for k in nodes}

    def route(self, outgoing: Mapping[int, Mapping[int, Tensor]]) -> dict[int, dict[int, Tensor]]:
        nodes = self.local_nodes
        flat = {}
        for k, destinations in outgoing.items():
            if k not in nodes:
                raise ValueError(f"node {k} does not live on rank {self.rank}")
            self._check_outgoing(k, destinations)
            for dest, block in destinations.items():
                flat[(k, dest)] = block
                if block.shape[0]:
                    self.stats.record(k, block)
        # every neighbour sends a header, possibly of an empty block
        for k in nodes:
            for nb in self.topology.neighbours(k):
                if (k, nb) not in flat:
                    flat[(k, nb)] = torch.empty(0, 0, dtype=self.dtype)
        incoming = [(nb, k) for k in nodes for nb in self.topology.neighbours(k)]
        got = self._exchange(flat, incoming)
        return {k: {src: got[(src, k)] for src in self.topology.neighbours(k)
                    if (src, k) in got and got[(src, k)].shape[0] > 0} for k in nodes}
