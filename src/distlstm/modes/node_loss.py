"""Nodes that leave an online run: the fault-injection flag, the events, and what the report says about them.

An online run over a graph of K nodes may lose nodes: under ``torchrun`` a worker
process dies (and its nodes with it); in one process ``--drop-node NODE@STEP`` removes
a node at a chosen step, the simulator of the same event. With
``--on-node-loss continue`` the survivors go on over the reduced graph
(:meth:`~distlstm.network.graphs.Topology.without`): Metropolis weights, the DPF's
walk and likelihood exponents are those of the reduced graph, and a graph that fell
apart goes on as separate components. Each loss is one :class:`NodeLoss` event in
the summary; the survivors' final error (their MSE over the last 20% of the steps, from
per-node window sums: :meth:`~distlstm.online.records.OnlineRecords.final_mse_of`) is
the figure to compare with a run that had only the survivors from the start
(``--drop-node NODE@0``: the same streams, seeds and node ids, without the lost nodes
at any step).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from distlstm._flags import option
from distlstm.network.graphs import Topology
from distlstm.runs.loop import PeerLost

POLICIES = ("stop", "continue")


class NodeLeft(PeerLost):
    """A node left the run (``--drop-node`` in one process) and the policy is to stop."""


def parse_drops(text: str | None, num_nodes: int) -> dict[int, int]:
    """``"3@40,1@60"`` → {node: step}: node 3 leaves before step 40 (0-based), node 1 before step 60."""
    if not text:
        return {}
    out: dict[int, int] = {}
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        node, sep, at = part.partition("@")
        if not sep or not (node.isascii() and node.isdigit() and at.isascii() and at.isdigit()):
            raise ValueError(f"{option('drop_node', '--drop-node')} takes NODE@STEP[,NODE@STEP…], e.g. '3@40'; "
                             f"got {part!r}")
        k = int(node)
        if k >= num_nodes:
            raise ValueError(f"{option('drop_node', '--drop-node')} names node {k}, but the graph has nodes "
                             f"0 … {num_nodes - 1}")
        if k in out:
            raise ValueError(f"{option('drop_node', '--drop-node')} names node {k} twice")
        out[k] = int(at)
    if len(out) >= num_nodes:
        raise ValueError(f"{option('drop_node', '--drop-node')} drops all {num_nodes} nodes: at least one must "
                         "survive")
    return out


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"{option('on_node_loss', '--on-node-loss')} must be one of {list(POLICIES)}, "
                         f"got {policy!r}")
    return policy


@dataclass(frozen=True)
class NodeLoss:
    """Nodes that left before step ``step`` (0-based: the first step run without them), and what remained."""

    step: int
    nodes: tuple[int, ...]
    survivors: tuple[int, ...]
    components: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, step: int, nodes: Sequence[int], reduced: Topology) -> NodeLoss:
        return cls(step, tuple(sorted(nodes)), tuple(reduced.survivors),
                   tuple(tuple(c) for c in reduced.components()))

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "nodes": list(self.nodes), "survivors": list(self.survivors),
                "components": [list(c) for c in self.components]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NodeLoss:
        return cls(int(d["step"]), tuple(d["nodes"]), tuple(d["survivors"]),
                   tuple(tuple(c) for c in d["components"]))

    def describe(self) -> str:
        """One line: which nodes left at which step, and whether the remainder fell apart."""
        who = "node" + ("s " if len(self.nodes) > 1 else " ") + ", ".join(map(str, self.nodes))
        text = f"{who} left at step {self.step}"
        if len(self.components) > 1:
            parts = " ".join("{" + ",".join(map(str, c)) + "}" for c in self.components)
            return f"{text}; the survivors fell apart into {len(self.components)} parts that go on alone: {parts}"
        return f"{text}; survivors {','.join(map(str, self.survivors))} go on connected"


def lost_slots(losses: Sequence[NodeLoss], steps: int) -> int:
    """How many (step, node) records belong to nodes already gone (NaN, but not missing labels)."""
    return sum(len(e.nodes) * max(steps - e.step, 0) for e in losses)


__all__ = ["POLICIES", "NodeLeft", "NodeLoss", "check_policy", "lost_slots", "parse_drops"]
