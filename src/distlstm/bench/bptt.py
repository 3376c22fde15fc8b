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
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distlstm.bench.timing import WORKER_SETTINGS, compare
from distlstm.bptt.tasks import longlag_model
from distlstm.runtime.launch import run_cli


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


def _by_setting(label: str, args_for: Callable[[int], list[str]],
                progress: Callable[[str], None] | None) -> list[tuple[str, dict[str, Any]]]:
    """``distlstm ARGS`` in every worker setting; (setting, summary.json) pairs."""
    out = []
    for name, (workers, threads) in WORKER_SETTINGS.items():
        if progress:
            progress(f"{label}: {name}")
        with tempfile.TemporaryDirectory() as folder:
            out.append((name, run_cli(args_for(workers), Path(folder), workers=workers, threads=threads)))
    return out


def bench_ddp_workers(steps: int = 40, global_batch: int = 32, hidden: int = 256,
                      progress: Callable[[str], None] | None = None) -> list[WorkersRow]:
    """Characters per second of ``distlstm train`` (char LM, window 100) by worker setting, same global batch."""
    def args(workers: int) -> list[str]:
        return ["train", "--task", "char-lm", "--hidden", str(hidden), "--window", "100", "--steps", str(steps),
                "--batch", str(global_batch // workers), "--eval-every", str(steps), "--eval-chars", "1000",
                "--checkpoint-every", str(steps), "--no-progress"]

    return [WorkersRow(name, s["seconds"], s["samples_per_second"])
            for name, s in _by_setting("DDP workers", args, progress)]


def bench_lbfgs_workers(iterations: int = 10, train_size: int = 10_000, min_len: int = 100,
                        progress: Callable[[str], None] | None = None) -> list[WorkersRow]:
    """Seconds per full-batch L-BFGS iteration (multiplication problem, float64) by worker setting."""
    args = ["train", "--task", "multiplication", "--optimizer", "lbfgs", "--max-iter", "1", "--steps",
            str(iterations), "--train-size", str(train_size), "--min-len", str(min_len), "--test-size", "100",
            "--no-progress"]
    return [WorkersRow(name, s["seconds"], s["seconds"] / max(s["steps"], 1))
            for name, s in _by_setting("L-BFGS workers", lambda _workers: args, progress)]
