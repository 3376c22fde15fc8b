"""EvoTorch on the same ES workload: fitness evaluations per second, side by side.

EvoTorch (``evotorch`` on PyPI) is installed only in the benchmark environment
(``make bench-evotorch`` builds ``.venv-bench``); it is not a dependency of distlstm.
Same model (one-hot tanh RNN, hidden 64), population (256) and shared windows
(8 × 32 characters). EvoTorch's neuroevolution ``NEProblem`` loads each solution
into the network and evaluates it; its PGPE with a fixed σ, centred ranking,
symmetric (mirrored) sampling and Adam is its closest match to OpenAI-ES. EvoTorch
parallelises with Ray actors; distlstm batches the population in one call and
splits it over ``torchrun`` workers. The last row is the floor of
:func:`~distlstm.bench.es.forward_flops`: the population's forward arithmetic at this
machine's measured fp32 matrix-product rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from distlstm.bench.es import forward_flops, matmul_gflops
from distlstm.es.fitness import char_fitness
from distlstm.es.strategy import ESConfig, ask, init, noise, tell
from distlstm.es.text import build_model
from distlstm.models.networks import CharLM


@dataclass(frozen=True)
class EvoRow:
    setting: str
    evals_per_s: float


def _windows() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 73, (8, 32), generator=gen), torch.randint(0, 73, (8, 32), generator=gen)


def _rate(step: Callable[[], Any], generations: int, population: int) -> float:
    step()  # warm-up (and EvoTorch's lazy set-up)
    start = time.perf_counter()
    for _ in range(generations):
        step()
    return population * generations / (time.perf_counter() - start)


def _distlstm_generation(x: torch.Tensor, y: torch.Tensor, population: int, compile: bool) -> Callable[[], None]:
    """One OpenAI-ES generation of ``distlstm es`` in one process (ε drawn once for ask and tell)."""
    fm = build_model(73, "rnn", 64, seed=0, compile=compile)
    cfg = ESConfig(population=population)
    box = {"state": init(fm.flatten())}

    def step() -> None:
        state = box["state"]
        eps = noise(cfg, state)
        box["state"], _ = tell(cfg, state, char_fitness(fm, ask(cfg, state, eps=eps), x, y), eps)

    return step


def bench_evotorch(generations: int = 5, population: int = 256, actors: tuple[int, ...] = (0, 2),
                   progress: Callable[[str], None] | None = None) -> list[EvoRow]:
    try:
        from evotorch.algorithms import PGPE
        from evotorch.neuroevolution import NEProblem
    except ImportError:
        raise ImportError("the evotorch section needs the evotorch package, which is not a dependency; "
                          "run `make bench-evotorch` (it installs it into .venv-bench)") from None
    x, y = _windows()

    class CharProblem(NEProblem):
        def __init__(self, num_actors: int) -> None:
            super().__init__(objective_sense="max", network=lambda: CharLM(73, 64, cell="rnn"),
                             num_actors=num_actors)

        def _evaluate_network(self, net: CharLM) -> torch.Tensor:
            with torch.no_grad():
                logits, _ = net(x)
                return -F.cross_entropy(logits.reshape(-1, 73), y.reshape(-1))

    rows = []
    for compile in (False, True):
        if progress:
            progress(f"EvoTorch comparison: distlstm, batched population{', compiled' if compile else ''}")
        label = "distlstm OpenAI-ES, 1 process, batched population" + (", torch.compile" if compile else "")
        rows.append(EvoRow(label, _rate(_distlstm_generation(x, y, population, compile), generations, population)))
    floor = matmul_gflops() * 1e9 / forward_flops("rnn", 73, 64, x.numel())
    rows.append(EvoRow("floor: the population's forward arithmetic at the measured matmul rate", floor))
    for n in actors:
        if progress:
            progress(f"EvoTorch comparison: PGPE with {n} Ray actors")
        searcher = PGPE(CharProblem(n), popsize=population, center_learning_rate=0.01, stdev_learning_rate=0.0,
                        stdev_init=0.02, optimizer="adam", ranking_method="centered", symmetric=True)
        label = "EvoTorch PGPE, NEProblem, 1 process" if n == 0 else f"EvoTorch PGPE, NEProblem, {n} Ray actors"
        rows.append(EvoRow(label, _rate(searcher.step, generations, population)))
    return rows
