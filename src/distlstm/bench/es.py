"""Evolution strategies: fitness evaluations per second, batched vs looped, 1 vs 2 workers.

* The population's fitness on shared windows in one batched call against a Python
  loop over members (same model, same windows).
* ``distlstm es`` for a fixed number of generations with 1 worker and with 2 workers
  (``torchrun``, one thread each), against 1 worker using both threads.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from distlstm.es.fitness import char_fitness
from distlstm.es.strategy import ESConfig, ask, init
from distlstm.es.text import build_model
from distlstm.models.functional import FunctionalModel
from distlstm.runtime.launch import run_cli
from distlstm.timing import WORKER_SETTINGS, compare


@dataclass(frozen=True)
class ESBatchRow:
    cell: str
    population: int
    n_theta: int
    loop_evals_per_s: float
    batched_evals_per_s: float


@dataclass(frozen=True)
class ESWorkersRow:
    setting: str
    seconds: float
    evals_per_s: float


def _loop_and_batched(fm: FunctionalModel, thetas: torch.Tensor, x: torch.Tensor,
                      y: torch.Tensor) -> dict[str, Callable[[], object]]:
    return {"loop": lambda: [char_fitness(fm, th[None], x, y) for th in thetas],
            "batched": lambda: char_fitness(fm, thetas, x, y)}


def bench_es_batched(cells: tuple[str, ...] = ("rnn", "lstm"), population: int = 256, repeats: int = 3,
                     progress: Callable[[str], None] | None = None) -> list[ESBatchRow]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 73, (8, 32), generator=gen)
    y = torch.randint(0, 73, (8, 32), generator=gen)
    for cell in cells:
        if progress:
            progress(f"ES fitness batched vs looped: {cell}")
        fm = build_model(73, cell, 64, seed=0)
        thetas = ask(ESConfig(population=population), init(fm.flatten()))
        t = compare(_loop_and_batched(fm, thetas, x, y), repeats=repeats, warmup=1)
        rows.append(ESBatchRow(cell, population, fm.numel, population / t["loop"], population / t["batched"]))
    return rows


def bench_es_workers(generations: int = 40, progress: Callable[[str], None] | None = None) -> list[ESWorkersRow]:
    """Training time of ``distlstm es`` (RNN, population 256) by worker setting: the run loop's step time,
    start-up and the one evaluation excluded."""
    es_args = ["es", "--steps", str(generations), "--eval-every", str(generations), "--eval-chars", "2000",
               "--checkpoint-every", str(generations), "--no-progress"]
    rows = []
    for name, (workers, threads) in WORKER_SETTINGS.items():
        if progress:
            progress(f"ES workers: {name}")
        with tempfile.TemporaryDirectory() as out:
            seconds = run_cli(es_args, Path(out), workers=workers, threads=threads)["seconds"]
        rows.append(ESWorkersRow(name, seconds, generations * 256 / seconds))
    return rows
