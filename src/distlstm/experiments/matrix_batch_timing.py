"""What the matrix-batch reproduction times: matrix-batched against looped BPTT, and L-BFGS by worker setting.

Shared with ``distlstm bench --sections bptt`` (the benchmarks import it from here: a
reproduction must not import ``distlstm.bench``).

* One minibatch's forward + backward as one matrix computation against a loop over
  its samples with the gradients accumulated (the matrix-batch paper's Fig. 3(b):
  batch 100, sequences of 10 steps; it found ≈ 100×).
* ``distlstm train --optimizer lbfgs`` time per L-BFGS iteration on the full
  multiplication-problem training set with 1 and 2 workers (the paper: 5 clients ≈ 3×
  the fastest one alone); training time only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from distlstm.bptt.tasks import longlag_model
from distlstm.timing import by_worker_setting, compare


@dataclass(frozen=True)
class VectorRow:
    batch: int
    steps: int
    looped_ms: float
    batched_ms: float

    @property
    def speedup(self) -> float:
        return self.looped_ms / self.batched_ms


@dataclass(frozen=True)
class WorkersRow:
    setting: str
    seconds: float  # training time of the run
    rate: float  # samples/s (DDP) or seconds per iteration (L-BFGS)


def bench_vectorization(batch: int = 100, steps: int = 10, hidden: int = 4, repeats: int = 5) -> VectorRow:
    """Forward + backward of ``batch`` sequences in one matrix call against a loop over the samples."""
    model = longlag_model(hidden)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, steps, 2, generator=gen, dtype=torch.float64)
    y = torch.rand(batch, generator=gen, dtype=torch.float64)

    def batched() -> None:
        model.zero_grad()
        ((model(x) - y) ** 2).mean().backward()

    def looped() -> None:
        model.zero_grad()
        for i in range(batch):
            ((model(x[i : i + 1]) - y[i : i + 1]) ** 2).sum().div(batch).backward()

    t = compare({"looped": looped, "batched": batched}, repeats=repeats, warmup=1)
    return VectorRow(batch, steps, t["looped"] * 1e3, t["batched"] * 1e3)


def bench_lbfgs_workers(iterations: int = 10, train_size: int = 10_000, min_len: int = 100,
                        progress: Callable[[str], None] | None = None, init: str = "sparse") -> list[WorkersRow]:
    """Seconds per full-batch L-BFGS iteration (multiplication problem, float64, from ``init``) by worker setting.

    One iteration per step; a step may take two evaluations (``lbfgs_max_eval``; before 2026-11-27 one,
    without a line search), so the seconds compare with tables made since then.
    """
    args = ["train", "--task", "multiplication", "--optimizer", "lbfgs", "--max-iter", "1", "--steps",
            str(iterations), "--train-size", str(train_size), "--min-len", str(min_len), "--test-size", "100",
            "--init", init, "--no-progress"]
    return [WorkersRow(name, s["seconds"], s["seconds"] / max(s["steps"], 1))
            for name, s in by_worker_setting("L-BFGS workers", lambda _workers: args, progress)]
