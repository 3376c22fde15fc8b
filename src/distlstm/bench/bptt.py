"""Data-parallel and full-batch BPTT: matrix-batched vs looped, 1 vs 2 workers.

* One minibatch's forward + backward as one matrix computation against a loop over
  its samples with the gradients accumulated (the matrix-batch paper's Fig. 3(b):
  batch 100, sequences of 10 steps; it found ≈ 100×).
* ``distlstm train`` (char LM, DDP) throughput with 1 and 2 workers at the same
  global batch, against 1 worker using both threads.
* ``distlstm train --optimizer lbfgs`` time per L-BFGS iteration on the full
  multiplication-problem training set with 1 and 2 workers (the paper: 5 clients ≈ 3×
  the fastest one alone).

Worker runs report training time only (start-up, evaluation and checkpoints excluded).
The vectorization and L-BFGS measurements live in ``experiments/matrix_batch_timing.py``,
which the matrix-batch reproduction uses too.
"""

from __future__ import annotations

from collections.abc import Callable

from distlstm.experiments.matrix_batch_timing import VectorRow, WorkersRow, bench_lbfgs_workers, bench_vectorization
from distlstm.timing import by_worker_setting


def bench_ddp_workers(steps: int = 40, global_batch: int = 32, hidden: int = 256,
                      progress: Callable[[str], None] | None = None) -> list[WorkersRow]:
    """Characters per second of ``distlstm train`` (char LM, window 100) by worker setting, same global batch."""
    def args(workers: int) -> list[str]:
        return ["train", "--task", "char-lm", "--hidden", str(hidden), "--window", "100", "--steps", str(steps),
                "--batch", str(global_batch // workers), "--eval-every", str(steps), "--eval-chars", "1000",
                "--checkpoint-every", str(steps), "--no-progress"]

    return [WorkersRow(name, s["seconds"], s["samples"] / max(s["seconds"], 1e-9))  # training time only
            for name, s in by_worker_setting("DDP workers", args, progress)]


__all__ = ["VectorRow", "WorkersRow", "bench_ddp_workers", "bench_lbfgs_workers", "bench_vectorization"]
