"""A batch of B parameter vectors in one call against a Python loop over them.

This is the particle filter's and the ES population's inner loop: the same input
(one sequence, or a batch of text windows) evaluated at B different θ. The loop
baseline calls the same :class:`~distlstm.models.FunctionalModel` once per θ, which
uses the fastest single-θ path (ATen's fused kernel for the LSTM).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from distlstm.models import CharLM, FunctionalModel, SequenceRegressor
from distlstm.timing import compare


@dataclass(frozen=True)
class BatchedRow:
    name: str
    population: int
    n_theta: int
    loop_ms: float
    batched_ms: float
    vmap_ms: float  # FunctionalModel(fast_paths=False): vmap over the module (= batched when it has no own path)
    compiled_ms: float | None = None  # FunctionalModel(compile=True), when timed
    compile_seconds: float | None = None

    @property
    def speedup(self) -> float:
        return self.loop_ms / self.batched_ms

    @property
    def compiled_speedup(self) -> float | None:
        return None if self.compiled_ms is None else self.loop_ms / self.compiled_ms


def loop_vs_batched(fm: FunctionalModel, thetas: Tensor, *args: Tensor) -> dict[str, Callable[[], object]]:
    """The two candidates: ``fm`` at each θ in turn (its single-θ path), and at all of Θ in one call."""
    return {"loop": lambda: [fm(t, *args) for t in thetas], "batched": lambda: fm(thetas, *args)}


def _configs() -> dict[str, tuple[nn.Module, tuple[Tensor, ...]]]:
    torch.manual_seed(0)
    return {
        "regressor LSTM n=16, one sequence of 10 steps, p=2": (SequenceRegressor(2, 16), (torch.randn(1, 10, 2),)),
        "regressor LSTM n=32, one sequence of 10 steps, p=2": (SequenceRegressor(2, 32), (torch.randn(1, 10, 2),)),
        "char RNN n=64, V=73, 4 windows × 32 chars": (CharLM(73, 64, cell="rnn"), (torch.randint(0, 73, (4, 32)),)),
    }


def bench_batched(population: int = 256, repeats: int = 10, compile: bool = False,
                  progress: Callable[[str], None] | None = None) -> list[BatchedRow]:
    """Time ``fm(Θ, x)`` against ``[fm(θ_b, x) for θ_b in Θ]`` without autograd.

    With ``compile`` also times ``FunctionalModel(model, compile=True)`` and reports
    its one-off compilation time.
    """
    rows = []
    for name, (model, args) in _configs().items():
        if progress:
            progress(f"batched θ: {name}")
        fm = FunctionalModel(model)
        gen = torch.Generator().manual_seed(1)
        thetas = fm.flatten() + 0.01 * torch.randn(population, fm.numel, generator=gen)

        candidates = loop_vs_batched(fm, thetas, *args)
        candidates["vmap"] = loop_vs_batched(FunctionalModel(model, fast_paths=False), thetas, *args)["batched"]
        compile_seconds = None
        if compile:
            cfm = FunctionalModel(model, compile=True)
            start = time.perf_counter()
            with torch.no_grad():
                cfm(thetas, *args)
            compile_seconds = time.perf_counter() - start
            candidates["compiled"] = loop_vs_batched(cfm, thetas, *args)["batched"]
        with torch.no_grad():
            times = compare(candidates, repeats=repeats)
        rows.append(BatchedRow(name, population, fm.numel, times["loop"] * 1e3, times["batched"] * 1e3,
                               times["vmap"] * 1e3, times["compiled"] * 1e3 if compile else None, compile_seconds))
    return rows
