"""Evolution strategies: fitness evaluations per second, batched vs looped, 1 vs 2 workers, and where a
generation's time goes against the FLOP floor of the population's forward.

* The population's fitness on shared windows in one batched call against a Python
  loop over members (same model, same windows).
* One generation in its parts — windows, noise ε, the population's fitness (eager and
  ``torch.compile``), the update (shaping, g = 1/(Pσ) Σ F̃_j ε_j, Adam) — timed side by
  side, and the forward's floor: its arithmetic at this machine's measured fp32 matmul rate.
* ``distlstm es`` for a fixed number of generations with 1 worker and with 2 workers
  (``torchrun``, one thread each), against 1 worker using both threads.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from distlstm.es.fitness import char_fitness
from distlstm.es.strategy import ESConfig, ask, init, noise, tell
from distlstm.es.text import build_model, generation_windows
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


@dataclass(frozen=True)
class ESGenerationRow:
    cell: str
    compiled: bool
    population: int
    ms: dict[str, float]  # windows, noise, fitness, update; and seeded_noise, the baseline not in a generation
    floor_ms: float  # the forward's arithmetic at the measured matmul rate
    gflops: float  # that rate

    @property
    def generation_ms(self) -> float:
        return sum(self.ms[k] for k in ("windows", "noise", "fitness", "update"))

    @property
    def evals_per_s(self) -> float:
        return self.population / self.generation_ms * 1e3


def forward_flops(cell: str, vocab: int, hidden: int, chars: int) -> float:
    """Floating-point operations of one member's forward over ``chars`` characters, the least the model needs.

    Per character 2·G·H² for the recurrent product (G = 1 gate block for the tanh RNN,
    4 for the LSTM) and 2·H·V for the softmax head's logits; the one-hot input's
    product W_ih x_t is a column lookup (the model as written multiplies, 2·V·G·H more),
    and elementwise gates, biases and the cross-entropy are lower order and not counted.
    """
    gates = {"rnn": 1, "lstm": 4}[cell]
    return 2.0 * chars * (gates * hidden * hidden + hidden * vocab)


def matmul_gflops(size: int = 1024, repeats: int = 5) -> float:
    """This process's fp32 matrix-product rate (GFLOP/s) on a size³ product, with its current threads."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(size, size, generator=gen), torch.randn(size, size, generator=gen)
    t = compare({"mm": lambda: a @ b}, repeats=repeats, warmup=1)["mm"]
    return 2.0 * size**3 / t / 1e9


def _generation_parts(fm: FunctionalModel, cfg: ESConfig, ids: torch.Tensor, x: torch.Tensor,
                      y: torch.Tensor) -> dict[str, Callable[[], object]]:
    state = init(fm.flatten())
    eps = noise(cfg, state)
    thetas = ask(cfg, state, eps=eps)
    fitness = char_fitness(fm, thetas, x, y)  # compiles here for a compiled model
    return {"windows": lambda: generation_windows(ids, 0, 1, x.shape[0], x.shape[1]),
            "noise": lambda: noise(cfg, state),
            "seeded_noise": lambda: noise(replace(cfg, noise="seeded"), state),
            "fitness": lambda: char_fitness(fm, thetas, x, y),
            "update": lambda: tell(cfg, state, fitness, eps)}


def bench_es_generation(cells: tuple[str, ...] = ("rnn", "lstm"), population: int = 256, windows: int = 8,
                        window: int = 32, hidden: int = 64, compiled: tuple[bool, ...] = (False, True),
                        repeats: int = 5, progress: Callable[[str], None] | None = None) -> list[ESGenerationRow]:
    """The parts of one ``distlstm es`` generation in one process (vocabulary 73), timed side by side."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 73, (100_000,), generator=gen)
    x, y = generation_windows(ids, 0, 0, windows, window)
    gflops = matmul_gflops()
    rows = []
    for cell in cells:
        for comp in compiled:
            if progress:
                progress(f"ES generation profile: {cell}{' compiled' if comp else ''}")
            fm = build_model(73, cell, hidden, seed=0, compile=comp)
            parts = _generation_parts(fm, ESConfig(population=population), ids, x, y)
            ms = {k: v * 1e3 for k, v in compare(parts, repeats=repeats, warmup=1).items()}
            floor = population * forward_flops(cell, 73, hidden, windows * window) / (gflops * 1e9) * 1e3
            rows.append(ESGenerationRow(cell, comp, population, ms, floor, gflops))
    return rows
