"""Moving tensors between graph neighbours, and counting what moves.

The distributed algorithms are written once against :class:`Transport`. A transport
knows the topology and which nodes this process runs (``local_nodes``); it offers
two synchronous collective rounds, each called by every process with the values of
its local nodes:

* :meth:`Transport.neighbour_exchange` — every node sends one tensor to each of its
  neighbours (DEKF's data and intermediate estimates, diffusion SGD's ψ);
* :meth:`Transport.route` — every node sends a block of rows (possibly empty) to
  chosen neighbours (DPF's particles walking the graph).

:class:`InProcessTransport` runs all nodes in one process (tests, laptops). A
``torch.distributed`` transport (one process per node) implements the same two calls
with point-to-point send/recv; with the same seeds both give the same numbers.

Accounting: :class:`CommStats` counts, per sending node, messages and payload bytes
(``numel × element_size`` of every tensor sent to another node; empty blocks are
not sent). Framing (sizes, headers) is not counted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor

from distlstm.network.graphs import Topology


@dataclass
class CommStats:
    """Messages and payload bytes sent by each node since creation (or :meth:`reset`)."""

    num_nodes: int
    messages: list[int] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.messages = self.messages or [0] * self.num_nodes
        self.bytes = self.bytes or [0] * self.num_nodes

    def record(self, sender: int, tensor: Tensor) -> None:
        self.record_size(sender, tensor.numel(), tensor.element_size())

    def record_size(self, sender: int, numel: int, element_size: int) -> None:
        """One message of ``numel`` elements of ``element_size`` bytes (for a sender that moves indices, not rows)."""
        self.messages[sender] += 1
        self.bytes[sender] += numel * element_size

    def reset(self) -> None:
        self.messages = [0] * self.num_nodes
        self.bytes = [0] * self.num_nodes

    def per_node_mean(self) -> tuple[float, float]:
        """(messages, bytes) averaged over nodes."""
        return sum(self.messages) / self.num_nodes, sum(self.bytes) / self.num_nodes


class Transport(ABC):
    """Synchronous neighbour communication for the nodes this process runs."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.stats = CommStats(topology.num_nodes)

    def lose(self, reduced: Topology) -> None:
        """Go on over ``reduced`` (the graph without nodes that left the run; same node ids)."""
        if reduced.num_nodes != self.topology.num_nodes:
            raise ValueError(f"the reduced graph has {reduced.num_nodes} node ids, the run {self.topology.num_nodes}")
        self.topology = reduced

    @property
    @abstractmethod
    def local_nodes(self) -> list[int]:
        """Nodes whose state lives in this process."""

    @abstractmethod
    def neighbour_exchange(self, values: Mapping[int, Tensor]) -> dict[int, dict[int, Tensor]]:
        """Send ``values[k]`` from every local node k to each neighbour.

        Returns, for every local node k, ``{l: values[l]}`` over k's neighbours l (not k).
        """

    @abstractmethod
    def route(self, outgoing: Mapping[int, Mapping[int, Tensor]]) -> dict[int, dict[int, Tensor]]:
        """Send ``outgoing[k][l]`` (a (m, D) block, m ≥ 0) from local node k to neighbour l.

        Returns, for every local node l, ``{k: block}`` for each neighbour k that sent
        it a non-empty block.
        """

    def _check_outgoing(self, k: int, destinations: Mapping[int, Tensor]) -> None:
        allowed = set(self.topology.neighbours(k))
        bad = [d for d in destinations if d not in allowed]
        if bad:
            raise ValueError(f"node {k} can only send to its neighbours {sorted(allowed)}, not to {bad}")


class InProcessTransport(Transport):
    """All nodes in one process: rounds are dictionary look-ups, counted as if sent."""

    @property
    def local_nodes(self) -> list[int]:
        return self.topology.survivors

    def neighbour_exchange(self, values: Mapping[int, Tensor]) -> dict[int, dict[int, Tensor]]:
        missing = [k for k in self.local_nodes if k not in values]
        if missing:
            raise ValueError(f"neighbour_exchange needs a value from every node; missing {missing}")
        received: dict[int, dict[int, Tensor]] = {k: {} for k in self.local_nodes}
        for k in self.local_nodes:
            for nb in self.topology.neighbours(k):
                self.stats.record(k, values[k])
                received[nb][k] = values[k]
        return received

    def route(self, outgoing: Mapping[int, Mapping[int, Tensor]]) -> dict[int, dict[int, Tensor]]:
        received: dict[int, dict[int, Tensor]] = {k: {} for k in self.local_nodes}
        for k, destinations in outgoing.items():
            self._check_outgoing(k, destinations)
            for dest, block in destinations.items():
                if block.shape[0] == 0:
                    continue
                self.stats.record(k, block)
                received[dest][k] = block
        return received


__all__ = ["CommStats", "InProcessTransport", "Transport"]
