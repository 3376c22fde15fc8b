"""Data-parallel and full-batch BPTT: matrix-batched vs looped, 1 vs 2 workers.

* One minibatch's forward + backward as one matrix computation against a loop over
  its samples with the gradients accumulated (the matrix-batch paper's Fig. 3(b):
  batch 100, sequences of 10 steps; it found ≈ 100×).
* ``distlstm train`` (char LM, DDP) throughput with 1 and 2 workers at the same
  global batch, against 1 worker using both threads.
* ``distlstm train --optimizer lbfgs`` time per L-BFGS iteration on the full
  multiplication-problem training set with 1 and 2 workers (the paper: 5 clients ≈ 3×
  the fastest one alone).
* One full-batch evaluation (loss + gradient over the 10,000 training sequences, what
  every L-BFGS / CG iteration and line-search trial costs): the one-node peephole
  sequence against the generic loop, against the memory-traffic floor of the
  activations it keeps and against the time of the forward's sigmoids alone
  (section ``fullbatch``).

Worker runs report training time only (start-up, evaluation and checkpoints excluded).
The vectorization and L-BFGS measurements live in ``experiments/matrix_batch_timing.py``,
which the matrix-batch reproduction uses too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from distlstm import native as native_loops
from distlstm.bptt.tasks import Batch, LongLagTask
from distlstm.experiments.matrix_batch_timing import VectorRow, WorkersRow, bench_lbfgs_workers, bench_vectorization
from distlstm.models import peephole_kernel
from distlstm.models.networks import SequenceRegressor
from distlstm.timing import by_worker_setting, compare


def bench_ddp_workers(steps: int = 40, global_batch: int = 32, hidden: int = 256,
                      progress: Callable[[str], None] | None = None) -> list[WorkersRow]:
    """Characters per second of ``distlstm train`` (char LM, window 100) by worker setting, same global batch."""
    def args(workers: int) -> list[str]:
        return ["train", "--task", "char-lm", "--hidden", str(hidden), "--window", "100", "--steps", str(steps),
                "--batch", str(global_batch // workers), "--eval-every", str(steps), "--eval-chars", "1000",
                "--checkpoint-every", str(steps), "--no-progress"]

    return [WorkersRow(name, s["seconds"], s["samples"] / max(s["seconds"], 1e-9))  # training time only
            for name, s in by_worker_setting("DDP workers", args, progress)]


__all__ = ["EvaluationRow", "FloorRow", "VectorRow", "WorkersRow", "bench_ddp_workers", "bench_fullbatch_evaluation",
           "bench_lbfgs_workers", "bench_vectorization", "copy_bandwidth", "sigmoid_ns"]


@dataclass(frozen=True)
class EvaluationRow:
    name: str
    ms: float  # median of one loss + gradient over the whole training set
    ratio: float  # ms / the generic loop's ms in the same run


@dataclass(frozen=True)
class FloorRow:
    kept_mb: float  # the activations the backward must read: gates and c_t, (G + 1)·n values per sequence and step
    bandwidth_gbs: float  # memory copy bandwidth measured in the same run (bytes read + written per second)
    sigmoids: int = 0  # the forward's G + 1 per unit and step: the G gates, and tanh c_t = 1 − 2σ(−2c_t)
    sigmoid_ns: float = 0.0  # nanoseconds per float64 sigmoid, measured in the same run

    @property
    def floor_ms(self) -> float:
        """Writing the kept activations once and reading them back once, at the measured bandwidth."""
        return 2 * self.kept_mb * 1e6 / (self.bandwidth_gbs * 1e9) * 1e3

    @property
    def sigmoid_ms(self) -> float:
        """The forward's sigmoids alone at the measured rate."""
        return self.sigmoids * self.sigmoid_ns * 1e-6


def sigmoid_ns(block: int = 40_000, repeats: int = 5) -> float:
    """Nanoseconds ``torch.sigmoid_`` takes per float64 value, timed on a warm, cache-sized block (one step's gates)."""
    values = torch.linspace(-4, 4, block, dtype=torch.float64)
    work = values.clone()
    calls = 50

    def run() -> None:
        for _ in range(calls):
            work.copy_(values).sigmoid_()  # refreshed so every call sees the same inputs

    def refresh() -> None:
        for _ in range(calls):
            work.copy_(values)

    t = compare({"sigmoid": run, "copy": refresh}, repeats=repeats, warmup=1)
    return max(t["sigmoid"] - t["copy"], 0.0) / (calls * block) * 1e9


def copy_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """GB/s of ``dst.copy_(src)`` on warm float64 buffers (bytes read plus bytes written)."""
    src = torch.ones(megabytes * 2**20 // 8, dtype=torch.float64)
    dst = torch.zeros_like(src)
    seconds = compare({"copy": lambda: dst.copy_(src)}, repeats=repeats, warmup=1)["copy"]
    return 2 * src.numel() * 8 / seconds / 1e9


def bench_fullbatch_evaluation(train_size: int = 10_000, min_len: int = 100, repeats: int = 5,
                               progress: Callable[[str], None] | None = None
                               ) -> tuple[list[EvaluationRow], FloorRow]:
    """One full-batch loss + gradient of the matrix-batch network: the one-node path (C++, ATen loops) against the loop.

    The network and data are ``distlstm train --task multiplication --optimizer lbfgs``'s
    (peephole cells without forget gate, hidden 4, α = 3.75, float64); run it under one
    thread to match the issue's setting. Both paths are timed interleaved in this process.
    """
    task = LongLagTask(train_size=train_size, test_size=1, min_len=min_len)
    data = task.full_batch()
    batch = Batch(data.x, data.y, data.lengths, True)
    loop = task.build_model(0)
    assert isinstance(loop, SequenceRegressor)
    loop.rnn.fused = False
    fused = task.build_model(0)
    paths: dict[str, tuple[nn.Module, bool]] = {"generic loop (fused=False)": (loop, False)}  # (model, C++ loops)
    if peephole_kernel.load() is not None:
        paths = {"one-node sequence, C++ loops (default)": (fused, True),
                 "one-node sequence, ATen loops (DISTLSTM_NATIVE=0)": (fused, False), **paths}
    else:
        paths = {"one-node sequence, ATen loops (default here: no C++ compiler)": (fused, False), **paths}

    def evaluation(model: nn.Module, native: bool) -> Callable[[], None]:
        def run() -> None:
            with native_loops.use(native):
                model.zero_grad(set_to_none=True)
                task.loss(model, batch, None)[0].backward()
        return run

    if progress:
        progress(f"full-batch evaluation: {train_size} sequences")
    times = compare({name: evaluation(*path) for name, path in paths.items()}, repeats=repeats, warmup=2)
    base = times["generic loop (fused=False)"]
    rows = [EvaluationRow(name, t * 1e3, t / base) for name, t in times.items()]
    gates, n = len(loop.rnn.cells[0].gate_names), loop.rnn.cells[0].hidden_size
    unit_steps = n * int(data.lengths.clamp(max=data.x.shape[1]).sum())  # finished sequences cost nothing
    kept = (gates + 1) * unit_steps * data.x.element_size()
    return rows, FloorRow(kept / 1e6, copy_bandwidth(), (gates + 1) * unit_steps, sigmoid_ns())
