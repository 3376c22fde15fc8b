"""Combine the per-process records of a multi-process online run into one result.

Every process runs the loop for its own nodes; these collectives (tensors only)
give every rank the whole run: errors and variances of all nodes, bytes and
messages summed over nodes, skipped labels summed, the slowest process's time,
and every node's final estimate.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from distlstm.network.transport import Transport
from distlstm.online.loop import OnlineResult
from distlstm.runtime.dist import all_gather_cat, all_reduce_


def gather_result(result: OnlineResult, transport: Transport) -> OnlineResult:
    """The whole run's result on every rank (nodes are contiguous blocks per rank, in rank order)."""
    errors = all_gather_cat(torch.tensor(result.sq_errors, dtype=torch.float64), dim=-1)
    variances = all_gather_cat(torch.tensor(result.variances, dtype=torch.float64), dim=-1)
    per_step = torch.tensor([result.bytes_per_step, result.messages_per_step], dtype=torch.float64)
    all_reduce_(per_step)
    scalars = torch.tensor([float(result.skipped_labels)], dtype=torch.float64)
    all_reduce_(scalars)
    seconds = torch.tensor([result.seconds], dtype=torch.float64)
    all_reduce_(seconds, op=dist.ReduceOp.MAX)
    nodes = transport.local_nodes
    thetas = all_gather_cat(torch.stack([result.final_thetas[k] for k in nodes]))  # (K, n), rank order
    return OnlineResult(
        algorithm=result.algorithm, num_nodes=result.num_nodes,
        sq_errors=errors.tolist(), variances=variances.tolist(),
        bytes_per_step=per_step[0].tolist(), messages_per_step=per_step[1].tolist(),
        seconds=float(seconds), skipped_labels=int(scalars[0]),
        final_thetas={k: thetas[k] for k in range(result.num_nodes)})
