"""Splitting training data over data-parallel workers, so W workers see what one process sees.

Two layouts:

* **Stateful streams** (a long series or token stream, truncated BPTT). The stream of
  L steps is cut into W·B contiguous streams of n = ⌊L / (W·B)⌋ steps; worker r owns
  streams r·B … r·B + B − 1, which together are one contiguous shard of the stream.
  Each stream is read in windows of k steps (the last, shorter window of a stream is
  dropped); the LSTM state at the end of window j is the detached initial state of
  window j + 1 of the same stream and starts from zero at every epoch — a state never
  crosses a shard boundary. Worker r's streams are exactly streams r·B … of one process
  holding W·B streams, which is what makes W workers equal one process.
* **Independent variable-length sequences** (full BPTT per sequence). Every epoch the
  N sequences are shuffled by a generator seeded from (seed, epoch) — the same
  permutation on every worker — and cut into global batches of W·b; worker r takes
  rows [r·b, (r + 1)·b) of each. Incomplete global batches are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class StreamShard:
    """One worker's B contiguous streams of inputs and aligned targets, read in TBPTT windows."""

    inputs: Tensor  # (B, n, ...)
    targets: Tensor  # (B, n, ...)
    window: int  # k

    @property
    def streams(self) -> int:
        return self.inputs.shape[0]

    def __len__(self) -> int:
        """Windows per epoch."""
        return self.inputs.shape[1] // self.window

    def window_at(self, j: int) -> tuple[Tensor, Tensor]:
        """Window ``j`` of every stream: inputs and targets (B, k, ...); starts a stream when j = 0."""
        if not 0 <= j < len(self):
            raise IndexError(f"window {j} is outside the {len(self)} windows of this shard")
        part = slice(j * self.window, (j + 1) * self.window)
        return self.inputs[:, part], self.targets[:, part]


def partition_stream(inputs: Tensor, targets: Tensor, *, rank: int, world_size: int, streams: int,
                     window: int) -> StreamShard:
    """Worker ``rank``'s shard of a stream: ``streams`` (B) contiguous streams read in windows of ``window`` (k).

    ``inputs`` and ``targets`` are aligned along their first dimension (L, ...); for a
    language model ``inputs = ids[:-1]``, ``targets = ids[1:]``.
    """
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs have {inputs.shape[0]} steps but targets {targets.shape[0]}; align them first")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    if streams < 1 or window < 1:
        raise ValueError(f"streams and window must be at least 1, got {streams} and {window}")
    total = world_size * streams
    length = inputs.shape[0]
    n = length // total
    if n < window:
        raise ValueError(f"the stream has {length} steps: {world_size} worker(s) × {streams} streams hold {n} steps "
                         f"each, shorter than the TBPTT window of {window}; one batch needs "
                         f"{world_size} × {streams} × {window} = {total * window} steps (use fewer streams, a "
                         "shorter window or fewer workers)")
    rows = slice(rank * streams, (rank + 1) * streams)
    return StreamShard(inputs[: total * n].unflatten(0, (total, n))[rows],
                       targets[: total * n].unflatten(0, (total, n))[rows], window)


def epoch_batches(n: int, batch: int, *, rank: int, world_size: int, seed: int, epoch: int) -> list[Tensor]:
    """Worker ``rank``'s row indices for each global batch of ``world_size × batch`` in ``epoch``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    global_batch = world_size * batch
    if batch < 1 or n < global_batch:
        raise ValueError(f"{n} sequences are fewer than one global batch of {world_size} worker(s) × {batch} = "
                         f"{global_batch}; lower the batch size")
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=gen)
    return [order[start + rank * batch : start + (rank + 1) * batch]
            for start in range(0, n - global_batch + 1, global_batch)]
