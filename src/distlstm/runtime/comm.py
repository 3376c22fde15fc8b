"""The communicator: the one interface through which algorithms talk to other workers.

Every mode receives a :class:`Communicator` and uses nothing else to reach peers:

* ``all_reduce_`` / ``all_gather_cat`` / ``broadcast_`` — collectives on tensors (sums
  of gradients, fitnesses of the population, a time budget decided by rank 0);
* ``check_same`` — a two-number checksum of θ compared across workers;
* ``data_parallel`` — a model whose backward averages gradients over workers (DDP);
* ``transport`` — the graph transport for decentralized algorithms (neighbour rounds).

:class:`LocalComm` is one process (every collective is the identity, every graph node
lives here); :class:`TorchDistComm` is one process of a ``torch.distributed`` group.
Algorithms are written once against this interface; with the same seeds both give the
same numbers. :func:`open_comm` is called by the run loop's caller (CLI, experiments,
tests) and is the only place that starts or stops a process group.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
from torch import Tensor, nn

from distlstm.network.graphs import Topology
from distlstm.network.transport import InProcessTransport, Transport
from distlstm.runtime import dist as _dist

Op = Literal["sum", "max", "min"]


class Communicator:
    """One process alone (the base behaviour); :class:`TorchDistComm` overrides every collective."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and shows progress."""
        return self.rank == 0

    _device: torch.device | None = None

    @property
    def device(self) -> torch.device:
        """Where this process computes: the device set with :meth:`use_device`, else its GPU if any, else the CPU."""
        if self._device is not None:
            return self._device
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() \
            else torch.device("cpu")

    def use_device(self, device: torch.device) -> None:
        """Compute on ``device`` (``cuda`` means this process's GPU)."""
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self._device = device

    def all_reduce_(self, tensor: Tensor, op: Op = "sum") -> Tensor:
        """Reduce ``tensor`` over all workers, in place; returns it."""
        return tensor

    def all_gather_cat(self, tensor: Tensor, dim: int = 0) -> Tensor:
        """Every worker's ``tensor`` (the same shape everywhere), concatenated along ``dim`` in rank order."""
        return tensor

    def broadcast_(self, tensor: Tensor, src: int = 0) -> Tensor:
        """Rank ``src``'s ``tensor`` on every worker, in place; returns it."""
        return tensor

    def check_same(self, theta: Tensor, when: str) -> None:
        """Raise unless every worker holds the same θ (a two-number checksum compared)."""

    def data_parallel(self, model: nn.Module) -> nn.Module:
        """``model`` wrapped so that backward averages gradients over workers (itself when alone)."""
        return model

    def transport(self, topology: Topology) -> Transport:
        """Neighbour rounds between the graph nodes; this process runs :attr:`Transport.local_nodes`."""
        return InProcessTransport(topology)

    def barrier(self) -> None:
        """Wait until every worker gets here."""

    def is_peer_failure(self, err: BaseException) -> bool:
        """Whether ``err`` means another worker died or stopped answering (never, alone)."""
        return False

    def regroup(self, position: int) -> tuple[list[int], int]:
        """After a peer failure: go on with the workers still alive (see :meth:`TorchDistComm.regroup`)."""
        raise RuntimeError("one process has no peers to lose")


LocalComm = Communicator


class TorchDistComm(Communicator):
    """One process of an initialised ``torch.distributed`` group (gloo on CPU, NCCL on GPU)."""

    def __init__(self, env: _dist.DistEnv, timeout_s: float = 120.0) -> None:
        self.rank, self.world_size, self.local_rank = env.rank, env.world_size, env.local_rank
        self.launch_rank, self.members, self.timeout_s = env.rank, list(range(env.world_size)), timeout_s
        self._store = _dist.default_store()  # the launcher's store outlives a dead worker's process group
        self._regroups = 0

    def all_reduce_(self, tensor: Tensor, op: Op = "sum") -> Tensor:
        red = {"sum": _dist.dist.ReduceOp.SUM, "max": _dist.dist.ReduceOp.MAX, "min": _dist.dist.ReduceOp.MIN}[op]
        return _dist.all_reduce_(tensor, red)

    def all_gather_cat(self, tensor: Tensor, dim: int = 0) -> Tensor:
        return _dist.all_gather_cat(tensor, dim)

    def broadcast_(self, tensor: Tensor, src: int = 0) -> Tensor:
        return _dist.broadcast_(tensor, src)

    def check_same(self, theta: Tensor, when: str) -> None:
        _dist.check_same_across_ranks(theta, when)

    def data_parallel(self, model: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    def transport(self, topology: Topology) -> Transport:
        from distlstm.network.torch_transport import TorchDistTransport

        return TorchDistTransport(topology, self.rank, self.world_size)

    def barrier(self) -> None:
        _dist.dist.barrier()

    def is_peer_failure(self, err: BaseException) -> bool:
        return _dist.is_peer_failure(err)

    def regroup(self, position: int) -> tuple[list[int], int]:
        """After a peer failure: agree with the live workers on who is left, and form a new group with them.

        Every survivor reports ``position`` (the steps it completed) on the launcher's
        store and waits up to the collective timeout (plus a margin) for the others:
        a survivor blocked in a collective notices only when that times out. The
        first to stop waiting writes the decision (an atomic compare-and-set), so all
        survivors read the same one. Returns the launch ranks that go on (ascending)
        and the smallest position among them; this worker's rank becomes its index
        there. A worker that the decision left out raises (it came too late).
        """
        self._regroups += 1
        wait_s = self.timeout_s + max(5.0, self.timeout_s / 4)  # the slowest survivor notices after timeout_s
        self.members, agreed = _dist.regroup(self._store, f"distlstm/regroup/{self._regroups}", self.launch_rank,
                                             self.members, position, wait_s=wait_s, timeout_s=self.timeout_s)
        self.rank, self.world_size = self.members.index(self.launch_rank), len(self.members)
        return list(self.members), agreed


@contextlib.contextmanager
def open_comm(env: _dist.DistEnv | None = None, timeout_s: float = 120.0,
              device: torch.device | None = None) -> Iterator[Communicator]:
    """The communicator of this process: local when alone, else join (and finally leave) the process group.

    ``env`` defaults to the launcher's environment (``torchrun`` sets RANK and WORLD_SIZE);
    a collective that waits longer than ``timeout_s`` for a peer fails instead of hanging.
    ``device`` (default: the GPU when there is one) is where the run computes; the
    backend follows it: NCCL for CUDA, gloo for the CPU.
    """
    env = env or _dist.worker_env()
    if env.world_size == 1:
        comm = LocalComm()
        if device is not None:
            comm.use_device(device)
        yield comm
        return
    backend = None if device is None else ("nccl" if device.type == "cuda" and _dist.dist.is_nccl_available()
                                           else "gloo")
    _dist.init_distributed(timeout_s, backend)
    clean = False
    try:
        comm = TorchDistComm(env, timeout_s)
        if device is not None:
            comm.use_device(device)
        yield comm
        clean = True
    finally:
        _dist.shutdown_distributed(clean)
